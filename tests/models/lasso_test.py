"""Tests for LassoCombine (paper §3.2)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtssl_tf.models import lasso


def _units(num_units=5, shape=(2, 3, 3, 4), seed=0):
  rng = np.random.default_rng(seed)
  return [tf.constant(rng.normal(size=shape), tf.float32)
          for _ in range(num_units)]


def test_rows_have_unit_norm_with_negative_entries():
  layer = lasso.LassoCombine()
  units = _units()
  layer(units)
  raw = np.array([0.5, -2.0, 0.0, 3.0, -0.25], np.float32)
  layer.alpha.assign(raw)
  alpha_hat = layer.normalized_alpha().numpy()
  np.testing.assert_allclose(np.sum(alpha_hat ** 2), 1.0, rtol=1e-6)
  np.testing.assert_allclose(alpha_hat, raw / np.linalg.norm(raw), rtol=1e-6)
  assert (alpha_hat < 0).sum() == 2  # signs survive the normalisation

  expected = sum(a * u.numpy() for a, u in zip(alpha_hat, units))
  np.testing.assert_allclose(layer(units).numpy(), expected, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("initializer,expected", [
    ("last", [0.0, 0.0, 0.0, 1.0]),
    ("uniform", [0.5, 0.5, 0.5, 0.5]),
])
def test_initializers(initializer, expected):
  layer = lasso.LassoCombine(initializer=initializer)
  units = _units(4)
  out = layer(units)
  np.testing.assert_allclose(layer.normalized_alpha().numpy(), expected,
                             atol=1e-7)
  if initializer == "last":
    # Starts as the naive network: the head sees the last unit.
    np.testing.assert_allclose(out.numpy(), units[-1].numpy(), atol=1e-6)


def test_gradients_reach_alpha_and_every_unit():
  layer = lasso.LassoCombine(initializer="uniform", l1=0.1)
  units = [tf.Variable(u) for u in _units(4)]
  with tf.GradientTape() as tape:
    out = layer(units)
    loss = tf.reduce_sum(out * tf.range(out.shape[-1], dtype=tf.float32))
    loss += tf.add_n(layer.losses)
  grads = tape.gradient(loss, [layer.alpha] + units)
  for g in grads:
    assert g is not None
    assert np.all(np.isfinite(g.numpy()))
    assert np.abs(g.numpy()).sum() > 0


def test_l1_loss_value():
  layer = lasso.LassoCombine(l1=0.25)
  layer(_units(3))
  layer.alpha.assign([3.0, -4.0, 0.0])
  layer(_units(3))
  assert len(layer.losses) == 1
  # alpha_hat = (0.6, -0.8, 0): sum |.| = 1.4.
  np.testing.assert_allclose(layer.losses[0].numpy(), 0.25 * 1.4, rtol=1e-6)

  no_penalty = lasso.LassoCombine(l1=0.0)
  no_penalty(_units(3))
  assert not no_penalty.losses


def test_get_config_round_trip_and_serialization():
  layer = lasso.LassoCombine(l1=0.3, initializer="uniform", name="lasso_rp")
  config = layer.get_config()
  clone = lasso.LassoCombine.from_config(config)
  assert clone.get_config() == config
  assert (clone.l1, clone.initializer, clone.name) == (0.3, "uniform",
                                                       "lasso_rp")
  serialized = tf_keras.layers.serialize(layer)
  assert (tf_keras.utils.get_registered_name(lasso.LassoCombine) ==
          "mtssl_tf>LassoCombine")
  restored = tf_keras.layers.deserialize(serialized)
  assert isinstance(restored, lasso.LassoCombine)
  assert restored.get_config() == config


def test_in_a_functional_model_with_saved_weights(tmp_path):
  inputs = [tf_keras.Input((3, 3, 4)) for _ in range(3)]
  model = tf_keras.Model(inputs, lasso.LassoCombine(l1=0.1)(inputs))
  model.layers[-1].alpha.assign([1.0, -1.0, 2.0])
  path = str(tmp_path / "ckpt")
  tf.train.Checkpoint(model=model).write(path)
  inputs2 = [tf_keras.Input((3, 3, 4)) for _ in range(3)]
  model2 = tf_keras.Model(inputs2, lasso.LassoCombine(l1=0.1)(inputs2))
  tf.train.Checkpoint(model=model2).read(path).assert_consumed()
  np.testing.assert_allclose(model2.layers[-1].alpha.numpy(), [1, -1, 2])
  assert len(model2.losses) == 1


def test_rejects_mismatched_shapes_and_bad_arguments():
  with pytest.raises(ValueError, match="same shape"):
    lasso.LassoCombine()([tf.zeros([1, 4, 4, 2]), tf.zeros([1, 2, 2, 2])])
  with pytest.raises(ValueError, match="initializer"):
    lasso.LassoCombine(initializer="random")
  with pytest.raises(ValueError, match="l1"):
    lasso.LassoCombine(l1=-1.0)


def test_l1_drives_noise_unit_to_zero():
  """Toy lasso: unit 0 carries the signal, unit 1 is pure noise, unit 2 is a
  weak copy of the signal buried in noise. Fitting the target with the L1
  penalty must put (almost) all weight on the signal unit."""
  rng = np.random.default_rng(1)
  n = 256
  signal = rng.normal(size=(n, 1, 1, 8)).astype(np.float32)
  noise = rng.normal(size=(n, 1, 1, 8)).astype(np.float32)
  mixed = (0.3 * signal + rng.normal(size=signal.shape)).astype(np.float32)
  units = [tf.constant(signal), tf.constant(noise), tf.constant(mixed)]
  target = tf.constant(signal)

  layer = lasso.LassoCombine(l1=0.05, initializer="uniform")
  layer(units)
  optimizer = tf_keras.optimizers.SGD(learning_rate=0.5)
  for _ in range(300):
    with tf.GradientTape() as tape:
      out = layer(units)
      loss = tf.reduce_mean(tf.square(out - target)) + tf.add_n(layer.losses)
    optimizer.apply_gradients(zip(tape.gradient(loss, [layer.alpha]),
                                  [layer.alpha]))
  alpha_hat = np.abs(layer.normalized_alpha().numpy())
  assert alpha_hat[0] > 0.99
  assert alpha_hat[1] < 0.05
  assert alpha_hat[2] < 0.1


def test_alpha_matrix_stacks_rows():
  layers = [lasso.LassoCombine(initializer=i) for i in ("last", "uniform")]
  for layer in layers:
    layer(_units(4))
  matrix = lasso.alpha_matrix(layers).numpy()
  assert matrix.shape == (2, 4)
  np.testing.assert_allclose(np.sum(matrix ** 2, axis=1), [1.0, 1.0],
                             rtol=1e-6)
