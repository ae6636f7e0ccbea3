"""Jigsaw ("jig"): which permutation shuffled the 3x3 tiles of the image?

Noroozi & Favaro 2016 ("Unsupervised learning of visual representations by
solving jigsaw puzzles", ECCV) as benchmarked at scale by Goyal et al. 2019
("Scaling and benchmarking self-supervised visual representation
learning", ICCV): tiles with gaps, per-tile colour jitter, a permutation set
of |P| chosen by maximal Hamming distance, a siamese tile encoder (here: the
shared trunk) and a head over the concatenated tile features. Noroozi &
Favaro's AlexNet-like CFN reports 67.6 mAP classification, 53.2 mAP
detection and 37.6 mIoU segmentation on PASCAL VOC 2007; Goyal et al.'s
ResNet-50 trained on ImageNet-1k reaches 15.1 / 28.8 / 36.8 / 41.0 / 34.4
top-1 with Places205 linear classifiers on res1..res5 (41.5 at res4 from
ImageNet-22k) and 56.6 mAP (67.1 from ImageNet-22k) on VOC07 Fast R-CNN
detection with a frozen trunk.

One example (Goyal et al.'s geometry): the image is resized so that its
shorter side is ``resize_size`` (256), a random ``crop_size`` square (255)
is cut and split into a 3x3 grid of cells (85 px); from each cell a
``tile_size`` tile (64) is taken at a random position, which leaves random
gaps between tiles against edge-continuity shortcuts. Each tile
independently gets colour jitter (brightness, contrast, saturation, hue;
against chromatic-aberration shortcuts) or, with ``harmonize``, becomes Lab
lightness replicated 3x (paper §3.3). A label ``l`` uniform in ``0..|P|-1``
picks the permutation ``P[l]``; trunk input slot ``j`` of the example is the
tile of cell ``P[l][j]`` (cells in reading order), so putting slot ``j``
back at cell ``P[l][j]`` reassembles the grid (``reassemble``).

Permutation set (``permutation_set``): Noroozi & Favaro's Algorithm 1 over
all 9! permutations: start from one chosen by ``permutation_seed``, then
repeatedly add the permutation with the largest summed Hamming distance to
those already chosen (ties: the first in lexicographic order). Built
deterministically at start-up (a few seconds for |P| = 1000; cached). At
|P| = 1000, seed 0: mean pairwise Hamming distance 8.008, minimum 2 (Noroozi
& Favaro report an average of 8.00 for this algorithm).

Layout: ``images [9B, T, T, 3]`` (rows 9i..9i+8: the slots of example i)
and ``labels {"permutation": int32 [B]}``.

Head: per tile, the per-patch residual units of rp/ex (``models/heads.py``;
8x8x1024 -> 2x2x512 at T = 64), BN + ReLU, a fully-connected layer of
``tile_width`` (CFN's per-tile fc6, 1024) with ReLU; ``GroupConsecutive(9)``
concatenates an example's 9 tiles in slot order; a fully-connected layer of
``fc_width`` (fc7, 4096) with ReLU and a linear layer to |P| logits (fc8).
Loss: softmax cross-entropy; metric: accuracy. Summary images: the 9 slots
as the trunk sees them and the grid reassembled by the true label.
"""

import dataclasses
import functools
import itertools
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import color
from mtssl_tf.data import sources
from mtssl_tf.models import heads
from mtssl_tf.tasks import base

NAME = "jig"
AUTOTUNE = tf.data.AUTOTUNE
GRID = 3
NUM_TILES = GRID * GRID
MAX_PERMUTATIONS = 362_880  # 9!


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the jigsaw task (defaults: Goyal et al. 2019).

  Attributes:
    num_permutations: |P|, the size of the permutation set (the number of
      classes; Goyal et al. vary it from 100 to 10k).
    permutation_seed: picks the first permutation of the set.
    resize_size: the shorter image side before the random crop (256).
    crop_size: side of the square crop split into 3x3 cells (255).
    tile_size: side of the tile taken from each cell (64); the trunk input.
    brightness, contrast, saturation, hue: per-tile colour jitter strengths
      (max brightness delta, contrast and saturation factors in 1 +- value,
      max hue delta; 0 disables one).
    harmonize: Lab-L tiles replicated 3x instead of RGB (paper §3.3).
    patch_units: ``(depth, bottleneck, stride)`` of the per-tile units.
    tile_width: width of the per-tile fully-connected layer (1024).
    fc_width: width of the fully-connected layer over the 9 tiles (4096).
    weight_decay: L2 weight decay of the head (TF-Slim convention).
  """
  num_permutations: int = 1000
  permutation_seed: int = 0
  resize_size: int = 256
  crop_size: int = 255
  tile_size: int = 64
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4
  hue: float = 0.1
  harmonize: bool = False
  patch_units: Tuple[Tuple[int, int, int], ...] = heads.PATCH_UNITS
  tile_width: int = 1024
  fc_width: int = 4096
  weight_decay: float = 1e-4

  def validate(self) -> None:
    base.check_config(
        self, positive=("num_permutations", "resize_size", "crop_size",
                        "tile_size", "patch_units", "tile_width", "fc_width"),
        non_negative=("permutation_seed", "brightness", "contrast",
                      "saturation", "hue", "weight_decay"),
        fractions=("contrast", "saturation"))
    if self.num_permutations > MAX_PERMUTATIONS:
      raise ValueError(f"jigsaw Config: num_permutations="
                       f"{self.num_permutations} must be <= 9! = "
                       f"{MAX_PERMUTATIONS}.")
    if self.hue > 0.5:  # tf.image's hue delta is a fraction of the circle
      raise ValueError(f"jigsaw Config: hue={self.hue} must be in [0, 0.5].")
    if self.crop_size // GRID < self.tile_size:
      raise ValueError(f"jig: tile_size ({self.tile_size}) must fit in a "
                       f"cell of crop_size // 3 ({self.crop_size // GRID}).")
    if self.resize_size < self.crop_size:
      raise ValueError(f"jig: resize_size ({self.resize_size}) must be at "
                       f"least crop_size ({self.crop_size}).")

  def scale_head(self, multiplier: float) -> "Config":
    """Hidden widths times ``multiplier``; |P| (the classes) is kept."""
    return dataclasses.replace(
        self, patch_units=base.scale_units(self.patch_units, multiplier),
        tile_width=base.scale_width(self.tile_width, multiplier),
        fc_width=base.scale_width(self.fc_width, multiplier))


# A tiny configuration for tests and smoke runs (tasks/base.py): trains in
# seconds on a depth-14, width-8 trunk.
TINY = Config(num_permutations=10, resize_size=64, crop_size=60, tile_size=16,
              patch_units=((32, 8, 2), (16, 8, 2)), tile_width=16,
              fc_width=32)


@functools.lru_cache(maxsize=4)
def permutation_set(size: int, seed: int = 0) -> np.ndarray:
  """int32 ``[size, 9]`` permutations of maximal Hamming distance.

  Noroozi & Favaro 2016, Algorithm 1 (see the module docstring); each row
  is a permutation of 0..8, no two rows equal.
  """
  if not 1 <= size <= MAX_PERMUTATIONS:
    raise ValueError(f"jig: num_permutations must be in [1, 9! = "
                     f"{MAX_PERMUTATIONS}], got {size}.")
  candidates = np.array(list(itertools.permutations(range(NUM_TILES))),
                        np.int8)
  # matches[p][v]: which candidates have value v at position p, so that the
  # distance to one permutation q is 9 - sum_p matches[p][q[p]] (fast).
  matches = np.stack([[candidates[:, p] == v for v in range(NUM_TILES)]
                      for p in range(NUM_TILES)]).astype(np.int32)
  index = int(np.random.default_rng(seed).integers(len(candidates)))
  chosen = []
  total = np.zeros(len(candidates), np.int64)
  for _ in range(size):
    chosen.append(index)
    q = candidates[index]
    same = matches[0, q[0]].copy()
    for p in range(1, NUM_TILES):
      same += matches[p, q[p]]
    total += NUM_TILES - same
    total[chosen] = -1
    index = int(np.argmax(total))
  return candidates[chosen].astype(np.int32)


def hamming_distances(permutations: np.ndarray) -> np.ndarray:
  """Pairwise Hamming distances ``[n * (n - 1) / 2]`` of distinct rows."""
  permutations = np.asarray(permutations)
  distances = (permutations[:, None] != permutations[None]).sum(-1)
  return distances[np.triu_indices(len(permutations), 1)]


def reassemble(slots, permutation):
  """Puts slot j back at cell ``permutation[j]``: ``[9, T, T, c]`` ->
  the ``[3T, 3T, c]`` grid of tiles in cell order (numpy)."""
  slots = np.asarray(slots)
  cells = np.empty_like(slots)
  cells[np.asarray(permutation)] = slots
  rows = [np.concatenate(list(cells[r * GRID:(r + 1) * GRID]), axis=1)
          for r in range(GRID)]
  return np.concatenate(rows, axis=0)


def crop(image, seed, cfg: Config):
  """uint8 ``[H, W, 3]`` -> float32 [0, 1] ``[crop, crop, 3]``: shorter side
  to ``resize_size``, then a random square crop."""
  image = tf.image.convert_image_dtype(image, tf.float32)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = float(cfg.resize_size) / tf.reduce_min(shape)
  size = tf.maximum(tf.cast(tf.math.ceil(shape * scale), tf.int32),
                    cfg.resize_size)
  image = tf.clip_by_value(tf.image.resize(image, size, antialias=True),
                           0.0, 1.0)
  return tf.image.stateless_random_crop(
      image, [cfg.crop_size, cfg.crop_size, 3], seed)


def cut_tiles(image, seed, cfg: Config):
  """``[crop, crop, 3]`` -> ``[9, T, T, 3]``: one tile at a random position
  in each cell, cells in reading order."""
  cell = cfg.crop_size // GRID
  offsets = tf.random.stateless_uniform(
      [NUM_TILES, 2], seed, 0, cell - cfg.tile_size + 1, dtype=tf.int32)
  tiles = []
  for i in range(NUM_TILES):
    top = (i // GRID) * cell + offsets[i, 0]
    left = (i % GRID) * cell + offsets[i, 1]
    tiles.append(tf.slice(image, [top, left, 0],
                          [cfg.tile_size, cfg.tile_size, 3]))
  return tf.stack(tiles)


def jitter_colours(tile, seed, cfg: Config):
  """Random brightness, contrast, saturation and hue of one [0, 1] tile."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  if cfg.brightness:
    tile = tf.image.stateless_random_brightness(tile, cfg.brightness,
                                                seeds[0])
  if cfg.contrast:
    tile = tf.image.stateless_random_contrast(
        tile, 1.0 - cfg.contrast, 1.0 + cfg.contrast, seeds[1])
  if cfg.saturation:
    tile = tf.image.stateless_random_saturation(
        tf.clip_by_value(tile, 0.0, 1.0), 1.0 - cfg.saturation,
        1.0 + cfg.saturation, seeds[2])
  if cfg.hue:
    tile = tf.image.stateless_random_hue(tf.clip_by_value(tile, 0.0, 1.0),
                                         cfg.hue, seeds[3])
  return tf.clip_by_value(tile, 0.0, 1.0)


class Task:
  """The jigsaw task (contract: ``tasks/base.py``)."""

  name = NAME
  source_kind = base.IMAGES
  trunk_inputs_per_example = NUM_TILES

  def __init__(self, cfg: Config = Config(),
               trunk: base.TrunkFacts = base.PAPER_TRUNK):
    del trunk  # the head takes the feature shape it is given
    cfg.validate()
    self.config = cfg
    self.permutations = permutation_set(cfg.num_permutations,
                                        cfg.permutation_seed)

  @property
  def input_shape(self):
    return (self.config.tile_size, self.config.tile_size, 3)

  # ---- data -----------------------------------------------------------------

  def make_example(self, image, seed):
    """uint8 ``[H, W, 3]`` -> (slots ``[9, T, T, 3]`` in [-1, 1], label)."""
    cfg = self.config
    seeds = tf.random.experimental.stateless_split(seed, 4)
    tiles = cut_tiles(crop(image, seeds[0], cfg), seeds[1], cfg)
    tile_seeds = tf.random.experimental.stateless_split(seeds[2], NUM_TILES)
    prepared = []
    for i in range(NUM_TILES):
      tile = jitter_colours(tiles[i], tile_seeds[i], cfg)
      if cfg.harmonize:
        prepared.append(base.lightness_to_trunk_range(
            color.rgb_to_lab(tile)[..., :1]))
      else:
        prepared.append(base.to_trunk_range(tile))
    label = tf.random.stateless_uniform([], seeds[3], 0,
                                        cfg.num_permutations, dtype=tf.int32)
    permutation = tf.gather(tf.constant(self.permutations), label)
    slots = tf.gather(tf.stack(prepared), permutation)
    slots.set_shape((NUM_TILES,) + self.input_shape)
    return slots, label

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed: Optional[int] = None, skipped=None):
    """``(images [9B, T, T, 3], {"permutation": [B] int32})`` batches and the
    image source's skip counter."""
    source = sources.ImageSource(data, skipped=skipped)
    examples = tf.data.Dataset.zip(
        (source.dataset(seed), tf.data.Dataset.random(seed).batch(2)))
    examples = examples.map(self.make_example, num_parallel_calls=AUTOTUNE,
                            deterministic=seed is not None)

    def to_trunk_batch(slots, labels):
      images = tf.reshape(slots, (NUM_TILES * batch_size,) + self.input_shape)
      return images, {"permutation": labels}
    batches = examples.batch(batch_size, drop_remainder=True)
    return batches.map(to_trunk_batch).prefetch(AUTOTUNE), source.skipped

  # ---- model ----------------------------------------------------------------

  def build_head(self, feature_shape) -> tf_keras.Model:
    """``[9B, h, w, C]`` tile features -> ``{"logits": [B, |P|]}``."""
    cfg = self.config
    regularizer = tf_keras.regularizers.l2(0.5 * cfg.weight_decay)
    features = tf_keras.Input(shape=tuple(feature_shape), name="features")
    x = heads.patch_units(features, cfg.patch_units, "jig_head/tile",
                          cfg.weight_decay)
    x = heads.final_preactivation(x, "jig_head/tile_postnorm")
    x = tf_keras.layers.Flatten(name="jig_head/flatten")(x)
    x = tf_keras.layers.Dense(cfg.tile_width, activation="relu",
                              name="jig_head/tile_fc",
                              kernel_initializer="he_normal",
                              kernel_regularizer=regularizer)(x)
    x = heads.GroupConsecutive(NUM_TILES, name="jig_head/tiles")(x)
    x = tf_keras.layers.Dense(cfg.fc_width, activation="relu",
                              name="jig_head/fc",
                              kernel_initializer="he_normal",
                              kernel_regularizer=regularizer)(x)
    logits = tf_keras.layers.Dense(cfg.num_permutations,
                                   name="jig_head/logits",
                                   kernel_regularizer=regularizer)(x)
    return tf_keras.Model(features, {"logits": logits}, name="jig_head")

  def loss(self, labels, outputs):
    return base.classification_loss(labels["permutation"], outputs["logits"])

  def metrics(self, labels, outputs):
    return {"accuracy": base.classification_accuracy(labels["permutation"],
                                                     outputs["logits"])}

  def summary_images(self, images, labels, outputs, max_images=4):
    """``{"tiles": uint8 [n, 3T, 6T, 3]}``: the 9 slots in reading order as
    the trunk sees them (left) and reassembled by the true label (right)."""
    del outputs
    size = self.config.tile_size
    slots = tf.reshape(images, (-1, NUM_TILES) + self.input_shape)
    slots = slots[:max_images]
    labels = tf.cast(labels["permutation"][:max_images], tf.int32)
    permutations = tf.gather(tf.constant(self.permutations), labels)
    # Cell c holds the slot j with permutation[j] == c.
    inverse = tf.argsort(permutations, axis=-1)
    cells = tf.gather(slots, inverse, batch_dims=1)

    def grid(tiles):
      rows = tf.reshape(tiles, (-1, GRID, GRID, size, size, 3))
      rows = tf.transpose(rows, [0, 1, 3, 2, 4, 5])
      return tf.reshape(rows, (-1, GRID * size, GRID * size, 3))
    both = tf.concat([grid(slots), grid(cells)], axis=2)
    both = tf.clip_by_value(both, -1.0, 1.0)
    return {"tiles": tf.cast(tf.round((both + 1.0) * 127.5), tf.uint8)}
