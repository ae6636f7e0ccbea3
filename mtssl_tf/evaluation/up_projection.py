"""Laina et al.'s up-projection decoder for depth (paper §5, NYU v2).

Laina, Rupprecht, Belagiannis, Tombari, Navab, "Deeper depth prediction with
fully convolutional residual networks" (3DV 2016), Fig. 2:

  up-convolution   2x2 unpooling (each input value to the top-left corner of
                   a 2x2 block of zeros), then a 5x5 convolution.
  up-projection    branch 1: up-convolution -> BN -> ReLU -> 3x3 conv -> BN;
                   branch 2: up-convolution -> BN;  output ReLU(branch1 +
                   branch2). Twice the input's height and width.

Doersch & Zisserman feed block 3 (1024 channels) straight into three
up-projections of 512, 256 and 128 filters (no block 4; Laina used four
levels on ResNet-50's block 4), then Laina's prediction layer, a 3x3 conv to
one channel followed by a ReLU (``ConvPred`` in Laina's released code).

``UpConvolution`` holds the 5x5 kernel of the original form and computes it
either way:
  * ``fast=False``: unpool + 5x5 conv, literally (the definition).
  * ``fast=True``: Laina's "fast up-projection": the four output phases
    (even/odd row x even/odd column) are four small convolutions of the
    un-pooled input with the sub-kernels K[0::2, 0::2] (3x3), K[1::2, 0::2]
    (2x3), K[0::2, 1::2] (3x2), K[1::2, 1::2] (2x2), interleaved. We run them
    as one 3x3 convolution with 4x the output channels (each sub-kernel
    zero-padded into the 3x3 window) followed by ``depth_to_space``. The
    odd phases read input rows/columns (i, i+1): the padding of Laina's
    released TF code reads (i-1, i), which is not equivalent to the
    un-pool+5x5 form; the authors confirm this in
    irolaina/FCRN-DepthPrediction issue #40. ``tests/evaluation/
    up_projection_test.py`` checks that both forms agree.
The layer keeps one bias (the 5x5 conv's), as the original form has.

Convs use the trunk's conventions (He initialisation, L2 weight decay in
Slim's ``wd * sum(w**2) / 2``); batch norm uses the trunk's decay/epsilon.
"""

from typing import Sequence

import tensorflow as tf
import tf_keras

DECODER_FILTERS = (512, 256, 128)


@tf_keras.utils.register_keras_serializable(package="mtssl_tf")
class UpConvolution(tf_keras.layers.Layer):
  """Unpooling (x2) followed by a 5x5 convolution (Laina et al. 2016, Fig. 2).

  Args:
    filters: output channels.
    fast: compute it as four interleaved small convolutions (see the module
      docstring) instead of unpool + 5x5 conv; the result is the same.
    weight_decay: L2 weight decay of the kernel (Slim convention).

  Call arguments:
    inputs: ``[N, H, W, C]``.

  Returns:
    ``[N, 2H, 2W, filters]``.
  """

  def __init__(self, filters: int, fast: bool = True,
               weight_decay: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.fast = fast
    self.weight_decay = weight_decay

  def build(self, input_shape):
    channels = int(input_shape[-1])
    regularizer = (tf_keras.regularizers.l2(0.5 * self.weight_decay)
                   if self.weight_decay else None)
    self.kernel = self.add_weight(
        name="kernel", shape=[5, 5, channels, self.filters],
        initializer=tf_keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_in", distribution="truncated_normal"),
        regularizer=regularizer, trainable=True)
    self.bias = self.add_weight(name="bias", shape=[self.filters],
                                initializer="zeros", trainable=True)
    super().build(input_shape)

  def _phase_kernel(self):
    """The four sub-kernels in one ``[3, 3, C, 4 * filters]`` kernel.

    Output phase (di, dj) of output pixel (2i + di, 2j + dj) reads input rows
    i - 1 + di + a for kernel row a with K[2a + di] (a = 0..2 - di), and the
    same for columns; as a 3x3 window centred on (i, j) that is the
    sub-kernel placed at row offset di. Channel order (di, dj) = (0, 0),
    (0, 1), (1, 0), (1, 1) is what ``depth_to_space`` expects.
    """
    k = self.kernel
    phases = []
    for di in (0, 1):
      for dj in (0, 1):
        sub = k[di::2, dj::2]                       # [3 - di, 3 - dj, C, F]
        sub = tf.pad(sub, [[di, 0], [dj, 0], [0, 0], [0, 0]])
        phases.append(sub)
    return tf.concat(phases, axis=-1)

  def call(self, inputs):
    k = tf.cast(self.kernel, inputs.dtype)
    b = tf.cast(self.bias, inputs.dtype)
    if self.fast:
      out = tf.nn.conv2d(inputs, tf.cast(self._phase_kernel(), inputs.dtype),
                         strides=1, padding="SAME")
      out = tf.nn.depth_to_space(out, 2)
    else:
      shape = tf.shape(inputs)
      n, h, w = shape[0], shape[1], shape[2]
      c = inputs.shape[-1]
      # Unpool: value (i, j) to (2i, 2j), zeros elsewhere.
      zeros = tf.zeros_like(inputs)
      rows = tf.reshape(tf.stack([inputs, zeros], axis=2), [n, 2 * h, w, c])
      zeros = tf.zeros_like(rows)
      unpooled = tf.reshape(tf.stack([rows, zeros], axis=3),
                            [n, 2 * h, 2 * w, c])
      out = tf.nn.conv2d(unpooled, k, strides=1, padding="SAME")
    return tf.nn.bias_add(out, b)

  def compute_output_shape(self, input_shape):
    n, h, w, _ = tf.TensorShape(input_shape).as_list()
    return tf.TensorShape([n, None if h is None else 2 * h,
                           None if w is None else 2 * w, self.filters])

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, fast=self.fast,
                  weight_decay=self.weight_decay)
    return config


def _batch_norm(name, decay, epsilon):
  return tf_keras.layers.BatchNormalization(momentum=decay, epsilon=epsilon,
                                            name=name)


def up_projection(x, filters: int, name: str, fast: bool = True,
                  weight_decay: float = 1e-4, batch_norm_decay: float = 0.997,
                  batch_norm_epsilon: float = 1e-5):
  """One up-projection block (Laina et al. 2016, Fig. 2(d)).

  Args:
    x: ``[N, H, W, C]`` (Keras symbolic).
    filters: output channels.
    name: layer-name prefix.

  Returns:
    ``[N, 2H, 2W, filters]``.
  """
  bn = lambda n: _batch_norm(f"{name}/{n}", batch_norm_decay,  # noqa: E731
                             batch_norm_epsilon)
  regularizer = (tf_keras.regularizers.l2(0.5 * weight_decay)
                 if weight_decay else None)
  branch1 = UpConvolution(filters, fast, weight_decay,
                          name=f"{name}/branch1_upconv")(x)
  branch1 = bn("branch1_upconv_bn")(branch1)
  branch1 = tf_keras.layers.ReLU(name=f"{name}/branch1_relu")(branch1)
  branch1 = tf_keras.layers.Conv2D(
      filters, 3, padding="same", use_bias=True,
      kernel_initializer=tf_keras.initializers.VarianceScaling(
          scale=2.0, mode="fan_in", distribution="truncated_normal"),
      kernel_regularizer=regularizer, name=f"{name}/branch1_conv")(branch1)
  branch1 = bn("branch1_conv_bn")(branch1)
  branch2 = UpConvolution(filters, fast, weight_decay,
                          name=f"{name}/branch2_upconv")(x)
  branch2 = bn("branch2_upconv_bn")(branch2)
  out = tf_keras.layers.Add(name=f"{name}/sum")([branch1, branch2])
  return tf_keras.layers.ReLU(name=f"{name}/relu")(out)


def build_decoder(input_channels: int,
                  filters: Sequence[int] = DECODER_FILTERS,
                  fast: bool = True, weight_decay: float = 1e-4,
                  batch_norm_decay: float = 0.997,
                  batch_norm_epsilon: float = 1e-5,
                  name: str = "depth_decoder") -> tf_keras.Model:
  """Up-projections + prediction layer: block-3 features -> depth.

  Args:
    input_channels: channels of the features (1024 for ResNet-v2-101 block 3).
    filters: filters of each up-projection level (paper: 512, 256, 128).

  Returns:
    A ``tf_keras.Model`` mapping ``[N, h, w, input_channels]`` to the depth
    ``[N, h * 2**L, w * 2**L, 1]`` (metres, >= 0), L = ``len(filters)``.
  """
  inputs = tf_keras.Input(shape=(None, None, input_channels),
                          name="features")
  net = inputs
  for level, f in enumerate(filters):
    net = up_projection(net, f, f"up_projection_{level + 1}", fast=fast,
                        weight_decay=weight_decay,
                        batch_norm_decay=batch_norm_decay,
                        batch_norm_epsilon=batch_norm_epsilon)
  regularizer = (tf_keras.regularizers.l2(0.5 * weight_decay)
                 if weight_decay else None)
  depth = tf_keras.layers.Conv2D(
      1, 3, padding="same", use_bias=True, activation="relu",
      kernel_initializer=tf_keras.initializers.VarianceScaling(
          scale=2.0, mode="fan_in", distribution="truncated_normal"),
      kernel_regularizer=regularizer, dtype="float32",
      name="prediction")(net)
  return tf_keras.Model(inputs, depth, name=name)
