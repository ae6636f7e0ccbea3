"""Shared fixtures for the task tests: tiny image folders, image and motion
TFRecords, a tiny trunk."""

import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf
import tf_keras

from mtssl_tf import config
from mtssl_tf.data import tfrecord_format
from mtssl_tf.models import resnet_v2

TINY_TRUNK = config.TrunkConfig(depth=14, base_width=8, output_stride=8)
TINY_PATCH_UNITS = ((32, 8, 2), (16, 8, 2))


def _jpeg(seed, height, width):
  rng = np.random.RandomState(seed)
  # Smooth random colours, so the images look like (blurry) photos.
  small = rng.randint(0, 256, (4, 5, 3), np.uint8)
  image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
  buffer = io.BytesIO()
  image.save(buffer, "JPEG")
  return buffer.getvalue()


def image_folder(root, count=3, non_image=False):
  """A folder of ``count`` JPEGs (one tiny) plus one corrupt file, and with
  ``non_image`` a text file (``notes.txt``, skipped as unsupported_format)."""
  os.makedirs(root, exist_ok=True)
  sizes = [(300, 400), (64, 48), (500, 260)]
  for i in range(count):
    with open(os.path.join(root, f"img{i}.jpg"), "wb") as f:
      f.write(_jpeg(i, *sizes[i % len(sizes)]))
  with open(os.path.join(root, "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8 not really a jpeg")
  if non_image:
    with open(os.path.join(root, "notes.txt"), "w", encoding="utf-8") as f:
      f.write("not an image")
  return config.DataConfig("folder", root)


def image_records(path, count=3):
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(count):
      writer.write(tfrecord_format.image_example(
          _jpeg(i, 200 + 40 * i, 260), "jpeg", f"img{i}.jpg"))
  return config.DataConfig("tfrecord", path)


def png(array):
  """PNG bytes of a uint8 ``[H, W]`` or ``[H, W, 3]`` array."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def motion_records(path, frames, masks, extra=()):
  """Motion records of uint8 frames ``[H, W, 3]`` and masks ``[H, W, 1]``
  (the format of tools/make_motion_masks.py), then the ``extra`` records."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i, (frame, mask) in enumerate(zip(frames, masks)):
      writer.write(tfrecord_format.motion_example(
          png(frame), png(mask[..., 0]), "video", i))
    for record in extra:
      writer.write(record)


def tiny_model(task):
  """(trunk, head) for ``task`` at its input shape with the tiny trunk."""
  trunk = resnet_v2.build_trunk(TINY_TRUNK, task.input_shape)
  feature_shape = trunk.output["block3"].shape[1:]
  return trunk, task.build_head(feature_shape)


def train_steps(task, images, labels, steps, learning_rate=1e-3):
  """Trains the tiny trunk + ``task``'s head on one fixed batch.

  Returns the list of losses (one per step).
  """
  trunk, head = tiny_model(task)
  optimizer = tf_keras.optimizers.Adam(learning_rate)
  variables = trunk.trainable_variables + head.trainable_variables

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      outputs = head(trunk(images, training=True)["block3"], training=True)
      loss = task.loss(labels, outputs)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss
  return [float(step()) for _ in range(steps)]
