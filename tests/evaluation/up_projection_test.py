"""Up-projection decoder (Laina et al. 2016): fast form, shapes, parameters."""

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf.evaluation import up_projection


def _unpool_conv5x5_numpy(x, kernel, bias):
  """The definition, written independently: x [N, H, W, C] -> [N, 2H, 2W, F].

  Unpooling puts x[i, j] at (2i, 2j) of a zero map; then a 5x5 "same"
  correlation (zero padding 2) and the bias.
  """
  n, h, w, c = x.shape
  unpooled = np.zeros((n, 2 * h + 4, 2 * w + 4, c))
  unpooled[:, 2:-2:2, 2:-2:2] = x
  out = np.zeros((n, 2 * h, 2 * w, kernel.shape[-1]))
  for a in range(5):
    for b in range(5):
      out += np.einsum("nhwc,cf->nhwf",
                       unpooled[:, a:a + 2 * h, b:b + 2 * w], kernel[a, b])
  return out + bias


def test_fast_and_original_forms_equal_the_definition():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  fast = up_projection.UpConvolution(6, fast=True)
  slow = up_projection.UpConvolution(6, fast=False)
  fast.build(x.shape)
  slow.build(x.shape)
  kernel = rng.normal(size=(5, 5, 5, 6)).astype(np.float32)
  bias = rng.normal(size=6).astype(np.float32)
  for layer in (fast, slow):
    layer.set_weights([kernel, bias])
  expected = _unpool_conv5x5_numpy(x.astype(np.float64), kernel, bias)
  np.testing.assert_allclose(slow(x).numpy(), expected, atol=1e-4)
  np.testing.assert_allclose(fast(x).numpy(), expected, atol=1e-4)
  assert fast(x).shape == (2, 6, 8, 6)


def test_up_convolution_config_round_trips():
  layer = up_projection.UpConvolution(7, fast=False, weight_decay=0.1)
  clone = up_projection.UpConvolution.from_config(layer.get_config())
  assert (clone.filters, clone.fast, clone.weight_decay) == (7, False, 0.1)


def test_output_shape_doubles_per_level():
  inputs = tf_keras.Input((5, 7, 32))
  net = inputs
  for level, filters in enumerate((16, 8, 4)):
    net = up_projection.up_projection(net, filters, f"level{level}")
    assert tuple(net.shape) == (None, 5 * 2 ** (level + 1),
                                7 * 2 ** (level + 1), filters)
  decoder = up_projection.build_decoder(32, filters=(16, 8, 4))
  out = decoder(np.ones((2, 5, 7, 32), np.float32), training=False)
  assert out.shape == (2, 40, 56, 1)
  assert np.all(out.numpy() >= 0)  # Laina's ConvPred ends with a ReLU


def test_three_level_decoder_parameter_count_for_1024_channels():
  # Hand count, per level with Ci inputs and Co filters:
  #   two up-convolutions (5x5 kernel + bias): 2 * (25 * Ci * Co + Co)
  #   branch-1 3x3 conv with bias:             9 * Co * Co + Co
  #   three batch norms (scale, offset):       3 * 2 * Co  (+ 3 * 2 * Co
  #                                            moving mean/variance)
  # prediction: 3x3 conv 128 -> 1 with bias = 9 * 128 + 1.
  level = lambda ci, co: 50 * ci * co + 9 * co * co + 9 * co  # noqa: E731
  trainable = (level(1024, 512) + level(512, 256) + level(256, 128) +
               9 * 128 + 1)
  assert trainable == 28_578_304 + 7_145_728 + 1_787_008 + 1_153
  decoder = up_projection.build_decoder(1024)
  count = lambda vs: sum(int(np.prod(v.shape)) for v in vs)  # noqa: E731
  assert count(decoder.trainable_variables) == trainable
  assert count(decoder.non_trainable_variables) == 6 * (512 + 256 + 128)
