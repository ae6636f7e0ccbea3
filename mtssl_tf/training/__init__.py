"""The distributed multi-task training loop, optimizers and checkpoints."""
