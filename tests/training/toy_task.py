"""A tiny task that follows the tasks/base.py contract, for loop tests.

Images are random; the label says whether the image's mean is above 0 (an
easy signal that a tiny trunk learns in a few steps). ``nan_after`` makes the
loss NaN after that many loss evaluations and ``loss_scale`` scales the loss
and so the gradients (to test the NaN guard); ``trace_seconds`` makes tracing
the loss slow (it sleeps in Python, which runs only while tracing).
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf
import tf_keras


@dataclasses.dataclass(frozen=True)
class Config:
  size: int = 32
  nan_after: int = -1
  loss_scale: float = 1.0
  trace_seconds: float = 0.0


class Task:
  """The contract of mtssl_tf/tasks/base.py, minimal."""

  source_kind = "images"
  trunk_inputs_per_example = 1

  def __init__(self, config: Config = Config(), name: str = "toy"):
    self.config = config
    self.name = name
    self._calls = tf.Variable(0, trainable=False) if config.nan_after >= 0 else None

  @property
  def input_shape(self):
    return (self.config.size, self.config.size, 3)

  def make_dataset(self, data, batch_size, seed=None, skipped=None):
    del data, skipped  # generated data: nothing to skip
    size = self.config.size

    def example(i):
      rng_seed = tf.stack([tf.cast(0 if seed is None else seed, tf.int64), i])
      sign = tf.where(i % 2 == 0, 1.0, -1.0)
      image = 0.5 * sign + tf.random.stateless_normal(
          [size, size, 3], rng_seed, stddev=0.3)
      return image, {"label": tf.cast(i % 2 == 0, tf.int32)}

    dataset = (tf.data.Dataset.range(10**9).map(example)
               .batch(batch_size, drop_remainder=True).prefetch(2))
    return dataset, None  # nothing to skip

  def build_head(self, feature_shape):
    features = tf_keras.Input(tuple(feature_shape))
    pooled = tf_keras.layers.GlobalAveragePooling2D()(features)
    pooled = tf_keras.layers.BatchNormalization(
        name=f"{self.name}_head/bn")(pooled)
    logits = tf_keras.layers.Dense(2, name=f"{self.name}_head/logits")(pooled)
    return tf_keras.Model(features, {"logits": logits},
                          name=f"head_{self.name}")

  def loss(self, labels, outputs):
    time.sleep(self.config.trace_seconds)
    loss = self.config.loss_scale * tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels["label"], outputs["logits"]))
    if self._calls is not None:
      self._calls.assign_add(1)
      loss = tf.where(self._calls > self.config.nan_after,
                      tf.constant(np.nan, tf.float32), loss)
    return loss

  def metrics(self, labels, outputs):
    predicted = tf.argmax(outputs["logits"], -1, output_type=tf.int32)
    return {"accuracy": tf.reduce_mean(
        tf.cast(predicted == labels["label"], tf.float32))}

  def summary_images(self, images, labels, outputs):
    del labels, outputs
    return {"inputs": tf.cast((images[:2] + 1.0) * 127.5, tf.uint8)}
