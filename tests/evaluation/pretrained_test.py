"""Loading what is evaluated from each source; weights carried by layer name."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtssl_tf import export
from mtssl_tf.evaluation import pretrained
from mtssl_tf.models import resnet_v2
from mtssl_tf.models import slim_conversion
from tests.evaluation import eval_fixtures

TINY = eval_fixtures.TINY_TRUNK
IMAGES = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(
    np.float32)


def _block3(trunk):
  return trunk(IMAGES, training=False)["block3"].numpy()


def test_model_dir_round_trip_and_bn_update_count(tmp_path):
  source = eval_fixtures.write_model_dir(str(tmp_path / "run"),
                                         task_steps={"rp": 7, "col": 5})
  loaded = pretrained.load(pretrained.PretrainedSpec("model_dir",
                                                     str(tmp_path / "run")))
  assert loaded.trunk_config == TINY
  assert loaded.bn_updates == 12
  assert loaded.bn_statistics_stale()  # 0.997**12 > 0.1
  np.testing.assert_array_equal(_block3(loaded.build_trunk()),
                                _block3(source))


def test_block4_and_other_stride_keep_every_block3_weight(tmp_path):
  source = eval_fixtures.write_model_dir(str(tmp_path / "run"))
  loaded = pretrained.load(pretrained.PretrainedSpec("model_dir",
                                                     str(tmp_path / "run")))
  trunk = loaded.build_trunk(include_block4=True, output_stride=16)
  assert "block4" in trunk.output
  names = {l.name: l for l in trunk.layers}
  for layer in source.layers:
    for a, b in zip(layer.get_weights(), names[layer.name].get_weights()):
      np.testing.assert_array_equal(a, b)


def test_saved_model_round_trip(tmp_path):
  source = eval_fixtures.write_model_dir(str(tmp_path / "run"))
  module = export.module_from_checkpoint(str(tmp_path / "run"))
  path = export.export(module, str(tmp_path / "sm"))
  with open(os.path.join(path, export.RUN_FILE)) as f:
    assert json.load(f)["trunk"]["depth"] == 14
  loaded = pretrained.load(pretrained.PretrainedSpec("saved_model", path))
  np.testing.assert_array_equal(_block3(loaded.build_trunk()),
                                _block3(source))


def test_converted_slim_checkpoint(tmp_path):
  cfg = dataclasses.replace(TINY, include_block4=True)
  tf_keras.utils.set_random_seed(5)
  source = resnet_v2.build_trunk(cfg)
  prefix = str(tmp_path / "rn14")
  tf.train.Checkpoint(**{slim_conversion.CHECKPOINT_KEY: source}).write(prefix)
  with open(prefix + ".json", "w") as f:
    json.dump({"trunk_config": dataclasses.asdict(cfg)}, f)
  loaded = pretrained.load(pretrained.PretrainedSpec(
      "slim_checkpoint", prefix, trunk=TINY))
  assert not loaded.bn_statistics_stale()
  # Block 4 is transferred for detection ("ImageNet labels" row)...
  with_block4 = loaded.build_trunk(include_block4=True)
  np.testing.assert_array_equal(
      with_block4.get_layer("postnorm").get_weights()[0],
      source.get_layer("postnorm").get_weights()[0])
  # ...and left out where the evaluation ends at block 3.
  np.testing.assert_allclose(_block3(loaded.build_trunk()),
                             source(IMAGES, training=False)["block3"].numpy())


def test_random_init_is_seeded():
  spec = pretrained.PretrainedSpec("random_init", trunk=TINY, seed=4)
  a, b = pretrained.load(spec), pretrained.load(spec)
  np.testing.assert_array_equal(_block3(a.build_trunk()),
                                _block3(b.build_trunk()))
  assert a.bn_statistics_stale()


@pytest.mark.parametrize("source, path, message", [
    ("model_dir", "/nonexistent", "neither a training directory"),
    ("saved_model", "/nonexistent", "not a SavedModel"),
    ("slim_checkpoint", "/nonexistent/rn101", "convert_slim_checkpoint"),
    ("model_dir", None, "needs a path"),
])
def test_unusable_sources_fail_with_a_message(source, path, message):
  with pytest.raises(ValueError, match=message):
    pretrained.load(pretrained.PretrainedSpec(source, path))


def test_model_dir_without_checkpoint(tmp_path):
  with pytest.raises(ValueError, match="no checkpoint"):
    pretrained.load(pretrained.PretrainedSpec("model_dir", str(tmp_path)))
