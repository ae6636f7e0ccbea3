"""Tests for models/heads.py: shapes, shortcuts and the pair regrouping."""

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf.models import heads

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
