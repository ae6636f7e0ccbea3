r"""Multi-task self-supervised pre-training: ``python -m mtssl_tf.main``.

Examples:

  # The paper's RP+Col on the built-in sample photos, a few steps:
  python -m mtssl_tf.main --tasks=rp,col --max_steps=4 \
      --model_dir=runs/quickstart --export_dir=runs/quickstart/saved_model

  # A paper experiment from its flagfile (flags/ holds one per table row):
  python -m mtssl_tf.main --flagfile=flags/all4_lasso.cfg \
      --image_source=folder --image_path=/data/imagenet/train \
      --motion_source=tfrecord --motion_path='/data/soundnet_masks/*.tfrecord'

  # Four logical CPU devices, two replicas per task:
  python -m mtssl_tf.main --tasks=rp,col --strategy=mirrored \
      --num_cpu_devices=4 --replicas_per_task=rp:2,col:2

  # Asynchronous tasks on a localhost parameter-server cluster:
  python -m tools.launch_cluster --workers=rp:2,col:1 --ps=1 -- \
      --tasks=rp,col --max_steps=100 --model_dir=runs/async

Every flag is turned into plain config objects (mtssl_tf/config.py and each
task's Config) and validated before any work starts; `--helpfull` lists them.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import os
import sys
from typing import Dict, List

from absl import app
from absl import flags

from mtssl_tf import config as config_lib
from mtssl_tf import config_flags
from mtssl_tf.tasks import base
from mtssl_tf.tasks import registry

# ---- What to train --------------------------------------------------------
_TASKS = flags.DEFINE_list(
    "tasks", ["rp", "col"],
    f"Pretext tasks to train jointly: any of {', '.join(registry.names())} "
    f"(mtssl_tf/tasks/registry.py). Each task's options are flags "
    f"--<task>.<field> (e.g. --rp.harmonize=true, --col.head_width=1024).")
_LASSO = flags.DEFINE_bool(
    "lasso", False, "Feed each head a LassoCombine of the block-3 units "
    "(paper §3.2) instead of the block-3 output.")
_LASSO_L1 = flags.DEFINE_float("lasso_l1", None,
                               "L1 weight of the lasso penalty (needs "
                               "--lasso; default 0.01).")
_LASSO_INIT = flags.DEFINE_enum("lasso_init", None, ["last", "uniform"],
                                "Initial alpha rows (needs --lasso; default "
                                "last).")
# Every registered task's Config fields, as --<task>.<field> (declared once,
# in the task's Config; help from its docstring).
for _name in registry.names():
  config_flags.define_flags(_name, registry.get_module(_name).Config)
_HEAD_WIDTH_MULTIPLIER = flags.DEFINE_float(
    "head_width_multiplier", 1.0, "Scales every hidden width of every task "
    "head (1: the paper's; e.g. 0.125 for small runs: the paper's heads hold "
    "most of the parameters and of the checkpoint size). --<task>.<field> "
    "flags are applied after it, as given.")

# ---- Trunk ----------------------------------------------------------------
_DEPTH = flags.DEFINE_integer("depth", 101, "ResNet-v2 depth (14, 26, 50, "
                              "101, 152, 200).")
_OUTPUT_STRIDE = flags.DEFINE_integer(
    "output_stride", 8, "Trunk output stride: 8 (paper) or 16; 0 = nominal.")
_BASE_WIDTH = flags.DEFINE_integer(
    "base_width", 64, "Block-1 bottleneck width (64 = ResNet-v2; smaller for "
    "tiny test networks).")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 1e-4,
                                   "Trunk L2 weight decay (TF-Slim).")
_INIT_CHECKPOINT = flags.DEFINE_string(
    "init_checkpoint", None, "Trunk checkpoint from "
    "tools/convert_slim_checkpoint.py to start from.")

# ---- Data -----------------------------------------------------------------
_IMAGE_SOURCE = flags.DEFINE_enum(
    "image_source", "builtin", ["builtin", "folder", "tfrecord", "tfds"],
    "Images for the tasks that read photos (source kind 'images'): builtin "
    "sample photos, a folder (recursive), TFRecords (glob in --image_path) "
    "or a TFDS data set (--tfds_name).")
_IMAGE_PATH = flags.DEFINE_string("image_path", None,
                                  "Folder or TFRecord glob of the images.")
_MOTION_SOURCE = flags.DEFINE_enum(
    "motion_source", "builtin", ["builtin", "folder", "tfrecord"],
    "Frames and motion masks for the tasks that read videos (source kind "
    "'video_frames'): builtin generated videos, or records from "
    "tools/make_motion_masks.py (a folder or a glob in --motion_path).")
_MOTION_PATH = flags.DEFINE_string("motion_path", None,
                                   "Folder or glob of motion TFRecords.")
_TFDS_NAME = flags.DEFINE_string("tfds_name", None, "TFDS data set name.")
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "TFDS split.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data dir.")
_TFDS_MANUAL_DIR = flags.DEFINE_string(
    "tfds_manual_dir", None, "Directory of manually downloaded TFDS files.")

# ---- Training -------------------------------------------------------------
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Checkpoints and TensorBoard logs (default "
    "runs/<tasks>); an existing run there is resumed.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 1_000_000,
                                  "Global steps (cycles) to train.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 2, "Examples per task per replica (rp: pairs, ex: images).")
_TASK_BATCH_SIZE = flags.DEFINE_string(
    "task_batch_size", "", "Per-task batch sizes, e.g. rp:8,col:4.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3,
                                    "RMSProp learning rate (constant).")
_TASK_LEARNING_RATE = flags.DEFINE_string(
    "task_learning_rate", "", "Per-task learning rates, e.g. col:3e-4.")
_STEPS_PER_CYCLE = flags.DEFINE_string(
    "steps_per_cycle", "", "Per-task updates per global step, e.g. rp:2 "
    "(balances fast and slow tasks; default 1).")
_TASK_STEP_COST = flags.DEFINE_string(
    "task_step_cost", "", "Per-task cost of one update for compute "
    "accounting (paper §6), e.g. rp:1,col:2.5 (default 1).")

# ---- Distribution -----------------------------------------------------------
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default",
    ["default", "mirrored", "multi_worker", "parameter_server"],
    "default: one device; mirrored: all local GPUs (or --num_cpu_devices "
    "logical CPUs); multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG; "
    "parameter_server: asynchronous tasks on ParameterServerStrategy from "
    "TF_CONFIG (chief, workers, ps; see tools/launch_cluster.py).")
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    "num_cpu_devices", 0, "With --strategy=mirrored and no GPU: split the CPU "
    "into this many logical devices (one replica each).")
_REPLICAS_PER_TASK = flags.DEFINE_string(
    "replicas_per_task", "", "Replica group sizes, e.g. rp:2,col:2 (must sum "
    "to the replica count, or with --strategy=parameter_server the worker "
    "count; default spreads replicas evenly).")

# ---- Speed (training/speed.py; tools/benchmark.py measures each) -----------
_JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "XLA-compile each task's forward + backward. On "
    "CPUs TF's default oneDNN kernels are usually faster; for GPUs/TPUs.")
_MIXED_PRECISION = flags.DEFINE_enum(
    "mixed_precision", "auto",
    ["auto", "float32", "mixed_bfloat16", "mixed_float16"],
    "Layer compute precision (variables, slots and losses stay float32). "
    "auto: mixed_bfloat16 where the hardware multiplies bf16 natively "
    "(CPU flag amx_bf16/avx512_bf16, TPU, GPU with compute capability >= "
    "8.0), else float32. mixed_bfloat16 elsewhere is emulated and slower "
    "(a warning says so); mixed_float16 has no loss scaling here (GPU only, "
    "at your own risk).")
_INTRA_OP_THREADS = flags.DEFINE_integer(
    "intra_op_threads", 0, "Threads inside one op (0: TensorFlow's default, "
    "one per core).")
_INTER_OP_THREADS = flags.DEFINE_integer(
    "inter_op_threads", 0, "Ops run in parallel (0: TensorFlow's default).")
_STEPS_PER_CALL = flags.DEFINE_integer(
    "steps_per_call", 1, "Global steps inside one tf.function call (cuts "
    "per-step Python overhead for small networks; checkpoints are taken "
    "between calls).")

# ---- Checkpoints, logs, export ----------------------------------------------
_CHECKPOINT_EVERY_STEPS = flags.DEFINE_integer(
    "checkpoint_every_steps", 1000, "Save every N global steps (0: off).")
_CHECKPOINT_EVERY_SECS = flags.DEFINE_float(
    "checkpoint_every_secs", 600.0, "Save every T seconds (0: off).")
_CHECKPOINT_EVERY_COST = flags.DEFINE_float(
    "checkpoint_every_cost", 0.0, "Save whenever the summed compute cost "
    "crosses a multiple of this (paper §6; 0: off).")
_KEEP_CHECKPOINTS = flags.DEFINE_integer("keep_checkpoints", 5,
                                         "Checkpoints to keep.")
_LOG_EVERY_STEPS = flags.DEFINE_integer(
    "log_every_steps", 10, "Progress line and TensorBoard scalars interval.")
_IMAGE_SUMMARY_EVERY_STEPS = flags.DEFINE_integer(
    "image_summary_every_steps", 100, "Prediction images interval (0: off).")
_PROFILE_STEPS = flags.DEFINE_list(
    "profile_steps", [], "first,last global step to trace with the "
    "TensorBoard profiler.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data order and init.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "After training, write a SavedModel here (checked "
    "writable at start-up; a SavedModel already there is replaced, anything "
    "else is refused).")


class UsageError(ValueError):
  """An invalid flag or flag combination; the message says what to change."""


def _parse_map(flag, value_type) -> Dict[str, object]:
  from mtssl_tf.training import replicas  # pylint: disable=g-import-not-at-top
  try:
    return replicas.parse_task_map(flag.value, value_type, f"--{flag.name}")
  except ValueError as e:
    raise UsageError(str(e)) from None


def task_configs(tasks: List[str],
                 head_width_multiplier: float = 1.0) -> Dict[str, object]:
  """Each task's Config: its defaults, head widths scaled by
  ``head_width_multiplier``, then its --<task>.<field> flags; validated."""
  if not head_width_multiplier > 0:
    raise UsageError(f"--head_width_multiplier must be > 0, got "
                     f"{head_width_multiplier}.")
  for name in registry.names():
    if name in tasks:
      continue
    config = registry.get_module(name).Config
    given = sorted(config_flags.overrides_from_flags(name, config))
    if given:
      raise UsageError(
          f"--{name}.{given[0]} configures task {name!r}, which is not in "
          f"--tasks {tasks}; add {name} to --tasks or drop the flag.")
  configs = {}
  for t in tasks:
    config = registry.get_module(t).Config
    base = config()
    if head_width_multiplier != 1.0:
      if not hasattr(base, "scale_head"):
        raise UsageError(f"Task {t!r} has no scale_head: it does not support "
                         f"--head_width_multiplier; set its widths with its "
                         f"--{t}.<field> flags instead.")
      base = base.scale_head(head_width_multiplier)
    try:
      configs[t] = config_flags.from_flags(t, config, base=base)
    except (ValueError, TypeError) as e:
      raise UsageError(str(e)) from None
    try:
      if hasattr(configs[t], "validate"):
        configs[t].validate()
    except ValueError as e:
      raise UsageError(f"Task {t!r}: {e} Set it with --{t}.<field>=<value>."
                       ) from None
  return configs


def _check_paths(train, export_dir):
  """Paths that must exist or be writable, checked before any work."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if train.init_checkpoint and not tf.io.gfile.exists(
      train.init_checkpoint + ".index"):
    raise UsageError(
        f"--init_checkpoint {train.init_checkpoint!r} is not a checkpoint "
        f"(no {train.init_checkpoint}.index); give the prefix written by "
        f"tools/convert_slim_checkpoint.py (e.g. /tmp/rn101/model.ckpt).")
  if export_dir:
    from mtssl_tf import export  # pylint: disable=g-import-not-at-top
    try:
      # A previous export of this run (a SavedModel) is replaced; anything
      # else at that path is refused.
      export.check_export_dir(export_dir, overwrite=True)
    except ValueError as e:
      raise UsageError(f"--export_dir: {e}") from None


def build_configs():
  """Turns the flags into (trunk, task configs, data, train, export_dir)."""
  tasks = [t.strip() for t in _TASKS.value if t.strip()]
  if not tasks:
    raise UsageError("--tasks is empty; name at least one of "
                     f"{registry.names()}.")
  unknown = [t for t in tasks if t not in registry.names()]
  if unknown:
    raise UsageError(f"Unknown task(s) {unknown} in --tasks; registered tasks "
                     f"are {registry.names()}.")
  if len(set(tasks)) != len(tasks):
    raise UsageError(f"--tasks names a task twice: {tasks}.")
  if not _LASSO.value and (_LASSO_L1.value is not None or
                           _LASSO_INIT.value is not None):
    raise UsageError("--lasso_l1 / --lasso_init configure the lasso but "
                     "--lasso is off; add --lasso or drop them.")
  output_stride = _OUTPUT_STRIDE.value or None
  trunk = config_lib.TrunkConfig(
      depth=_DEPTH.value, output_stride=output_stride,
      base_width=_BASE_WIDTH.value, weight_decay=_WEIGHT_DECAY.value)
  from mtssl_tf.models import resnet_v2  # pylint: disable=g-import-not-at-top
  try:
    resnet_v2._check_config(trunk)  # pylint: disable=protected-access
  except ValueError as e:
    raise UsageError(str(e).replace("output_stride", "--output_stride")) from None

  image_data = config_lib.DataConfig(
      source=_IMAGE_SOURCE.value, path=_IMAGE_PATH.value,
      tfds_name=_TFDS_NAME.value, tfds_split=_TFDS_SPLIT.value,
      tfds_data_dir=_TFDS_DATA_DIR.value,
      tfds_manual_dir=_TFDS_MANUAL_DIR.value)
  motion_data = config_lib.DataConfig(source=_MOTION_SOURCE.value,
                                      path=_MOTION_PATH.value)
  for flag, data in ((_IMAGE_PATH, image_data), (_MOTION_PATH, motion_data)):
    if data.source in ("folder", "tfrecord") and not data.path:
      raise UsageError(f"--{flag.name} is required with source "
                       f"{data.source!r}.")
  if image_data.source == "tfds" and not image_data.tfds_name:
    raise UsageError("--image_source=tfds needs --tfds_name.")
  # Each task reads the source of its kind (tasks/base.py SOURCE_KINDS).
  data_of_kind = {base.IMAGES: image_data, base.VIDEO_FRAMES: motion_data}
  data = {t: data_of_kind[registry.get_module(t).Task.source_kind]
          for t in tasks}

  profile = None
  if _PROFILE_STEPS.value:
    try:
      first, last = (int(v) for v in _PROFILE_STEPS.value)
    except ValueError:
      raise UsageError("--profile_steps takes two integers: first,last.") from None
    if not 0 <= first <= last:
      raise UsageError("--profile_steps: need 0 <= first <= last.")
    profile = (first, last)

  maps = {"task_batch_size": _parse_map(_TASK_BATCH_SIZE, int),
          "replicas_per_task": _parse_map(_REPLICAS_PER_TASK, int),
          "steps_per_cycle": _parse_map(_STEPS_PER_CYCLE, int),
          "task_step_cost": _parse_map(_TASK_STEP_COST, float),
          "task_learning_rate": _parse_map(_TASK_LEARNING_RATE, float)}
  for name, values in maps.items():
    extra = sorted(set(values) - set(tasks))
    if extra:
      raise UsageError(f"--{name} names {extra}, which are not in --tasks "
                       f"{tasks}.")
    if any(v <= 0 for v in values.values()):
      raise UsageError(f"--{name} values must be positive: {values}.")
  if _STEPS_PER_CALL.value < 1:
    raise UsageError("--steps_per_call must be >= 1.")
  if _INTRA_OP_THREADS.value < 0 or _INTER_OP_THREADS.value < 0:
    raise UsageError("--intra_op_threads and --inter_op_threads must be >= 0 "
                     "(0: TensorFlow's default).")
  if _MAX_STEPS.value < 0 or _BATCH_SIZE.value < 1:
    raise UsageError("--max_steps must be >= 0 and --batch_size >= 1.")

  train = config_lib.TrainConfig(
      model_dir=_MODEL_DIR.value or os.path.join("runs", "_".join(tasks)),
      max_steps=_MAX_STEPS.value, batch_size=_BATCH_SIZE.value,
      learning_rate=_LEARNING_RATE.value, lasso=_LASSO.value,
      lasso_l1=0.01 if _LASSO_L1.value is None else _LASSO_L1.value,
      lasso_init=_LASSO_INIT.value or "last",
      checkpoint_every_steps=_CHECKPOINT_EVERY_STEPS.value,
      checkpoint_every_secs=_CHECKPOINT_EVERY_SECS.value,
      checkpoint_every_cost=_CHECKPOINT_EVERY_COST.value,
      keep_checkpoints=_KEEP_CHECKPOINTS.value,
      log_every_steps=max(1, _LOG_EVERY_STEPS.value),
      image_summary_every_steps=_IMAGE_SUMMARY_EVERY_STEPS.value,
      profile_steps=profile, seed=_SEED.value,
      init_checkpoint=_INIT_CHECKPOINT.value,
      jit_compile=_JIT_COMPILE.value, mixed_precision=_MIXED_PRECISION.value,
      intra_op_threads=_INTRA_OP_THREADS.value,
      inter_op_threads=_INTER_OP_THREADS.value,
      steps_per_call=_STEPS_PER_CALL.value, **maps)
  try:
    train.validate()
  except ValueError as e:
    raise UsageError(f"--{e}") from None
  configs = task_configs(tasks, _HEAD_WIDTH_MULTIPLIER.value)
  _check_paths(train, _EXPORT_DIR.value)
  return trunk, configs, data, train, _EXPORT_DIR.value


def run(argv):
  """Validates flags, trains, and exports."""
  del argv
  # TensorFlow's chatter (SavedModel internals, ...) drowns the progress
  # lines: TF errors only, unless --tf_logging or --verbosity asks for more.
  quiet.quiet_absl_logging()
  try:
    trunk, task_cfgs, data, train_cfg, export_dir = build_configs()
    # Logical CPU devices must exist before TensorFlow initialises.
    from mtssl_tf.training import replicas  # pylint: disable=g-import-not-at-top
    if _STRATEGY.value == "parameter_server":
      replicas.serve_if_not_chief()  # workers and ps serve here until killed
    # Thread pools, too, must be set before TensorFlow initialises.
    from mtssl_tf.training import speed  # pylint: disable=g-import-not-at-top
    speed.configure_threads(train_cfg.intra_op_threads,
                            train_cfg.inter_op_threads)
    strategy = replicas.make_strategy(_STRATEGY.value, _NUM_CPU_DEVICES.value)
    tasks = {t: registry.build(t, c, base.TrunkFacts.of(trunk))
             for t, c in task_cfgs.items()}
    if _STRATEGY.value == "parameter_server":
      from mtssl_tf.training import parameter_server  # pylint: disable=g-import-not-at-top
      result = parameter_server.train(trunk, tasks, data, train_cfg,
                                      strategy=strategy)
    else:
      from mtssl_tf.training import loop  # pylint: disable=g-import-not-at-top
      result = loop.train(trunk, tasks, data, train_cfg, strategy=strategy)
    if export_dir:
      from mtssl_tf import export  # pylint: disable=g-import-not-at-top
      path = export.export(export.module_from_network(result.network),
                           export_dir, overwrite=True)
      print(f"Exported SavedModel to {path}")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except RuntimeError as e:  # NonFiniteLossError and strategy failures
    print(f"error: {e}", file=sys.stderr)
    return 3
  print(f"Done: {result.state}; checkpoint {result.checkpoint}; TensorBoard: "
        f"tensorboard --logdir {train_cfg.model_dir}")
  return 0


def main():
  app.run(run)


if __name__ == "__main__":
  main()
