"""Tests for the ResNet-v2 trunk: shapes, endpoints, strides, errors, params."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.models import resnet_v2

TINY = config.TrunkConfig(depth=26, base_width=8, output_stride=8)


def test_endpoints_of_a_tiny_trunk():
  trunk = resnet_v2.build_trunk(TINY)
  out = trunk(np.zeros((2, 64, 64, 3), np.float32), training=False)
  expected = {"root/conv1", "root"}
  for b in (1, 2, 3):
    expected |= {f"block{b}", f"block{b}/unit_1", f"block{b}/unit_2"}
  assert set(out) == expected
  assert out["root/conv1"].shape == (2, 32, 32, 8)
  assert out["root"].shape == (2, 16, 16, 8)
  assert out["block1"].shape == (2, 8, 8, 32)
  # Output stride 8: block 2 keeps 8x8, block 3 is atrous at 8x8.
  assert out["block2"].shape == (2, 8, 8, 64)
  for u in (1, 2):
    assert out[f"block3/unit_{u}"].shape == (2, 8, 8, 128)
  np.testing.assert_array_equal(out["block3"], out["block3/unit_2"])
  assert resnet_v2.unit_names(26) == ["block3/unit_1", "block3/unit_2"]
  assert resnet_v2.block_output_channels(8) == 128


@pytest.mark.parametrize("output_stride,size,expected", [
    (8, 64, 8), (16, 64, 4), (None, 64, 2), (8, 65, 9), (16, 97, 7)])
def test_output_strides(output_stride, size, expected):
  cfg = config.TrunkConfig(depth=14, base_width=8,
                           output_stride=output_stride)
  trunk = resnet_v2.build_trunk(cfg)
  out = trunk(np.zeros((1, size, size, 3), np.float32))
  assert out["block3"].shape[1:3] == (expected, expected)


def test_unit_schedule_matches_slim_semantics():
  # Output stride 8: block 2's last unit has stride 1, all block-3 units are
  # atrous with rate 2; block 4 continues at rate 4.
  schedule = resnet_v2.unit_schedule(101, 8, num_blocks=4)
  assert schedule[0] == [(1, 1), (1, 1), (2, 1)]
  assert schedule[1] == [(1, 1)] * 4
  assert schedule[2] == [(1, 2)] * 23
  assert schedule[3] == [(1, 4)] * 3
  # Output stride 16: block 3 runs at rate 1 and its stride moves to block 4.
  schedule = resnet_v2.unit_schedule(101, 16, num_blocks=4)
  assert schedule[1][-1] == (2, 1)
  assert schedule[2] == [(1, 1)] * 23
  assert schedule[3] == [(1, 2)] * 3
  # Nominal stride: block 3's last unit subsamples.
  assert resnet_v2.unit_schedule(101, None)[2][-1] == (2, 1)


def test_block4_and_postnorm():
  cfg = config.TrunkConfig(depth=14, base_width=8, include_block4=True)
  out = resnet_v2.build_trunk(cfg)(np.zeros((1, 64, 64, 3), np.float32))
  assert out["block4"].shape == (1, 8, 8, 256)
  assert out["postnorm"].shape == (1, 8, 8, 256)
  assert float(tf.reduce_min(out["postnorm"])) >= 0.0  # ReLU output


def test_depth_101_parameters_and_paper_shapes():
  """Golden: TF-Slim resnet_v2_101 to block 3 has 27.56 M trainable params;
  256x256 -> 32x32x1024, 96x96 -> 12x12x1024, 240x320 -> 30x40x1024."""
  trunk = resnet_v2.build_trunk(config.TrunkConfig())
  count = sum(int(np.prod(v.shape)) for v in trunk.trainable_weights)
  assert round(count / 1e6, 2) == 27.56
  assert len(resnet_v2.unit_names(101)) == 23
  for (h, w), (oh, ow) in {(96, 96): (12, 12), (240, 320): (30, 40)}.items():
    shape = trunk.compute_output_shape((1, h, w, 3))["block3"]
    assert tuple(shape) == (1, oh, ow, 1024)


def test_weight_decay_follows_slim_convention():
  cfg = config.TrunkConfig(depth=14, base_width=8, weight_decay=0.01)
  trunk = resnet_v2.build_trunk(cfg)
  kernels = [v for v in trunk.trainable_weights if "kernel" in v.name]
  expected = sum(0.01 * 0.5 * float(tf.reduce_sum(k ** 2)) for k in kernels)
  np.testing.assert_allclose(float(tf.add_n(trunk.losses)), expected,
                             rtol=1e-5)
  assert len(trunk.losses) == len(kernels)  # biases and BN not regularised


def test_training_mode_updates_batch_norm_statistics():
  trunk = resnet_v2.build_trunk(config.TrunkConfig(depth=14, base_width=8))
  bn = trunk.get_layer("block1/unit_1/bottleneck_v2/preact")
  before = bn.moving_mean.numpy().copy()
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3))
  trunk(images.astype(np.float32), training=True)
  assert not np.allclose(bn.moving_mean.numpy(), before)


@pytest.mark.parametrize("field,value,match", [
    ("output_stride", 4, "output_stride must be one of"),
    ("output_stride", 32, "output_stride must be one of"),
    ("depth", 34, "Unknown ResNet-v2 depth"),
])
def test_bad_config_errors(field, value, match):
  cfg = config.TrunkConfig(**{field: value})
  with pytest.raises(ValueError, match=match) as e:
    resnet_v2.build_trunk(cfg)
  assert "101" in str(e.value) or "8" in str(e.value)  # names accepted values


def test_input_must_have_three_channels():
  with pytest.raises(ValueError, match="3 channels"):
    resnet_v2.build_trunk(TINY, input_shape=(64, 64, 1))
  trunk = resnet_v2.build_trunk(TINY)
  with pytest.raises(ValueError):
    trunk(np.zeros((1, 64, 64, 4), np.float32))
