"""Frozen features: adaptive 3x3 max pool, preprocessing, resumable cache."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.evaluation import features


def _reference_pool(x, bins):
  n, h, w, c = x.shape
  out = np.zeros((n, bins, bins, c), x.dtype)
  for i in range(bins):
    for j in range(bins):
      y0, y1 = int(np.floor(i * h / bins)), int(np.ceil((i + 1) * h / bins))
      x0, x1 = int(np.floor(j * w / bins)), int(np.ceil((j + 1) * w / bins))
      out[:, i, j] = x[:, y0:y1, x0:x1].max(axis=(1, 2))
  return out


@pytest.mark.parametrize("h, w", [(28, 28), (12, 12), (30, 40), (3, 3),
                                  (7, 5)])
def test_adaptive_max_pool_matches_reference(h, w):
  x = np.random.default_rng(h * w).normal(size=(2, h, w, 4)).astype(
      np.float32)
  np.testing.assert_array_equal(features.adaptive_max_pool(x, 3).numpy(),
                                _reference_pool(x, 3))
  pooled = tf.function(lambda t: features.adaptive_max_pool(t, 3))(x)
  np.testing.assert_array_equal(pooled.numpy(), _reference_pool(x, 3))


def test_preprocess_is_deterministic_per_example_and_in_range():
  image = np.random.default_rng(0).integers(0, 255, (50, 80, 3), np.uint8)
  a = features.preprocess(image, 3, 64, 56, training=True, seed=1).numpy()
  b = features.preprocess(image, 3, 64, 56, training=True, seed=1).numpy()
  c = features.preprocess(image, 4, 64, 56, training=True, seed=1).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.shape == (56, 56, 3) and a.min() >= -1 and a.max() <= 1
  centre = features.preprocess(image, 0, 64, 56, training=False).numpy()
  assert centre.shape == (56, 56, 3)


def test_extraction_resumes_from_complete_shards(tmp_path):
  data = tf.data.Dataset.from_tensor_slices(
      (np.arange(23, dtype=np.float32)[:, None], np.arange(23))).batch(2)
  calls = []

  def fn(x):
    calls.append(1)
    return tf.concat([x, 2 * x], axis=1)

  full = features.extract(fn, data, str(tmp_path / "full"), total=23,
                          batches_per_shard=3)
  # A killed run left two complete shards (and a stale temporary file).
  partial_dir = str(tmp_path / "partial")
  os.makedirs(partial_dir)
  for shard in (0, 1):
    os.replace(str(tmp_path / "full" / f"features-{shard:05d}.npz"),
               f"{partial_dir}/features-{shard:05d}.npz")
  open(f"{partial_dir}/.tmp-00002.npz", "w").close()
  seen = []

  class Progress:
    def update(self, done):
      seen.append(done)

  resumed = features.extract(fn, data, partial_dir, total=23,
                             batches_per_shard=3, progress=Progress())
  np.testing.assert_array_equal(resumed["features"], full["features"])
  np.testing.assert_array_equal(resumed["labels"], np.arange(23))
  assert seen[0] == 12 and seen[-1] == 23
  # A complete cache is read, not recomputed.
  again = features.extract(lambda x: 1 / 0, data, partial_dir, total=23)
  np.testing.assert_array_equal(again["features"], full["features"])
