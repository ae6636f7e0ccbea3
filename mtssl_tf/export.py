r"""SavedModel export of the trained trunk (and lasso combinations).

The SavedModel is written through a ``tf.Module`` with explicit signatures
(as Model Garden's ``official/core/export_base.py``):

  features         uint8 images ``[N, H, W, 3]`` (0..255 RGB)
  features_float   float32 images ``[N, H, W, 3]`` already in the trunk's
                   [-1, 1] range
      -> {"block3": [N, h, w, C], "block3_unit_1": ..., ..., "block3_unit_M":
          ...} (every block-3 unit; "/" in endpoint names becomes "_")
  lasso_<task>     (lasso runs only) uint8 images -> {"representation": the
                   task's LassoCombine of the block-3 units}
  features_block4  (runs with block 4 only) uint8 images -> {"block4": [N, h,
                   w, 32 b] block 4 after the post-norm, "pooled": [N, 32 b]
                   its global average (the classifier's input)}

``serving_default`` is ``features``. ``mtssl_tf_run.json`` beside
``saved_model.pb`` records the trunk configuration (as the training run's
run.json), so that ``python -m mtssl_tf.evaluate --saved_model=...`` can
rebuild a trainable trunk from the export.

Block 4: a run with a task whose head begins with the trunk's block 4
(tasks/base.py ``BLOCK4_IN_HEAD``: the supervised "ImageNet labels" task,
paper §5) exports that block 4 and post-norm too, as the module's ``block4``
model (layer names ``block4/unit_u/...`` and ``postnorm``, as
``resnet_v2.build_trunk(include_block4=True)`` names them, without the
head's ``<task>_head/`` prefix). The run file then says ``"block4":
{"from_task": "<task>"}`` (otherwise ``"block4": null``) and
``evaluation/pretrained.py`` transfers it to detection. Other heads and the
classifier are not exported. Standalone use::

  python -m mtssl_tf.export --checkpoint=runs/rp_col --export_dir=/tmp/sm

where --checkpoint is a training model_dir (its latest checkpoint) or a
checkpoint prefix inside one (run.json there says how to rebuild the trunk).
The export is written to a temporary directory and renamed, so an interrupted
export never looks complete; it gets the permissions of any directory the
user creates (the umask's), so other accounts can read it when the umask
allows. An existing --export_dir is refused unless --overwrite is given, and
even then only a SavedModel (or an empty directory) is replaced.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import json
import os
import shutil
import sys
import tempfile
from typing import Dict, Mapping, Optional, Sequence

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import base
from mtssl_tf.training import checkpointing

# Beside saved_model.pb: the trunk configuration (run.json's fields).
RUN_FILE = "mtssl_tf_run.json"


def _output_name(endpoint: str) -> str:
  return endpoint.replace("/", "_")


def block4_head_task(tasks: Sequence[str]) -> Optional[str]:
  """The first of ``tasks`` whose head holds the trunk's block 4 (its module
  sets tasks/base.py ``BLOCK4_IN_HEAD``), or None."""
  from mtssl_tf.tasks import registry  # pylint: disable=g-import-not-at-top
  for task in tasks:
    if task in registry.names() and getattr(registry.get_module(task),
                                            "BLOCK4_IN_HEAD", False):
      return task
  return None


def block4_model(trunk_config: config_lib.TrunkConfig,
                 prefix: str = "") -> tf_keras.Model:
  """``[N, h, w, 16 b]`` block-3 features -> ``[N, h, w, 32 b]`` block 4
  after the post-norm: ``resnet_v2.block4`` as a model, layers named
  ``<prefix>block4/...`` and ``<prefix>postnorm``."""
  channels = resnet_v2.block_output_channels(trunk_config.base_width)
  features = tf_keras.Input((None, None, channels), name="block3")
  return tf_keras.Model(features, resnet_v2.block4(features, trunk_config,
                                                   prefix=prefix),
                        name=prefix.replace("/", "_") + "block4")


def block4_from_head(head: tf_keras.Model, task: str,
                     trunk_config: config_lib.TrunkConfig) -> tf_keras.Model:
  """A ``block4_model`` holding a copy of the block 4 of ``task``'s head
  (layers ``<task>_head/block4/...``, ``<task>_head/postnorm``)."""
  model = block4_model(trunk_config)
  for layer in model.layers:
    if layer.weights:
      layer.set_weights(head.get_layer(f"{task}_head/{layer.name}")
                        .get_weights())
  return model


def block4_from_checkpoint(prefix: str, task: str,
                           trunk_config: config_lib.TrunkConfig
                           ) -> tf_keras.Model:
  """A ``block4_model`` read from the head of ``task`` in training
  checkpoint ``prefix``.

  The head's first layers are ``resnet_v2.block4`` with prefix
  ``<task>_head/``; the same builder makes a model whose layers are tracked
  in the checkpoint exactly as the head's first ones
  (``heads/<task>/layer_with_weights-i``); the rest of the head (pooling,
  logits) is not read. Raises ValueError if the checkpoint does not fit.
  """
  head_prefix = f"{task}_head/"
  stub = block4_model(trunk_config, prefix=head_prefix)
  try:
    status = tf.train.Checkpoint(heads={task: stub}).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(f"The {task} head of checkpoint {prefix!r} does not fit "
                     f"the block 4 of the trunk its run describes "
                     f"({type(e).__name__}: {str(e)[:300]}).") from None
  model = block4_model(trunk_config)
  for layer in model.layers:
    if layer.weights:
      layer.set_weights(stub.get_layer(head_prefix + layer.name).get_weights())
  return model


def task_steps(prefix: str) -> Optional[int]:
  """Training steps summed over tasks in checkpoint ``prefix`` (the
  batch-norm updates its trunk has seen), None if it does not say."""
  try:
    names = [n for n, _ in tf.train.list_variables(prefix)]
  except (tf.errors.OpError, ValueError):
    return None
  keys = [n for n in names if n.startswith("state/task_steps/")
          and n.endswith("VARIABLE_VALUE")]
  if not keys:
    return None
  return int(sum(int(tf.train.load_variable(prefix, k)) for k in keys))


class FeatureModule(tf.Module):
  """Serving module: trunk endpoints, per-task lasso representations and,
  for runs that trained it, block 4."""

  def __init__(self, trunk: tf_keras.Model, unit_names,
               lasso: Optional[Mapping[str, lasso_lib.LassoCombine]] = None,
               run_info: Optional[dict] = None,
               block4: Optional[tf_keras.Model] = None):
    super().__init__(name="mtssl_features")
    self.trunk = trunk
    self.unit_names = list(unit_names)
    self.lasso = dict(lasso or {})
    # A block4_model; its variables are saved under "block4".
    self.block4 = block4
    # What trunk this is (run.json's fields), written beside the SavedModel as
    # RUN_FILE so that evaluations can rebuild a trainable trunk from it.
    self._run_info = dict(run_info or {})

  def _endpoints(self, images):
    endpoints = self.trunk(images, training=False)
    outputs = {"block3": endpoints["block3"]}
    outputs.update({_output_name(u): endpoints[u] for u in self.unit_names})
    return outputs

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def features(self, images):
    return self._endpoints(base.to_trunk_range(images))

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
  def features_float(self, images):
    return self._endpoints(images)

  def lasso_signature(self, task: str):
    layer = self.lasso[task]

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def representation(images):
      endpoints = self.trunk(base.to_trunk_range(images), training=False)
      return {"representation": layer([endpoints[u] for u in self.unit_names])}

    return representation

  def block4_signature(self):

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def features_block4(images):
      block3 = self.trunk(base.to_trunk_range(images),
                          training=False)["block3"]
      block4 = self.block4(block3, training=False)
      return {"block4": block4, "pooled": tf.reduce_mean(block4, [1, 2])}

    return features_block4

  def signatures(self) -> Dict[str, object]:
    signatures = {"serving_default": self.features,
                  "features": self.features,
                  "features_float": self.features_float}
    for task in self.lasso:
      signatures[f"lasso_{task}"] = self.lasso_signature(task)
    if self.block4 is not None:
      signatures["features_block4"] = self.block4_signature()
    return signatures


def check_export_dir(export_dir: str, overwrite: bool = False) -> None:
  """Raises ValueError unless a SavedModel can be written at ``export_dir``.

  The nearest existing ancestor must be a writable directory. An existing
  ``export_dir`` is refused without ``overwrite``, and with it unless it is a
  SavedModel directory (holds saved_model.pb) or empty.
  """
  export_dir = os.path.abspath(export_dir)
  if os.path.lexists(export_dir):
    if not overwrite:
      raise ValueError(f"{export_dir!r} already exists; pass --overwrite to "
                       f"replace it, or choose another directory.")
    replaceable = os.path.isdir(export_dir) and (
        not os.listdir(export_dir) or
        os.path.exists(os.path.join(export_dir, "saved_model.pb")))
    if not replaceable:
      raise ValueError(f"{export_dir!r} exists and is not a SavedModel "
                       f"directory (no saved_model.pb); refusing to replace "
                       f"it. Choose another directory.")
  ancestor = os.path.dirname(export_dir)
  while not os.path.lexists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not (os.path.isdir(ancestor) and
          os.access(ancestor, os.W_OK | os.X_OK)):
    raise ValueError(f"Cannot write the export to {export_dir!r}: "
                     f"{ancestor!r} is not a writable directory.")


def export(module: FeatureModule, export_dir: str,
           overwrite: bool = False) -> str:
  """Writes ``module`` as a SavedModel at ``export_dir`` (atomically).

  Raises:
    ValueError: ``export_dir`` exists and ``overwrite`` is False (or it is
      not a SavedModel), or it cannot be written.
  """
  check_export_dir(export_dir, overwrite)
  export_dir = os.path.abspath(export_dir)
  parent = os.path.dirname(export_dir)
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export_tmp_", dir=parent)
  except OSError as e:
    raise ValueError(f"Cannot write the export to {export_dir!r}: {e}") from None
  try:
    # mkdtemp makes 0700; the export is shared like any new directory.
    os.chmod(tmp, checkpointing.umask_mode(0o777))
    tf.saved_model.save(module, tmp, signatures=module.signatures())
    if module._run_info:  # pylint: disable=protected-access
      with open(os.path.join(tmp, RUN_FILE), "w", encoding="utf-8") as f:
        json.dump(module._run_info, f, indent=2, sort_keys=True)  # pylint: disable=protected-access
    if os.path.exists(export_dir):
      shutil.rmtree(export_dir)
    os.replace(tmp, export_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return export_dir


def _with_block4(info: dict, task: Optional[str]) -> dict:
  return dict(info, block4={"from_task": task} if task else None)


def module_from_network(network) -> FeatureModule:
  """A FeatureModule sharing the trunk and lasso variables of a
  MultiTaskNetwork (block 4, if a head holds it, is copied)."""
  info = checkpointing.run_info(network.task_names, network.trunk_config,
                                bool(network.lasso))
  task = block4_head_task(network.task_names)
  block4 = (block4_from_head(network.heads[task], task, network.trunk_config)
            if task else None)
  return FeatureModule(network.trunk, network.unit_names, network.lasso,
                       run_info=_with_block4(info, task), block4=block4)


def _resolve_checkpoint(path: str):
  """(model_dir, checkpoint prefix) for a model_dir or a prefix in one."""
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise ValueError(f"{path!r} holds no checkpoint.")
    return path, prefix
  if not tf.io.gfile.exists(path + ".index"):
    raise ValueError(f"{path!r} is neither a model_dir nor a checkpoint "
                     f"prefix (no {path}.index).")
  return os.path.dirname(path) or ".", path


def module_from_checkpoint(path: str) -> FeatureModule:
  """Rebuilds trunk (and lasso layers) of a training run and restores them."""
  model_dir, prefix = _resolve_checkpoint(path)
  run_file = os.path.join(model_dir, checkpointing.RUN_FILE)
  if not os.path.exists(run_file):
    raise ValueError(f"{model_dir!r} has no {checkpointing.RUN_FILE}: not a "
                     f"mtssl_tf training directory.")
  with open(run_file, encoding="utf-8") as f:
    info = json.load(f)
  trunk_config = config_lib.TrunkConfig(**info["trunk"])
  trunk = resnet_v2.build_trunk(trunk_config)
  units = resnet_v2.unit_names(trunk_config.depth)
  lasso = {}
  if info["lasso"]:
    channels = resnet_v2.block_output_channels(trunk_config.base_width)
    for task in info["tasks"]:
      layer = lasso_lib.LassoCombine(name=f"lasso_{task}")
      layer([tf_keras.Input((None, None, channels)) for _ in units])
      lasso[task] = layer
  status = tf.train.Checkpoint(trunk=trunk, lasso=lasso).read(prefix)
  status.expect_partial().assert_existing_objects_matched()
  task = block4_head_task(info["tasks"])
  block4 = (block4_from_checkpoint(prefix, task, trunk_config) if task
            else None)
  info = _with_block4(info, task)
  steps = task_steps(prefix)
  if steps is not None:
    info["bn_updates"] = steps
  return FeatureModule(trunk, units, lasso, run_info=info, block4=block4)


def main(argv=None):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("checkpoint", None,
                      "Training model_dir or checkpoint prefix to export.")
  flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing SavedModel at "
                    "--export_dir (otherwise an existing path is refused).")
  flags.mark_flags_as_required(["checkpoint", "export_dir"])

  def run(argv):
    del argv
    quiet.quiet_absl_logging()
    try:
      check_export_dir(flags.FLAGS.export_dir, flags.FLAGS.overwrite)
      module = module_from_checkpoint(flags.FLAGS.checkpoint)
      path = export(module, flags.FLAGS.export_dir, flags.FLAGS.overwrite)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    print(f"Exported SavedModel to {path} with signatures "
          f"{sorted(module.signatures())}")
    return 0

  app.run(run, argv=argv)


if __name__ == "__main__":
  main()
