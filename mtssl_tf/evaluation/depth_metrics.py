"""Reverse-Huber loss and the depth measures (paper §5 and appendix A).

berHu (Laina et al. 2016, Eq. 1), per pixel residual x = prediction - truth:

    B(x) = |x|                     if |x| <= c
           (x**2 + c**2) / (2 c)   if |x| >  c,     c = 0.2 * max |x|

with the max over all valid pixels of the batch. The two pieces meet at
|x| = c (both give c). ``c`` is a threshold, not a function of the
weights: no gradient flows through it (as in Laina's code). A batch whose
residuals are all 0 has c = 0 and loss 0.

Measures (Tables 1-8; Laina et al. Table 2), over pixels with valid ground
truth d and prediction p:
  delta1, delta2, delta3   fraction with max(d / p, p / d) < 1.25, 1.25**2,
                           1.25**3 ("% of pixels below 1.25" in the paper)
  abs_rel                  mean |d - p| / d  ("mean relative error")
  mae                      mean |d - p|  ("mean absolute error", metres)
  rmse                     sqrt(mean (d - p)**2)
  log10                    mean |log10 d - log10 p|
They are pooled over all valid pixels of the test set (``DepthMetrics``
accumulates sums), so "% of pixels" means exactly that. A pixel is valid
when its ground truth is finite and inside [min_depth, max_depth]; other
pixels are excluded everywhere. Predictions are clipped to that range first
(a depth of 0 has no ratio or logarithm). Hand-written: no library computes
these with masking.
"""

from typing import Dict

import numpy as np
import tensorflow as tf

THRESHOLDS = (1.25, 1.25 ** 2, 1.25 ** 3)
METRIC_NAMES = ("delta1", "delta2", "delta3", "abs_rel", "mae", "rmse",
                "log10")


def valid_mask(depth, min_depth: float = 1e-3, max_depth: float = 10.0):
  """Pixels with a usable ground truth (finite, within range)."""
  depth = tf.convert_to_tensor(depth)
  finite = tf.math.is_finite(depth)
  safe = tf.where(finite, depth, tf.zeros_like(depth))
  return finite & (safe >= min_depth) & (safe <= max_depth)


def berhu_loss(prediction, target, mask, threshold_fraction: float = 0.2,
               reduce_max=None):
  """Mean berHu over the valid pixels of the batch.

  Args:
    prediction, target: float ``[N, H, W]`` or ``[N, H, W, 1]`` (same shape).
    mask: bool, same shape; False pixels are ignored (also for c).
    threshold_fraction: c = threshold_fraction * max |residual| (0.2).
    reduce_max: optional function of this batch's max |residual| giving the
      max over the whole batch when it is split over replicas (an
      all-gather and max).

  Returns:
    Scalar float32 (0 if no pixel is valid).
  """
  prediction = tf.cast(prediction, tf.float32)
  target = tf.cast(target, tf.float32)
  mask = tf.cast(mask, tf.bool)
  residual = tf.where(mask, tf.abs(prediction - target), 0.0)
  largest = tf.reduce_max(residual)
  if reduce_max is not None:
    largest = reduce_max(largest)
  c = tf.stop_gradient(threshold_fraction * largest)
  safe_c = tf.maximum(c, 1e-12)  # c = 0 only when every residual is 0
  quadratic = (tf.square(residual) + tf.square(c)) / (2.0 * safe_c)
  per_pixel = tf.where(residual <= c, residual, quadratic)
  per_pixel = tf.where(mask, per_pixel, 0.0)
  count = tf.reduce_sum(tf.cast(mask, tf.float32))
  return tf.math.divide_no_nan(tf.reduce_sum(per_pixel), count)


def metric_sums(prediction, target, min_depth: float = 1e-3,
                max_depth: float = 10.0, mask=None) -> Dict[str, tf.Tensor]:
  """Per-batch sums from which ``DepthMetrics`` pools the measures.

  Args:
    prediction, target: float tensors of one shape (metres).
    mask: optional extra bool mask (e.g. the evaluation crop).

  Returns:
    float64 sums: "count", "delta1..3", "abs_rel", "mae", "squared",
    "log10".
  """
  target = tf.cast(target, tf.float64)
  valid = valid_mask(target, min_depth, max_depth)
  if mask is not None:
    valid &= tf.cast(mask, tf.bool)
  d = tf.where(valid, target, 1.0)
  p = tf.clip_by_value(tf.cast(prediction, tf.float64), min_depth, max_depth)
  p = tf.where(valid, p, 1.0)
  w = tf.cast(valid, tf.float64)
  ratio = tf.maximum(d / p, p / d)
  sums = {"count": tf.reduce_sum(w)}
  for i, t in enumerate(THRESHOLDS):
    sums[f"delta{i + 1}"] = tf.reduce_sum(w * tf.cast(ratio < t, tf.float64))
  err = tf.abs(d - p)
  sums["abs_rel"] = tf.reduce_sum(w * err / d)
  sums["mae"] = tf.reduce_sum(w * err)
  sums["squared"] = tf.reduce_sum(w * tf.square(err))
  sums["log10"] = tf.reduce_sum(
      w * tf.abs(tf.math.log(d) - tf.math.log(p))) / np.log(10.0)
  return sums


class DepthMetrics:
  """Accumulates ``metric_sums`` over batches; ``result()`` pools them."""

  def __init__(self):
    self.sums = {}

  def update(self, sums: Dict[str, tf.Tensor]) -> None:
    for k, v in sums.items():
      self.sums[k] = self.sums.get(k, 0.0) + float(v)

  def result(self) -> Dict[str, float]:
    n = self.sums.get("count", 0.0)
    if n <= 0:
      raise ValueError("No valid ground-truth pixel was evaluated.")
    out = {k: self.sums[k] / n for k in METRIC_NAMES if k != "rmse"}
    out["rmse"] = float(np.sqrt(self.sums["squared"] / n))
    return {k: float(out[k]) for k in METRIC_NAMES}
