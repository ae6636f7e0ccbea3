"""The supervised "ImageNet labels" task: data, head, loss, schedule, and its
block 4 reaching the evaluations (the contract test covers the rest)."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.evaluation import pretrained
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import base
from mtssl_tf.tasks import imagenet_labels as sup
from mtssl_tf.training import loop
from tests.tasks import task_fixtures

TRUNK = task_fixtures.TINY_TRUNK  # depth 14, width 8, output stride 8


def _task(**changes):
  return sup.Task(dataclasses.replace(sup.TINY, **changes),
                  base.TrunkFacts.of(TRUNK))


def test_decay_steps_are_two_epochs_of_the_global_batch():
  # TF-Slim: int(num_samples_per_epoch * num_epochs_per_decay / batch).
  task = sup.Task(sup.Config())
  assert task.learning_rate_decay(32) == (80072, 0.94)  # 2 * 1281167 // 32
  assert task.learning_rate_decay(256) == (10009, 0.94)
  counted = _task()  # examples_per_epoch=0: counted by make_dataset
  with pytest.raises(ValueError, match="examples per epoch"):
    counted.learning_rate_decay(4)
  counted.make_dataset(config.DataConfig(), 4, seed=0)
  assert counted.learning_rate_decay(4) == (2 * 9 * 24 // 4, 0.94)


def test_class_folders_are_read_with_bad_files_skipped(tmp_path):
  for name, seeds in (("n01", (1, 2)), ("n02", (3, 4, 5))):
    folder = tmp_path / name
    folder.mkdir()
    for seed in seeds:
      (folder / f"{seed}.JPEG").write_bytes(task_fixtures._jpeg(  # pylint: disable=protected-access
          seed, 40 + 10 * seed, 60))
  (tmp_path / "n02" / "bad.JPEG").write_bytes(b"not a jpeg")
  task = _task(num_classes=2)
  dataset, skipped = task.make_dataset(
      config.DataConfig("folder", str(tmp_path)), 5, seed=0)
  images, labels = next(iter(dataset))
  assert images.shape == (5, 32, 32, 3)
  assert -1 <= float(tf.reduce_min(images)) <= float(
      tf.reduce_max(images)) <= 1
  assert set(labels["label"].numpy()) <= {0, 1}
  assert skipped.as_dict()["undecodable"] >= 1
  assert task.examples_per_epoch == 6  # candidates before skipping
  with pytest.raises(ValueError, match="num_classes=2"):
    _task(num_classes=1).make_dataset(
        config.DataConfig("folder", str(tmp_path)), 5)


def test_head_shapes_and_block4_names():
  task = _task()
  trunk, head = task_fixtures.tiny_model(task)
  features = trunk(tf.zeros((2, 32, 32, 3)))["block3"]
  assert head(features)["logits"].shape == (2, 9)
  block4 = [l.name for l in head.layers if l.name.startswith("sup_head/block4")]
  # Depth 14 has one block-4 unit; names are the trunk's behind the prefix.
  full = resnet_v2.build_trunk(dataclasses.replace(TRUNK, include_block4=True))
  expected = {l.name for l in full.layers if l.name.startswith("block4/")}
  assert {n[len("sup_head/"):] for n in block4} == expected
  assert head.get_layer("sup_head/postnorm").get_weights()[0].shape == (256,)


def test_label_smoothing_loss_matches_hand_computation():
  task = _task(num_classes=3, label_smoothing=0.3)
  logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
  labels = np.array([0, 1])
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  targets = np.full((2, 3), 0.1)
  targets[[0, 1], labels] = 0.8
  expected = -(targets * log_p).sum(1).mean()
  loss = task.loss({"label": tf.constant(labels)},
                   {"logits": tf.constant(logits)})
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  metrics = task.metrics({"label": tf.constant(labels)},
                         {"logits": tf.constant(logits)})
  assert float(metrics["accuracy"]) == 0.5  # row 1 predicts class 2
  assert float(metrics["top5"]) == 1.0


def test_loss_falls_on_a_fixed_batch():
  task = _task()
  dataset, _ = task.make_dataset(config.DataConfig(), 9, seed=0)
  images, labels = next(iter(dataset))
  losses = task_fixtures.train_steps(task, images, labels, 12,
                                     learning_rate=3e-3)
  # ~1.9 (about ln 9) to ~0.01 when written: nine photos, one crop each.
  assert losses[0] > 1.0 and np.mean(losses[-3:]) < 0.2, losses


def _logged(model_dir, tag):
  values = {}
  for path in glob.glob(os.path.join(model_dir, "train", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def test_trained_run_schedule_and_block4_reach_the_evaluations(tmp_path):
  # 6 examples per epoch, batch 2: decay every 2 * 6 / 2 = 6 updates.
  task = _task(examples_per_epoch=6, lr_decay_rate=0.5)
  model_dir = str(tmp_path / "run")
  cfg = config.TrainConfig(model_dir=model_dir, max_steps=7, batch_size=2,
                           learning_rate=0.01, log_every_steps=1,
                           checkpoint_every_secs=0)
  result = loop.train(TRUNK, {"sup": task}, {"sup": config.DataConfig()},
                      cfg, log=lambda s: None)
  rates = _logged(model_dir, "sup/learning_rate")
  assert rates == pytest.approx({s: 0.01 * 0.5 ** (s // 6)
                                 for s in range(1, 8)})

  loaded = pretrained.load(pretrained.PretrainedSpec(
      "model_dir", model_dir, trunk=dataclasses.replace(TRUNK,
                                                        output_stride=16)))
  assert loaded.trunk_config.output_stride == 16  # the evaluation's stride
  detection_trunk = loaded.build_trunk(include_block4=True)
  head = result.network.heads["sup"]
  compared = 0
  for layer in detection_trunk.layers:
    if not layer.get_weights():
      continue
    if layer.name.startswith(("block4/", "postnorm")):
      source = head.get_layer("sup_head/" + layer.name)
    else:
      source = result.network.trunk.get_layer(layer.name)
    for a, b in zip(layer.get_weights(), source.get_weights()):
      np.testing.assert_array_equal(a, b)
    compared += layer.name.startswith("block4/")
  assert compared > 0
  # Trained values arrived: the post-norm offset starts at 0 and moved.
  assert not np.array_equal(
      detection_trunk.get_layer("postnorm").get_weights()[1],
      np.zeros_like(detection_trunk.get_layer("postnorm").get_weights()[1]))
  assert "block4" not in loaded.build_trunk().output  # frozen evaluations
