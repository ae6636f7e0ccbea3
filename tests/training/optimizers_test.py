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


def test_staircase_decay_matches_hand_computation():
  """lr * 0.94 ** (i // 3) for the update after i updates (TF-Slim's
  exponential_decay with staircase=True), also inside the update."""
  var = tf.Variable([1.0], name="w")
  opt = optimizers.SlimRMSProp(0.5, name="rmsprop_sup", lr_decay_steps=3,
                               lr_decay_rate=0.94)
  opt.build([var])
  expected_rates = [0.5, 0.5, 0.5, 0.47, 0.47, 0.47, 0.4418, 0.4418]
  w, ms, mom = 1.0, 1.0, 0.0
  for i, rate in enumerate(expected_rates):
    assert float(opt.current_learning_rate()) == pytest.approx(rate), i
    opt.apply_gradients([(tf.constant([1.0]), var)])
    ms = 0.9 * ms + 0.1
    mom = 0.9 * mom + rate / np.sqrt(ms + 1.0)
    w -= mom
  np.testing.assert_allclose(var.numpy(), [w], rtol=1e-6)
  # Constant without a schedule (the self-supervised tasks, paper §4).
  constant = optimizers.SlimRMSProp(0.5)
  constant.iterations.assign(1000)
  assert float(constant.current_learning_rate()) == 0.5
  with pytest.raises(ValueError, match="lr_decay_rate"):
    optimizers.SlimRMSProp(0.5, lr_decay_steps=3, lr_decay_rate=0.0)


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


def _reference_rmsprop(variables, grads_per_step, lr, decay, momentum, eps):
  """TF1 RMSPropOptimizer written out in numpy (float64), ms starting at 1."""
  values = [np.array(v, np.float64) for v in variables]
  ms = [np.ones_like(v) for v in values]
  mom = [np.zeros_like(v) for v in values]
  for grads in grads_per_step:
    for i, g in enumerate(grads):
      g = np.array(g, np.float64)
      ms[i] = decay * ms[i] + (1 - decay) * g ** 2
      mom[i] = momentum * mom[i] + lr * g / np.sqrt(ms[i] + eps)
      values[i] = values[i] - mom[i]
  return values, ms, mom


def test_fused_update_matches_the_formula_on_random_tensors():
  rng = np.random.default_rng(3)
  shapes = [(3, 3, 4, 5), (7,), (11, 13), (1, 1, 6, 2)]
  initial = [rng.normal(size=s).astype(np.float32) for s in shapes]
  variables = [tf.Variable(v, name=f"head/v{i}")
               for i, v in enumerate(initial)]
  # Non-default hyper-parameters so that every one of them matters.
  opt = optimizers.SlimRMSProp(0.03, decay=0.8, momentum=0.7, epsilon=0.5)
  opt.build(variables)
  steps = [[(5.0 * rng.normal(size=s)).astype(np.float32) for s in shapes]
           for _ in range(4)]

  @tf.function
  def apply(grads):
    opt.apply_gradients(zip(grads, variables))
  for grads in steps:
    apply([tf.constant(g) for g in grads])
  values, ms, mom = _reference_rmsprop(initial, steps, 0.03, 0.8, 0.7, 0.5)
  for i, v in enumerate(variables):
    key = f"head/v{i}"
    np.testing.assert_allclose(v.numpy(), values[i], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(opt.ms[key].numpy(), ms[i], rtol=1e-6)
    np.testing.assert_allclose(opt.mom[key].numpy(), mom[i], rtol=1e-6,
                               atol=1e-7)
  assert int(opt.iterations.numpy()) == 4


def test_none_gradients_leave_their_variable_and_slots_alone():
  a = tf.Variable([1.0, 2.0], name="a")
  b = tf.Variable([3.0], name="b")
  opt = optimizers.SlimRMSProp(0.1)
  opt.build([a, b])
  opt.apply_gradients([(None, a), (tf.constant([1.0]), b)])
  np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
  np.testing.assert_array_equal(opt.ms["a"].numpy(), [1.0, 1.0])
  assert b.numpy()[0] != 3.0
