"""mtssl_tf: multi-task self-supervised visual learning in TF 2 / tf_keras.

TensorFlow/Keras reference implementation of Doersch & Zisserman, "Multi-task
Self-Supervised Visual Learning", ICCV 2017. Importing the package is cheap and
silent: TensorFlow is only imported by the submodules that need it.

Map of the package (see README.md, "Concepts"):
  config.py             plain configuration dataclasses (no flags)
  models/               trunk (resnet_v2), lasso, heads, multitask network,
                        TF-Slim checkpoint conversion, FLOP counting
  tasks/                the pretext tasks, one module each, one registry
  data/                 sources, decoding, Lab colour, ab bins, TFRecords,
                        motion labels, synthetic videos
  training/             the distributed loop, per-task RMSProp, replica
                        plans, checkpoints and accounting, summaries, speed
  benchmarks/           measurement code behind tools/benchmark.py
  main.py, export.py    the command-line entry points
"""

__version__ = "0.1.0"
