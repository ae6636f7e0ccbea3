"""Networks: the ResNet-v2 trunk, LassoCombine, and the task heads."""
