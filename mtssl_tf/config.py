"""Plain configuration objects. No flags here: mtssl_tf/main.py turns flags
into these dataclasses and passes them down, so every module can be built and
tested on its own.
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class TrunkConfig:
  """The ResNet-v2 trunk (paper §3.1; SPEC.md "Architecture facts").

  Attributes:
    depth: network depth, a row of ``resnet_v2.RESNET_SPECS`` (101 in the
      paper; 14 and 26 are tiny depths for tests).
    output_stride: None (nominal stride), 8 (the paper) or 16. At 8, block 2's
      last unit has stride 1 and every block-3 unit is atrous with rate 2.
    include_block4: also build block 4 and the final "postnorm" batch norm
      (e.g. for detection); the paper's trunk ends after block 3.
    base_width: bottleneck depth of block 1 and width of the root conv; the
      blocks use ``base_width * (1, 2, 4, 8)`` and output 4x that. 64 is
      ResNet-v2 (and what TF-Slim checkpoints have); smaller widths give tiny
      networks for tests.
    weight_decay: L2 weight decay on conv kernels, with TF-Slim's convention
      ``weight_decay * sum(w**2) / 2`` (``resnet_arg_scope``: 1e-4).
    batch_norm_decay: moving-average decay of batch norm (TF-Slim: 0.997).
    batch_norm_epsilon: batch norm epsilon (TF-Slim: 1e-5).
  """
  depth: int = 101
  output_stride: Optional[int] = 8
  include_block4: bool = False
  base_width: int = 64
  weight_decay: float = 1e-4
  batch_norm_decay: float = 0.997
  batch_norm_epsilon: float = 1e-5


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where a task's examples come from (shared by all tasks).

  Attributes:
    source: "builtin" (sample data shipped with the packages, or generated),
      "folder" (a directory of images, searched recursively), "tfrecord"
      (files matching ``path``, a glob, in the format of
      ``data/tfrecord_format.py``) or "tfds" (a TFDS data set by ``tfds_name``).
    path: folder or TFRecord glob for "folder"/"tfrecord".
    tfds_name: TFDS data set name (e.g. "imagenet2012") for "tfds".
    tfds_split: TFDS split.
    tfds_data_dir: TFDS data directory (None: TFDS's default).
    tfds_manual_dir: directory holding manually downloaded TFDS files.
  """
  source: str = "builtin"
  path: Optional[str] = None
  tfds_name: Optional[str] = None
  tfds_split: str = "train"
  tfds_data_dir: Optional[str] = None
  tfds_manual_dir: Optional[str] = None
