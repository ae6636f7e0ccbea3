"""The 313 quantised ab colours of colorization (Zhang et al. 2016; paper §2).

Colorization predicts, for every 8x8 pixel block, a distribution over the ab
plane of Lab quantised on a grid of 10 (SPEC.md "Task facts", col). This
module holds everything about that quantisation; ``tasks/colorization.py``
uses it.

Bins. Grid points ``(a, b) = (10 i, 10 j)`` whose closed ±10 box
``[a-10, a+10] x [b-10, b+10]`` meets the convex hull of the sRGB gamut in the
ab plane; exactly 313 points (a in [-90, 100], b in [-110, 100]), the count of
Zhang et al.'s ``pts_in_hull.npy``. The hull is that of the ab coordinates of
the surface of the RGB cube, sampled ``_GAMUT_SAMPLES_PER_EDGE`` times per
edge: ``(L, a, b)`` are smooth functions of linear RGB with an invertible
Jacobian of ``(X, Y, Z) -> (f_x, f_y, f_z)``, so a linear functional of ab has
no critical point inside the cube and every extreme point of the ab image of
the cube lies on its surface. The margins are clear: the nearest excluded box
misses the hull by 0.086 and the least-overlapping included box reaches 0.38
into it, for any sampling from 33 to 1024 points per edge, so the count does
not hinge on the sampling. The centres are computed once, on first use (well
under a second), instead of being shipped as a file: the construction is then
the documentation, and nothing can drift out of sync with it. Order: a
ascending, then b ascending.

Soft encoding (Zhang et al. §2.1): each ab target is spread over its 5
nearest bin centres with Gaussian weights ``exp(-d² / (2 σ²))``, σ = 5
(SPEC.md; the public code uses 10), normalised to sum to 1.

Class rebalancing (Zhang et al. §2.2): the empirical bin distribution p of a
data set, smoothed with a Gaussian kernel of σ = 5 over the bin centres (each
bin's mass spread over all bins with weights ``exp(-d² / (2 σ²))`` that sum
to 1, so no mass is lost at the gamut border), is the prior p̃. Weights are
``w ∝ ((1 - λ) p̃ + λ / 313)⁻¹`` with λ = 0.5, scaled so that
``E_p̃[w] = Σ_q p̃_q w_q = 1``. The prior is a property of the data set:
``tools/compute_color_prior.py`` computes it; ``DEFAULT_PRIOR_PATH`` is the
shipped default (made by that tool from the built-in sample photos).
Prior files are ``.npy`` float64 ``[313]``, non-negative, summing to 1.

Decoding (Zhang et al. §2.3): the annealed mean, the mean of the bin centres
under ``softmax(logits / T)`` with T = 0.38 (equal to re-normalising
``p^(1/T)``).

Shapes: ab tensors are ``[..., 2]`` (a, b); distributions and logits are
``[..., 313]``.
"""

import functools
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from mtssl_tf.data import color

GRID_SIZE = 10.0
# Half-width of the box around a grid point that must meet the gamut hull.
BOX_HALF_WIDTH = 10.0
NUM_BINS = 313
SOFT_ENCODING_NEIGHBOURS = 5
SOFT_ENCODING_SIGMA = 5.0
PRIOR_SMOOTHING_SIGMA = 5.0
REBALANCE_LAMBDA = 0.5
ANNEALED_MEAN_TEMPERATURE = 0.38
# a and b of any Lab colour lie well inside this range; the grid is searched
# over it.
_AB_RANGE = 130.0
_GAMUT_SAMPLES_PER_EDGE = 33

DEFAULT_PRIOR_PATH = os.path.join(os.path.dirname(__file__), "assets",
                                  "color_prior.npy")


def _rgb_cube_surface(samples_per_edge):
  """``[6 * n², 3]`` RGB points on the six faces of the unit cube."""
  t = np.linspace(0.0, 1.0, samples_per_edge)
  u, v = [x.ravel() for x in np.meshgrid(t, t, indexing="ij")]
  faces = []
  for axis in range(3):
    for value in (0.0, 1.0):
      face = np.empty((u.size, 3))
      face[:, axis] = value
      face[:, [i for i in range(3) if i != axis]] = np.stack([u, v], axis=-1)
      faces.append(face)
  return np.concatenate(faces)


def _convex_hull(points):
  """Vertices of the convex hull of ``[P, 2]`` points, counter-clockwise
  (Andrew's monotone chain)."""
  points = sorted(set(map(tuple, np.asarray(points, np.float64))))

  def half(sequence):
    chain = []
    for p in sequence:
      while len(chain) >= 2:
        (ox, oy), (ax, ay) = chain[-2], chain[-1]
        if (ax - ox) * (p[1] - oy) - (ay - oy) * (p[0] - ox) > 0:
          break
        chain.pop()
      chain.append(p)
    return chain

  lower, upper = half(points), half(reversed(points))
  return np.array(lower[:-1] + upper[:-1])


def box_hull_separation(centres, hull, half_width):
  """Signed separation between axis-aligned boxes and a convex polygon.

  Separating-axis theorem: a box and a convex polygon are disjoint iff they
  are separated along a box axis or a polygon edge normal.

  Args:
    centres: ``[P, 2]`` box centres.
    hull: ``[V, 2]`` polygon vertices, counter-clockwise.
    half_width: half the box side.

  Returns:
    ``[P]``: > 0 when the box misses the polygon (by that margin along the
    best separating axis), <= 0 when they meet.
  """
  centres = np.asarray(centres, np.float64)
  edges = np.roll(hull, -1, axis=0) - hull
  normals = np.stack([edges[:, 1], -edges[:, 0]], axis=-1)  # outward (CCW)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  offsets = np.sum(normals * hull, axis=-1)
  # Along each normal: the box's nearest extent minus the polygon's support.
  edge_gaps = (centres @ normals.T - half_width * np.abs(normals).sum(-1)
               - offsets)
  low, high = hull.min(axis=0), hull.max(axis=0)
  axis_gaps = np.maximum(low - (centres + half_width),
                         (centres - half_width) - high)
  return np.maximum(edge_gaps.max(axis=-1), axis_gaps.max(axis=-1))


def srgb_gamut_hull(samples_per_edge: int = _GAMUT_SAMPLES_PER_EDGE):
  """``[V, 2]`` counter-clockwise convex hull of the sRGB gamut in ab."""
  rgb = _rgb_cube_surface(samples_per_edge)
  with tf.init_scope():
    lab = color.rgb_to_lab(tf.constant(rgb, tf.float64)).numpy()
  return _convex_hull(lab[:, 1:])


def ab_grid() -> np.ndarray:
  """float64 ``[G, 2]``: the grid of 10 over ±``_AB_RANGE``, a-major."""
  steps = np.arange(-_AB_RANGE, _AB_RANGE + GRID_SIZE / 2, GRID_SIZE)
  return np.stack([x.ravel() for x in np.meshgrid(steps, steps,
                                                  indexing="ij")], axis=-1)


@functools.lru_cache(maxsize=None)
def _bin_centres_float64():
  grid = ab_grid()
  inside = box_hull_separation(grid, srgb_gamut_hull(), BOX_HALF_WIDTH) <= 0
  centres = grid[inside]
  if len(centres) != NUM_BINS:
    raise AssertionError(
        f"The in-gamut ab grid has {len(centres)} points, expected "
        f"{NUM_BINS}; the Lab conversion in data/color.py has changed.")
  centres.setflags(write=False)
  return centres


def bin_centres() -> np.ndarray:
  """The 313 bin centres, float32 ``[313, 2]`` (a, b); see module doc."""
  return _bin_centres_float64().astype(np.float32)


def _squared_distances(ab, centres):
  """``[..., Q]`` squared distances from ``ab [..., 2]`` to every centre."""
  ab = tf.convert_to_tensor(ab, tf.float32)
  centres = tf.constant(centres, tf.float32)
  return tf.reduce_sum(tf.square(ab[..., None, :] - centres), axis=-1)


def nearest_bin(ab) -> tf.Tensor:
  """int32 ``[...]``: index of the bin centre nearest to ``ab [..., 2]``."""
  return tf.argmin(_squared_distances(ab, bin_centres()), axis=-1,
                   output_type=tf.int32)


def soft_encode(ab, num_neighbours: int = SOFT_ENCODING_NEIGHBOURS,
                sigma: float = SOFT_ENCODING_SIGMA) -> tf.Tensor:
  """Soft-encodes ``ab [..., 2]`` into a ``[..., 313]`` distribution.

  The ``num_neighbours`` nearest bins get weights ``exp(-d² / (2 σ²))``,
  normalised to sum to 1; all other bins get 0.
  """
  neg_sq, indices = tf.math.top_k(-_squared_distances(ab, bin_centres()),
                                  k=num_neighbours)
  # softmax normalises the Gaussian weights without underflowing to 0/0 for
  # ab far outside the gamut.
  weights = tf.nn.softmax(neg_sq / (2.0 * sigma ** 2), axis=-1)
  one_hot = tf.one_hot(indices, NUM_BINS, dtype=tf.float32)
  return tf.reduce_sum(one_hot * weights[..., None], axis=-2)


def bin_histogram(ab, mask=None) -> tf.Tensor:
  """float32 ``[313]``: counts of nearest bins of ``ab [..., 2]`` (pixels
  where ``mask [...]`` is false are left out)."""
  bins = tf.reshape(nearest_bin(ab), [-1])
  weights = None
  if mask is not None:
    weights = tf.reshape(tf.cast(mask, tf.float32), [-1])
  return tf.math.bincount(bins, weights=weights, minlength=NUM_BINS,
                          maxlength=NUM_BINS, dtype=tf.float32)


def smooth_prior(counts, sigma: float = PRIOR_SMOOTHING_SIGMA) -> np.ndarray:
  """Empirical bin counts ``[313]`` -> smoothed prior p̃, float64 ``[313]``.

  Each bin's mass is spread over all bins with Gaussian weights of σ on the
  distance between centres, normalised per source bin (see module doc).
  """
  counts = np.asarray(counts, np.float64)
  if counts.shape != (NUM_BINS,) or np.any(counts < 0) or counts.sum() <= 0:
    raise ValueError(
        f"Prior counts must be {NUM_BINS} non-negative numbers with a "
        f"positive sum; got shape {counts.shape}, sum {counts.sum()}.")
  centres = _bin_centres_float64()
  sq = np.sum((centres[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
  kernel = np.exp(-sq / (2.0 * sigma ** 2))
  kernel /= kernel.sum(axis=0, keepdims=True)  # column q' spreads bin q'
  prior = kernel @ (counts / counts.sum())
  return prior / prior.sum()


def check_prior(prior, where: str = "prior") -> np.ndarray:
  """Returns ``prior`` as float64 ``[313]``; raises if it is not a
  distribution over the bins."""
  prior = np.asarray(prior, np.float64)
  if (prior.shape != (NUM_BINS,) or not np.all(np.isfinite(prior))
      or np.any(prior < 0) or abs(prior.sum() - 1.0) > 1e-4):
    raise ValueError(
        f"The colour {where} must be {NUM_BINS} non-negative finite numbers "
        f"summing to 1 (got shape {prior.shape}, sum "
        f"{np.sum(prior) if prior.size else 0.0}). Make one with "
        f"`python -m tools.compute_color_prior --source=... --path=... "
        f"--output=prior.npy`.")
  return prior / prior.sum()


def load_prior(path: Optional[str] = None) -> np.ndarray:
  """Loads a smoothed prior ``.npy`` (default: the shipped one), float64
  ``[313]``."""
  path = path or DEFAULT_PRIOR_PATH
  if not os.path.isfile(path):
    raise ValueError(
        f"Colour prior file {path!r} does not exist. Make one with "
        f"`python -m tools.compute_color_prior --output={path}`, or leave the "
        f"prior path unset to use the shipped default.")
  try:
    prior = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(
        f"Colour prior file {path!r} is not a readable .npy array: {e}") from e
  return check_prior(prior, where=f"prior in {path!r}")


def save_prior(prior, path: str) -> None:
  """Writes ``prior`` as ``.npy`` atomically (temporary file + rename)."""
  prior = check_prior(prior)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory,
                           f".{os.path.basename(path)}.tmp-{os.getpid()}")
  try:
    with open(temporary, "wb") as f:
      np.save(f, prior, allow_pickle=False)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def rebalancing_weights(prior, rebalance_lambda: float = REBALANCE_LAMBDA
                        ) -> np.ndarray:
  """Class weights float64 ``[313]``: ``w ∝ ((1-λ) p̃ + λ/313)⁻¹``,
  scaled so that ``Σ_q p̃_q w_q = 1``."""
  if not 0.0 < rebalance_lambda <= 1.0:
    raise ValueError(
        f"rebalance_lambda must be in (0, 1], got {rebalance_lambda}.")
  prior = check_prior(prior)
  weights = 1.0 / ((1.0 - rebalance_lambda) * prior
                   + rebalance_lambda / NUM_BINS)
  return weights / np.sum(prior * weights)


def annealed_mean(logits, temperature: float = ANNEALED_MEAN_TEMPERATURE
                  ) -> tf.Tensor:
  """``[..., 313]`` logits -> ``[..., 2]`` ab, the annealed mean."""
  probabilities = tf.nn.softmax(
      tf.convert_to_tensor(logits, tf.float32) / temperature, axis=-1)
  return tf.tensordot(probabilities, tf.constant(bin_centres()), axes=1)
