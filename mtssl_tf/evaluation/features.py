"""Frozen features of the evaluated trunk (paper §5 "ImageNet with Frozen
Weights"; Goyal et al. 2019's VOC07 SVM and low-shot suite).

  preprocess        uint8 image -> float32 trunk input: shorter side resized
                    to ``resize`` (aspect kept), then a ``crop``-square centre
                    crop (evaluation), or a random crop plus colour jitter
                    (training: "augmented in translation and color"), with
                    stateless randomness keyed by (seed, example index) so a
                    resumed run sees identical inputs.
  FrozenFeatures    the trunk in inference mode -> the last block-3 unit, or
                    the evaluation's LassoCombine of all block-3 units (§3.2)
                    -> max-pooled to 3x3 bins -> flattened, e.g. 3x3x1024 =
                    9216 values at depth 101.
  extract           features of every example of a data set, cached on disk
                    in shards (``features-00012.npz``) so that a killed
                    extraction resumes at its last complete shard and later
                    evaluations (SVM sweeps, k-NN) read the cache.

The 3x3 max-pool uses adaptive bins (bin i of n spans
``[floor(i*H/n), ceil((i+1)*H/n))``, as PyTorch's AdaptiveMaxPool2d), so any
feature-map size pools to exactly 3x3; at 224x224 and stride 8 (28x28) the
bins are 10 rows/columns wide with one row/column of overlap.
"""

import glob
import os
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import base as task_base

AUTOTUNE = tf.data.AUTOTUNE


def _resize_shorter(image, size: int):
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
  return tf.image.resize(image, new, antialias=True)


def preprocess(image, index, resize: int, crop: int, training: bool,
               seed: int = 0):
  """uint8 ``[H, W, 3]`` -> float32 ``[crop, crop, 3]`` in [-1, 1]."""
  image = _resize_shorter(tf.cast(image, tf.float32) / 255.0, resize)
  if training:
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    seeds = tf.random.experimental.stateless_split(key, 5)
    image = tf.image.stateless_random_crop(image, [crop, crop, 3], seeds[0])
    image = tf.image.stateless_random_brightness(image, 0.3, seeds[1])
    image = tf.image.stateless_random_contrast(image, 0.7, 1.3, seeds[2])
    image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seeds[3])
    image = tf.image.stateless_random_hue(image, 0.05, seeds[4])
  else:
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    image = tf.image.crop_to_bounding_box(image, (h - crop) // 2,
                                          (w - crop) // 2, crop, crop)
  image = tf.clip_by_value(image, 0.0, 1.0)
  return task_base.to_trunk_range(image)


def batches(dataset: tf.data.Dataset, batch_size: int, resize: int, crop: int,
            training: bool, seed: int = 0) -> tf.data.Dataset:
  """``(uint8 image, label)`` pairs -> batches of (trunk inputs, labels)."""
  ds = dataset.enumerate().map(
      lambda i, example: (preprocess(example[0], i, resize, crop, training,
                                     seed), example[1]),
      num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)


def adaptive_max_pool(feature_map, bins: int = 3):
  """``[N, H, W, C]`` -> ``[N, bins, bins, C]``, adaptive bins (see above)."""
  h, w = tf.shape(feature_map)[1], tf.shape(feature_map)[2]
  rows = []
  for i in range(bins):
    y0, y1 = (i * h) // bins, -((-(i + 1) * h) // bins)
    cols = []
    for j in range(bins):
      x0, x1 = (j * w) // bins, -((-(j + 1) * w) // bins)
      cols.append(tf.reduce_max(feature_map[:, y0:y1, x0:x1, :], axis=[1, 2]))
    rows.append(tf.stack(cols, axis=1))
  return tf.stack(rows, axis=1)


class FrozenFeatures(tf.Module):
  """Trunk (inference mode, frozen) -> [lasso] -> 3x3 max pool -> flatten.

  Args:
    trunk: the evaluated trunk (``pretrained.build_trunk()``).
    depth: its depth (names its block-3 units).
    lasso: a LassoCombine over the block-3 units (trainable), or None for the
      last unit ("block3").
    bins: max-pool bins per side (3 in the paper).
  """

  def __init__(self, trunk: tf_keras.Model, depth: int,
               lasso: Optional[lasso_lib.LassoCombine] = None, bins: int = 3):
    super().__init__(name="frozen_features")
    self.trunk = trunk
    self.trunk.trainable = False
    self.unit_names = resnet_v2.unit_names(depth)
    self.lasso = lasso
    self.bins = bins

  def feature_map(self, images):
    endpoints = self.trunk(images, training=False)
    if self.lasso is None:
      return endpoints["block3"]
    return self.lasso([tf.stop_gradient(endpoints[u])
                       for u in self.unit_names])

  def __call__(self, images):
    pooled = adaptive_max_pool(tf.cast(self.feature_map(images), tf.float32),
                               self.bins)
    return tf.reshape(pooled, [tf.shape(pooled)[0], -1])


def _shard_path(directory: str, index: int) -> str:
  return os.path.join(directory, f"features-{index:05d}.npz")


def extract(features: Callable, batched, directory: str,
            total: int, batches_per_shard: int = 50,
            progress=None, load: bool = True) -> Optional[Dict[str, np.ndarray]]:
  """Features and labels of every batch of ``batched``, cached in shards.

  ``batched`` is a ``tf.data.Dataset`` of ``(images, labels)`` batches, or a
  function returning one (not called when the cache is complete). Complete
  shards already in ``directory`` are reused and their batches skipped, so a
  killed extraction resumes where it stopped; shards are written to a
  temporary name and renamed. Returns ``{"features": [N, D] float32,
  "labels": [N, ...]}``, or None if not ``load`` (a cache too large for
  memory, e.g. 47 GB for ImageNet train at 9216 floats an image, is read
  shard by shard with ``shards``).
  """
  os.makedirs(directory, exist_ok=True)
  if os.path.exists(os.path.join(directory, "COMPLETE")):
    return _load_shards(directory) if load else None
  if callable(batched):
    batched = batched()
  done = 0
  while os.path.exists(_shard_path(directory, done)):
    done += 1
  if done:
    batched = batched.skip(done * batches_per_shard)
  fn = tf.function(features)
  shard, buffer_x, buffer_y, seen = done, [], [], 0
  for shard_file in sorted(glob.glob(os.path.join(directory,
                                                  "features-*.npz"))):
    with np.load(shard_file) as data:
      seen += len(data["labels"])
  if progress is not None and seen:
    progress.update(seen)

  def flush():
    nonlocal shard, buffer_x, buffer_y
    tmp = os.path.join(directory, f".tmp-{shard:05d}.npz")
    np.savez(tmp, features=np.concatenate(buffer_x),
             labels=np.concatenate(buffer_y))
    os.replace(tmp, _shard_path(directory, shard))
    shard, buffer_x, buffer_y = shard + 1, [], []

  for images, labels in batched:
    buffer_x.append(fn(images).numpy().astype(np.float32))
    buffer_y.append(np.asarray(labels))
    seen += len(buffer_y[-1])
    if progress is not None:
      progress.update(min(seen, total))
    if len(buffer_x) == batches_per_shard:
      flush()
  if buffer_x:
    flush()
  with open(os.path.join(directory, "COMPLETE"), "w", encoding="utf-8") as f:
    f.write(f"{shard}\n")
  return _load_shards(directory) if load else None


def shards(directory: str) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """``(features [n, D] float32, labels [n, ...])`` of each cached shard of a
  complete ``extract`` cache, in order."""
  paths = sorted(glob.glob(os.path.join(directory, "features-*.npz")))
  if not paths:
    raise ValueError(f"No features were extracted into {directory} (the data "
                     f"set yielded no usable image).")
  for path in paths:
    with np.load(path) as data:
      yield data["features"], data["labels"]


def _load_shards(directory: str) -> Dict[str, np.ndarray]:
  parts = [np.load(p) for p in sorted(glob.glob(os.path.join(
      directory, "features-*.npz")))]
  if not parts:
    raise ValueError(f"No features were extracted into {directory} (the data "
                     f"set yielded no usable image).")
  return {"features": np.concatenate([p["features"] for p in parts]),
          "labels": np.concatenate([p["labels"] for p in parts])}
