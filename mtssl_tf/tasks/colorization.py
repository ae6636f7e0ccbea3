"""Colorization pretext task "col" (paper §2, §3.4; Zhang et al. 2016).

The trunk sees the lightness L of a 256x256 Lab image (replicated 3 times,
[-1, 1], as ``base.lightness_to_trunk_range``) and the head predicts, at the
trunk's stride 8 (32x32), a distribution over the 313 quantised ab colours
of ``data/ab_bins.py``. The task module follows ``tasks/base.py``.

Input pipeline (choices where the paper is silent):
  * Augmentation as ImageNet training usually does it: resize so that the
    shorter side is ``image_size`` (bilinear, antialiased), take a random
    ``image_size`` square crop, flip horizontally with probability 1/2.
    Random numbers come from per-example stateless seeds, so a seeded
    pipeline is reproducible.
  * sRGB -> Lab with ``data.color.rgb_to_lab``. Targets are the ab of each
    8x8 block, area-averaged (``[32, 32, 2]`` at 256x256): the mean colour of
    the block the feature vector covers, rather than one aliased pixel.
  * Grayscale images are masked out, as Zhang et al.'s ``NonGrayMaskLayer``:
    an image is grayscale when every target pixel has ``|a| <= 5`` and
    ``|b| <= 5`` (``Config.grayscale_threshold``), which also catches
    grayscale JPEGs whose chroma is JPEG noise.

Examples: ``images`` float32 ``[B, S, S, 3]`` (S = ``image_size``);
``labels = {"ab": float32 [B, S/8, S/8, 2], "colour": float32 [B]}``
(1 = colour image, 0 = grayscale, masked out).

Head (paper §3.4): conv 2x2/4096 + ReLU, conv 1x1/4096 + ReLU, conv
1x1/313 logits, all stride 1; the 2x2 conv uses SAME padding (one extra
row/column at the bottom/right) so that the logits keep the 32x32 grid of the
targets. 34.9 M parameters on 1024 channels ("roughly 35M"). Hidden layers are
He-initialised with TF-Slim's L2 weight decay convention (as the trunk).
Outputs: ``{"logits": float32 [B, h, w, 313]}``.

Loss: soft-encoded targets (5 nearest bins, σ = 5), cross-entropy weighted by
the rebalancing weight of each pixel's nearest bin, averaged over the pixels
of colour images. Metrics: accuracy and top-5 accuracy of the predicted bin
against the nearest bin, over the same pixels. Summary images decode the
annealed mean (T = 0.38), upsample ab bilinearly to the input size and put it
together with the input L.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import ab_bins
from mtssl_tf.data import color
from mtssl_tf.data import sources
from mtssl_tf.models import heads
from mtssl_tf.tasks import base

NAME = "col"
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the colorization task (defaults: paper / Zhang et al.).

  Attributes:
    image_size: side of the square trunk input (256 in the paper).
    head_width: channels of the two hidden head convs (4096).
    prior_path: ``.npy`` smoothed prior over the 313 bins from
      ``tools/compute_color_prior.py``; None uses the shipped default.
    rebalance_lambda: λ of the class rebalancing (0.5).
    temperature: annealed-mean temperature of the decoder (0.38).
    grayscale_threshold: an image whose target pixels all have |a| and |b|
      at most this is grayscale and masked out (5, as Zhang et al.).
    weight_decay: L2 weight decay of the head's conv kernels (TF-Slim
      convention, as the trunk).
  """
  image_size: int = 256
  head_width: int = 4096
  prior_path: Optional[str] = None
  rebalance_lambda: float = ab_bins.REBALANCE_LAMBDA
  temperature: float = ab_bins.ANNEALED_MEAN_TEMPERATURE
  grayscale_threshold: float = 5.0
  weight_decay: float = 1e-4

  def validate(self) -> None:
    base.check_config(
        self, positive=("image_size", "head_width", "temperature"),
        non_negative=("grayscale_threshold", "weight_decay"),
        fractions=("rebalance_lambda",))

  def scale_head(self, multiplier: float) -> "Config":
    return dataclasses.replace(
        self, head_width=base.scale_width(self.head_width, multiplier))

# A tiny configuration for tests and smoke runs (tasks/base.py): trains in
# seconds on a depth-14, width-8 trunk.
TINY = Config(image_size=64, head_width=32)


def _resize_shorter_side(image, size):
  """float ``[H, W, 3]`` -> shorter side ``size``, aspect ratio kept."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
  new_shape = tf.maximum(tf.cast(tf.math.ceil(shape * scale), tf.int32), size)
  return tf.image.resize(image, new_shape, method="bilinear", antialias=True)


def lab_example(image, image_size: int, output_stride: int,
                grayscale_threshold: float, seed=None
                ) -> Tuple[tf.Tensor, dict]:
  """One uint8 ``[H, W, 3]`` image -> ``(trunk input, labels)``.

  Args:
    image: uint8 RGB image of any size.
    image_size, grayscale_threshold: as ``Config``.
    output_stride: the trunk's (``base.TrunkFacts``); targets are
      ``image_size / output_stride`` square.
    seed: int ``[2]`` stateless seed for the random crop and flip; None gives
      the deterministic centre crop without flip (used for the prior).

  Returns:
    float32 ``[S, S, 3]`` L in trunk range and ``{"ab": [S/k, S/k, 2],
    "colour": scalar}`` (k = ``output_stride``).
  """
  rgb = _resize_shorter_side(tf.cast(image, tf.float32) / 255.0, image_size)
  if seed is None:
    rgb = tf.image.resize_with_crop_or_pad(rgb, image_size, image_size)
  else:
    rgb = tf.image.stateless_random_crop(rgb, [image_size, image_size, 3],
                                         seed=seed)
    rgb = tf.image.stateless_random_flip_left_right(rgb, seed=seed[::-1])
  lab = color.rgb_to_lab(tf.clip_by_value(rgb, 0.0, 1.0))
  ab = tf.nn.avg_pool2d(lab[None, :, :, 1:], output_stride, output_stride,
                        "VALID")[0]
  colour = tf.reduce_max(tf.abs(ab)) > grayscale_threshold
  labels = {"ab": ab, "colour": tf.cast(colour, tf.float32)}
  return base.lightness_to_trunk_range(lab[..., :1]), labels


def colorize(images, logits, temperature=ab_bins.ANNEALED_MEAN_TEMPERATURE):
  """Decodes predictions into uint8 RGB images.

  Args:
    images: float32 ``[N, H, W, 3]`` trunk inputs (L in [-1, 1], channel 0).
    logits: ``[N, h, w, 313]`` head logits.
    temperature: annealed-mean temperature.

  Returns:
    uint8 ``[N, H, W, 3]``: the input L with the annealed-mean ab, upsampled
    bilinearly to ``H x W``.
  """
  ab = ab_bins.annealed_mean(tf.cast(logits, tf.float32), temperature)
  return _lab_to_uint8(images, ab)


def _lab_to_uint8(images, ab):
  lightness = (tf.cast(images[..., :1], tf.float32) + 1.0) * 50.0
  ab = tf.image.resize(ab, tf.shape(images)[1:3], method="bilinear")
  rgb = color.lab_to_rgb(tf.concat([lightness, ab], axis=-1))
  return tf.image.convert_image_dtype(rgb, tf.uint8, saturate=True)


class Task:
  """The colorization task (contract in ``tasks/base.py``)."""

  name = NAME
  source_kind = base.IMAGES
  trunk_inputs_per_example = 1

  def __init__(self, config: Config = Config(),
               trunk: base.TrunkFacts = base.PAPER_TRUNK):
    if config.image_size % trunk.output_stride:
      raise ValueError(
          f"image_size ({config.image_size}) must be a multiple of the "
          f"trunk's output stride ({trunk.output_stride}).")
    self.config = config
    # Targets are the mean ab of each output_stride^2 block.
    self.output_stride = trunk.output_stride
    ab_bins.bin_centres()  # computed (and cached) eagerly, once
    prior = ab_bins.load_prior(config.prior_path)
    self.class_weights = tf.constant(
        ab_bins.rebalancing_weights(prior, config.rebalance_lambda),
        tf.float32)

  @property
  def input_shape(self):
    return (self.config.image_size, self.config.image_size, 3)

  # ---- data -----------------------------------------------------------------

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed: Optional[int] = None, skipped=None):
    """Batched ``(images, labels)`` (shapes: module docstring) and the image
    source's skip counter."""
    cfg = self.config
    source = sources.ImageSource(data, skipped=skipped)
    pair_seeds = tf.data.Dataset.random(seed=seed).batch(2)
    examples = tf.data.Dataset.zip((source.dataset(seed), pair_seeds))
    examples = examples.map(
        lambda image, s: lab_example(image, cfg.image_size, self.output_stride,
                                     cfg.grayscale_threshold, seed=s),
        num_parallel_calls=AUTOTUNE, deterministic=seed is not None)
    batches = examples.batch(batch_size, drop_remainder=True)
    return batches.prefetch(AUTOTUNE), source.skipped

  # ---- model ----------------------------------------------------------------

  def build_head(self, feature_shape) -> tf_keras.Model:
    """``[N, h, w, C]`` features -> ``{"logits": [N, h, w, 313]}``.

    ``feature_shape`` is ``(h, w, C)`` (a leading batch entry is ignored).
    """
    cfg = self.config
    return heads.conv_head(feature_shape, (2, 1), cfg.head_width,
                           ab_bins.NUM_BINS, f"{NAME}_head", cfg.weight_decay,
                           model_name="colorization_head")

  # ---- loss and metrics -----------------------------------------------------

  def _pixel_mask(self, labels, logits):
    ab = labels["ab"]
    grids = (logits.shape[1:3], ab.shape[1:3])
    if all(g.is_fully_defined() for g in grids) and grids[0] != grids[1]:
      raise ValueError(
          f"Logits grid {logits.shape[1:3]} differs from the target grid "
          f"{ab.shape[1:3]}; the task was built for another trunk stride.")
    return tf.ones(tf.shape(ab)[:3]) * labels["colour"][:, None, None]

  def loss(self, labels, outputs) -> tf.Tensor:
    """Rebalanced soft cross-entropy, averaged over colour-image pixels."""
    logits = tf.cast(outputs["logits"], tf.float32)
    mask = self._pixel_mask(labels, logits)
    targets = ab_bins.soft_encode(labels["ab"])
    pixel_weights = tf.gather(self.class_weights,
                              ab_bins.nearest_bin(labels["ab"]))
    cross_entropy = tf.nn.softmax_cross_entropy_with_logits(
        labels=targets, logits=logits)
    return tf.math.divide_no_nan(
        tf.reduce_sum(mask * pixel_weights * cross_entropy),
        tf.reduce_sum(mask))

  def metrics(self, labels, outputs):
    """Bin accuracy (top-1, top-5) against each pixel's nearest bin."""
    logits = tf.cast(outputs["logits"], tf.float32)
    mask = self._pixel_mask(labels, logits)
    nearest = ab_bins.nearest_bin(labels["ab"])
    top1 = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                            nearest), tf.float32)
    top5 = tf.cast(tf.reshape(tf.math.in_top_k(
        tf.reshape(nearest, [-1]), tf.reshape(logits, [-1, ab_bins.NUM_BINS]),
        k=5), tf.shape(nearest)), tf.float32)
    count = tf.reduce_sum(mask)
    return {
        "bin_accuracy": tf.math.divide_no_nan(tf.reduce_sum(mask * top1),
                                              count),
        "bin_top5_accuracy": tf.math.divide_no_nan(
            tf.reduce_sum(mask * top5), count),
    }

  def summary_images(self, images, labels, outputs):
    """Input L, predicted colours (annealed mean), target colours; uint8."""
    lightness = tf.cast(images[..., :1], tf.float32)
    gray = tf.image.convert_image_dtype(
        tf.tile((lightness + 1.0) / 2.0, [1, 1, 1, 3]), tf.uint8,
        saturate=True)
    return {
        "input_lightness": gray,
        "predicted_colour": colorize(images, outputs["logits"],
                                     self.config.temperature),
        "target_colour": _lab_to_uint8(images, labels["ab"]),
    }


# ---- the prior (tools/compute_color_prior.py) -------------------------------


def empirical_prior(data: config_lib.DataConfig, num_images: int,
                    config: Config = Config(),
                    trunk: base.TrunkFacts = base.PAPER_TRUNK):
  """The smoothed empirical prior p̃ of a data source's colorization targets.

  Reads ``num_images`` images (the source is cycled if it has fewer), takes
  the deterministic centre crop of ``lab_example`` and counts the nearest bin
  of every target pixel of the colour images (grayscale ones are left out, as
  in the loss), then smooths with ``ab_bins.smooth_prior``.

  Returns:
    ``(prior float64 [313], stats)`` with stats a dict of ``images``,
    ``colour_images``, ``pixels`` and the source's ``skipped`` counts.

  Raises:
    ValueError: if ``num_images`` < 1 or no colour image was read.
  """
  if num_images < 1:
    raise ValueError(f"num_images must be at least 1, got {num_images}.")
  source = sources.ImageSource(data)

  def histogram(image):
    _, labels = lab_example(image, config.image_size, trunk.output_stride,
                            config.grayscale_threshold)
    return ab_bins.bin_histogram(labels["ab"]) * labels["colour"], \
        labels["colour"]

  counts = source.dataset(seed=0).take(num_images).map(
      histogram, num_parallel_calls=AUTOTUNE).reduce(
          (tf.zeros([ab_bins.NUM_BINS]), tf.constant(0.0)),
          lambda total, x: (total[0] + x[0], total[1] + x[1]))
  histogram_counts, colour_images = (t.numpy() for t in counts)
  if colour_images == 0:
    raise ValueError(
        f"None of the {num_images} images read from the {data.source} source "
        f"{data.path!r} is in colour; a colour prior needs colour images.")
  stats = {"images": num_images, "colour_images": int(colour_images),
           "pixels": int(np.sum(histogram_counts)),
           "skipped": source.skipped.as_dict()}
  return ab_bins.smooth_prior(histogram_counts), stats
