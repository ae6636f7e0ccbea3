"""Tests for tasks/relative_position.py (Doersch et al. 2015; paper §2-3.4)."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.data import color
from mtssl_tf.data import sources
from mtssl_tf.tasks import relative_position as rp
from tests.tasks import task_fixtures

SIDE = 2 * 96 + 48 + 2 * 7  # 254: the smallest image a diagonal pair fits in.
TINY = rp.Config(patch_units=task_fixtures.TINY_PATCH_UNITS, fc_width=144,
                 fc_bottleneck=16)


def _seed(i):
  return tf.constant([i, 17], tf.int64)


def _ramp_image(axis):
  """SIDE x SIDE x 3 uint8 whose every channel holds the row (or column)."""
  ramp = np.arange(SIDE, dtype=np.uint8)
  plane = ramp[:, None] if axis == 0 else ramp[None, :]
  return np.ascontiguousarray(np.broadcast_to(plane[..., None],
                                              (SIDE, SIDE, 3)))


def _kept_channel_top_left(patch):
  """Top-left pixel value (0..255) in the channel colour dropping kept."""
  kept = int(np.argmax(patch.reshape(-1, 3).std(axis=0)))
  return int(np.round((patch[0, 0, kept] + 1.0) * 127.5))


def test_labels_match_geometry_for_all_eight_classes():
  """Pixels encode their own row/column: read the patch corners back."""
  task = rp.Task(rp.Config(min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE,
                           downsample_prob=0.0))
  rows, cols = _ramp_image(0), _ramp_image(1)
  seen = set()
  for i in range(60):
    patches_r, label = task.make_example(rows, _seed(i))
    patches_c, label_c = task.make_example(cols, _seed(i))  # Same geometry.
    assert int(label) == int(label_c)
    corners = np.array([[_kept_channel_top_left(patches_r[k].numpy()),
                         _kept_channel_top_left(patches_c[k].numpy())]
                        for k in range(2)])
    offset = np.array(rp.OFFSETS[int(label)]) * 144
    assert np.all(np.abs(corners[1] - corners[0] - offset) <= 14), (
        label, corners)
    assert np.all(corners >= 0) and np.all(corners + 96 <= SIDE)
    seen.add(int(label))
  assert seen == set(range(8))


@pytest.mark.parametrize("height,width", [(254, 254), (254, 900), (700, 300)])
def test_no_patch_leaves_the_image(height, width):
  cfg = rp.Config()
  for label in range(8):
    for i in range(40):
      corners = rp.sample_pair_corners(height, width, label, _seed(i),
                                       cfg).numpy()
      assert corners.min() >= 0
      assert np.all(corners[:, 0] + 96 <= height)
      assert np.all(corners[:, 1] + 96 <= width)
      step = np.array(rp.OFFSETS[label]) * 144
      assert np.all(np.abs(corners[1] - corners[0] - step) <= 14)


def test_resize_area_range_and_minimum_side():
  cfg = rp.Config()
  for i, shape in enumerate([(480, 640), (2000, 3000), (30, 40), (100, 1000)]):
    image = tf.zeros(shape + (3,), tf.uint8)
    resized = rp.resize_for_pairs(image, _seed(i), cfg)
    h, w = resized.shape[:2]
    assert min(h, w) >= SIDE
    if min(shape) * 3 > max(shape) and min(shape) > 200:  # aspect-limited
      assert 150_000 <= h * w <= 450_000 + h + w + 1
    assert abs(h / w - shape[0] / shape[1]) < 0.02


def test_colour_dropping_keeps_exactly_one_channel():
  patch = tf.random.stateless_uniform([96, 96, 3], [1, 2])
  kept_channels = set()
  for i in range(12):
    dropped = rp.drop_colors(patch, _seed(i)).numpy()
    equal = [np.array_equal(dropped[..., c], patch.numpy()[..., c])
             for c in range(3)]
    assert sum(equal) == 1
    kept = equal.index(True)
    kept_channels.add(kept)
    kept_std = patch.numpy()[..., kept].std()
    for c in set(range(3)) - {kept}:
      assert abs(dropped[..., c].mean() - 0.5) < 1e-3
      np.testing.assert_allclose(dropped[..., c].std(), kept_std / 100,
                                 rtol=0.1)
  assert kept_channels == {0, 1, 2}


def test_labels_are_balanced_inside_tf_data():
  task = rp.Task(rp.Config(downsample_prob=0.0))
  image = tf.zeros([SIDE, SIDE, 3], tf.uint8)
  labels = tf.data.Dataset.random(seed=5).batch(2).take(1600).map(
      lambda s: task.make_example(image, s)[1], num_parallel_calls=4)
  counts = np.bincount(list(labels.as_numpy_iterator()), minlength=8)
  assert counts.sum() == 1600
  assert counts.min() > 150 and counts.max() < 250, counts


def test_harmonized_input_is_replicated_lightness():
  task = rp.Task(rp.Config(harmonize=True, downsample_prob=0.0,
                           min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE))
  rgb = tf.random.stateless_uniform([SIDE, SIDE, 3], [3, 4], 0, 256, tf.int32)
  patches, _ = task.make_example(tf.cast(rgb, tf.uint8), _seed(0))
  patches = patches.numpy()
  np.testing.assert_array_equal(patches[..., 0], patches[..., 1])
  np.testing.assert_array_equal(patches[..., 0], patches[..., 2])
  # The values are Lab L of patch pixels: some pixel of the image matches.
  lightness = color.rgb_to_lab(tf.cast(rgb, tf.uint8)).numpy()[..., 0]
  corner = patches[0, 0, 0, 0]
  assert np.min(np.abs(lightness / 50.0 - 1.0 - corner)) < 1e-4


def _check_batch(images, labels, batch_size):
  assert images.shape == (2 * batch_size, 96, 96, 3)
  assert images.dtype == tf.float32
  assert -1.0 - 1e-3 <= float(tf.reduce_min(images))
  assert float(tf.reduce_max(images)) <= 1.0 + 1e-3
  assert labels["position"].shape == (batch_size,)
  assert set(labels["position"].numpy()) <= set(range(8))


@pytest.mark.slow
def test_make_dataset_from_every_source(tmp_path):
  task = rp.Task()
  data_configs = [
      config.DataConfig("builtin"),
      task_fixtures.image_folder(str(tmp_path / "folder")),
      task_fixtures.image_records(str(tmp_path / "images.tfrecord")),
  ]
  for data in data_configs:
    dataset, skipped = task.make_dataset(data, 3, seed=1)
    for images, labels in dataset.take(2):
      _check_batch(images, labels, 3)
    assert set(skipped.as_dict()) == set(sources.IMAGE_SKIP_REASONS)


def test_head_shapes_loss_and_accuracy():
  task = rp.Task(TINY)
  head = task.build_head((12, 12, 128))
  outputs = head(tf.random.normal([10, 12, 12, 128]))
  assert outputs["logits"].shape == (5, 8)
  logits = tf.constant([[2.0, 0, 0, 0, 0, 0, 0, 0], [0.0] * 8])
  labels = {"position": tf.constant([0, 3])}
  expected = (-np.log(np.exp(2) / (np.exp(2) + 7)) + np.log(8)) / 2
  np.testing.assert_allclose(task.loss(labels, {"logits": logits}), expected,
                             rtol=1e-6)
  accuracy = task.metrics(labels, {"logits": logits})["accuracy"]
  assert float(accuracy) == 0.5  # argmax of a uniform row is class 0.
  images = tf.zeros([4, 96, 96, 3])
  pairs = task.summary_images(images, labels, outputs)["pairs"]
  assert pairs.shape == (2, 96, 192, 3) and pairs.dtype == tf.uint8


def test_paper_head_sizes():
  head = rp.Task().build_head((12, 12, 1024))
  assert head.output_shape["logits"] == (None, 8)
  names = {layer.name: layer for layer in head.layers}
  # The first FC unit projects the 9216-wide pair to 4608.
  assert names["rp_head/fc_1/shortcut"].kernel.shape == (1, 1, 9216, 4608)
  assert "rp_head/fc_2/shortcut" not in names


@pytest.mark.slow
def test_short_training_run_reduces_the_loss():
  task = rp.Task(TINY)
  images, labels = next(iter(task.make_dataset(config.DataConfig(), 8,
                                               seed=0)[0]))
  losses = task_fixtures.train_steps(task, images, labels, steps=25)
  assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
