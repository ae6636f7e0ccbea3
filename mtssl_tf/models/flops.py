"""Analytic FLOP count of trunk and heads (for tools/benchmark.py).

Counts floating-point operations of a forward pass from layer shapes, the
usual "multiply-adds x 2" convention:

  Conv2D   2 * (output elements) * kh * kw * C_in / groups, whatever the
           atrous rate (a dilated tap is still one multiply-add), plus one
           add per output element for the bias.
  Dense    2 * rows * C_in * C_out, plus the bias.
  BatchNormalization  2 per element (a scale and a shift: batch norm at
           inference is one affine map per channel).
  everything else (ReLU, residual add, padding, max-pool, reshapes): 0.
           These are memory-bound and well under 1% of the convolutions.

That is, every affine layer is counted and nothing else. It reproduces the
figures of SPEC.md for the ResNet-v2-101 trunk up to block 3 at output stride
8: 57.6 GFLOP at 256x256, 8.1 at 96x96, 67.5 at 240x320, 44.1 at 224x224
(per image). Every counted FLOP is useful: the "fully-connected" residual
units of rp are built with 1x1 convs (``models/heads.py``), so no kernel tap
that only ever sees padding is counted. LassoCombine (2 * units * elements, 0.1% of the trunk) is not
counted.

A training step costs about ``TRAINING_MULTIPLIER`` = 3 forward passes (the
backward pass computes gradients with respect to both activations and
weights, each about one forward pass).

Counts are Python ints (exact); the shapes come from a built tf_keras model,
cloned with a static batch size when its input batch is unknown, so siamese
heads that regroup their batch (``heads.GroupConsecutive``) are counted with
the right number of rows.
"""

import math
from typing import Dict, Optional, Sequence

import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.models import resnet_v2

TRAINING_MULTIPLIER = 3


def conv2d_flops(output_shape: Sequence[int], kernel_size: Sequence[int],
                 in_channels: int, use_bias: bool = False,
                 groups: int = 1) -> int:
  """FLOPs of a 2-D convolution with output ``[N, H, W, C_out]``."""
  elements = math.prod(int(d) for d in output_shape)
  taps = math.prod(int(k) for k in kernel_size) * (in_channels // groups)
  return 2 * elements * taps + (elements if use_bias else 0)


def dense_flops(rows: int, in_features: int, out_features: int,
                use_bias: bool = True) -> int:
  """FLOPs of a fully-connected layer applied to ``rows`` vectors."""
  return rows * out_features * (2 * in_features + (1 if use_bias else 0))


def batch_norm_flops(shape: Sequence[int]) -> int:
  """FLOPs of batch norm as an affine map on a tensor of ``shape``."""
  return 2 * math.prod(int(d) for d in shape)


def _static(shape, layer, batch_size) -> Sequence[int]:
  if shape[0] is None and batch_size is not None:
    shape = (batch_size,) + tuple(shape[1:])
  if any(d is None for d in shape):
    raise ValueError(
        f"Layer {layer.name!r} has a dynamic output shape {shape}; count "
        f"FLOPs on a model with a static input shape (pass input_shape and "
        f"batch_size to model_flops).")
  return shape


def layer_flops(layer, batch_size: Optional[int] = None) -> int:
  """Forward FLOPs of one built layer (0 if it is not affine).

  Args:
    layer: a built layer of a functional model with static shapes.
    batch_size: rows to assume where the layer's batch dimension is unknown
      (only right when no layer before it changes the batch).
  """
  if isinstance(layer, tf_keras.layers.Conv2D):
    out = _static(layer.output_shape, layer, batch_size)
    in_channels = int(layer.input_shape[-1])
    return conv2d_flops(out, layer.kernel_size, in_channels, layer.use_bias,
                        getattr(layer, "groups", 1))
  if isinstance(layer, tf_keras.layers.Dense):
    out = _static(layer.output_shape, layer, batch_size)
    return dense_flops(math.prod(out[:-1]), int(layer.input_shape[-1]),
                       int(out[-1]), layer.use_bias)
  if isinstance(layer, tf_keras.layers.BatchNormalization):
    return batch_norm_flops(_static(layer.output_shape, layer, batch_size))
  return 0


def model_flops(model: tf_keras.Model,
                input_shape: Optional[Sequence[int]] = None,
                batch_size: int = 1) -> int:
  """Forward FLOPs of a functional ``model`` on ``batch_size`` inputs.

  Args:
    model: a functional tf_keras model with one input (nested functional
      models are counted recursively).
    input_shape: per-example input shape, e.g. ``(256, 256, 3)``; default the
      model's own (it must then be static).
    batch_size: rows of the model's input.

  Returns:
    The FLOP count (int).
  """
  shape = tuple(input_shape or model.input_shape[1:])
  static = tf_keras.Input(shape=shape, batch_size=batch_size)
  # A clone with a static batch and input size gives every layer static
  # shapes; the clone's weights are fresh and unused.
  clone = tf_keras.models.clone_model(model, input_tensors=static)
  total = 0
  for layer in clone.layers:
    if isinstance(layer, tf_keras.Model):
      inner = layer.input_shape
      total += model_flops(layer, inner[1:], inner[0])
    else:
      total += layer_flops(layer)
  return total


def trunk_flops(cfg: config_lib.TrunkConfig, height: int, width: int,
                batch_size: int = 1) -> int:
  """Forward FLOPs of the ResNet-v2 trunk on ``[batch_size, H, W, 3]``.

  Pure Python over the layer table of ``resnet_v2`` (no model is built);
  ``model_flops`` of the built trunk gives the same number.
  """
  def conv(h, w, c_out, k, c_in, bias):
    return conv2d_flops((batch_size, h, w, c_out), (k, k), c_in, bias)

  def bn(h, w, c):
    return batch_norm_flops((batch_size, h, w, c))

  h, w = -(-height // 2), -(-width // 2)  # conv1 7x7/2 (conv2d_same)
  total = conv(h, w, cfg.base_width, 7, 3, True)
  h, w = -(-h // 2), -(-w // 2)  # pool1 3x3/2 SAME
  channels = cfg.base_width
  num_blocks = 4 if cfg.include_block4 else 3
  schedule = resnet_v2.unit_schedule(cfg.depth, cfg.output_stride,
                                     num_blocks)
  for b, units in enumerate(schedule):
    width_b = cfg.base_width * resnet_v2.BLOCK_WIDTH_MULTIPLIERS[b]
    depth = 4 * width_b
    for stride, _ in units:
      h_out, w_out = -(-h // stride), -(-w // stride)
      total += bn(h, w, channels)  # preact
      if depth != channels:
        total += conv(h_out, w_out, depth, 1, channels, True)  # shortcut
      total += conv(h, w, width_b, 1, channels, False) + bn(h, w, width_b)
      total += conv(h_out, w_out, width_b, 3, width_b, False)
      total += bn(h_out, w_out, width_b)
      total += conv(h_out, w_out, depth, 1, width_b, True)
      h, w, channels = h_out, w_out, depth
  if cfg.include_block4:
    total += bn(h, w, channels)  # postnorm
  return total


def feature_shape_of(cfg: config_lib.TrunkConfig, height: int,
                     width: int):
  """Block-3 ``(h, w, C)`` of the trunk for an ``H x W`` input."""
  h, w = -(-height // 2), -(-width // 2)  # conv1
  h, w = -(-h // 2), -(-w // 2)  # pool1
  for units in resnet_v2.unit_schedule(cfg.depth, cfg.output_stride, 3):
    for unit_stride, _ in units:
      h, w = -(-h // unit_stride), -(-w // unit_stride)
  return (h, w, resnet_v2.block_output_channels(cfg.base_width, 3))


def task_flops(trunk_config: config_lib.TrunkConfig, task,
               batch_size: int) -> Dict[str, int]:
  """Forward FLOPs of trunk and head for one batch of ``task``.

  Args:
    trunk_config: the trunk.
    task: a task object (tasks/base.py contract).
    batch_size: examples per batch (the trunk sees ``batch_size *
      task.trunk_inputs_per_example`` images).

  Returns:
    ``{"trunk": ..., "head": ..., "forward": trunk + head,
    "training": TRAINING_MULTIPLIER * forward}``.
  """
  rows = batch_size * getattr(task, "trunk_inputs_per_example", 1)
  height, width, _ = task.input_shape
  trunk_count = trunk_flops(trunk_config, height, width, rows)
  feature_shape = feature_shape_of(trunk_config, height, width)
  head = task.build_head(feature_shape)
  head_count = model_flops(head, feature_shape, rows)
  forward = trunk_count + head_count
  return {"trunk": trunk_count, "head": head_count, "forward": forward,
          "training": TRAINING_MULTIPLIER * forward}
