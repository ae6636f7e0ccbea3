"""Exemplar ("ex"): triplet loss over augmented views of one patch.

Dosovitskiy et al. 2014 ("Discriminative unsupervised feature learning with
convolutional neural networks"), made scalable with a triplet loss as in paper
§2; head as in §3.4. One training example is two views of one pseudo-class:

  1. The image is resized to 256x256 (aspect not kept, as the paper states).
  2. A 96x96 seed patch centre is drawn uniformly so the seed patch lies
     inside the image.
  3. Each view independently (``sample_augmentation``):
       translation  up to +-0.2 * 96 px in x and y (uniform),
       scale        0.7-1.4, log-uniform (content magnified by the factor),
       rotation     +-20 degrees, uniform (positive = counter-clockwise as
                    displayed), one affine warp with
                    ``tf.raw_ops.ImageProjectiveTransformV3`` (bilinear,
                    reflected at the image border);
       contrast 1   project the patch's pixels on their RGB principal
                    components, scale each projection by 0.5-2 (log-uniform),
                    add back (``pca_contrast``);
       contrast 2   S and V (HSV) to a power 0.25-4 (log-uniform), times
                    0.7-1.4, plus -0.1..0.1, independently for S and V;
       hue          plus -0.1..0.1 (cyclic) (``adjust_hsv``).

Triplets: a batch of B examples gives ``images [2B, 96, 96, 3]`` (rows 2i, 2i+1
are the two views of example i) and ``labels {"negative": [B] int32}`` with
negative[i] = (i + 1) mod B. The triplet of example i is (view 1 of i, view 2
of i, view 2 of negative[i]), so the negative is another image's patch at no
extra trunk cost (each second view also serves as the next example's
negative). B must be at least 2. With few distinct images (the built-in
sample set) a negative can occasionally come from the same photo, though
never the same patch.

Head (§3.4): the two per-patch residual units shared with rp
(``models/heads.py``) -> 3x3x512, flattened to a 4608-d embedding
``{"embedding": [2B, 4608]}``. Loss: max(D(f1, f2) - D(f1, f3) + 0.5, 0)
averaged over the batch, D the cosine distance 1 - <f/|f|, g/|g|> (each
embedding L2-normalised along its own axis). Metric: triplet accuracy, the
fraction with D(f1, f2) < D(f1, f3).
"""

import dataclasses
import math
from typing import Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import sources
from mtssl_tf.models import heads
from mtssl_tf.tasks import base

NAME = "ex"
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the exemplar task (defaults: paper §2 / Dosovitskiy 2014).

  Attributes:
    image_size, patch_size: images are resized to image_size^2; patches.
    max_translation: fraction of patch_size.
    scale_range, max_rotation_degrees: geometric augmentation.
    pca_factor_range: contrast 1 factors (per principal component).
    power_range, factor_range, max_offset: contrast 2 (per S and V).
    max_hue_delta: hue shift (hue in [0, 1)).
    margin: triplet-loss margin M.
    patch_units: ``(depth, bottleneck, stride)`` of the head's units.
    weight_decay: L2 weight decay of the head (TF-Slim convention).
  """
  image_size: int = 256
  patch_size: int = 96
  max_translation: float = 0.2
  scale_range: Tuple[float, float] = (0.7, 1.4)
  max_rotation_degrees: float = 20.0
  pca_factor_range: Tuple[float, float] = (0.5, 2.0)
  power_range: Tuple[float, float] = (0.25, 4.0)
  factor_range: Tuple[float, float] = (0.7, 1.4)
  max_offset: float = 0.1
  max_hue_delta: float = 0.1
  margin: float = 0.5
  patch_units: Tuple[Tuple[int, int, int], ...] = heads.PATCH_UNITS
  weight_decay: float = 1e-4

  def validate(self) -> None:
    base.check_config(
        self, positive=("image_size", "patch_size", "patch_units", "margin"),
        non_negative=("max_translation", "max_rotation_degrees", "max_offset",
                      "max_hue_delta", "weight_decay"),
        ranges=("scale_range", "pca_factor_range", "power_range",
                "factor_range"))
    if self.patch_size > self.image_size:
      raise ValueError(f"exemplar Config: patch_size {self.patch_size} must "
                       f"be <= image_size {self.image_size}.")

  def scale_head(self, multiplier: float) -> "Config":
    return dataclasses.replace(
        self, patch_units=base.scale_units(self.patch_units, multiplier))

# A tiny configuration for tests and smoke runs (tasks/base.py): trains in
# seconds on a depth-14, width-8 trunk.
TINY = Config(patch_units=((32, 8, 2), (16, 8, 2)))


def _log_uniform(shape, seed, low_high):
  low, high = low_high
  return tf.exp(tf.random.stateless_uniform(
      shape, seed, math.log(low), math.log(high)))


def sample_augmentation(seed, cfg: Config):
  """Random parameters of one view: a dict of float32 tensors.

  Keys: translation [2] (x, y px), scale [], angle [] (radians),
  pca_factors [3], powers [2], factors [2], offsets [2] (S, V), hue [].
  """
  s = tf.random.experimental.stateless_split(seed, 8)
  shift = cfg.max_translation * cfg.patch_size
  angle = math.radians(cfg.max_rotation_degrees)
  return {
      "translation": tf.random.stateless_uniform([2], s[0], -shift, shift),
      "scale": _log_uniform([], s[1], cfg.scale_range),
      "angle": tf.random.stateless_uniform([], s[2], -angle, angle),
      "pca_factors": _log_uniform([3], s[3], cfg.pca_factor_range),
      "powers": _log_uniform([2], s[4], cfg.power_range),
      "factors": tf.random.stateless_uniform([2], s[5], *cfg.factor_range),
      "offsets": tf.random.stateless_uniform([2], s[6], -cfg.max_offset,
                                             cfg.max_offset),
      "hue": tf.random.stateless_uniform([], s[7], -cfg.max_hue_delta,
                                         cfg.max_hue_delta),
  }


def affine_transform(center, translation, scale, angle, patch_size):
  """ImageProjectiveTransformV3 parameters ``[8]`` for one view.

  Maps output pixel (x, y) to input ``center + translation +
  R(angle) (out - c) / scale`` with c the patch centre ((P - 1) / 2), pixel
  centres at integer coordinates, x = column, y = row.
  """
  cos = tf.cos(angle) / scale
  sin = tf.sin(angle) / scale
  c = (patch_size - 1) / 2.0
  cx = center[0] + translation[0]
  cy = center[1] + translation[1]
  zero = tf.zeros_like(cos)
  return tf.stack([cos, -sin, cx - c * (cos - sin),
                   sin, cos, cy - c * (sin + cos), zero, zero])


def warp_patches(image, transforms, patch_size):
  """``[H, W, 3]`` image, ``[V, 8]`` transforms -> ``[V, P, P, 3]`` views."""
  views = tf.shape(transforms)[0]
  images = tf.tile(image[tf.newaxis], [views, 1, 1, 1])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=tf.cast(transforms, tf.float32),
      output_shape=tf.constant([patch_size, patch_size], tf.int32),
      fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def pca_contrast(rgb, factors):
  """Scales the RGB principal components of ``[H, W, 3]`` [0, 1] by factors.

  The components are the eigenvectors of the patch's own pixel covariance;
  the patch mean is kept. Output clipped to [0, 1].
  """
  pixels = tf.reshape(rgb, [-1, 3])
  mean = tf.reduce_mean(pixels, axis=0)
  centred = pixels - mean
  covariance = tf.matmul(centred, centred, transpose_a=True) / tf.cast(
      tf.shape(pixels)[0], rgb.dtype)
  _, vectors = tf.linalg.eigh(covariance)
  scaled = tf.matmul(tf.matmul(centred, vectors) * factors, vectors,
                     transpose_b=True)
  return tf.clip_by_value(tf.reshape(scaled + mean, tf.shape(rgb)), 0.0, 1.0)


def adjust_hsv(rgb, hue, powers, factors, offsets):
  """Hue shift and S, V power/factor/offset on ``[H, W, 3]`` [0, 1] RGB.

  S' = clip(S ** powers[0] * factors[0] + offsets[0], 0, 1), likewise V with
  index 1; H' = (H + hue) mod 1.
  """
  hsv = tf.image.rgb_to_hsv(rgb)
  h, sv = hsv[..., :1], hsv[..., 1:]
  sv = tf.clip_by_value(tf.pow(sv, powers) * factors + offsets, 0.0, 1.0)
  h = tf.math.floormod(h + hue, 1.0)
  return tf.clip_by_value(
      tf.image.hsv_to_rgb(tf.concat([h, sv], axis=-1)), 0.0, 1.0)


def triplet_loss_terms(embeddings, negative, margin):
  """Per-triplet hinge and distances from ``[2B, D]`` siamese embeddings.

  Returns:
    (loss ``[B]``, d_positive ``[B]``, d_negative ``[B]``), D cosine distance.
  """
  embeddings = tf.cast(embeddings, tf.float32)
  pairs = tf.reshape(embeddings, [-1, 2, embeddings.shape[-1]])
  f1 = tf.math.l2_normalize(pairs[:, 0], axis=-1)
  f2 = tf.math.l2_normalize(pairs[:, 1], axis=-1)
  f3 = tf.gather(f2, tf.cast(negative, tf.int32))
  d_positive = 1.0 - tf.reduce_sum(f1 * f2, axis=-1)
  d_negative = 1.0 - tf.reduce_sum(f1 * f3, axis=-1)
  loss = tf.nn.relu(d_positive - d_negative + margin)
  return loss, d_positive, d_negative


class Task:
  """The exemplar task (contract: ``tasks/base.py``)."""

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

  def make_example(self, image, seed):
    """uint8 ``[H, W, 3]`` -> two views ``[2, P, P, 3]`` in [-1, 1]."""
    cfg = self.config
    seeds = tf.random.experimental.stateless_split(seed, 3)
    size = cfg.image_size
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.clip_by_value(
        tf.image.resize(image, [size, size], antialias=True), 0.0, 1.0)
    half = (cfg.patch_size - 1) / 2.0
    center = tf.random.stateless_uniform([2], seeds[0], half, size - 1 - half)
    params = [sample_augmentation(s, cfg) for s in (seeds[1], seeds[2])]
    transforms = tf.stack([
        affine_transform(center, p["translation"], p["scale"], p["angle"],
                         cfg.patch_size) for p in params])
    warped = warp_patches(image, transforms, cfg.patch_size)
    views = []
    for i, p in enumerate(params):
      view = pca_contrast(warped[i], p["pca_factors"])
      view = adjust_hsv(view, p["hue"], p["powers"], p["factors"],
                        p["offsets"])
      views.append(base.to_trunk_range(view))
    views = tf.stack(views)
    views.set_shape((2,) + self.input_shape)
    return views

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed=None, skipped=None):
    """``(images [2B, P, P, 3] float32, {"negative": [B] int32})`` batches,
    and the image source's skip counter."""
    if batch_size < 2:
      raise ValueError(
          f"The exemplar task takes its negatives from other examples of the "
          f"batch: batch_size must be >= 2, got {batch_size}.")
    source = sources.ImageSource(data, skipped=skipped)
    examples = tf.data.Dataset.zip(
        (source.dataset(seed), tf.data.Dataset.random(seed).batch(2)))
    # In input order given a seed: a checkpointed iterator resumes exactly.
    examples = examples.map(self.make_example, num_parallel_calls=AUTOTUNE,
                            deterministic=seed is not None)
    negative = (tf.range(batch_size, dtype=tf.int32) + 1) % batch_size

    def to_trunk_batch(views):
      images = tf.reshape(views, (2 * batch_size,) + self.input_shape)
      return images, {"negative": negative}
    batches = examples.batch(batch_size, drop_remainder=True)
    return batches.map(to_trunk_batch).prefetch(AUTOTUNE), source.skipped

  # ---- model ----------------------------------------------------------------

  def build_head(self, feature_shape) -> tf_keras.Model:
    """``[2B, h, w, C]`` trunk features -> ``{"embedding": [2B, 4608]}``."""
    cfg = self.config
    features = tf_keras.Input(shape=tuple(feature_shape), name="features")
    x = heads.patch_units(features, cfg.patch_units, "ex_head/patch",
                          cfg.weight_decay)
    embedding = tf_keras.layers.Flatten(name="ex_head/embedding")(x)
    return tf_keras.Model(features, {"embedding": embedding}, name="ex_head")

  def loss(self, labels, outputs):
    loss, _, _ = triplet_loss_terms(outputs["embedding"], labels["negative"],
                                    self.config.margin)
    return tf.reduce_mean(loss)

  def metrics(self, labels, outputs):
    _, d_positive, d_negative = triplet_loss_terms(
        outputs["embedding"], labels["negative"], self.config.margin)
    correct = tf.cast(d_positive < d_negative, tf.float32)
    return {"triplet_accuracy": tf.reduce_mean(correct)}

  def summary_images(self, images, labels, outputs, max_images=4):
    """``{"triplets": uint8 [n, P, 3P, 3]}``: view 1 | view 2 | negative."""
    del outputs
    views = tf.reshape(images, (-1, 2) + self.input_shape)
    negatives = tf.gather(views[:, 1], tf.cast(labels["negative"], tf.int32))
    triplets = tf.concat([views[:, 0], views[:, 1], negatives], axis=2)
    triplets = tf.clip_by_value(triplets[:max_images], -1.0, 1.0)
    return {"triplets": tf.cast(tf.round((triplets + 1.0) * 127.5), tf.uint8)}
