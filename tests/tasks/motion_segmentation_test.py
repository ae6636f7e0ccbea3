"""Tests of the motion segmentation task: labels, loss, metrics, data."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import motion_source
from mtssl_tf.data import tfrecord_format
from mtssl_tf.tasks import base
from mtssl_tf.tasks import motion_segmentation as ms
from mtssl_tf.tasks import registry
from tests.tasks import task_fixtures

TINY = ms.Config(head_width=16, builtin_videos=2, builtin_frames=3)
H, W = tfrecord_format.FRAME_HEIGHT, tfrecord_format.FRAME_WIDTH


@pytest.mark.parametrize("in_tf_data", [False, True])
def test_mask_downsampling_golden(in_tf_data):
  mask = np.zeros((16, 24, 1), np.uint8)
  mask[:8, :8] = 255                    # full block -> 1
  mask[:8, 8:16][:4] = 255              # exactly half -> 1
  mask[:8, 16:24][:3] = 255             # 24 of 64 -> 0
  mask[8:, :8][:6] = 200                # 48 of 64, >= 128 -> 1
  mask[8:, 8:16] = 127                  # below 128 -> 0
  if in_tf_data:
    labels = next(iter(tf.data.Dataset.from_tensors(mask).map(
        lambda m: ms.downsample_mask(m, 8))))
  else:
    labels = ms.downsample_mask(mask, 8)
  np.testing.assert_array_equal(labels.numpy(), [[1, 1, 0], [1, 0, 0]])
  batched = ms.downsample_mask(np.stack([mask, 255 - mask]), 8)
  assert batched.shape == (2, 2, 3)


def test_loss_hand_computed():
  logits = np.array([[[2.0, -1.0], [0.0, 3.0]]], np.float32)  # [1, 2, 2]
  mask = np.array([[[1.0, 0.0], [1.0, 0.0]]], np.float32)
  outputs = {"logits": tf.constant(logits[..., None])}
  labels = {"mask": tf.constant(mask)}
  sigmoid = 1 / (1 + np.exp(-logits))
  per_pixel = -(mask * np.log(sigmoid) + (1 - mask) * np.log(1 - sigmoid))
  assert ms.Task(TINY).loss(labels, outputs).numpy() == pytest.approx(
      per_pixel.mean(), rel=1e-5)
  weighted = ms.Task(ms.Config(positive_weight=3.0))
  expected = -(3 * mask * np.log(sigmoid) + (1 - mask) * np.log(1 - sigmoid))
  assert weighted.loss(labels, outputs).numpy() == pytest.approx(
      expected.mean(), rel=1e-5)


def test_metrics_hand_computed():
  # predicted: 1 0 / 1 1, truth: 1 1 / 0 1 -> intersection 2, union 4.
  logits = tf.constant([[[[1.0], [-1.0]], [[0.5], [2.0]]]])
  labels = {"mask": tf.constant([[[1.0, 1.0], [0.0, 1.0]]])}
  metrics = ms.Task(TINY).metrics(labels, {"logits": logits})
  assert metrics["pixel_accuracy"].numpy() == pytest.approx(0.5)
  assert metrics["foreground_iou"].numpy() == pytest.approx(0.5)
  empty = ms.Task(TINY).metrics({"mask": tf.zeros([1, 2, 2])},
                                {"logits": -tf.ones([1, 2, 2, 1])})
  assert empty["foreground_iou"].numpy() == 1.0
  assert empty["pixel_accuracy"].numpy() == 1.0


def test_registered_as_ms():
  task = registry.build("ms")
  assert isinstance(task, ms.Task) and task.input_shape == (H, W, 3)


def test_head_shapes_and_size():
  head = ms.Task(ms.Config()).build_head((30, 40, 1024))
  assert head.count_params() == (1024 * 4096 + 4096) + (4096 * 4096 + 4096) \
      + (4096 + 1)
  assert head(tf.zeros([1, 30, 40, 1024]))["logits"].shape == (1, 30, 40, 1)


def _check_batch(dataset, batch=2):
  images, labels = next(iter(dataset))
  assert images.shape == (batch, H, W, 3) and images.dtype == tf.float32
  assert -1.0 <= images.numpy().min() and images.numpy().max() <= 1.0
  assert labels["mask"].shape == (batch, 30, 40)
  assert set(np.unique(labels["mask"].numpy())) <= {0.0, 1.0}
  return images, labels


def test_builtin_source_shapes_and_labels_match_frames():
  task = ms.Task(TINY)
  dataset, skipped = task.make_dataset(config_lib.DataConfig(), 2, seed=0)
  _, labels = _check_batch(dataset)
  assert skipped.reasons == motion_source.SKIP_REASONS
  assert 0.0 < labels["mask"].numpy().mean() < 0.6


def test_masks_follow_the_trunk_stride():
  task = ms.Task(TINY, base.TrunkFacts(output_stride=16))
  _, labels = next(iter(task.make_dataset(config_lib.DataConfig(), 2,
                                          seed=0)[0]))
  assert labels["mask"].shape == (2, 15, 20)
  with pytest.raises(ValueError, match="must divide the frame size"):
    ms.Task(TINY, base.TrunkFacts(output_stride=64))


def test_records_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
  mask = np.zeros((H, W, 1), np.uint8)
  mask[:, :160] = 255  # left half moves
  task_fixtures.motion_records(tmp_path / "a.tfrecord", [frame], [mask])
  task = ms.Task(TINY)
  dataset, skipped = task.make_dataset(
      config_lib.DataConfig(source="tfrecord",
                            path=str(tmp_path / "*.tfrecord")), 4, seed=1)
  images, labels = _check_batch(dataset, batch=4)
  for i in range(4):  # a flip moves the mask with the frame
    flipped = np.allclose(images[i].numpy(),
                          (frame[:, ::-1] / 255.0) * 2 - 1, atol=1e-6)
    if not flipped:
      np.testing.assert_allclose(images[i].numpy(), frame / 255.0 * 2 - 1,
                                 atol=1e-6)
    expected = np.zeros((30, 40))
    if flipped:
      expected[:, 20:] = 1
    else:
      expected[:, :20] = 1
    np.testing.assert_array_equal(labels["mask"][i].numpy(), expected)
  assert skipped.total() == 0


def test_unusable_sources_fail_when_the_dataset_is_made(tmp_path):
  with pytest.raises(ValueError, match="make_motion_masks"):
    ms.Task(TINY).make_dataset(config_lib.DataConfig(source="folder",
                                                     path=str(tmp_path)), 2)


def test_summary_images():
  task = ms.Task(TINY)
  images = -tf.ones([1, H, W, 3])  # black frames
  logits = -tf.ones([1, 30, 40, 1])
  logits = tf.tensor_scatter_nd_update(logits, [[0, 0, 0, 0]], [5.0])
  labels = {"mask": tf.zeros([1, 30, 40])}
  summaries = task.summary_images(images, labels, {"logits": logits})
  predicted = summaries["predicted_mask"].numpy()
  assert predicted.dtype == np.uint8 and predicted.shape == (1, H, W, 3)
  np.testing.assert_allclose(predicted[0, 7, 7], [127.5, 0, 0], atol=0.5)
  np.testing.assert_array_equal(predicted[0, 8, 8], [0, 0, 0])
  assert summaries["true_mask"].numpy().max() == 0


@pytest.mark.slow
def test_tiny_network_learns():
  task = ms.Task(TINY)
  images, labels = next(iter(task.make_dataset(config_lib.DataConfig(), 2,
                                               seed=0)[0]))
  losses = task_fixtures.train_steps(task, images, labels, 30)
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
