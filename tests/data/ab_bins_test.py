"""Tests of the 313 ab bins, soft encoding, prior, rebalancing and decoding."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import ab_bins
from mtssl_tf.data import color


def _srgb_cube_surface_8bit():
  """Every 8-bit sRGB colour with at least one channel at 0 or 255."""
  # pylint: disable-next=protected-access
  return ab_bins._rgb_cube_surface(256)  # linspace(0, 1, 256) = k / 255


def _srgb_ab(rgb):
  return color.rgb_to_lab(tf.constant(rgb, tf.float64)).numpy()[:, 1:]


def test_exactly_313_bins_on_the_grid_of_10():
  centres = ab_bins.bin_centres()
  assert centres.shape == (313, 2)
  assert len({tuple(c) for c in centres}) == 313
  np.testing.assert_array_equal(np.mod(centres, 10.0), 0.0)
  # Zhang et al.'s pts_in_hull.npy spans the same ranges.
  np.testing.assert_array_equal(centres.min(axis=0), [-90.0, -110.0])
  np.testing.assert_array_equal(centres.max(axis=0), [100.0, 100.0])


@pytest.mark.parametrize("samples_per_edge", [17, 65])
def test_bin_construction_has_clear_margins(samples_per_edge):
  # The count does not hinge on how densely the gamut surface is sampled.
  grid = ab_bins.ab_grid()
  gaps = ab_bins.box_hull_separation(
      grid, ab_bins.srgb_gamut_hull(samples_per_edge), 10.0)
  assert np.sum(gaps <= 0) == 313
  assert gaps[gaps > 0].min() > 0.05 and gaps[gaps <= 0].max() < -0.3
  inside = {tuple(p) for p in grid[gaps <= 0]}
  assert inside == {tuple(c) for c in ab_bins.bin_centres()}


def test_every_bin_is_reachable_from_some_srgb_colour():
  # "Reachable": the bin is among the 5 nearest centres of the ab of at least
  # one 8-bit sRGB colour, i.e. it receives soft-encoding mass from a real
  # colour. The extreme ab values lie on the RGB cube's surface, so the 8-bit
  # surface colours (393,216 of them) are the ones to try.
  ab = _srgb_ab(_srgb_cube_surface_8bit()).astype(np.float32)
  reached = np.zeros(313, bool)
  for chunk in np.array_split(ab, 16):
    _, indices = tf.math.top_k(
        -tf.reduce_sum(tf.square(chunk[:, None, :] - ab_bins.bin_centres()),
                       -1), k=5)
    reached[np.unique(indices.numpy())] = True
  assert reached.all(), np.flatnonzero(~reached)


def test_bins_cover_the_gamut():
  # The converse: every sRGB colour's ab lies in the ±5 cell of some bin.
  rng = np.random.default_rng(0)
  rgb = np.concatenate([_srgb_cube_surface_8bit()[::7],
                        rng.uniform(size=(20000, 3))])
  ab = _srgb_ab(rgb)
  chebyshev = np.abs(ab[:, None, :] - ab_bins.bin_centres()[None]).max(-1)
  assert chebyshev.min(axis=1).max() <= 5.0 + 1e-4


def test_box_hull_separation_on_a_square():
  square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
  gaps = ab_bins.box_hull_separation(
      [[5, 5], [13, 5], [17, 5], [-1, -1], [-3, -3]], square, 2.0)
  np.testing.assert_allclose(gaps, [-7.0, 1.0, 5.0, -1.0, 1.0])
  triangle = np.array([[0, 0], [10, 0], [0, 10]], np.float64)
  # The box around (8, 8) misses the hypotenuse x + y = 10 by
  # (16 - 2 * 2 - 10) / sqrt(2) along its normal.
  gap = ab_bins.box_hull_separation([[8, 8]], triangle, 2.0)
  np.testing.assert_allclose(gap, [2.0 / np.sqrt(2.0)])


def test_soft_encoding_golden_values():
  # ab (3, 2): nearest centres (0,0), (10,0), (0,10), (10,10), (0,-10) at
  # squared distances 13, 53, 73, 113, 153 (the next one is 173).
  encoded = ab_bins.soft_encode(tf.constant([3.0, 2.0])).numpy()
  gaussian = np.exp(-np.array([13, 53, 73, 113, 153]) / 50.0)
  expected = gaussian / gaussian.sum()
  index = {tuple(c): i for i, c in enumerate(ab_bins.bin_centres())}
  for (a, b), value in zip([(0, 0), (10, 0), (0, 10), (10, 10), (0, -10)],
                           expected):
    assert encoded[index[(a, b)]] == pytest.approx(value, rel=1e-5)
  assert np.count_nonzero(encoded) == 5
  assert encoded.sum() == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(expected[:2], [0.51369, 0.23082], atol=1e-5)


def test_soft_encoding_at_a_centre_and_far_outside():
  encoded = ab_bins.soft_encode(tf.constant([[0.0, 0.0], [500.0, 500.0]]))
  encoded = encoded.numpy()
  index = {tuple(c): i for i, c in enumerate(ab_bins.bin_centres())}
  assert encoded[0, index[(0, 0)]] == pytest.approx(1 / (1 + 4 * np.exp(-2)))
  assert np.all(np.isfinite(encoded[1]))
  assert encoded[1].sum() == pytest.approx(1.0, abs=1e-6)


def test_soft_encoding_inside_tf_data_matches_eager():
  ab = tf.random.uniform([4, 3, 3, 2], -60.0, 60.0, seed=1)
  eager = ab_bins.soft_encode(ab)
  mapped = next(iter(tf.data.Dataset.from_tensors(ab).map(
      ab_bins.soft_encode)))
  np.testing.assert_allclose(mapped.numpy(), eager.numpy(), atol=1e-6)
  assert eager.shape == (4, 3, 3, 313)
  np.testing.assert_array_equal(
      tf.argmax(eager, -1).numpy(), ab_bins.nearest_bin(ab).numpy())


def test_histogram_and_smoothing():
  index = {tuple(c): i for i, c in enumerate(ab_bins.bin_centres())}
  ab = tf.constant([[1.0, 1.0], [2.0, -3.0], [19.0, 1.0], [50.0, 50.0]])
  counts = ab_bins.bin_histogram(ab, mask=[True, True, True, False]).numpy()
  assert counts[index[(0, 0)]] == 2 and counts[index[(20, 0)]] == 1
  assert counts.sum() == 3
  prior = ab_bins.smooth_prior(counts)
  assert prior.sum() == pytest.approx(1.0)
  # (0, 0) keeps the share exp(0) / sum of its kernel column; its 4
  # neighbours at distance 10 get exp(-2) of that.
  assert prior[index[(0, 0)]] > prior[index[(10, 0)]] > prior[index[(50, 50)]]
  one = np.zeros(313)
  one[index[(0, 0)]] = 1.0
  smoothed = ab_bins.smooth_prior(one)
  ratio = smoothed[index[(10, 0)]] / smoothed[index[(0, 0)]]
  assert ratio == pytest.approx(np.exp(-2.0), rel=1e-6)


def test_rebalancing_weights_have_unit_expectation():
  prior = ab_bins.load_prior()
  weights = ab_bins.rebalancing_weights(prior, 0.5)
  assert np.sum(prior * weights) == pytest.approx(1.0, abs=1e-9)
  # w ∝ 1 / (0.5 p + 0.5 / 313): rare colours weigh more.
  rare, common = np.argmin(prior), np.argmax(prior)
  assert weights[rare] / weights[common] == pytest.approx(
      (0.5 * prior[common] + 0.5 / 313) / (0.5 * prior[rare] + 0.5 / 313))
  # λ = 1 ignores the prior: all weights 1.
  np.testing.assert_allclose(ab_bins.rebalancing_weights(prior, 1.0), 1.0)


def test_shipped_prior_is_a_distribution():
  prior = np.load(ab_bins.DEFAULT_PRIOR_PATH)
  assert prior.shape == (313,) and prior.dtype == np.float64
  assert prior.sum() == pytest.approx(1.0) and prior.min() >= 0.0


def test_prior_files_are_validated(tmp_path):
  bad = tmp_path / "bad.npy"
  np.save(bad, np.ones(100))
  with pytest.raises(ValueError, match="313 non-negative"):
    ab_bins.load_prior(str(bad))
  with pytest.raises(ValueError, match="does not exist"):
    ab_bins.load_prior(str(tmp_path / "missing.npy"))
  good = tmp_path / "sub" / "good.npy"
  ab_bins.save_prior(np.full(313, 1 / 313), str(good))
  np.testing.assert_allclose(ab_bins.load_prior(str(good)), 1 / 313)
  assert os.listdir(good.parent) == ["good.npy"]


def test_annealed_mean_decodes_one_hot_logits_near_the_centre():
  centres = ab_bins.bin_centres()
  chosen = [0, 150, 312]
  logits = tf.one_hot(chosen, 313) * 20.0
  np.testing.assert_allclose(ab_bins.annealed_mean(logits).numpy(),
                             centres[chosen], atol=1e-3)
  # T = 1 is the plain mean; lower T moves towards the mode.
  two = tf.math.log(tf.constant(
      [[0.6 if i == 150 else (0.4 if i == 151 else 1e-9)
        for i in range(313)]]))
  mean = ab_bins.annealed_mean(two, temperature=1.0).numpy()[0]
  np.testing.assert_allclose(mean, 0.6 * centres[150] + 0.4 * centres[151],
                             atol=1e-3)
  annealed = ab_bins.annealed_mean(two).numpy()[0]
  p = np.array([0.6, 0.4]) ** (1 / 0.38)
  p /= p.sum()
  np.testing.assert_allclose(annealed, p @ centres[150:152], atol=1e-3)
