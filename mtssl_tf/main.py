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

import dataclasses
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

# ---- Training: every TrainConfig field is a flag of its name -------------
# (declared once, in mtssl_tf/config.py, with its help text and default;
# e.g. --max_steps=100, --lasso, --replicas_per_task=rp:2,col:2).
config_flags.define_flags("", config_lib.TrainConfig)

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

# ---- Export ---------------------------------------------------------------
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "After training, write a SavedModel here (checked "
    "writable at start-up; a SavedModel already there is replaced, anything "
    "else is refused).")


class UsageError(ValueError):
  """An invalid flag or flag combination; the message says what to change."""


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


def train_config(tasks: List[str]) -> config_lib.TrainConfig:
  """TrainConfig from its flags (only those given override its defaults),
  with model_dir defaulting to runs/<tasks>; validated."""
  try:
    given = config_flags.overrides_from_flags("", config_lib.TrainConfig)
  except ValueError as e:
    raise UsageError(str(e)) from None
  if not given.get("lasso") and {"lasso_l1", "lasso_init"} & set(given):
    raise UsageError("--lasso_l1 / --lasso_init configure the lasso but "
                     "--lasso is off; add --lasso or drop them.")
  given.setdefault("model_dir", os.path.join("runs", "_".join(tasks)))
  train = config_lib.TrainConfig(**given)
  # Per-task maps may only name tasks of this run.
  for field in dataclasses.fields(train):
    values = getattr(train, field.name)
    extra = sorted(set(values) - set(tasks)) if isinstance(values, dict) else []
    if extra:
      raise UsageError(f"--{field.name} names {extra}, which are not in "
                       f"--tasks {tasks}.")
  try:
    train.validate()
  except ValueError as e:
    raise UsageError(f"--{e}") from None
  return train


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

  train = train_config(tasks)
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
