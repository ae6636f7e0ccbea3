"""SlimRMSProp against a hand-computed TF1 RMSProp update."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.training import optimizers


def test_two_updates_match_tf1_formula():
  var = tf.Variable([1.0, -2.0, 0.5], name="layer/kernel")
  opt = optimizers.SlimRMSProp(0.1, decay=0.9, momentum=0.9, epsilon=1.0)
  opt.build([var])
  np.testing.assert_array_equal(opt.ms["layer/kernel"].numpy(), [1, 1, 1])
  w = np.array([1.0, -2.0, 0.5])
  ms, mom = np.ones(3), np.zeros(3)
  for g in (np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.3, -0.2])):
    opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    ms = 0.9 * ms + 0.1 * g ** 2
    mom = 0.9 * mom + 0.1 * g / np.sqrt(ms + 1.0)
    w = w - mom
  np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
  np.testing.assert_allclose(opt.mom["layer/kernel"].numpy(), mom, rtol=1e-6)
  assert int(opt.iterations.numpy()) == 2


def test_slots_are_named_in_checkpoints(tmp_path):
  var = tf.Variable(tf.zeros([2, 2]), name="block1/unit_1/conv1/kernel")
  opt = optimizers.SlimRMSProp(0.1, name="rmsprop_rp")
  opt.build([var])
  path = tf.train.Checkpoint(optimizers={"rp": opt}).write(
      str(tmp_path / "ckpt"))
  names = [n for n, _ in tf.train.list_variables(path)]
  assert ("optimizers/rp/ms/block1.Sunit_1.Sconv1.Skernel/.ATTRIBUTES/"
          "VARIABLE_VALUE") in names
  assert ("optimizers/rp/mom/block1.Sunit_1.Sconv1.Skernel/.ATTRIBUTES/"
          "VARIABLE_VALUE") in names


def test_unbuilt_variable_and_duplicate_names_fail():
  opt = optimizers.SlimRMSProp(0.1)
  with pytest.raises(ValueError, match="not built"):
    opt.apply_gradients([(tf.ones([1]), tf.Variable([0.0], name="x"))])
  with pytest.raises(ValueError, match="not unique"):
    opt.build([tf.Variable([0.0], name="y"), tf.Variable([1.0], name="y")])
