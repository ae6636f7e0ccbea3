"""Re-estimating a trunk's batch-norm statistics before freezing it.

A random or briefly trained ResNet-v2 trunk is not usable in inference mode:
its moving statistics still hold their initial values (mean 0, variance 1)
while the un-normalised residual stream grows unit by unit, to block-3
activations of ~1e18 after 3 training steps (SPEC.md "Evaluation facts"). As
"precise BN" (Wu & Johnson 2021; fvcore's ``update_bn_stats``), the trunk is
run in training mode over N images and every batch-norm layer's moving mean
and variance are set to the average of its per-batch statistics; in training
mode each layer normalises with its batch statistics, so the layers above see
the same inputs they will see in inference mode afterwards. Nothing else
changes (training-mode BN does not touch gamma/beta).

Written by hand: neither Keras nor Model Garden has this. Momentum 0 makes a
Keras BatchNormalization layer store the batch statistics of the last call,
which are accumulated here in float64.
"""

import os
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras


def batch_norm_layers(model: tf_keras.Model) -> List[tf_keras.layers.Layer]:
  return [layer for layer in model.layers
          if isinstance(layer, tf_keras.layers.BatchNormalization)]


def recompute(trunk: tf_keras.Model, images: tf.data.Dataset, num_images: int,
              log: Callable[[str], None] = print,
              layers: Optional[List[tf_keras.layers.Layer]] = None) -> int:
  """Sets every BN layer's moving statistics to their mean over ~num_images.

  Args:
    trunk: the trunk (its BN layers are updated in place).
    images: float32 ``[B, H, W, 3]`` batches in [-1, 1] (repeated as needed).
    num_images: images to average over (whole batches; at least one batch).
    layers: the batch-norm layers to re-estimate (default: the trunk's own
      ``batch_norm_layers``; a model holding nested models passes them all).

  Returns:
    The number of images used.
  """
  layers = batch_norm_layers(trunk) if layers is None else list(layers)
  momenta = [layer.momentum for layer in layers]
  sums = [[np.zeros(layer.moving_mean.shape, np.float64),
           np.zeros(layer.moving_variance.shape, np.float64)]
          for layer in layers]
  step = tf.function(lambda x: trunk(x, training=True))
  # Said up front: at paper scale (ResNet-v2-101, 600x1000, 1024 images on
  # CPU) this takes many minutes before the next line.
  log(f"Re-estimating the statistics of {len(layers)} batch-norm layers on "
      f"{num_images} images ...")
  used = batches = 0
  try:
    for layer in layers:
      layer.momentum = 0.0
    for batch in images:
      step(batch)
      for total, layer in zip(sums, layers):
        total[0] += layer.moving_mean.numpy()
        total[1] += layer.moving_variance.numpy()
      used += int(batch.shape[0])
      batches += 1
      if used >= num_images:
        break
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
  if not batches:
    raise ValueError("No images to re-estimate batch-norm statistics on.")
  for total, layer in zip(sums, layers):
    layer.moving_mean.assign(total[0] / batches)
    layer.moving_variance.assign(total[1] / batches)
  log(f"Re-estimated the statistics of {len(layers)} batch-norm layers on "
      f"{used} images.")
  return used


def recompute_cached(trunk: tf_keras.Model, images: tf.data.Dataset,
                     num_images: int, directory: str,
                     log: Callable[[str], None] = print) -> None:
  """``recompute`` once; later runs restore the saved statistics instead.

  ``images`` may be a function returning the data set, called only when the
  statistics are recomputed (building an input pipeline traces its maps).
  """
  stats = {f"{i}": [layer.moving_mean, layer.moving_variance]
           for i, layer in enumerate(batch_norm_layers(trunk))}
  ckpt = tf.train.Checkpoint(**stats)
  latest = tf.train.latest_checkpoint(directory)
  if latest:
    ckpt.restore(latest).assert_consumed()
    log(f"Restored re-estimated batch-norm statistics from {latest}.")
    return
  if callable(images):
    images = images()
  recompute(trunk, images, num_images, log=log)
  os.makedirs(directory, exist_ok=True)
  tf.train.CheckpointManager(ckpt, directory, max_to_keep=1).save()
