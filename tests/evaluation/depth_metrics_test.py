"""berHu loss and the depth measures against hand computations."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.evaluation import depth_metrics


def test_berhu_below_at_and_above_c():
  target = np.zeros((1, 1, 4), np.float32)
  prediction = np.array([[[1.0, -2.0, 4.0, 10.0]]], np.float32)
  mask = np.ones_like(target, bool)
  # c = 0.2 * 10 = 2: |1| < c -> 1; |-2| = c -> 2; 4 > c -> (16 + 4) / 4 = 5;
  # 10 -> (100 + 4) / 4 = 26. Mean = 34 / 4.
  loss = depth_metrics.berhu_loss(prediction, target, mask)
  assert float(loss) == pytest.approx(34.0 / 4.0)


def test_berhu_gradient_treats_c_as_a_constant():
  # Laina et al.: c is a threshold, not differentiated. Residuals 1 (< c),
  # 4 (> c) and 10 (max), c = 2: dB/dx = sign(x) below c and x / c above,
  # each over the 3 pixels.
  target = np.zeros((1, 3), np.float32)
  prediction = tf.Variable([[1.0, -4.0, 10.0]])
  with tf.GradientTape() as tape:
    loss = depth_metrics.berhu_loss(prediction, target,
                                    np.ones((1, 3), bool))
  assert float(loss) == pytest.approx((1 + 20 / 4 + 104 / 4) / 3)
  np.testing.assert_allclose(tape.gradient(loss, prediction).numpy(),
                             [[1 / 3, -4 / 2 / 3, 10 / 2 / 3]], rtol=1e-6)


def test_berhu_c_from_the_max_over_all_replicas():
  # With the batch split over replicas, c comes from the largest residual of
  # any replica (reduce_max stands for the all-reduce MAX): here 20, so
  # c = 4 and this replica's residuals 1 and 2 are both below it.
  loss = depth_metrics.berhu_loss(
      np.array([[1.0, 2.0]], np.float32), np.zeros((1, 2), np.float32),
      np.ones((1, 2), bool), reduce_max=lambda m: tf.maximum(m, 20.0))
  assert float(loss) == pytest.approx(1.5)
  # Without it, c = 0.4 and both are quadratic.
  alone = depth_metrics.berhu_loss(
      np.array([[1.0, 2.0]], np.float32), np.zeros((1, 2), np.float32),
      np.ones((1, 2), bool))
  assert float(alone) == pytest.approx(((1 + .16) / .8 + (4 + .16) / .8) / 2)


def test_berhu_ignores_invalid_pixels_also_for_c():
  target = np.array([[1.0, 1.0, 0.0]], np.float32)
  prediction = np.array([[2.0, 1.5, 100.0]], np.float32)
  mask = np.array([[True, True, False]])
  # Valid residuals 1 and 0.5; c = 0.2: both above -> (1 + .04) / .4 = 2.6,
  # (.25 + .04) / .4 = 0.725.
  loss = depth_metrics.berhu_loss(prediction, target, mask)
  assert float(loss) == pytest.approx((2.6 + 0.725) / 2)


def test_berhu_batch_with_zero_max_residual():
  x = np.full((2, 3, 3), 2.5, np.float32)
  mask = np.ones_like(x, bool)
  variable = tf.Variable(x)
  with tf.GradientTape() as tape:
    loss = depth_metrics.berhu_loss(variable, x, mask)
  assert float(loss) == 0.0
  grad = tape.gradient(loss, variable)
  assert np.all(np.isfinite(grad.numpy()))


def test_measures_on_a_hand_example_with_invalid_pixels():
  target = np.array([[2.0, 4.0, 1.0, 0.0, np.nan, 5.0]])
  prediction = np.array([[2.0, 2.5, 1.2, 3.0, 3.0, 20.0]])
  # Valid: the first three (0 and NaN are invalid; 5.0 > max_depth 4.5).
  sums = depth_metrics.metric_sums(prediction, target, 1e-3, 4.5)
  metrics = depth_metrics.DepthMetrics()
  metrics.update(sums)
  got = metrics.result()
  # ratios 1, 1.6, 1.2; errors 0, 1.5, 0.2.
  assert got["delta1"] == pytest.approx(2 / 3)        # 1 and 1.2 < 1.25
  assert got["delta2"] == pytest.approx(2 / 3)        # 1.6 > 1.5625
  assert got["delta3"] == pytest.approx(1.0)          # 1.6 < 1.953
  assert got["abs_rel"] == pytest.approx((0 + 1.5 / 4 + 0.2 / 1) / 3)
  assert got["mae"] == pytest.approx(1.7 / 3)
  assert got["rmse"] == pytest.approx(np.sqrt((2.25 + 0.04) / 3))
  assert got["log10"] == pytest.approx(
      (0 + np.log10(1.6) + np.log10(1.2)) / 3)


def test_measures_pool_pixels_over_batches_and_clip_predictions():
  metrics = depth_metrics.DepthMetrics()
  metrics.update(depth_metrics.metric_sums(np.array([1.0]), np.array([1.0])))
  # Prediction 0 is clipped to min_depth 0.5: ratio 4, error 1.5.
  metrics.update(depth_metrics.metric_sums(
      np.array([0.0, 3.0]), np.array([2.0, 3.0]), min_depth=0.5))
  got = metrics.result()
  assert got["delta1"] == pytest.approx(2 / 3)
  assert got["mae"] == pytest.approx(1.5 / 3)
  assert got["rmse"] == pytest.approx(np.sqrt(2.25 / 3))


def test_no_valid_pixel_is_an_error():
  metrics = depth_metrics.DepthMetrics()
  metrics.update(depth_metrics.metric_sums(np.array([1.0]), np.array([0.0])))
  with pytest.raises(ValueError, match="No valid"):
    metrics.result()
