"""Tests of the motion segmentation task: labels, loss, metrics, data."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mtssl_tf import config as config_lib
from mtssl_tf.data import tfrecord_format
from mtssl_tf.tasks import motion_segmentation as ms
from mtssl_tf.tasks import registry
from tests.tasks import task_fixtures

TINY = ms.Config(head_width=16, builtin_videos=2, builtin_frames=3)
H, W = tfrecord_format.FRAME_HEIGHT, tfrecord_format.FRAME_WIDTH


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


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
  _, labels = _check_batch(task.make_dataset(config_lib.DataConfig(), 2,
                                             seed=0))
  frames, masks = ms.builtin_frames(2, 3)
  assert frames.shape == (6, H, W, 3) and masks.shape == (6, H, W, 1)
  assert 0.0 < masks.mean() / 255 < 0.6
  assert 0.0 < labels["mask"].numpy().mean() < 0.6


def _motion_records(path, frames, masks, extra=()):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i, (frame, mask) in enumerate(zip(frames, masks)):
      writer.write(tfrecord_format.motion_example(
          _png(frame), _png(mask[..., 0]), "video", i))
    for record in extra:
      writer.write(record)


def test_records_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
  mask = np.zeros((H, W, 1), np.uint8)
  mask[:, :160] = 255  # left half moves
  _motion_records(tmp_path / "a.tfrecord", [frame], [mask])
  task = ms.Task(TINY)
  dataset = task.make_dataset(
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
  assert task.skipped.total() == 0


def test_bad_records_are_skipped_and_counted(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (2, H, W, 3)).astype(np.uint8)
  masks = np.zeros((2, H, W, 1), np.uint8)
  good_frame, good_mask = _png(frames[0]), _png(masks[0, ..., 0])
  extra = [
      b"not a tf.Example",                                     # bad_record
      tf.train.Example().SerializeToString(),                  # bad_record
      tfrecord_format.image_example(good_frame, "png"),        # bad_record
      # Truncated PNG: undecodable.
      tfrecord_format.motion_example(good_frame[:200], good_mask),
      tfrecord_format.motion_example(_png(frames[0, :120]), good_mask),  # size
      tfrecord_format.motion_example(good_frame, _png(masks[0, :, :100, 0])),
  ]
  _motion_records(tmp_path / "m.tfrecord", frames, masks, extra)
  task = ms.Task(TINY)
  data = config_lib.DataConfig(source="folder", path=str(tmp_path))
  pairs = list(task.pairs(data, seed=0, repeat=False))
  assert len(pairs) == 2
  assert task.skipped.as_dict() == {"bad_record": 3, "undecodable": 1,
                                    "wrong_size": 2, "bad_shard": 0}
  # The training pipeline keeps going past them.
  images, _ = _check_batch(task.make_dataset(data, 2, seed=0))
  assert task.skipped.total() > 0
  for image in images.numpy():
    assert any(np.allclose(image, f / 255 * 2 - 1, atol=1e-6) or
               np.allclose(image, f[:, ::-1] / 255 * 2 - 1, atol=1e-6)
               for f in frames)


def test_damaged_shards_are_skipped_and_the_rest_is_read(tmp_path):
  """A truncated and a corrupted shard: their readable records and the good
  shard's are used; each bad shard is counted once, with its path."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (9, H, W, 3)).astype(np.uint8)
  masks = np.zeros((9, H, W, 1), np.uint8)
  for name, part in (("good", 0), ("trunc", 1), ("corrupt", 2)):
    _motion_records(tmp_path / f"{name}.tfrecord", frames[3 * part:][:3],
                    masks[:3])
  data = (tmp_path / "trunc.tfrecord").read_bytes()
  record = len(data) // 3
  (tmp_path / "trunc.tfrecord").write_bytes(data[:record + record // 2])
  data = bytearray((tmp_path / "corrupt.tfrecord").read_bytes())
  data[2 * record + 100] ^= 0xFF   # inside the third record: CRC mismatch
  (tmp_path / "corrupt.tfrecord").write_bytes(bytes(data))
  task = ms.Task(TINY)
  config = config_lib.DataConfig(source="folder", path=str(tmp_path))
  pairs = list(task.pairs(config, seed=0, repeat=False))
  got = sorted(int(np.argmax([np.array_equal(f, p[0].numpy())
                              for f in frames])) for p in pairs)
  assert got == [0, 1, 2, 3, 6, 7]
  assert task.skipped.as_dict() == {"bad_record": 0, "undecodable": 0,
                                    "wrong_size": 0, "bad_shard": 2}
  assert sorted(os.path.basename(i["item"]) for i in task.skipped.items()) == [
      "corrupt.tfrecord", "trunc.tfrecord"]
  # Training reads on past them, pass after pass; shards count once.
  _check_batch(task.make_dataset(config, 8, seed=0), batch=8)
  assert task.skipped.as_dict()["bad_shard"] == 2
  assert task.skipped.events()["bad_shard"] >= 2


def test_unusable_sources_fail_at_start_up(tmp_path):
  task = ms.Task(TINY)
  with pytest.raises(ValueError, match="make_motion_masks"):
    task.make_dataset(config_lib.DataConfig(source="folder",
                                            path=str(tmp_path)), 2)
  with tf.io.TFRecordWriter(str(tmp_path / "images.tfrecord")) as writer:
    writer.write(tfrecord_format.image_example(b"jpeg bytes", "jpeg"))
  with pytest.raises(ValueError, match="no motion-segmentation records"):
    task.make_dataset(config_lib.DataConfig(source="folder",
                                            path=str(tmp_path)), 2)
  with pytest.raises(ValueError, match="matches no files"):
    task.make_dataset(config_lib.DataConfig(
        source="tfrecord", path=str(tmp_path / "none-*.tfrecord")), 2)
  with pytest.raises(ValueError, match="reads sources"):
    task.make_dataset(config_lib.DataConfig(source="tfds", tfds_name="x"), 2)


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
                                               seed=0)))
  losses = task_fixtures.train_steps(task, images, labels, 30)
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
