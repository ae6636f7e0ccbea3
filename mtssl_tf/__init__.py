"""mtssl_tf: multi-task self-supervised visual learning in TF 2 / tf_keras.

TensorFlow/Keras reference implementation of Doersch & Zisserman, "Multi-task
Self-Supervised Visual Learning", ICCV 2017. Importing the package is cheap and
silent: TensorFlow is only imported by the submodules that need it.

Map of the package (see README.md, "Concepts"):
  models/resnet_v2.py   the ResNet-v2 trunk (atrous block 3, endpoints dict)
  models/lasso.py       LassoCombine (paper §3.2)
  data/color.py         sRGB <-> CIE Lab in TensorFlow
  tasks/                the pretext tasks, one module each, one registry
  main.py               the command-line entry point
"""

__version__ = "0.1.0"
