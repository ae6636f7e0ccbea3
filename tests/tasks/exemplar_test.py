"""Tests for tasks/exemplar.py (Dosovitskiy et al. 2014; paper §2, §3.4)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.tasks import exemplar as ex
from tests.tasks import task_fixtures

TINY = ex.Config(patch_units=task_fixtures.TINY_PATCH_UNITS)


def test_triplet_loss_hand_computed():
  task = ex.Task()
  # Example 0: views (1, 0), (3, 3); example 1: views (0, -1), (0, 2).
  embeddings = tf.constant([[1.0, 0.0], [3.0, 3.0], [0.0, -1.0], [0.0, 2.0]])
  labels = {"negative": tf.constant([1, 0])}
  # Triplet 0: D12 = 1 - 1/sqrt2, D13 = 1 - <(1,0),(0,1)> = 1 -> hinge 0.
  # Triplet 1: D12 = 1 - (-1) = 2, D13 = 1 + 1/sqrt2 -> 2 - 1.7071 + 0.5.
  expected = (0.0 + (2.0 - (1.0 + 1.0 / math.sqrt(2.0)) + 0.5)) / 2.0
  outputs = {"embedding": embeddings}
  np.testing.assert_allclose(task.loss(labels, outputs), expected, rtol=1e-6)
  assert float(task.metrics(labels, outputs)["triplet_accuracy"]) == 0.5
  loss, d_pos, d_neg = ex.triplet_loss_terms(embeddings, [1, 0], 0.5)
  np.testing.assert_allclose(d_pos, [1 - 1 / math.sqrt(2), 2.0], rtol=1e-6)
  np.testing.assert_allclose(d_neg, [1.0, 1 + 1 / math.sqrt(2)], rtol=1e-6)
  np.testing.assert_allclose(loss, [0.0, 2 * expected], rtol=1e-6)


def test_sampled_augmentation_ranges():
  cfg = ex.Config()
  samples = [ex.sample_augmentation(tf.constant([i, 3], tf.int64), cfg)
             for i in range(300)]
  def values(key):
    return np.stack([s[key].numpy() for s in samples])
  limits = {
      "translation": (-19.2, 19.2), "scale": (0.7, 1.4),
      "angle": (-math.radians(20), math.radians(20)),
      "pca_factors": (0.5, 2.0), "powers": (0.25, 4.0),
      "factors": (0.7, 1.4), "offsets": (-0.1, 0.1), "hue": (-0.1, 0.1)}
  for key, (low, high) in limits.items():
    v = values(key)
    assert v.min() >= low - 1e-6 and v.max() <= high + 1e-6, key
    # The samples cover the range (not a constant, not a sub-range).
    span = high - low
    assert v.min() < low + 0.1 * span and v.max() > high - 0.1 * span, key
  # Log-uniform scale: as many shrinks as enlargements around 1.
  assert 0.35 < np.mean(values("scale") < 1.0) < 0.65


def _blob_image(dx, dy, size=256):
  """A Gaussian blob at image centre + (dx, dy), float32 [size, size, 3]."""
  c = (size - 1) / 2.0
  y, x = np.mgrid[:size, :size]
  blob = np.exp(-((x - c - dx) ** 2 + (y - c - dy) ** 2) / (2 * 2.0 ** 2))
  return tf.constant(np.repeat(blob[..., None], 3, -1), tf.float32)


def _centroid(view):
  weight = view[..., 0] / view[..., 0].sum()
  y, x = np.mgrid[:view.shape[0], :view.shape[1]]
  return (weight * x).sum(), (weight * y).sum()


@pytest.mark.parametrize("angle_degrees,scale,shift", [
    (20.0, 1.0, (0.0, 0.0)), (-20.0, 1.0, (0.0, 0.0)), (0.0, 1.4, (0.0, 0.0)),
    (0.0, 0.7, (0.0, 0.0)), (10.0, 1.2, (10.0, -5.0))])
def test_affine_warp_moves_a_known_blob(angle_degrees, scale, shift):
  image = _blob_image(30.0, 0.0)
  center = tf.constant([127.5, 127.5])
  angle = math.radians(angle_degrees)
  transform = ex.affine_transform(center, tf.constant(shift), scale,
                                  tf.constant(angle), 96)
  view = ex.warp_patches(image, transform[tf.newaxis], 96)[0].numpy()
  # Input offset d = (30, 0) - shift shows at scale * R(-angle) d: positive
  # angles turn the content counter-clockwise as displayed (y points down).
  d = np.array([30.0 - shift[0], 0.0 - shift[1]])
  rotate = np.array([[math.cos(angle), math.sin(angle)],
                     [-math.sin(angle), math.cos(angle)]])
  expected = 47.5 + scale * rotate @ d
  np.testing.assert_allclose(_centroid(view), expected, atol=0.3)


def test_hue_and_hsv_adjustments():
  red = tf.constant([[[1.0, 0.0, 0.0]]])
  ones, zeros = tf.ones([2]), tf.zeros([2])
  shifted = ex.adjust_hsv(red, 0.1, ones, ones, zeros).numpy()
  np.testing.assert_allclose(shifted[0, 0], [1.0, 0.6, 0.0], atol=1e-5)
  back = ex.adjust_hsv(red, -0.1, ones, ones, zeros).numpy()
  np.testing.assert_allclose(back[0, 0], [1.0, 0.0, 0.6], atol=1e-5)  # cyclic
  pink = tf.image.hsv_to_rgb(tf.constant([[[0.0, 0.5, 0.8]]]))
  out = tf.image.rgb_to_hsv(ex.adjust_hsv(
      pink, 0.0, tf.constant([2.0, 1.0]), tf.constant([1.0, 1.2]),
      tf.constant([0.1, -0.1]))).numpy()
  np.testing.assert_allclose(out[0, 0], [0.0, 0.5 ** 2 + 0.1, 0.8 * 1.2 - 0.1],
                             atol=1e-5)


def test_pca_contrast_scales_the_principal_components():
  rng = np.random.RandomState(0)
  base = 0.5 + 0.05 * rng.randn(16, 16, 1) * np.array([1.0, 0.5, 0.2])
  rgb = tf.constant(base + 0.01 * rng.randn(16, 16, 3), tf.float32)
  mean = rgb.numpy().reshape(-1, 3).mean(0)
  same = ex.pca_contrast(rgb, tf.ones([3])).numpy()
  np.testing.assert_allclose(same, rgb.numpy(), atol=1e-5)
  doubled = ex.pca_contrast(rgb, 2.0 * tf.ones([3])).numpy()
  np.testing.assert_allclose(doubled, mean + 2 * (rgb.numpy() - mean),
                             atol=1e-5)
  # Scaling only the main component (largest eigenvalue, eigh's last) leaves
  # the small-variance directions alone: total variance grows ~4x.
  main = ex.pca_contrast(rgb, tf.constant([1.0, 1.0, 2.0])).numpy()
  ratio = main.reshape(-1, 3).var(0).sum() / rgb.numpy().reshape(
      -1, 3).var(0).sum()
  assert 3.5 < ratio < 4.0


def test_make_example_inside_tf_data_gives_two_views():
  task = ex.Task()
  image = tf.constant(np.random.RandomState(1).randint(
      0, 256, (300, 200, 3)), tf.uint8)
  views = tf.data.Dataset.random(seed=2).batch(2).take(3).map(
      lambda s: task.make_example(image, s))
  for v in views:
    assert v.shape == (2, 96, 96, 3)
    assert -1.0 <= float(tf.reduce_min(v)) and float(tf.reduce_max(v)) <= 1.0
    assert float(tf.reduce_mean(tf.abs(v[0] - v[1]))) > 1e-3  # augmented


@pytest.mark.slow
def test_make_dataset_from_every_source(tmp_path):
  task = ex.Task()
  data_configs = [
      config.DataConfig("builtin"),
      task_fixtures.image_folder(str(tmp_path / "folder")),
      task_fixtures.image_records(str(tmp_path / "images.tfrecord")),
  ]
  for data in data_configs:
    for images, labels in task.make_dataset(data, 3, seed=1)[0].take(2):
      assert images.shape == (6, 96, 96, 3) and images.dtype == tf.float32
      np.testing.assert_array_equal(labels["negative"], [1, 2, 0])
  with pytest.raises(ValueError, match="batch_size must be >= 2"):
    task.make_dataset(config.DataConfig(), 1)


def test_head_shapes_and_summaries():
  task = ex.Task(TINY)
  outputs = task.build_head((12, 12, 128))(tf.random.normal([6, 12, 12, 128]))
  assert outputs["embedding"].shape == (6, 144)
  head = ex.Task().build_head((12, 12, 1024))
  assert head.output_shape["embedding"] == (None, 4608)
  images = tf.zeros([6, 96, 96, 3])
  triplets = task.summary_images(images, {"negative": tf.constant([1, 2, 0])},
                                 outputs)["triplets"]
  assert triplets.shape == (3, 96, 288, 3) and triplets.dtype == tf.uint8


@pytest.mark.slow
def test_short_training_run_reduces_the_loss():
  task = ex.Task(TINY)
  images, labels = next(iter(task.make_dataset(config.DataConfig(), 6,
                                               seed=0)[0]))
  losses = task_fixtures.train_steps(task, images, labels, steps=25)
  assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
