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

``serving_default`` is ``features``. ``mtssl_tf_run.json`` beside
``saved_model.pb`` records the trunk configuration (as the training run's
run.json), so that ``python -m mtssl_tf.evaluate --saved_model=...`` can
rebuild a trainable trunk from the export. Standalone use::

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
from typing import Dict, Mapping, Optional

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


class FeatureModule(tf.Module):
  """Serving module: trunk endpoints and per-task lasso representations."""

  def __init__(self, trunk: tf_keras.Model, unit_names,
               lasso: Optional[Mapping[str, lasso_lib.LassoCombine]] = None,
               run_info: Optional[dict] = None):
    super().__init__(name="mtssl_features")
    self.trunk = trunk
    self.unit_names = list(unit_names)
    self.lasso = dict(lasso or {})
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

  def signatures(self) -> Dict[str, object]:
    signatures = {"serving_default": self.features,
                  "features": self.features,
                  "features_float": self.features_float}
    for task in self.lasso:
      signatures[f"lasso_{task}"] = self.lasso_signature(task)
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


def module_from_network(network) -> FeatureModule:
  """A FeatureModule sharing the variables of a MultiTaskNetwork."""
  info = checkpointing.run_info(network.task_names, network.trunk_config,
                                bool(network.lasso))
  return FeatureModule(network.trunk, network.unit_names, network.lasso,
                       run_info=info)


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
  return FeatureModule(trunk, units, lasso, run_info=info)


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
