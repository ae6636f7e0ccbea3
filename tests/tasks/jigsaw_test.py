"""Tests of the jigsaw task: the permutation set, tiles that reassemble into
the image, colour jitter per tile, data layout, head, loss."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.tasks import jigsaw as jig
from mtssl_tf.tasks import registry

T = 16
NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
# Cells exactly one tile wide (no gaps), crop = the whole fixture, no jitter:
# the tiles are exact pieces of the image.
EXACT = jig.Config(num_permutations=24, resize_size=3 * T, crop_size=3 * T,
                   tile_size=T, **NO_JITTER)
# The default geometry scaled down: cells of 20 px, tiles of 16 (gaps).
GAPS = jig.Config(num_permutations=24, resize_size=60, crop_size=60,
                  tile_size=T, **NO_JITTER)


def _fixture(side):
  return np.random.default_rng(0).integers(0, 256, (side, side, 3),
                                           dtype=np.uint8)


def _straightforward_set(size, seed):
  """Noroozi & Favaro's Algorithm 1, written plainly (no tricks)."""
  candidates = np.array(list(itertools.permutations(range(9))))
  index = int(np.random.default_rng(seed).integers(len(candidates)))
  chosen, total = [], np.zeros(len(candidates))
  for _ in range(size):
    chosen.append(index)
    total += (candidates != candidates[index]).sum(axis=1)
    total[chosen] = -np.inf
    index = int(np.argmax(total))
  return candidates[chosen]


def test_permutation_set_1000_size_uniqueness_and_hamming():
  permutations = jig.permutation_set(1000, 0)
  assert permutations.shape == (1000, 9)
  assert all(sorted(p) == list(range(9)) for p in permutations)
  assert len({tuple(p) for p in permutations}) == 1000
  distances = jig.hamming_distances(permutations)
  assert distances.shape == (1000 * 999 // 2,)
  # Measured: mean 8.008, minimum 2 (Noroozi & Favaro: 8.00 on average).
  assert distances.mean() == pytest.approx(8.008, abs=0.001)
  assert distances.min() == 2


def test_permutation_set_is_algorithm_1_and_deterministic():
  np.testing.assert_array_equal(jig.permutation_set(40, 3),
                                _straightforward_set(40, 3))
  assert not np.array_equal(jig.permutation_set(40, 3),
                            jig.permutation_set(40, 4))
  jig.permutation_set.cache_clear()
  np.testing.assert_array_equal(jig.permutation_set(40, 3),
                                _straightforward_set(40, 3))
  # Greedy on the summed distance: far better than a random set of 40.
  random_set = np.array([np.random.default_rng(i).permutation(9)
                         for i in range(40)])
  assert (jig.hamming_distances(jig.permutation_set(40, 3)).mean() >
          jig.hamming_distances(random_set).mean())


def test_hamming_distances_golden():
  rows = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
  np.testing.assert_array_equal(jig.hamming_distances(rows), [2, 2, 3])


def test_reassemble_golden():
  slots = np.arange(9).reshape(9, 1, 1, 1)
  permutation = [3, 0, 1, 2, 4, 5, 6, 7, 8]  # slot 0 holds cell 3, ...
  grid = jig.reassemble(slots, permutation)[..., 0]
  np.testing.assert_array_equal(grid, [[1, 2, 3], [0, 4, 5], [6, 7, 8]])


@pytest.mark.parametrize("in_tf_data", [False, True])
def test_tiles_reassembled_by_the_label_reproduce_the_image(in_tf_data):
  task = jig.Task(EXACT)
  image = _fixture(3 * T)
  seeds = tf.constant([[s, 5] for s in range(8)], tf.int64)
  if in_tf_data:
    examples = list(tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: task.make_example(image, s)))
  else:
    examples = [task.make_example(image, s) for s in seeds]
  labels = set()
  for slots, label in examples:
    assert slots.shape == (9, T, T, 3)
    grid = jig.reassemble(slots.numpy(), task.permutations[int(label)])
    np.testing.assert_allclose(grid, image / 255.0 * 2 - 1, atol=1e-6)
    labels.add(int(label))
  assert len(labels) > 1


def test_tiles_with_gaps_come_from_their_cells():
  task = jig.Task(GAPS)
  image = _fixture(60) / 255.0 * 2 - 1
  positions = set()
  for s in range(3):
    slots, label = task.make_example(_fixture(60),
                                     tf.constant([s, 0], tf.int64))
    grid = jig.reassemble(slots.numpy(), task.permutations[int(label)])
    for cell in range(9):
      tile = grid[(cell // 3) * T:(cell // 3 + 1) * T,
                  (cell % 3) * T:(cell % 3 + 1) * T]
      top, left = (cell // 3) * 20, (cell % 3) * 20
      found = [(dy, dx) for dy in range(5) for dx in range(5)
               if np.allclose(tile, image[top + dy:top + dy + T,
                                          left + dx:left + dx + T],
                              atol=1e-6)]
      assert len(found) == 1, (s, cell)
      positions.add(found[0])
  assert len(positions) > 3  # tile positions (the gaps) are random


def test_colour_jitter_is_per_tile():
  task = jig.Task(jig.Config(**{**EXACT.__dict__, "brightness": 0.3}))
  image = np.full((3 * T, 3 * T, 3), 128, np.uint8)
  image[::2] = 110  # some texture, away from clipping
  slots, label = task.make_example(image, tf.constant([1, 2], tf.int64))
  grid = jig.reassemble(slots.numpy(), task.permutations[int(label)])
  shift = grid - (image / 255.0 * 2 - 1)
  deltas = [shift[(c // 3) * T:(c // 3 + 1) * T,
                  (c % 3) * T:(c % 3 + 1) * T] for c in range(9)]
  for delta in deltas:  # one brightness delta per tile
    np.testing.assert_allclose(delta, delta.flat[0], atol=1e-5)
  assert len({round(float(d.flat[0]), 4) for d in deltas}) == 9


def test_harmonized_tiles_are_replicated_lightness():
  task = jig.Task(jig.Config(**{**EXACT.__dict__, "harmonize": True}))
  slots, _ = task.make_example(_fixture(3 * T), tf.constant([0, 0], tf.int64))
  slots = slots.numpy()
  np.testing.assert_array_equal(slots[..., 0], slots[..., 1])
  np.testing.assert_array_equal(slots[..., 0], slots[..., 2])


def test_make_dataset_layout_and_head():
  task = jig.Task(jig.TINY)
  dataset, skipped = task.make_dataset(config.DataConfig(), 2, seed=0)
  images, labels = next(iter(dataset))
  assert images.shape == (18, 16, 16, 3) and images.dtype == tf.float32
  assert -1.0 <= images.numpy().min() and images.numpy().max() <= 1.0
  assert labels["permutation"].shape == (2,)
  assert set(labels["permutation"].numpy()) <= set(range(10))
  assert skipped.total() == 0
  head = jig.Task().build_head((8, 8, 1024))
  outputs = head(tf.zeros([18, 8, 8, 1024]))
  assert outputs["logits"].shape == (2, 1000)
  # CFN-like sizes: fc6 per tile 2048 -> 1024, fc7 9216 -> 4096, fc8.
  names = {v.name.split(":")[0]: v.shape for v in head.trainable_variables}
  assert names["jig_head/tile_fc/kernel"] == (2048, 1024)
  assert names["jig_head/fc/kernel"] == (9216, 4096)
  assert names["jig_head/logits/kernel"] == (4096, 1000)


def test_loss_metrics_and_summary_images():
  task = jig.Task(EXACT)
  labels = {"permutation": tf.constant([2, 0])}
  logits = tf.one_hot([2, 1], 24) * 3.0
  p_right = np.exp(3) / (np.exp(3) + 23)
  expected = np.mean([-np.log(p_right), -np.log(1 / (np.exp(3) + 23))])
  outputs = {"logits": logits}
  assert task.loss(labels, outputs).numpy() == pytest.approx(expected,
                                                             rel=1e-5)
  assert task.metrics(labels, outputs)["accuracy"].numpy() == 0.5
  image = _fixture(3 * T)
  slots, label = task.make_example(image, tf.constant([3, 3], tf.int64))
  images = task.summary_images(slots, {"permutation": label[None]}, {})
  tiles = images["tiles"].numpy()
  assert tiles.dtype == np.uint8 and tiles.shape == (1, 3 * T, 6 * T, 3)
  np.testing.assert_array_equal(tiles[0, :, 3 * T:], image)


def test_registered_and_validated():
  assert registry.build("jig", jig.TINY).permutations.shape == (10, 9)
  with pytest.raises(ValueError, match="must fit in a cell"):
    jig.Task(jig.Config(crop_size=150, tile_size=64))
  with pytest.raises(ValueError, match="resize_size"):
    jig.Task(jig.Config(resize_size=200))
  with pytest.raises(ValueError, match="num_permutations"):
    jig.permutation_set(0)
  for bad, match in [(dict(num_permutations=0), "num_permutations=0 must be"),
                     (dict(num_permutations=400_000), r"must be <= 9!"),
                     (dict(hue=0.7), r"hue=0.7 must be in \[0, 0.5\]"),
                     (dict(contrast=1.5), r"contrast=1.5 must be in \[0, 1\]"),
                     (dict(brightness=-0.1), "brightness=-0.1 must be >= 0"),
                     (dict(fc_width=0), "fc_width=0 must be > 0")]:
    with pytest.raises(ValueError, match=match):
      registry.build("jig", jig.Config(**bad))


def test_scale_head_scales_hidden_widths_not_the_classes():
  small = jig.Config().scale_head(0.125)
  assert small.patch_units == ((128, 16, 2), (64, 16, 2))
  assert (small.tile_width, small.fc_width) == (128, 512)
  assert small.num_permutations == 1000 and small.tile_size == 64
  assert jig.Config().scale_head(1.0) == jig.Config()
