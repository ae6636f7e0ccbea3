"""Relative position ("rp"): where is patch 2 relative to patch 1?

Doersch, Gupta & Efros 2015 (cdoersch/deepcontext), as used in paper §2,
§3.3 and §3.4. One training example is a pair of 96x96 patches from one image:

  1. The image is resized (aspect kept) to a random area of 150k-450k pixels,
     then enlarged if needed so that both sides fit a diagonal pair
     (``patch + gap + patch + 2 * jitter`` = 254 px; tiny images are upscaled).
  2. A 3x3 grid of 96x96 cells with gap 48 (pitch 144) is implied around patch
     1: patch 1 is a grid point placed uniformly at random such that its
     neighbour in direction ``OFFSETS[label]`` fits, with ``label`` uniform in
     0..7. Each patch is then jittered independently by up to +-7 px in x and
     y, and never leaves the image.
  3. Each patch independently: with probability 1/3 it is downsampled to a
     random area uniform in [100, 96*96] px and upsampled back (bilinear), as
     the original does against low-level shortcuts. Then either
       colour dropping (default): one random channel is kept, the other two
       become mid-grey plus Gaussian noise with std 1/100 of the kept
       channel's std (Doersch 2015 §3: noise "~1/100 the standard deviation of
       the remaining channel"; mid-grey is 0 of the [-1, 1] range, like the
       original's mean-subtracted zero), or
       harmonized (``Config.harmonize``, paper §3.3): Lab lightness L,
       replicated 3x, exactly colorization's input.

Labels number the 8 neighbours of patch 1 in reading order (``OFFSETS``):

    0 1 2
    3 . 4          label = cell of patch 2 relative to patch 1
    5 6 7

Siamese layout (§3.1): ``make_dataset`` yields ``images [2B, 96, 96, 3]`` with
rows 2i and 2i+1 the pair of example i, and ``labels {"position": [B] int32}``.

Head (§3.4): the shared per-patch units (``models/heads.py``) give 3x3x512 ->
4608 per patch; ``GroupConsecutive(2)`` concatenates each pair to 9216; three
fully-connected residual units 4608 wide with bottleneck 512 follow. The paper
leaves open how 9216 becomes 4608: here the FIRST fully-connected unit maps
9216 -> 4608 itself, its shortcut being a learned linear projection (TF-Slim's
rule for a unit whose depth changes; 42.5M weights at full size), and the
other two have identity shortcuts. Their 1x1 convs run as matmuls with a
hand-written backward pass (``heads.PointwiseConv``, issue 16). A ResNet-v2
"postnorm" (BN + ReLU) and a linear layer give 8 logits. Loss: softmax cross-entropy; metric: accuracy.
"""

import dataclasses
from typing import Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import color
from mtssl_tf.data import sources
from mtssl_tf.models import heads
from mtssl_tf.tasks import base

NAME = "rp"
AUTOTUNE = tf.data.AUTOTUNE
# (dy, dx) in grid cells of patch 2 relative to patch 1, indexed by label.
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
NUM_CLASSES = len(OFFSETS)


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the relative-position task (defaults: the paper's).

  Attributes:
    patch_size, gap, jitter: grid geometry in pixels (96, 48, 7).
    min_pixels, max_pixels: range of the random image area after resizing.
    downsample_prob: fraction of patches downsampled and upsampled back.
    min_downsample_pixels: smallest area a patch is downsampled to.
    harmonize: Lab-L input instead of colour dropping (paper §3.3).
    patch_units: ``(depth, bottleneck, stride)`` of the per-patch units.
    fc_width, fc_bottleneck, num_fc_units: the fully-connected residual units.
    weight_decay: L2 weight decay of the head (TF-Slim convention).
  """
  patch_size: int = 96
  gap: int = 48
  jitter: int = 7
  min_pixels: int = 150_000
  max_pixels: int = 450_000
  downsample_prob: float = 1.0 / 3.0
  min_downsample_pixels: int = 100
  harmonize: bool = False
  patch_units: Tuple[Tuple[int, int, int], ...] = heads.PATCH_UNITS
  fc_width: int = 4608
  fc_bottleneck: int = 512
  num_fc_units: int = 3
  weight_decay: float = 1e-4

  def validate(self) -> None:
    base.check_config(
        self, positive=("patch_size", "min_downsample_pixels", "patch_units",
                        "fc_width", "fc_bottleneck", "num_fc_units"),
        non_negative=("gap", "jitter", "weight_decay"),
        fractions=("downsample_prob",), ranges=(("min_pixels", "max_pixels"),))

  def scale_head(self, multiplier: float) -> "Config":
    return dataclasses.replace(
        self, patch_units=base.scale_units(self.patch_units, multiplier),
        fc_width=base.scale_width(self.fc_width, multiplier),
        fc_bottleneck=base.scale_width(self.fc_bottleneck, multiplier))

# A tiny configuration for tests and smoke runs (tasks/base.py): trains in
# seconds on a depth-14, width-8 trunk.
TINY = Config(patch_units=((32, 8, 2), (16, 8, 2)), fc_width=32,
              fc_bottleneck=8)


def _uniform_int(seed, low, high):
  """Stateless integer uniform in [low, high] (inclusive), scalar."""
  return tf.random.stateless_uniform([], seed, low, high + 1, dtype=tf.int32)


def resize_for_pairs(image, seed, cfg: Config):
  """Resizes uint8 ``[H, W, 3]`` to a random area, float32 [0, 1] output."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  area = tf.random.stateless_uniform([], seed, float(cfg.min_pixels),
                                     float(cfg.max_pixels))
  scale = tf.sqrt(area / (shape[0] * shape[1]))
  min_side = float(2 * cfg.patch_size + cfg.gap + 2 * cfg.jitter)
  scale = tf.maximum(scale, min_side / tf.reduce_min(shape))
  size = tf.cast(tf.math.ceil(shape * scale), tf.int32)
  image = tf.image.convert_image_dtype(image, tf.float32)
  resized = tf.image.resize(image, size, antialias=True)
  return tf.clip_by_value(resized, 0.0, 1.0)


def sample_pair_corners(height, width, label, seed, cfg: Config):
  """Top-left corners ``[2, 2]`` (rows: patch 1, patch 2; cols: y, x).

  Requires ``height, width >= 2 * patch + gap + 2 * jitter``.
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  offsets = tf.constant(OFFSETS, tf.int32)[label]
  pitch = cfg.patch_size + cfg.gap
  jitter = tf.random.stateless_uniform([2, 2], seeds[0], -cfg.jitter,
                                       cfg.jitter + 1, dtype=tf.int32)
  step = offsets * pitch
  limits = tf.stack([height, width])
  low = cfg.jitter + tf.maximum(0, -step)
  high = limits - cfg.patch_size - cfg.jitter - tf.maximum(0, step)
  grid_y = _uniform_int(seeds[1], low[0], high[0])
  grid_x = _uniform_int(seeds[2], low[1], high[1])
  first = tf.stack([grid_y, grid_x])
  return tf.stack([first, first + step]) + jitter


def _downsample(patch, seed, cfg: Config):
  """Down to a random area in [min_downsample_pixels, patch**2] and back."""
  size = cfg.patch_size
  area = tf.random.stateless_uniform([], seed, float(cfg.min_downsample_pixels),
                                     float(size * size))
  side = tf.cast(tf.round(tf.sqrt(area)), tf.int32)
  small = tf.image.resize(patch, [side, side], antialias=True)
  return tf.image.resize(small, [size, size])


def drop_colors(patch, seed):
  """Keeps one random channel of ``[H, W, 3]`` [0, 1]; the others -> noise.

  Dropped channels are 0.5 (mid-grey) plus Gaussian noise with std 1/100 of
  the kept channel's std.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  keep = _uniform_int(seeds[0], 0, 2)
  kept = patch[..., keep]
  noise = 0.5 + tf.math.reduce_std(kept) / 100.0 * tf.random.stateless_normal(
      tf.shape(patch), seeds[1])
  mask = tf.equal(tf.range(3), keep)
  return tf.where(mask, patch, noise)


class Task:
  """The relative-position task (contract: ``tasks/base.py``)."""

  name = NAME
  source_kind = base.IMAGES
  trunk_inputs_per_example = 2

  def __init__(self, cfg: Config = Config(),
               trunk: base.TrunkFacts = base.PAPER_TRUNK):
    del trunk  # the head takes the feature shape it is given
    self.config = cfg

  @property
  def input_shape(self):
    return (self.config.patch_size, self.config.patch_size, 3)

  # ---- data -----------------------------------------------------------------

  def _prepare_patch(self, patch, seed):
    """float32 [0, 1] ``[P, P, 3]`` -> trunk input in [-1, 1]."""
    cfg = self.config
    seeds = tf.random.experimental.stateless_split(seed, 3)
    coin = tf.random.stateless_uniform([], seeds[0])
    patch = tf.cond(coin < cfg.downsample_prob,
                    lambda: _downsample(patch, seeds[1], cfg), lambda: patch)
    patch = tf.clip_by_value(patch, 0.0, 1.0)
    if cfg.harmonize:
      lightness = color.rgb_to_lab(patch)[..., :1]
      return base.lightness_to_trunk_range(lightness)
    return base.to_trunk_range(drop_colors(patch, seeds[2]))

  def make_example(self, image, seed):
    """uint8 ``[H, W, 3]`` -> (patches ``[2, P, P, 3]`` in [-1, 1], label)."""
    cfg = self.config
    seeds = tf.random.experimental.stateless_split(seed, 5)
    image = resize_for_pairs(image, seeds[0], cfg)
    label = _uniform_int(seeds[1], 0, NUM_CLASSES - 1)
    shape = tf.shape(image)
    corners = sample_pair_corners(shape[0], shape[1], label, seeds[2], cfg)
    patches = []
    for i in range(2):
      patch = tf.slice(image, [corners[i, 0], corners[i, 1], 0],
                       [cfg.patch_size, cfg.patch_size, 3])
      patches.append(self._prepare_patch(patch, seeds[3 + i]))
    patches = tf.stack(patches)
    patches.set_shape((2,) + self.input_shape)
    return patches, label

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed=None, skipped=None):
    """``(images [2B, P, P, 3] float32, {"position": [B] int32})`` batches,
    and the image source's skip counter."""
    source = sources.ImageSource(data, skipped=skipped)
    examples = tf.data.Dataset.zip(
        (source.dataset(seed), tf.data.Dataset.random(seed).batch(2)))
    # In input order given a seed: a checkpointed iterator resumes exactly.
    examples = examples.map(self.make_example, num_parallel_calls=AUTOTUNE,
                            deterministic=seed is not None)
    batches = examples.batch(batch_size, drop_remainder=True)

    def to_trunk_batch(patches, labels):
      images = tf.reshape(patches, (2 * batch_size,) + self.input_shape)
      return images, {"position": labels}
    return batches.map(to_trunk_batch).prefetch(AUTOTUNE), source.skipped

  # ---- model ----------------------------------------------------------------

  def build_head(self, feature_shape) -> tf_keras.Model:
    """``[2B, h, w, C]`` trunk features -> ``{"logits": [B, 8]}``."""
    cfg = self.config
    features = tf_keras.Input(shape=tuple(feature_shape), name="features")
    x = heads.patch_units(features, cfg.patch_units, "rp_head/patch",
                          cfg.weight_decay)
    x = tf_keras.layers.Flatten(name="rp_head/flatten")(x)
    x = heads.GroupConsecutive(2, name="rp_head/pairs")(x)
    for i in range(cfg.num_fc_units):
      x = self._fc_unit(x, f"rp_head/fc_{i + 1}")
    x = heads.final_preactivation(x, "rp_head/postnorm")
    logits = tf_keras.layers.Dense(
        NUM_CLASSES, name="rp_head/logits",
        kernel_regularizer=tf_keras.regularizers.l2(0.5 * cfg.weight_decay))(x)
    return tf_keras.Model(features, {"logits": logits}, name="rp_head")

  def _fc_unit(self, x, name):
    """One fully-connected unit ``[B, C] -> [B, fc_width]`` (benchmarks/
    legacy.py overrides it with the formulations issue 16 replaced)."""
    cfg = self.config
    return heads.fc_residual_unit(x, cfg.fc_width, cfg.fc_bottleneck, name,
                                  cfg.weight_decay)

  def loss(self, labels, outputs):
    return base.classification_loss(labels["position"], outputs["logits"])

  def metrics(self, labels, outputs):
    return {"accuracy": base.classification_accuracy(labels["position"],
                                                     outputs["logits"])}

  def summary_images(self, images, labels, outputs, max_images=4):
    """``{"pairs": uint8 [n, P, 2P, 3]}``: patch 1 left, patch 2 right."""
    del labels, outputs
    pairs = tf.reshape(images, (-1, 2) + self.input_shape)[:max_images]
    side_by_side = tf.concat([pairs[:, 0], pairs[:, 1]], axis=2)
    side_by_side = tf.clip_by_value(side_by_side, -1.0, 1.0)
    return {"pairs": tf.cast(tf.round((side_by_side + 1.0) * 127.5), tf.uint8)}
