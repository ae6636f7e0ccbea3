"""Table-driven pre-activation ResNet-v2 trunk with atrous block 3 (paper §3.1).

This is TF-Slim's ``resnet_v2`` (``tf_slim/nets/resnet_v2.py``, He et al. 2016
"Identity mappings in deep residual networks") rebuilt from tf_keras layers,
layer for layer, so that TF-Slim checkpoints convert exactly
(``tools/convert_slim_checkpoint.py``; equivalence is tested to 1e-4):

  root    conv1: 7x7/2 conv with bias, no BN/ReLU (explicit "same" padding as
          ``resnet_utils.conv2d_same``), then pool1: 3x3/2 max-pool, SAME.
  blockN  bottleneck units; a block's stride sits in its last unit. A unit is
          preact = ReLU(BN(x)); shortcut = x subsampled (same depth) or a 1x1
          conv with bias on preact; residual = 1x1 conv+BN+ReLU, 3x3 conv (atrous
          rate r) +BN+ReLU, 1x1 conv with bias; output = shortcut + residual.
  postnorm  BN+ReLU after the last block, only built with block 4.

``output_stride`` follows TF-Slim's ``stack_blocks_dense``: once the running
stride reaches the target, later units run with stride 1 and the skipped
strides multiply the atrous rate. At output stride 8 (the paper) block 2's last
unit has stride 1 and all block-3 units use rate 2, so all 23 block-3 unit
outputs share one size, which LassoCombine needs.

The trunk is a functional ``tf_keras.Model`` whose output is a dict of
endpoints:
  "root/conv1", "root"            root conv output, root (max-pool) output
  "block{b}/unit_{u}"            every unit output (u counts from 1)
  "block{b}"                     each block's output (= its last unit)
  "postnorm"                     only with block 4
Inputs are NHWC float images with 3 channels (any height and width). What
range the pixels have is the input pipeline's business; the tasks feed [-1, 1].

Layer names mirror TF-Slim's variable scopes without the model scope (e.g.
``block3/unit_7/bottleneck_v2/conv2/BatchNorm``), which makes the checkpoint
conversion a rename. Defaults follow TF-Slim's ``resnet_arg_scope``: conv
kernels He-initialised (truncated normal, fan-in, scale 2) with L2 weight decay
1e-4 in Slim's convention (``wd * sum(w**2) / 2``), batch norm with decay 0.997,
epsilon 1e-5, learned scale and offset; biases unregularised.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import tf_keras

from mtssl_tf import config as config_lib

# depth -> number of units per block (block1..block4), as TF-Slim's
# resnet_v2_{50,101,152,200}. 14 and 26 are tiny depths for tests.
RESNET_SPECS: Dict[int, Tuple[int, int, int, int]] = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
# Strides of the blocks' last units (TF-Slim: block4 has stride 1).
BLOCK_STRIDES = (2, 2, 2, 1)
# Bottleneck depth of each block relative to base_width; outputs are 4x.
BLOCK_WIDTH_MULTIPLIERS = (1, 2, 4, 8)
VALID_OUTPUT_STRIDES = (None, 8, 16)
# Stride of the root (conv1 /2, pool1 /2).
ROOT_STRIDE = 4


def _check_config(cfg: config_lib.TrunkConfig) -> None:
  if cfg.depth not in RESNET_SPECS:
    raise ValueError(
        f"Unknown ResNet-v2 depth {cfg.depth!r}; accepted depths are "
        f"{sorted(RESNET_SPECS)}.")
  if cfg.output_stride not in VALID_OUTPUT_STRIDES:
    raise ValueError(
        f"output_stride must be one of {VALID_OUTPUT_STRIDES} (None = nominal "
        f"stride), got {cfg.output_stride!r}.")
  if cfg.base_width < 1:
    raise ValueError(f"base_width must be positive, got {cfg.base_width}.")


def unit_names(depth: int, block: int = 3) -> List[str]:
  """Endpoint names of every unit of ``block`` in order, e.g. block3/unit_1."""
  if depth not in RESNET_SPECS:
    raise ValueError(
        f"Unknown ResNet-v2 depth {depth!r}; accepted depths are "
        f"{sorted(RESNET_SPECS)}.")
  return [f"block{block}/unit_{u + 1}"
          for u in range(RESNET_SPECS[depth][block - 1])]


def block_output_channels(base_width: int = 64, block: int = 3) -> int:
  """Channels of a block's output (1024 for block 3 at base width 64)."""
  return 4 * base_width * BLOCK_WIDTH_MULTIPLIERS[block - 1]


def unit_schedule(depth: int, output_stride: Optional[int],
                  num_blocks: int = 3) -> List[List[Tuple[int, int]]]:
  """(stride, atrous rate) of every unit, as TF-Slim's stack_blocks_dense.

  Returns:
    One list per block of ``(stride, rate)`` pairs, one pair per unit.
  """
  target = None if output_stride is None else output_stride // ROOT_STRIDE
  current_stride, rate = 1, 1
  schedule = []
  for block in range(num_blocks):
    units = []
    num_units = RESNET_SPECS[depth][block]
    for u in range(num_units):
      stride = BLOCK_STRIDES[block] if u == num_units - 1 else 1
      if target is not None and current_stride == target:
        units.append((1, rate))
        rate *= stride
      else:
        units.append((stride, 1))
        current_stride *= stride
    schedule.append(units)
  if target is not None and current_stride != target:
    raise ValueError(
        f"output_stride {output_stride} cannot be reached by the first "
        f"{num_blocks} blocks; use one of {VALID_OUTPUT_STRIDES}.")
  return schedule


class _Layers:
  """Builds conv / batch-norm layers with the trunk's shared settings."""

  def __init__(self, weight_decay: float, batch_norm_decay: float,
               batch_norm_epsilon: float):
    self.weight_decay = weight_decay
    self.batch_norm_decay = batch_norm_decay
    self.batch_norm_epsilon = batch_norm_epsilon

  def conv(self, filters, kernel_size, stride, name, rate=1, use_bias=False,
           padding="same"):
    regularizer = (tf_keras.regularizers.l2(0.5 * self.weight_decay)
                   if self.weight_decay else None)
    return tf_keras.layers.Conv2D(
        filters, kernel_size, strides=stride, dilation_rate=rate,
        padding=padding, use_bias=use_bias,
        kernel_initializer=tf_keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_in", distribution="truncated_normal"),
        kernel_regularizer=regularizer, name=name)

  def batch_norm(self, name):
    return tf_keras.layers.BatchNormalization(
        momentum=self.batch_norm_decay, epsilon=self.batch_norm_epsilon,
        center=True, scale=True, name=name)


def _conv2d_same(x, layers: _Layers, filters, kernel_size, stride, rate, name,
                 use_bias=False):
  """TF-Slim's conv2d_same: explicit symmetric-ish padding when strided."""
  if stride == 1:
    return layers.conv(filters, kernel_size, 1, name, rate=rate,
                       use_bias=use_bias)(x)
  effective = kernel_size + (kernel_size - 1) * (rate - 1)
  pad_total = effective - 1
  pad_beg = pad_total // 2
  pad_end = pad_total - pad_beg
  x = tf_keras.layers.ZeroPadding2D(
      ((pad_beg, pad_end), (pad_beg, pad_end)), name=name + "_pad")(x)
  return layers.conv(filters, kernel_size, stride, name, rate=rate,
                     use_bias=use_bias, padding="valid")(x)


def bottleneck_unit(x, depth: int, depth_bottleneck: int, stride: int,
                    rate: int = 1, name: str = "bottleneck_v2",
                    weight_decay: float = 1e-4,
                    batch_norm_decay: float = 0.997,
                    batch_norm_epsilon: float = 1e-5):
  """One pre-activation bottleneck unit (TF-Slim ``resnet_v2.bottleneck``).

  Also used by the task heads (paper §3.4 builds them from residual units).
  A "fully-connected" residual unit is this unit applied to a ``[N, 1, 1, C]``
  tensor.

  Args:
    x: ``[N, H, W, C_in]`` tensor (Keras symbolic).
    depth: output channels.
    depth_bottleneck: channels of the 1x1 and 3x3 bottleneck convs.
    stride: spatial stride (applied by the 3x3 conv and the shortcut).
    rate: atrous rate of the 3x3 conv.
    name: layer-name prefix (TF-Slim scope of the unit).
    weight_decay, batch_norm_decay, batch_norm_epsilon: as ``TrunkConfig``.

  Returns:
    ``[N, ceil(H / stride), ceil(W / stride), depth]`` tensor.
  """
  layers = _Layers(weight_decay, batch_norm_decay, batch_norm_epsilon)
  depth_in = x.shape[-1]
  preact = layers.batch_norm(name + "/preact")(x)
  preact = tf_keras.layers.ReLU(name=name + "/preact_relu")(preact)
  if depth == depth_in:
    if stride == 1:
      shortcut = x
    else:
      # TF-Slim's subsample: a 1x1 max-pool, i.e. x[:, ::stride, ::stride].
      shortcut = tf_keras.layers.MaxPool2D(
          1, strides=stride, padding="same", name=name + "/shortcut")(x)
  else:
    shortcut = layers.conv(depth, 1, stride, name + "/shortcut",
                           use_bias=True)(preact)
  residual = layers.conv(depth_bottleneck, 1, 1, name + "/conv1")(preact)
  residual = layers.batch_norm(name + "/conv1/BatchNorm")(residual)
  residual = tf_keras.layers.ReLU(name=name + "/conv1_relu")(residual)
  residual = _conv2d_same(residual, layers, depth_bottleneck, 3, stride, rate,
                          name + "/conv2")
  residual = layers.batch_norm(name + "/conv2/BatchNorm")(residual)
  residual = tf_keras.layers.ReLU(name=name + "/conv2_relu")(residual)
  residual = layers.conv(depth, 1, 1, name + "/conv3", use_bias=True)(residual)
  return tf_keras.layers.Add(name=name + "/add")([shortcut, residual])


def build_trunk(cfg: config_lib.TrunkConfig = config_lib.TrunkConfig(),
                input_shape: Sequence[Optional[int]] = (None, None, 3),
                name: Optional[str] = None) -> tf_keras.Model:
  """Builds the ResNet-v2 trunk.

  Args:
    cfg: depth, output stride, widths and regularisation.
    input_shape: ``(height, width, 3)``; height and width may be None.
    name: model name (default ``resnet_v2_{depth}``, as TF-Slim's scope).

  Returns:
    A ``tf_keras.Model`` mapping ``[N, H, W, 3]`` float images to the endpoints
    dict described in the module docstring. At depth 101, output stride 8, a
    256x256 input gives a ``[N, 32, 32, 1024]`` "block3".

  Raises:
    ValueError: unknown depth, output stride not in {None, 8, 16}, or an input
      shape that is not ``(H, W, 3)``.
  """
  _check_config(cfg)
  input_shape = tuple(input_shape)
  if len(input_shape) != 3 or input_shape[-1] != 3:
    raise ValueError(
        f"The trunk takes NHWC images with 3 channels: input_shape must be "
        f"(height, width, 3), got {input_shape}. Replicate grayscale (or L) "
        f"inputs 3 times, as the paper's harmonization does.")
  num_blocks = 4 if cfg.include_block4 else 3
  schedule = unit_schedule(cfg.depth, cfg.output_stride, num_blocks)
  layers = _Layers(cfg.weight_decay, cfg.batch_norm_decay,
                   cfg.batch_norm_epsilon)

  inputs = tf_keras.Input(shape=input_shape, name="images")
  endpoints = {}
  net = _conv2d_same(inputs, layers, cfg.base_width, 7, 2, 1, "conv1",
                     use_bias=True)
  endpoints["root/conv1"] = net
  net = tf_keras.layers.MaxPool2D(3, strides=2, padding="same",
                                  name="pool1")(net)
  endpoints["root"] = net
  for b, units in enumerate(schedule):
    net = _block(net, b, units, cfg, endpoints)
  if cfg.include_block4:
    net = _postnorm(net, cfg)
    endpoints["postnorm"] = net
  return tf_keras.Model(inputs, endpoints,
                        name=name or f"resnet_v2_{cfg.depth}")


def _block(net, b: int, units, cfg: config_lib.TrunkConfig, endpoints,
           prefix: str = ""):
  """Block ``b + 1`` (``(stride, rate)`` per unit) on ``net``; records each
  unit's output in ``endpoints``; layer names ``<prefix>block{b+1}/...``."""
  block = f"block{b + 1}"
  width = cfg.base_width * BLOCK_WIDTH_MULTIPLIERS[b]
  for u, (stride, rate) in enumerate(units):
    unit = f"{block}/unit_{u + 1}"
    net = bottleneck_unit(net, 4 * width, width, stride, rate,
                          name=prefix + unit + "/bottleneck_v2",
                          weight_decay=cfg.weight_decay,
                          batch_norm_decay=cfg.batch_norm_decay,
                          batch_norm_epsilon=cfg.batch_norm_epsilon)
    endpoints[unit] = net
  endpoints[block] = net
  return net


def _postnorm(net, cfg: config_lib.TrunkConfig, prefix: str = ""):
  """ResNet-v2's final BN + ReLU (only after block 4)."""
  layers = _Layers(cfg.weight_decay, cfg.batch_norm_decay,
                   cfg.batch_norm_epsilon)
  net = layers.batch_norm(prefix + "postnorm")(net)
  return tf_keras.layers.ReLU(name=prefix + "postnorm_relu")(net)


def block4(x, cfg: config_lib.TrunkConfig, prefix: str = ""):
  """Block 4 and the post-norm of trunk ``cfg`` applied to its block-3 output.

  The same layers, with the same names after ``prefix``, as ``build_trunk``
  with ``include_block4=True`` builds (``block4/unit_u/bottleneck_v2/...``,
  ``postnorm``), so weights trained elsewhere (a supervised task's head,
  ``tasks/imagenet_labels.py``, names them ``sup_head/block4/...``) copy
  into a trunk by name with the prefix removed. Atrous rates follow
  ``cfg.output_stride`` as in the trunk.

  Args:
    x: ``[N, h, w, 16 * base_width]`` block-3 output (Keras symbolic).
    cfg: the trunk (depth, output stride, widths, regularisation).
    prefix: layer-name prefix, e.g. ``"sup_head/"``.

  Returns:
    ``[N, h, w, 32 * base_width]`` (2048 at base width 64): block 4 keeps
    the block-3 size (TF-Slim's block 4 has stride 1).
  """
  _check_config(cfg)
  units = unit_schedule(cfg.depth, cfg.output_stride, 4)[3]
  return _postnorm(_block(x, 3, units, cfg, {}, prefix), cfg, prefix)
