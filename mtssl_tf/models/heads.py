"""Residual-unit head parts shared by relative position and exemplar (§3.4).

Paper §3.4 (SPEC.md "Heads"): a 96x96 patch gives a ``[12, 12, 1024]`` block-3
map at output stride 8. Both rp and ex then apply two more ResNet-v2
bottleneck units,

  out 1024 / bottleneck 128 / stride 2   -> [6, 6, 1024]
  out  512 / bottleneck 128 / stride 2   -> [3, 3, 512]

and flatten that to 4608 numbers per patch. rp continues with
"fully-connected" residual units: ``resnet_v2.bottleneck_unit`` applied to a
``[N, 1, 1, C]`` tensor (its 3x3 conv then only sees its centre tap), which is
what the paper calls a convolutional residual unit of spatial size 1x1.

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


def fc_residual_unit(x, depth: int, depth_bottleneck: int, name: str,
                     weight_decay: float = 1e-4):
  """A "fully-connected" residual unit: ``[N, C_in]`` -> ``[N, depth]``.

  When ``depth != C_in`` the shortcut is a learned linear projection (TF-Slim's
  1x1-conv shortcut on the pre-activation), otherwise the identity.
  """
  x = tf_keras.layers.Reshape((1, 1, x.shape[-1]), name=name + "/to_1x1")(x)
  x = resnet_v2.bottleneck_unit(x, depth, depth_bottleneck, 1, name=name,
                                weight_decay=weight_decay)
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
