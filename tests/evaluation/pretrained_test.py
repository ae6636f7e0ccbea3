"""Loading what is evaluated from each source; weights carried by layer name."""

import dataclasses
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtssl_tf import export
from mtssl_tf.evaluation import pretrained
from mtssl_tf.models import multitask
from mtssl_tf.models import resnet_v2
from mtssl_tf.models import slim_conversion
from mtssl_tf.tasks import base
from mtssl_tf.tasks import imagenet_labels
from mtssl_tf.training import checkpointing
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


@pytest.mark.slow
def test_saved_model_round_trip_without_block4(tmp_path, caplog):
  # A self-supervised run: no block 4 to export; its own stride is kept.
  source = eval_fixtures.write_model_dir(str(tmp_path / "run"))
  module = export.module_from_checkpoint(str(tmp_path / "run"))
  assert "features_block4" not in module.signatures()
  path = export.export(module, str(tmp_path / "sm"))
  with open(os.path.join(path, export.RUN_FILE)) as f:
    info = json.load(f)
  assert info["trunk"]["depth"] == 14 and info["block4"] is None
  loaded = pretrained.load(pretrained.PretrainedSpec(
      "saved_model", path, trunk=dataclasses.replace(TINY, output_stride=16)))
  np.testing.assert_array_equal(_block3(loaded.build_trunk()),
                                _block3(source))
  assert loaded.describe()["block4"] == "random"
  assert loaded.trunk_config.output_stride == 8
  with caplog.at_level(logging.WARNING):
    trunk = loaded.build_trunk(include_block4=True)
  assert "block 4 and the post-norm are randomly initialised" in caplog.text
  assert "re-export" not in caplog.text
  assert "postnorm" in trunk.output


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


def test_recompute_bn_stats_default_and_the_stale_statistics_warning():
  def loaded(source, updates):
    return pretrained.Pretrained(
        pretrained.PretrainedSpec(source, None if source == "random_init"
                                  else "runs/quick"), TINY, trunk=None,
        bn_updates=updates)

  def images(source, updates, requested):
    said = []
    return loaded(source, updates).bn_images(requested, auto=1024,
                                             warn=said.append), said

  # Auto (-1): on for the random trunk, and for a checkpoint whose
  # statistics weigh their initial values >10% (0.997**700 = 0.12), with a
  # note; off for well-trained (0.997**800 = 0.09) or unknown statistics.
  assert images("random_init", 0, -1) == (1024, [])
  count, said = images("model_dir", 700, -1)
  assert count == 1024 and "700 updates" in said[0]
  assert images("model_dir", 800, -1) == (0, [])
  assert images("slim_checkpoint", None, -1) == (0, [])
  # Turned off on stale statistics: a warning that says what to do.
  count, said = images("model_dir", 3, 0)
  assert count == 0 and said[0].startswith("warning:")
  assert "--recompute_bn_stats=1024" in said[0]
  assert images("model_dir", 3, 64) == (64, [])


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


def _write_supervised_model_dir(path, task_steps=9):
  """A training directory of a "sup" run (block 4 in its head), every
  weight random and distinct from a fresh initialisation; its network."""
  tf_keras.utils.set_random_seed(11)
  task = imagenet_labels.Task(imagenet_labels.TINY, base.TrunkFacts.of(TINY))
  network = multitask.MultiTaskNetwork(TINY, {"sup": task})
  rng = np.random.default_rng(2)
  for variable in network.heads["sup"].weights:
    # Positive (moving variances too), unlike any initial value.
    variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
  state = checkpointing.RunState(["sup"])
  state.task_steps["sup"].assign(task_steps)
  os.makedirs(path)
  with open(os.path.join(path, checkpointing.RUN_FILE), "w") as f:
    json.dump(checkpointing.run_info(["sup"], TINY, False), f)
  tf.train.CheckpointManager(tf.train.Checkpoint(
      trunk=network.trunk, heads=network.heads, lasso={}, state=state),
                             path, max_to_keep=1).save()
  return network


def _assert_same_as_network(trunk, network):
  """Every weight of ``trunk`` equals the network's: blocks 1-3 from its
  trunk, block 4 and the post-norm from the sup head."""
  block4 = 0
  for layer in trunk.layers:
    if not layer.get_weights():
      continue
    if layer.name.startswith(("block4/", "postnorm")):
      source = network.heads["sup"].get_layer("sup_head/" + layer.name)
      block4 += 1
    else:
      source = network.trunk.get_layer(layer.name)
    assert len(layer.get_weights()) == len(source.get_weights())
    for a, b in zip(layer.get_weights(), source.get_weights()):
      np.testing.assert_array_equal(a, b)
  head_layers = [l for l in network.heads["sup"].layers if l.get_weights()]
  assert block4 == len(head_layers) - 1  # all but the logits


@pytest.mark.slow
def test_supervised_block4_round_trips_through_the_saved_model(tmp_path,
                                                               caplog):
  network = _write_supervised_model_dir(str(tmp_path / "run"))
  module = export.module_from_checkpoint(str(tmp_path / "run"))
  assert "features_block4" in module.signatures()
  path = export.export(module, str(tmp_path / "sm"))
  with open(os.path.join(path, export.RUN_FILE)) as f:
    info = json.load(f)
  assert info["block4"] == {"from_task": "sup"} and info["bn_updates"] == 9

  spec = pretrained.PretrainedSpec(
      "saved_model", path, trunk=dataclasses.replace(TINY, output_stride=16))
  loaded = pretrained.load(spec)
  assert loaded.describe()["block4"] == "transferred"
  assert loaded.bn_updates == 9
  # Like its model_dir, a supervised export runs at the evaluation's stride.
  assert loaded.trunk_config.output_stride == 16
  detection_trunk = loaded.build_trunk(include_block4=True)
  _assert_same_as_network(detection_trunk, network)
  assert "block4" not in loaded.build_trunk().output  # frozen evaluations

  # The serving signature: block 4 after the post-norm, and its average.
  images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype(
      np.uint8)
  head = network.heads["sup"]
  block4 = tf_keras.Model(head.input,
                          head.get_layer("sup_head/postnorm_relu").output)
  want = block4(network.trunk(images / 127.5 - 1.0,
                              training=False)["block3"]).numpy()
  got = tf.saved_model.load(path).signatures["features_block4"](
      images=tf.constant(images))
  assert got["block4"].shape == (2, 4, 4, 32 * TINY.base_width)
  np.testing.assert_allclose(got["block4"], want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got["pooled"], want.mean(axis=(1, 2)),
                             rtol=1e-4, atol=1e-4)

  # Export at the end of training (the network's own variables) holds the
  # same block 4.
  from_network = export.module_from_network(network)
  assert from_network._run_info["block4"] == {"from_task": "sup"}  # pylint: disable=protected-access
  for layer in from_network.block4.layers[1:]:  # after the input
    for a, b in zip(layer.get_weights(),
                    head.get_layer("sup_head/" + layer.name).get_weights()):
      np.testing.assert_array_equal(a, b)

  # The same export written before block 4 was exported: said, with what to
  # do, still at the evaluation's stride.
  del info["block4"]
  with open(os.path.join(path, export.RUN_FILE), "w") as f:
    json.dump(info, f)
  loaded = pretrained.load(spec)
  assert loaded.describe()["block4"] == "random"
  assert loaded.trunk_config.output_stride == 16
  with caplog.at_level(logging.WARNING):
    loaded.build_trunk(include_block4=True)
  assert "block 4 and the post-norm are randomly initialised" in caplog.text
  assert "re-export it with python -m mtssl_tf.export" in caplog.text
