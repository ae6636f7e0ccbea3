"""Tests of the analytic FLOP count against hand counts and SPEC.md figures."""

import pytest
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.models import flops
from mtssl_tf.models import heads
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import registry

TINY = config_lib.TrunkConfig(depth=26, base_width=8)


def _built(layer, input_shape, batch_size):
  inputs = tf_keras.Input(input_shape, batch_size=batch_size)
  layer(inputs)
  return layer


def test_conv_layer_hand_count():
  # 3x3 conv, stride 2, SAME, 2 -> 4 channels with bias on [1, 5, 5, 2]:
  # output 3x3x4 = 36 elements, each 3*3*2 = 18 multiply-adds plus a bias.
  layer = _built(tf_keras.layers.Conv2D(4, 3, strides=2, padding="same"),
                 (5, 5, 2), 1)
  assert layer.output_shape == (1, 3, 3, 4)
  assert flops.layer_flops(layer) == 2 * 36 * 18 + 36 == 1332
  assert flops.conv2d_flops((1, 3, 3, 4), (3, 3), 2, use_bias=True) == 1332


def test_atrous_conv_counts_taps_not_receptive_field():
  layer = _built(tf_keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same",
                                        use_bias=False), (6, 6, 2), 2)
  assert flops.layer_flops(layer) == 2 * (2 * 6 * 6 * 4) * (3 * 3 * 2)


def test_dense_layer_hand_count():
  # [4, 5] -> [4, 3]: 4 * 3 * 5 multiply-adds plus 4 * 3 bias adds.
  layer = _built(tf_keras.layers.Dense(3), (5,), 4)
  assert flops.layer_flops(layer) == 2 * 4 * 3 * 5 + 12 == 132
  no_bias = _built(tf_keras.layers.Dense(3, use_bias=False), (5,), 4)
  assert flops.layer_flops(no_bias) == 120


def test_batch_norm_and_non_affine_layers():
  bn = _built(tf_keras.layers.BatchNormalization(), (3, 3, 4), 2)
  assert flops.layer_flops(bn) == 2 * 72
  relu = _built(tf_keras.layers.ReLU(), (3, 3, 4), 2)
  assert flops.layer_flops(relu) == 0


def test_unknown_batch_needs_batch_size():
  layer = _built(tf_keras.layers.Dense(3), (5,), None)
  with pytest.raises(ValueError, match="static input shape"):
    flops.layer_flops(layer)
  assert flops.layer_flops(layer, batch_size=4) == 132


def test_model_flops_follows_regrouped_batch():
  # 4 rows of 3 -> GroupConsecutive(2) -> 2 rows of 6 -> Dense(5).
  inputs = tf_keras.Input((3,))
  x = heads.GroupConsecutive(2)(inputs)
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(5)(x))
  assert flops.model_flops(model, (3,), batch_size=4) == 2 * 5 * (2 * 6 + 1)


@pytest.mark.parametrize("size", [(64, 64), (65, 47)])
@pytest.mark.parametrize("output_stride", [8, None])
def test_analytic_trunk_equals_layer_walk(size, output_stride):
  cfg = config_lib.TrunkConfig(depth=26, base_width=8,
                               output_stride=output_stride)
  trunk = resnet_v2.build_trunk(cfg, input_shape=size + (3,))
  assert flops.trunk_flops(cfg, *size, batch_size=3) == flops.model_flops(
      trunk, batch_size=3)
  assert flops.feature_shape_of(cfg, *size) == tuple(
      trunk.output["block3"].shape[1:])


@pytest.mark.parametrize("size,gflop", [((256, 256), 57.6), ((96, 96), 8.1),
                                        ((240, 320), 67.5),
                                        ((224, 224), 44.1)])
def test_resnet_v2_101_figures_of_spec(size, gflop):
  count = flops.trunk_flops(config_lib.TrunkConfig(), *size)
  assert round(count / 1e9, 1) == gflop
  assert flops.trunk_flops(config_lib.TrunkConfig(), *size,
                           batch_size=2) == 2 * count


@pytest.mark.slow
def test_resnet_v2_101_layer_walk_matches_analytic():
  cfg = config_lib.TrunkConfig()
  trunk = resnet_v2.build_trunk(cfg, input_shape=(96, 96, 3))
  assert sum(flops.layer_flops(layer, 1) for layer in trunk.layers) == (
      flops.trunk_flops(cfg, 96, 96))


def test_task_flops_colorization_head_hand_count():
  col = registry.build("col", registry.get_module("col").Config(
      head_width=16, image_size=64))
  counts = flops.task_flops(TINY, col, batch_size=2)
  h, w, c = flops.feature_shape_of(TINY, 64, 64)
  assert (h, w, c) == (8, 8, 128)
  pixels = 2 * h * w
  # conv 2x2 c->16, conv 1x1 16->16, conv 1x1 16->313, all with biases.
  expected = pixels * (16 * (2 * 4 * c + 1) + 16 * (2 * 16 + 1) +
                       313 * (2 * 16 + 1))
  assert counts["head"] == expected
  assert counts["trunk"] == flops.trunk_flops(TINY, 64, 64, 2)
  assert counts["forward"] == counts["trunk"] + counts["head"]
  assert counts["training"] == 3 * counts["forward"]


def test_task_flops_siamese_trunk_sees_two_images_per_example():
  rp = registry.build("rp", registry.get_module("rp").Config(
      patch_size=32, gap=8, jitter=2, patch_units=((32, 8, 2), (16, 8, 2)),
      fc_width=24, fc_bottleneck=8))
  counts = flops.task_flops(TINY, rp, batch_size=3)
  assert counts["trunk"] == flops.trunk_flops(TINY, 32, 32, batch_size=6)
  assert counts["head"] > 0


def _unit_by_hand(rows, h, c, depth, bottleneck, stride):
  """One bottleneck unit on ``[rows, h, h, c]`` (depth != c: a projection
  shortcut), counted by hand: affine layers only."""
  o = -(-h // stride)
  return (2 * rows * h * h * c  # preact batch norm
          + rows * o * o * depth * (2 * c + 1)  # shortcut 1x1/stride, bias
          + rows * h * h * bottleneck * 2 * c  # conv1 1x1, no bias
          + 2 * rows * h * h * bottleneck  # its batch norm
          + rows * o * o * bottleneck * 2 * 9 * bottleneck  # conv2 3x3/stride
          + 2 * rows * o * o * bottleneck  # its batch norm
          + rows * o * o * depth * (2 * bottleneck + 1))  # conv3 1x1, bias


def test_task_flops_rotation_head_hand_count():
  rot = registry.build("rot", registry.get_module("rot").Config(
      image_size=64, resize_size=64, patch_units=((32, 8, 2),)))
  counts = flops.task_flops(TINY, rot, batch_size=2)
  h, _, c = flops.feature_shape_of(TINY, 64, 64)
  assert (h, c) == (8, 128)
  rows = 2 * 4  # all four rotations of each example go through the trunk
  assert counts["trunk"] == flops.trunk_flops(TINY, 64, 64, rows)
  # unit 8x8x128 -> 4x4x32, postnorm batch norm, pooling (0), dense 32 -> 4.
  expected = (_unit_by_hand(rows, 8, c, 32, 8, 2) + 2 * rows * 4 * 4 * 32 +
              rows * 4 * (2 * 32 + 1))
  assert counts["head"] == expected
  assert counts["training"] == 3 * (counts["trunk"] + counts["head"])


def test_task_flops_jigsaw_head_hand_count():
  jig = registry.build("jig", registry.get_module("jig").Config(
      num_permutations=10, resize_size=192, crop_size=192, tile_size=64,
      patch_units=((32, 8, 2),), tile_width=12, fc_width=20))
  counts = flops.task_flops(TINY, jig, batch_size=2)
  h, _, c = flops.feature_shape_of(TINY, 64, 64)
  tiles = 2 * 9  # the trunk sees every tile of every example
  assert counts["trunk"] == flops.trunk_flops(TINY, 64, 64, tiles)
  # Per tile: unit 8x8x128 -> 4x4x32, postnorm, flatten, dense 512 -> 12;
  # per example (9 tiles concatenated): dense 108 -> 20, dense 20 -> |P|.
  expected = (_unit_by_hand(tiles, h, c, 32, 8, 2) + 2 * tiles * 4 * 4 * 32 +
              tiles * 12 * (2 * 512 + 1) + 2 * 20 * (2 * 108 + 1) +
              2 * 10 * (2 * 20 + 1))
  assert counts["head"] == expected
