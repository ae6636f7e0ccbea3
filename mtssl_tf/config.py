"""Plain configuration objects. No flags here: mtssl_tf/main.py turns flags
into these dataclasses and passes them down, so every module can be built and
tested on its own.
"""

import dataclasses
from typing import Dict, Optional, Tuple


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


LASSO_INITS = ("last", "uniform")
MIXED_PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The multi-task training run (paper §4; mtssl_tf/training/loop.py).

  Every field is also a flag of ``python -m mtssl_tf.main`` with the field's
  name (``--max_steps=100``, ``--lasso``, ``--replicas_per_task=rp:2,col:2``),
  generated from this class by ``config_flags``: the text below is the flags'
  help, and the defaults here are the command line's.

  Attributes:
    model_dir: checkpoints, TensorBoard logs, run.json; an existing run there
      is resumed (``python -m mtssl_tf.main`` defaults it to runs/<tasks>).
    max_steps: global steps (cycles) to train; a global step is one round of
      updates of every task.
    batch_size: examples per task per replica (rp: pairs, ex: images); tasks
      may override it in task_batch_size.
    task_batch_size: per-task batch sizes, e.g. rp:8,col:4.
    replicas_per_task: replica group sizes, e.g. rp:2,col:2 (must sum to the
      replica count, or with --strategy=parameter_server the worker count;
      empty: spread replicas evenly over devices).
    steps_per_cycle: per-task updates per global step, e.g. rp:2 (balances
      fast and slow tasks; default 1 each).
    task_step_cost: per-task cost of one update for compute accounting (paper
      §6 "Implementation details"), e.g. rp:1,col:2.5 (default 1 each).
    learning_rate: RMSProp learning rate, constant (paper §4); per-task
      overrides in task_learning_rate.
    task_learning_rate: per-task learning rates, e.g. col:3e-4 (0 freezes a
      task).
    rmsprop_decay, rmsprop_momentum, rmsprop_epsilon: TF-Slim's RMSProp
      defaults (0.9, 0.9, 1.0).
    lasso: feed each head a LassoCombine of the block-3 units (paper §3.2)
      instead of the block-3 output.
    lasso_l1: L1 weight of the lasso penalty (with lasso).
    lasso_init: initial alpha rows, "last" or "uniform" (with lasso).
    checkpoint_every_steps: save every N global steps (0: off).
    checkpoint_every_secs: save every T seconds (0: off).
    checkpoint_every_cost: save whenever the summed compute cost crosses a
      multiple of this (paper §6; 0: off).
    keep_checkpoints: checkpoints kept by the CheckpointManager.
    log_every_steps: console progress line and scalar summaries interval.
    image_summary_every_steps: task input/prediction images interval (0: off).
    profile_steps: first,last global steps to trace with the TensorBoard
      profiler (None: no trace).
    seed: seed of data order and initialisation.
    init_checkpoint: trunk checkpoint from tools/convert_slim_checkpoint.py to
      start from (optional).
    jit_compile: XLA-compile each task's forward + backward. On CPUs TF's
      default oneDNN kernels are usually faster; for GPUs/TPUs.
    mixed_precision: layer compute precision (variables, slots and losses stay
      float32; training/speed.py). "auto": mixed_bfloat16 where the hardware
      multiplies bf16 natively (CPU flag amx_bf16/avx512_bf16, TPU, GPU with
      compute capability >= 8.0), else float32; "float32"; "mixed_bfloat16"
      (elsewhere emulated and slower: a warning says so); "mixed_float16" (no
      loss scaling here: GPU only, at your own risk).
    intra_op_threads: threads inside one op (0: TensorFlow's default, one per
      core).
    inter_op_threads: ops run in parallel (0: TensorFlow's default).
    steps_per_call: global steps inside one tf.function call (cuts per-step
      Python overhead for small networks; checkpoints are taken between
      calls).
  """
  model_dir: str = "runs/default"
  max_steps: int = 1_000_000
  batch_size: int = 2
  task_batch_size: Dict[str, int] = dataclasses.field(default_factory=dict)
  replicas_per_task: Dict[str, int] = dataclasses.field(default_factory=dict)
  steps_per_cycle: Dict[str, int] = dataclasses.field(default_factory=dict)
  task_step_cost: Dict[str, float] = dataclasses.field(default_factory=dict)
  learning_rate: float = 1e-3
  task_learning_rate: Dict[str, float] = dataclasses.field(
      default_factory=dict)
  rmsprop_decay: float = 0.9
  rmsprop_momentum: float = 0.9
  rmsprop_epsilon: float = 1.0
  lasso: bool = False
  lasso_l1: float = 0.01
  lasso_init: str = "last"
  checkpoint_every_steps: int = 1000
  checkpoint_every_secs: float = 600.0
  checkpoint_every_cost: float = 0.0
  keep_checkpoints: int = 5
  log_every_steps: int = 10
  image_summary_every_steps: int = 100
  profile_steps: Optional[Tuple[int, int]] = None
  seed: int = 0
  init_checkpoint: Optional[str] = None
  jit_compile: bool = False
  mixed_precision: str = "auto"
  intra_op_threads: int = 0
  inter_op_threads: int = 0
  steps_per_call: int = 1

  def validate(self) -> None:
    """Raises ValueError naming the first invalid field and its value
    (``train`` checks this before it writes anything)."""
    maps = (self.task_learning_rate, self.task_batch_size,
            self.steps_per_cycle, self.task_step_cost)
    for name, ok, rule in [
        ("max_steps", self.max_steps >= 0, ">= 0"),
        ("batch_size", self.batch_size >= 1, ">= 1"),
        ("learning_rate", self.learning_rate > 0, "> 0"),
        ("task_learning_rate", min(maps[0].values(), default=0) >= 0,
         ">= 0 (0 freezes a task)"),
        ("task_batch_size", min(maps[1].values(), default=1) >= 1, ">= 1"),
        ("steps_per_cycle", min(maps[2].values(), default=1) >= 1, ">= 1"),
        ("task_step_cost", min(maps[3].values(), default=1) > 0, "> 0"),
        ("checkpoint_every_steps", self.checkpoint_every_steps >= 0,
         ">= 0 (0: off)"),
        ("checkpoint_every_secs", self.checkpoint_every_secs >= 0,
         ">= 0 (0: off)"),
        ("checkpoint_every_cost", self.checkpoint_every_cost >= 0,
         ">= 0 (0: off)"),
        ("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1"),
        ("log_every_steps", self.log_every_steps >= 1, ">= 1"),
        ("image_summary_every_steps", self.image_summary_every_steps >= 0,
         ">= 0 (0: off)"),
        ("steps_per_call", self.steps_per_call >= 1, ">= 1"),
        ("replicas_per_task", min(self.replicas_per_task.values(),
                                  default=1) >= 1, ">= 1"),
        ("lasso_init", self.lasso_init in LASSO_INITS,
         f"one of {LASSO_INITS}"),
        ("mixed_precision", self.mixed_precision in MIXED_PRECISIONS,
         f"one of {MIXED_PRECISIONS}"),
        ("profile_steps", self.profile_steps is None or (
            isinstance(self.profile_steps, tuple) and
            len(self.profile_steps) == 2 and
            all(isinstance(v, int) for v in self.profile_steps) and
            0 <= self.profile_steps[0] <= self.profile_steps[1]),
         "two integers first,last with 0 <= first <= last"),
        ("intra_op_threads", self.intra_op_threads >= 0, ">= 0 (0: default)"),
        ("inter_op_threads", self.inter_op_threads >= 0, ">= 0 (0: default)"),
    ]:
      if not ok:
        raise ValueError(f"{name} must be {rule}, got "
                         f"{getattr(self, name)!r}.")

  def batch_size_of(self, task: str) -> int:
    return self.task_batch_size.get(task, self.batch_size)

  def steps_per_cycle_of(self, task: str) -> int:
    return self.steps_per_cycle.get(task, 1)

  def step_cost_of(self, task: str) -> float:
    return self.task_step_cost.get(task, 1.0)

  def learning_rate_of(self, task: str) -> float:
    return self.task_learning_rate.get(task, self.learning_rate)
