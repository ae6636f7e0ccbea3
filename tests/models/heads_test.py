"""Tests for models/heads.py: shapes, shortcuts and the pair regrouping."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtssl_tf.models import heads
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import exemplar
from mtssl_tf.tasks import relative_position

TINY_UNITS = ((32, 8, 2), (16, 8, 2))


def test_patch_units_give_3x3_from_12x12():
  inputs = tf_keras.Input((12, 12, 64))
  model = tf_keras.Model(inputs, heads.patch_units(inputs, TINY_UNITS))
  out = model(tf.random.normal([5, 12, 12, 64]))
  assert out.shape == (5, 3, 3, 16)


def test_paper_patch_units_shape_and_size():
  inputs = tf_keras.Input((12, 12, 1024))
  model = tf_keras.Model(inputs, heads.patch_units(inputs))
  assert model.output_shape == (None, 3, 3, 512)
  # Unit 1 (1024 -> 1024, identity shortcut): 1x1 1024*128 + 3x3 128*128 +
  # 1x1 128*1024 (+bias); unit 2 adds a 1024->512 projection shortcut.
  unit1 = 1024 * 128 + 9 * 128 * 128 + 128 * 1024 + 1024
  unit2 = 1024 * 128 + 9 * 128 * 128 + 128 * 512 + 512 + 1024 * 512 + 512
  batch_norm_weights = 2 * (1024 + 128 + 128 + 1024 + 128 + 128)
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert trainable == unit1 + unit2 + batch_norm_weights


def test_fc_residual_unit_projection_and_identity():
  inputs = tf_keras.Input((40,))
  projected = heads.fc_residual_unit(inputs, 20, 4, "fc_1")
  same = heads.fc_residual_unit(projected, 20, 4, "fc_2")
  model = tf_keras.Model(inputs, [projected, same])
  a, b = model(tf.random.normal([3, 40]))
  assert a.shape == (3, 20) and b.shape == (3, 20)
  names = [layer.name for layer in model.layers]
  assert "fc_1/shortcut" in names and "fc_2/shortcut" not in names


def test_group_consecutive_concatenates_neighbours():
  layer = heads.GroupConsecutive(2)
  x = tf.reshape(tf.range(12, dtype=tf.float32), [4, 3])
  np.testing.assert_array_equal(
      layer(x).numpy(), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
  assert layer.compute_output_shape(tf.TensorShape([4, 3])) == [2, 6]
  clone = heads.GroupConsecutive.from_config(layer.get_config())
  assert clone.group_size == 2
  restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert isinstance(restored, heads.GroupConsecutive)


def _reference_fc_unit(depth_in, depth, bottleneck, name):
  """The fc unit as it was first written: a bottleneck unit on a 1x1 map."""
  inputs = tf_keras.Input((depth_in,))
  x = tf_keras.layers.Reshape((1, 1, depth_in))(inputs)
  x = resnet_v2.bottleneck_unit(x, depth, bottleneck, 1, name=name)
  return tf_keras.Model(inputs, tf_keras.layers.Flatten()(x))


@pytest.mark.parametrize("depth_in,depth", [(12, 10), (10, 10)])
def test_fc_unit_equals_a_bottleneck_unit_on_a_1x1_map(depth_in, depth):
  reference = _reference_fc_unit(depth_in, depth, 4, "fc")
  inputs = tf_keras.Input((depth_in,))
  model = tf_keras.Model(inputs, heads.fc_residual_unit(inputs, depth, 4,
                                                        "fc"))
  ref_layers = {layer.name: layer for layer in reference.layers}
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if not layer.weights:
      continue
    source = ref_layers[layer.name]
    values = [w.numpy() for w in source.weights]
    if isinstance(layer, tf_keras.layers.Conv2D):
      # A 1x1 map only reaches the centre tap of a 3x3 kernel.
      kernel = values[0]
      values[0] = kernel[kernel.shape[0] // 2:kernel.shape[0] // 2 + 1,
                         kernel.shape[1] // 2:kernel.shape[1] // 2 + 1]
    else:  # batch norm: non-trivial statistics and affine parameters
      values = [rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
                for v in values]
      source.set_weights(values)
    layer.set_weights(values)
  x = tf.constant(rng.normal(size=(6, depth_in)), tf.float32)
  probe = tf.constant(rng.normal(size=(6, depth)), tf.float32)
  for training in (True, False):
    results = []
    for net in (reference, model):
      with tf.GradientTape() as tape:
        tape.watch(x)
        out = net(x, training=training)
        objective = tf.reduce_sum(out * probe)
      grads = tape.gradient(objective, [x] + net.trainable_weights)
      results.append((out.numpy(), {w.name: g.numpy() for w, g in zip(
          net.trainable_weights, grads[1:])}, grads[0].numpy()))
    (ref_out, ref_grads, ref_dx), (out, grads, dx) = results
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-5)
    assert sorted(grads) == sorted(ref_grads)
    for name, g in grads.items():
      ref = ref_grads[name]
      if g.shape != ref.shape:  # the centre tap of the 3x3 conv
        ref = ref[1:2, 1:2]
      np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5, err_msg=name)
  # Fewer weights: the 3x3 conv's 8 dead taps are gone.
  dead = 8 * 4 * 4
  assert reference.count_params() - model.count_params() == dead


@pytest.mark.parametrize("shape,use_bias", [((4, 1, 1, 7), True),
                                            ((3, 2, 5, 6), False)])
def test_pointwise_conv_equals_a_1x1_conv2d(shape, use_bias):
  conv = tf_keras.layers.Conv2D(5, 1, use_bias=use_bias)
  pointwise = heads.PointwiseConv(5, use_bias=use_bias)
  x = tf.constant(np.random.default_rng(1).normal(size=shape), tf.float32)
  conv(x), pointwise(x)
  rng = np.random.default_rng(2)
  values = [rng.normal(size=w.shape).astype(np.float32) for w in conv.weights]
  conv.set_weights(values)
  pointwise.set_weights(values)
  assert [w.shape for w in pointwise.weights] == [w.shape for w in conv.weights]
  probe = tf.constant(rng.normal(size=shape[:-1] + (5,)), tf.float32)
  results = []
  for layer in (conv, pointwise):
    with tf.GradientTape() as tape:
      tape.watch(x)
      out = layer(x)
      objective = tf.reduce_sum(out * probe)
    results.append([out] + tape.gradient(objective, [x] + layer.weights))
  for got, want in zip(results[1], results[0]):
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5,
                               atol=1e-5)
  # An independent check of the hand-written backward pass: dW = x^T dy.
  np.testing.assert_allclose(
      results[1][2].numpy()[0, 0],
      np.einsum("nhwc,nhwf->cf", x.numpy(), probe.numpy()), rtol=1e-5,
      atol=1e-5)
  clone = heads.PointwiseConv.from_config(pointwise.get_config())
  assert clone.filters == 5 and clone.kernel_size == (1, 1)
  with pytest.raises(ValueError, match="1x1 conv"):
    heads.PointwiseConv(5, 3)


def _count(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _docstring_count(label):
  match = re.search(re.escape(label) + r".*?([0-9,]{5,})$", heads.__doc__,
                    re.MULTILINE)
  assert match, label
  return int(match.group(1).replace(",", ""))


def test_paper_parameter_counts_match_the_docstring():
  # Graph mode: variables are declared, not initialised (the paper-size rp
  # head holds 61M weights).
  with tf.Graph().as_default():
    ex_head = exemplar.Task().build_head((12, 12, 1024))
    rp_head = relative_position.Task().build_head((12, 12, 1024))
    by_prefix = {p: sum(_count(layer) for layer in rp_head.layers
                        if layer.name.startswith(p + "/"))
                 for p in ("rp_head/patch/unit_1", "rp_head/patch/unit_2",
                           "rp_head/fc_1", "rp_head/fc_2", "rp_head/fc_3")}
    counts = {
        "per-patch unit 1": by_prefix["rp_head/patch/unit_1"],
        "per-patch unit 2": by_prefix["rp_head/patch/unit_2"],
        "exemplar head": _count(ex_head),
        "fc unit 9216 -> 4608": by_prefix["rp_head/fc_1"],
        "fc unit 4608 -> 4608": by_prefix["rp_head/fc_2"],
        "relative-position head": _count(rp_head)}
  assert by_prefix["rp_head/fc_3"] == counts["fc unit 4608 -> 4608"]
  for label, count in counts.items():
    assert _docstring_count(label) == count, label
  # The fc units' formula in fc_residual_unit's docstring (b = 512).
  b = 512
  assert counts["fc unit 4608 -> 4608"] == (
      4608 * b + b * b + b * 4608 + 4608 + 2 * (4608 + 2 * b))
  assert counts["fc unit 9216 -> 4608"] == (
      9216 * b + b * b + b * 4608 + 4608 + 2 * (9216 + 2 * b) +
      9216 * 4608 + 4608)
