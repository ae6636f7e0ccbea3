"""What an evaluation evaluates: a trunk's weights, from one of four sources.

  "model_dir"        a training run of ``python -m mtssl_tf.main``: its latest
                     checkpoint (or a checkpoint prefix inside it) and its
                     ``run.json`` (which trunk to build). The pre-training
                     tasks' lasso rows, if any, are read too (Figure 5).
                     A run of the supervised task (``--tasks=sup``, the
                     "ImageNet labels" row trained here) also gives block 4
                     and the post-norm, from its head, and is evaluated at
                     the evaluation's output stride like a converted
                     TF-Slim checkpoint.
  "saved_model"      a SavedModel of ``mtssl_tf.export`` (its variables are a
                     TF2 checkpoint of the export module, whose ``trunk`` and
                     ``lasso`` attributes are read like a training
                     checkpoint; ``mtssl_tf_run.json`` beside them says which
                     trunk to build). The export of a supervised run also
                     has the module's ``block4`` (block 4 and the post-norm)
                     and, like its model_dir, is evaluated at the
                     evaluation's output stride.
  "slim_checkpoint"  a TF-Slim ``resnet_v2`` checkpoint converted by
                     ``tools/convert_slim_checkpoint.py`` (the paper's
                     "ImageNet labels" row; block 4 too if it was converted
                     with it).
  "random_init"      a randomly initialised trunk (the "No pre-training" row),
                     seeded.

``load(spec)`` validates the source (a clear ValueError otherwise) and holds
the source trunk; ``Pretrained.build_trunk(...)`` returns a fresh trunk in the
variant an evaluation needs (block 4 for detection, another output stride)
with every layer the source has copied in by layer name. Layer names follow
TF-Slim scopes and do not depend on the output stride (atrous rates change,
weights do not), so stride-8 pre-training transfers to a stride-16 detector.
Block 4 stays randomly initialised unless the source has it, as the paper's
detection set-up prescribes for self-supervised trunks; ``build_trunk`` then
logs a warning, and results.json's ``evaluated.block4`` says "transferred"
or "random" (whether an evaluation that builds block 4 gets the source's).
"""

import dataclasses
import json
import os
import sys
from typing import Callable, Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf import export
from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.models import resnet_v2
from mtssl_tf.models import slim_conversion
from mtssl_tf.training import checkpointing

SOURCES = ("model_dir", "saved_model", "slim_checkpoint", "random_init")
AUTO_BN_IMAGES = 1024  # --recompute_bn_stats=-1 on stale statistics


def _warn(message: str) -> None:
  print(message, file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class PretrainedSpec:
  """Where the weights come from.

  Attributes:
    source: one of ``SOURCES``.
    path: model_dir / checkpoint prefix, SavedModel directory, or converted
      checkpoint prefix (None for "random_init").
    trunk: the trunk to build for "random_init" (other sources say their own).
    seed: initialisation seed of "random_init".
  """
  source: str
  path: Optional[str] = None
  trunk: config_lib.TrunkConfig = config_lib.TrunkConfig()
  seed: int = 0


@dataclasses.dataclass
class Pretrained:
  """A loaded source trunk (see the module docstring).

  Attributes:
    spec: where it came from.
    trunk_config: the source trunk's configuration.
    trunk: the source trunk, weights loaded (do not train it: build_trunk).
    checkpoint: the file read (None for random_init).
    pretrain_alpha: task -> its normalised pre-training lasso row, if any.
    bn_updates: batch-norm moving-average updates the trunk's statistics
      have seen (training steps summed over tasks), None if unknown.
    block4_note: why a source that should have block 4 lacks it (said when
      an evaluation builds block 4 randomly).
  """
  spec: PretrainedSpec
  trunk_config: config_lib.TrunkConfig
  trunk: tf_keras.Model
  checkpoint: Optional[str] = None
  pretrain_alpha: Dict[str, List[float]] = dataclasses.field(
      default_factory=dict)
  bn_updates: Optional[int] = None
  block4_note: str = ""

  @property
  def has_block4(self) -> bool:
    """Whether the source trunk holds block 4 and the post-norm."""
    return any(layer.name == "postnorm" for layer in self.trunk.layers)

  def describe(self) -> dict:
    """JSON-friendly description for results.json."""
    return {"source": self.spec.source, "path": self.spec.path,
            "checkpoint": self.checkpoint,
            "trunk": dataclasses.asdict(self.trunk_config),
            "bn_updates": self.bn_updates,
            "pretrain_alpha": self.pretrain_alpha,
            "block4": "transferred" if self.has_block4 else "random"}

  @property
  def name(self) -> str:
    """Short name for directories and table rows."""
    if self.spec.source == "random_init":
      return "random_init"
    path = os.path.normpath(self.spec.path or "")
    base = os.path.basename(path) or "trunk"
    return base.replace(".", "_")

  def bn_statistics_stale(self) -> bool:
    """True if the moving statistics still weigh their initial values >10%.

    A moving average with decay d keeps d**n of its initial value after n
    updates; the un-normalised ResNet-v2 residual stream then grows unit by
    unit in inference mode (SPEC.md "Evaluation facts").
    """
    if self.spec.source == "random_init":
      return True
    if self.bn_updates is None:
      return False
    return self.trunk_config.batch_norm_decay ** self.bn_updates > 0.1

  def bn_images(self, requested: int, auto: int = AUTO_BN_IMAGES,
                warn: Callable[[str], None] = _warn) -> int:
    """Images to re-estimate the batch-norm statistics on, from the flag
    ``--recompute_bn_stats`` (``evaluation/bn_stats.py``).

    Args:
      requested: the flag's value; < 0 is "auto": ``auto`` images if the
        statistics are stale (``bn_statistics_stale``: always for
        random_init), else 0.
      auto: images used by "auto".
      warn: where the note (auto on stale statistics) or the warning (0 on
        stale statistics: inference-mode activations may explode) goes.
    """
    stale = self.bn_statistics_stale()
    what = (f"the batch-norm statistics of {self.name} have seen "
            f"{self.bn_updates} updates and still weigh their initial values "
            f">10%")
    if requested < 0:
      if stale and self.spec.source != "random_init":
        warn(f"note: {what}: re-estimating them on {auto} training images "
             f"(--recompute_bn_stats=0 keeps them).")
      return auto if stale else 0
    if requested == 0 and stale:
      warn(f"warning: {what}; in inference mode its activations may "
           f"explode. Use --recompute_bn_stats={auto}.")
    return requested

  def build_trunk(self, include_block4: bool = False,
                  output_stride: Optional[int] = -1) -> tf_keras.Model:
    """A new trunk with the source's weights (see the module docstring).

    Args:
      include_block4: also build block 4 and the post-norm (random unless the
        source has them).
      output_stride: 8, 16 or None; -1 keeps the source's.
    """
    cfg = dataclasses.replace(
        self.trunk_config, include_block4=include_block4,
        output_stride=(self.trunk_config.output_stride if output_stride == -1
                       else output_stride))
    if (include_block4 and not self.has_block4 and
        self.spec.source != "random_init"):
      logging.warning(
          "%s (%s) has no block 4: block 4 and the post-norm are randomly "
          "initialised (seed %d), as the paper's detection set-up does for "
          "self-supervised trunks.%s", self.name, self.spec.source,
          self.spec.seed, " " + self.block4_note if self.block4_note else "")
    tf_keras.utils.set_random_seed(self.spec.seed)
    trunk = resnet_v2.build_trunk(cfg)
    copy_weights(self.trunk, trunk)
    return trunk


def copy_weights(source: tf_keras.Model, target: tf_keras.Model) -> int:
  """Copies every layer of ``source`` into the same-named layer of ``target``.

  Returns the number of layers copied. Block 4 and the post-norm of a source
  that has them are skipped when ``target`` lacks them; any other layer of
  ``source`` with weights but no counterpart in ``target`` is a ValueError.
  """
  target_layers = {layer.name: layer for layer in target.layers}
  copied = 0
  for layer in source.layers:
    weights = layer.get_weights()
    if not weights:
      continue
    if layer.name not in target_layers:
      if layer.name.startswith(("block4/", "postnorm")):
        continue
      raise ValueError(f"The evaluated trunk has layer {layer.name!r}, which "
                       f"the evaluation's trunk lacks.")
    target_layers[layer.name].set_weights(weights)
    copied += 1
  return copied


def _read_run_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"Cannot read {path}: {e}") from None


def _lasso_layers(info: dict, trunk_config) -> Dict[str, lasso_lib.LassoCombine]:
  if not info.get("lasso"):
    return {}
  units = resnet_v2.unit_names(trunk_config.depth)
  channels = resnet_v2.block_output_channels(trunk_config.base_width)
  layers = {}
  for task in info.get("tasks", []):
    layer = lasso_lib.LassoCombine(name=f"lasso_{task}")
    layer([tf_keras.Input((None, None, channels)) for _ in units])
    layers[task] = layer
  return layers


def _restore(objects: dict, prefix: str, what: str) -> None:
  try:
    status = tf.train.Checkpoint(**objects).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(f"{what} {prefix!r} does not fit the trunk its run "
                     f"describes ({type(e).__name__}: {str(e)[:300]}).") from None


def _load_model_dir(spec: PretrainedSpec) -> Pretrained:
  path = spec.path
  if os.path.isdir(path):
    model_dir, prefix = path, tf.train.latest_checkpoint(path)
    if prefix is None:
      raise ValueError(f"--model_dir {path!r} holds no checkpoint yet "
                       f"(train first, or wait for the first save).")
  elif tf.io.gfile.exists(path + ".index"):
    model_dir, prefix = os.path.dirname(path) or ".", path
  else:
    raise ValueError(f"--model_dir {path!r} is neither a training directory "
                     f"nor a checkpoint prefix in one.")
  run_file = os.path.join(model_dir, checkpointing.RUN_FILE)
  if not os.path.exists(run_file):
    raise ValueError(f"{model_dir!r} has no {checkpointing.RUN_FILE}: not a "
                     f"mtssl_tf training directory.")
  info = _read_run_json(run_file)
  trunk_config = config_lib.TrunkConfig(**info["trunk"])
  trunk = resnet_v2.build_trunk(trunk_config)
  lasso = _lasso_layers(info, trunk_config)
  _restore({"trunk": trunk, "lasso": lasso}, prefix, "Checkpoint")
  alpha = {t: np.asarray(layer.normalized_alpha()).tolist()
           for t, layer in lasso.items()}
  block4_task = export.block4_head_task(info.get("tasks", []))
  if block4_task:
    trunk = _with_block4(trunk, trunk_config, export.block4_from_checkpoint(
        prefix, block4_task, trunk_config))
    # A supervised network is evaluated like a converted TF-Slim one: at the
    # evaluation's stride (--output_stride), whatever stride it trained at.
    trunk_config = dataclasses.replace(
        trunk_config, output_stride=spec.trunk.output_stride)
  return Pretrained(spec, trunk_config, trunk, checkpoint=prefix,
                    pretrain_alpha=alpha, bn_updates=export.task_steps(prefix))


def _with_block4(trunk: tf_keras.Model, trunk_config,
                 block4: tf_keras.Model) -> tf_keras.Model:
  """``trunk`` (blocks 1-3) and ``block4`` (``export.block4_model``: block 4
  and the post-norm, layers named as the trunk's) as one trunk."""
  full = resnet_v2.build_trunk(dataclasses.replace(trunk_config,
                                                   include_block4=True))
  copy_weights(trunk, full)
  copy_weights(block4, full)
  return full


def _load_saved_model(spec: PretrainedSpec) -> Pretrained:
  path = spec.path
  run_file = os.path.join(path, export.RUN_FILE)
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    raise ValueError(f"--saved_model {path!r} is not a SavedModel directory "
                     f"(no saved_model.pb).")
  if not os.path.exists(run_file):
    raise ValueError(f"--saved_model {path!r} has no {export.RUN_FILE} "
                     f"(not written by mtssl_tf.export, or by an older "
                     f"version): re-export it with python -m mtssl_tf.export.")
  info = _read_run_json(run_file)
  trunk_config = config_lib.TrunkConfig(**info["trunk"])
  trunk = resnet_v2.build_trunk(trunk_config)
  lasso = _lasso_layers(info, trunk_config)
  objects = {"trunk": trunk, "lasso": lasso}
  if info.get("block4"):  # export.py: the module's block4 model
    objects["block4"] = export.block4_model(trunk_config)
  prefix = os.path.join(path, "variables", "variables")
  _restore(objects, prefix, "SavedModel variables")
  alpha = {t: np.asarray(layer.normalized_alpha()).tolist()
           for t, layer in lasso.items()}
  note = ""
  if "block4" in objects:
    trunk = _with_block4(trunk, trunk_config, objects["block4"])
  supervised = export.block4_head_task(info.get("tasks", []))
  if supervised:
    # As its model_dir (_load_model_dir): the evaluation's stride.
    trunk_config = dataclasses.replace(
        trunk_config, output_stride=spec.trunk.output_stride)
    if "block4" not in objects:
      note = (f"Its run trained block 4 in the {supervised!r} head, but this "
              f"export predates block-4 export: re-export it with "
              f"python -m mtssl_tf.export --checkpoint=<model_dir>.")
  return Pretrained(spec, trunk_config, trunk, checkpoint=prefix,
                    pretrain_alpha=alpha, bn_updates=info.get("bn_updates"),
                    block4_note=note)


def _load_slim(spec: PretrainedSpec) -> Pretrained:
  prefix = spec.path
  if not tf.io.gfile.exists(prefix + ".index") or not os.path.exists(
      prefix + ".json"):
    raise ValueError(
        f"--slim_checkpoint {prefix!r} is not a converted checkpoint (needs "
        f"{prefix}.index and {prefix}.json): convert the TF-Slim checkpoint "
        f"first with python -m tools.convert_slim_checkpoint "
        f"--input=resnet_v2_101.ckpt --output={prefix}.")
  metadata = slim_conversion.read_metadata(prefix)
  converted = config_lib.TrunkConfig(**metadata["trunk_config"])
  trunk = resnet_v2.build_trunk(converted)
  slim_conversion.restore_trunk(trunk, prefix)
  # Evaluations choose their own stride; the converted weights fit any.
  trunk_config = dataclasses.replace(converted, include_block4=False,
                                     output_stride=spec.trunk.output_stride)
  return Pretrained(spec, trunk_config, trunk, checkpoint=prefix)


def _random(spec: PretrainedSpec) -> Pretrained:
  tf_keras.utils.set_random_seed(spec.seed)
  trunk = resnet_v2.build_trunk(spec.trunk)
  return Pretrained(spec, spec.trunk, trunk, bn_updates=0)


def load(spec: PretrainedSpec) -> Pretrained:
  """Loads ``spec`` (see the module docstring); ValueError if unusable."""
  if spec.source not in SOURCES:
    raise ValueError(f"Unknown source {spec.source!r}; use one of {SOURCES}.")
  if spec.source != "random_init" and not spec.path:
    raise ValueError(f"--{spec.source} needs a path.")
  return {"model_dir": _load_model_dir, "saved_model": _load_saved_model,
          "slim_checkpoint": _load_slim, "random_init": _random}[spec.source](
              spec)
