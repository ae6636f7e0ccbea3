"""Residual-unit head parts shared by relative position and exemplar (§3.4).

Paper §3.4 (SPEC.md "Heads"): a 96x96 patch gives a ``[12, 12, 1024]`` block-3
map at output stride 8. Both rp and ex then apply two more ResNet-v2
bottleneck units,

  out 1024 / bottleneck 128 / stride 2   -> [6, 6, 1024]
  out  512 / bottleneck 128 / stride 2   -> [3, 3, 512]

and flatten that to 4608 numbers per patch. rp continues with
"fully-connected" residual units (``fc_residual_unit``): a ResNet-v2
bottleneck unit on a 1x1 map, which is what the paper calls fully connected.
On a 1x1 map a 3x3 "same" conv only ever uses its centre tap, so the unit's
bottleneck conv is built 1x1: a 3x3 one would hold 8 x 512 x 512
never-trained weights per unit, 6.3M over rp's three units, each with two
RMSProp slots (issue 16). Its 1x1 convs are computed as matmuls with a
hand-written backward pass (``PointwiseConv``): same variables, same
numerics, a faster backward for the few rows a siamese batch has.

Parameter counts at the paper's widths (trainable, including batch norm's
scale and offset), checked by tests/models/heads_test.py:

  per-patch unit 1 (1024 -> 1024, identity shortcut)       413,184
  per-patch unit 2 (1024 -> 512, projection shortcut)      871,936
  exemplar head (the two per-patch units)                1,285,120
  fc unit 9216 -> 4608, bottleneck 512 (projection)     49,837,056
  fc unit 4608 -> 4608, bottleneck 512 (identity)        4,996,608
  relative-position head                                61,161,480
    (patch units, fc units 9216 -> 4608 -> 4608 -> 4608, postnorm and
    8-way logits)

(the 3x3-conv form held 67,452,936 for rp).

All widths are arguments (``PATCH_UNITS`` is the paper's setting) so tests
build tiny heads. Regularisation follows the trunk (TF-Slim
``resnet_arg_scope``): L2 weight decay 1e-4 on kernels in Slim's convention.
"""

from typing import Sequence, Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf.models import resnet_v2

# (output depth, bottleneck depth, stride) of the per-patch units (§3.4).
PATCH_UNITS: Tuple[Tuple[int, int, int], ...] = ((1024, 128, 2), (512, 128, 2))


def patch_units(x, units: Sequence[Tuple[int, int, int]] = PATCH_UNITS,
                name: str = "patch", weight_decay: float = 1e-4):
  """Applies the per-patch residual units.

  Args:
    x: ``[N, 12, 12, C]`` block-3 features of N patches (Keras symbolic).
    units: ``(depth, depth_bottleneck, stride)`` per unit.
    name: layer-name prefix.
    weight_decay: L2 weight decay (TF-Slim convention).

  Returns:
    ``[N, 3, 3, 512]`` with the paper's units (a pre-activation sum: no final
    batch norm / ReLU, as inside a ResNet-v2 block).
  """
  for i, (depth, bottleneck, stride) in enumerate(units):
    x = resnet_v2.bottleneck_unit(
        x, depth, bottleneck, stride, name=f"{name}/unit_{i + 1}",
        weight_decay=weight_decay)
  return x


@tf.custom_gradient
def few_rows_matmul(x, w):
  """``x [N, C] @ w [C, F]`` with a backward pass fast for a large ``w``.

  TensorFlow's own MatMul gradient computes ``dx = dy @ w^T`` with
  ``transpose_b`` on the large ``w``; on CPU (oneDNN) that took 0.44-0.71 s
  for rp's 9216 x 4608 projection at N = 2, against 0.03-0.06 s for the same
  numbers as ``(w @ dy^T)^T``, whose transposes are of the small ``[N, *]``
  operands only; 1x1 convolutions (``Conv2DBackpropInput`` / ``Filter``) are
  as slow (tools/benchmark.py's ``levers`` section, issue 16). Written by hand
  because TF has no switch for the transposition it picks; first-order only.

  Args:
    x: ``[N, C]``.
    w: ``[C, F]``.

  Returns:
    ``[N, F]``, and its gradient function ``dy [N, F] -> (dx [N, C],
    dw [C, F])``.
  """
  def grad(dy):
    dx = tf.transpose(tf.matmul(w, tf.transpose(dy)))
    dw = tf.matmul(tf.transpose(x), dy)
    return dx, dw
  return tf.matmul(x, w), grad


@tf_keras.utils.register_keras_serializable(package="mtssl_tf")
class PointwiseConv(tf_keras.layers.Conv2D):
  """A 1x1 ``Conv2D`` computed as one matmul over all pixels.

  ``[N, h, w, C] -> [N, h, w, filters]``, exactly a 1x1 ``Conv2D`` (same
  ``kernel [1, 1, C, filters]`` and ``bias`` variables, names, initialisers,
  regularisers and config, so checkpoints and the FLOP count are those of the
  convolution), but the product is ``few_rows_matmul`` on the ``[N*h*w, C]``
  rows: rp's fully-connected units run on 1x1 maps with a few rows, where
  the convolution's backward pass is memory-bound and TF's kernels for it
  are ~3x slower than a matmul's (issue 16).
  """

  def __init__(self, filters, kernel_size=1, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    if self.kernel_size != (1, 1) or self.strides != (1, 1) or (
        self.dilation_rate != (1, 1)) or self.groups != 1:
      raise ValueError(
          f"PointwiseConv is a 1x1 conv with stride 1, got kernel_size "
          f"{self.kernel_size}, strides {self.strides}, dilation "
          f"{self.dilation_rate}, groups {self.groups}.")

  def convolution_op(self, inputs, kernel):
    depth_in = kernel.shape[-2]
    rows = tf.reshape(inputs, [-1, depth_in])
    out = few_rows_matmul(rows, tf.reshape(kernel, [depth_in, self.filters]))
    return tf.reshape(out, tf.concat([tf.shape(inputs)[:-1], [self.filters]],
                                     0))


def _conv1x1(filters, name, weight_decay, use_bias, scale=2.0,
             conv_class=PointwiseConv):
  return conv_class(
      filters, 1, use_bias=use_bias,
      kernel_initializer=tf_keras.initializers.VarianceScaling(
          scale=scale, mode="fan_in", distribution="truncated_normal"),
      kernel_regularizer=(tf_keras.regularizers.l2(0.5 * weight_decay)
                          if weight_decay else None), name=name)


def _batch_norm(name):
  return tf_keras.layers.BatchNormalization(momentum=0.997, epsilon=1e-5,
                                            name=name)


def fc_residual_unit(x, depth: int, depth_bottleneck: int, name: str,
                     weight_decay: float = 1e-4, conv_class=PointwiseConv):
  """A "fully-connected" residual unit: ``[N, C_in]`` -> ``[N, depth]``.

  ``resnet_v2.bottleneck_unit`` on the ``[N, 1, 1, C_in]`` map, with its 3x3
  bottleneck conv replaced by the 1x1 conv that is its centre tap (the only
  tap a 1x1 map reaches; same layer names and regularisation):

    preact   = ReLU(BN(x))
    shortcut = x if depth == C_in, else conv1x1(preact) + b_s (TF-Slim's
               projection shortcut on the pre-activation)
    residual = ReLU(BN(conv1x1(preact))) -> ReLU(BN(conv1x1(.))) ->
               conv1x1(.) + b_3
    output   = shortcut + residual

  The map stays 4-D so batch norm is the same (fused) op as in the trunk,
  with the same moving statistics (a 2-D batch norm would update the
  moving variance without Bessel's correction). The middle conv is
  initialised as the 3x3 conv's centre tap was (He truncated normal with a
  3x3 fan-in, 9 x depth_bottleneck), so training starts from the same
  distribution. Parameters: ``C_in * b + b * b + b * depth + depth`` weights
  and biases, ``2 * (C_in + 2 * b)`` batch-norm scales and offsets, plus
  ``C_in * depth + depth`` for a projection (b = depth_bottleneck).

  ``conv_class`` builds the 1x1 convs: ``PointwiseConv`` (matmuls), or
  ``tf_keras.layers.Conv2D``, which ``benchmarks/legacy.py`` passes to time
  the formulation it replaced (same variables, same numbers).
  """
  depth_in = x.shape[-1]
  x = tf_keras.layers.Reshape((1, 1, depth_in), name=name + "/to_1x1")(x)
  preact = _batch_norm(name + "/preact")(x)
  preact = tf_keras.layers.ReLU(name=name + "/preact_relu")(preact)
  if depth == depth_in:
    shortcut = x
  else:
    shortcut = _conv1x1(depth, name + "/shortcut", weight_decay, True,
                        conv_class=conv_class)(preact)
  residual = _conv1x1(depth_bottleneck, name + "/conv1", weight_decay,
                      False, conv_class=conv_class)(preact)
  residual = _batch_norm(name + "/conv1/BatchNorm")(residual)
  residual = tf_keras.layers.ReLU(name=name + "/conv1_relu")(residual)
  residual = _conv1x1(depth_bottleneck, name + "/conv2", weight_decay, False,
                      scale=2.0 / 9.0, conv_class=conv_class)(residual)
  residual = _batch_norm(name + "/conv2/BatchNorm")(residual)
  residual = tf_keras.layers.ReLU(name=name + "/conv2_relu")(residual)
  residual = _conv1x1(depth, name + "/conv3", weight_decay, True,
                      conv_class=conv_class)(residual)
  x = tf_keras.layers.Add(name=name + "/add")([shortcut, residual])
  return tf_keras.layers.Flatten(name=name + "/flatten")(x)


@tf_keras.utils.register_keras_serializable(package="mtssl_tf")
class GroupConsecutive(tf_keras.layers.Layer):
  """Concatenates every ``group_size`` consecutive batch rows.

  The siamese tasks put the patches of one example next to each other in the
  trunk batch (paper §3.1); this rearranges ``[N * group_size, D]`` into
  ``[N, group_size * D]`` with row n = concat(rows n*g ... n*g + g - 1).

  Args:
    group_size: patches per example (2 for relative-position pairs).
  """

  def __init__(self, group_size: int, **kwargs):
    super().__init__(**kwargs)
    if group_size < 1:
      raise ValueError(f"group_size must be positive, got {group_size}.")
    self.group_size = group_size

  def call(self, inputs):
    width = inputs.shape[-1]
    return tf.reshape(inputs, [-1, self.group_size * width])

  def compute_output_shape(self, input_shape):
    batch = input_shape[0]
    if batch is not None:
      batch //= self.group_size
    return tf.TensorShape([batch, self.group_size * input_shape[-1]])

  def get_config(self):
    return {**super().get_config(), "group_size": self.group_size}


def final_preactivation(x, name: str):
  """Batch norm + ReLU before a linear output layer (ResNet-v2 "postnorm").

  A pre-activation network's unit outputs are un-normalised sums, so
  ResNet-v2 normalises once more before its logits; the rp head does the same
  before its 8-way layer.
  """
  x = tf_keras.layers.BatchNormalization(momentum=0.997, epsilon=1e-5,
                                         name=name + "/BatchNorm")(x)
  return tf_keras.layers.ReLU(name=name + "/relu")(x)


def conv_head(feature_shape, kernel_sizes: Sequence[int], width: int,
              num_outputs: int, name: str, weight_decay: float = 1e-4,
              model_name: str = None) -> tf_keras.Model:
  """Per-pixel head: ReLU convs, then 1x1 conv logits (col and ms, §3.4).

  Colorization uses kernel sizes (2, 1) with width 4096 and 313 outputs;
  motion segmentation (1, 1) with width 4096 and 1 output. Convs are "same"
  padded, so the output keeps the feature map's size; He-initialised with the
  trunk's weight-decay convention. Logits are float32 even under a mixed
  precision policy.

  Args:
    feature_shape: ``(h, w, C)`` of the representation (a leading batch entry
      is ignored).
    kernel_sizes: kernel size of each hidden conv.
    width: channels of the hidden convs.
    num_outputs: logits per pixel.
    name: layer-name prefix, ``<task>_head``.
    weight_decay: L2 weight decay (TF-Slim convention ``wd * sum(w**2) / 2``).
    model_name: name of the returned model.

  Returns:
    A model ``[N, h, w, C] -> {"logits": [N, h, w, num_outputs]}``.
  """
  regularizer = (tf_keras.regularizers.l2(0.5 * weight_decay)
                 if weight_decay else None)
  inputs = tf_keras.Input(shape=tuple(feature_shape)[-3:], name="features")
  net = inputs
  for i, kernel_size in enumerate(kernel_sizes):
    net = tf_keras.layers.Conv2D(
        width, kernel_size, padding="same", activation="relu",
        kernel_initializer=tf_keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_in", distribution="truncated_normal"),
        kernel_regularizer=regularizer, name=f"{name}/conv{i + 1}")(net)
  logits = tf_keras.layers.Conv2D(
      num_outputs, 1, kernel_regularizer=regularizer, dtype="float32",
      name=f"{name}/logits")(net)
  return tf_keras.Model(inputs, {"logits": logits}, name=model_name or name)
