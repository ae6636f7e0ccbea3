"""Input pipeline of the NYU v2 depth evaluation (Laina et al. 2016, §4).

Laina et al. follow Eigen et al. (NIPS 2014): frames (640x480) are
downsampled to half resolution (320x240) and the network sees 304x228
crops; training pairs are augmented with

  scale      s ~ U[1, 1.5]: image and depth resized by s, depth divided by s
             (the scene moves closer, so the geometry stays consistent);
  rotation   r ~ U[-5, 5] degrees about the centre;
  crop       a random 304x228 window (Eigen's translation);
  colour     RGB multiplied by c ~ U[0.8, 1.2]^3 (image only);
  flip       horizontal with probability 0.5.

Every random draw is stateless, keyed by a per-example seed (the run's seed
and the example's position in the stream), so an example's augmentation does
not depend on which thread or process drew it and a resumed run sees exactly
the pairs an uninterrupted one would.

Geometric steps are applied identically to image and depth. The image is
resampled bilinearly, the depth by nearest neighbour, so invalid pixels
(depth 0) stay invalid instead of being blended into valid ones; pixels the
rotation brings in from outside the frame get depth 0, i.e. are masked.

Evaluation inputs are the whole frame resized to 320x240 (the network is
fully convolutional); the prediction is compared with the full-resolution
ground truth (see ``evaluation/nyu_depth.py``).

Images leave this module as float32 in [-1, 1], the trunk's input range.
"""

import dataclasses
import math
from typing import Tuple

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Sizes and augmentation ranges (defaults: Laina / Eigen, see above).

  Attributes:
    resize: (height, width) every frame is first resized to.
    crop: (height, width) of the training crop.
    scale: (min, max) of the random scale s (depth is divided by s).
    rotation_degrees: maximal absolute rotation.
    color: (min, max) of the per-channel colour factor.
    flip: apply random horizontal flips.
  """
  resize: Tuple[int, int] = (240, 320)
  crop: Tuple[int, int] = (228, 304)
  scale: Tuple[float, float] = (1.0, 1.5)
  rotation_degrees: float = 5.0
  color: Tuple[float, float] = (0.8, 1.2)
  flip: bool = True


def check(cfg: AugmentConfig) -> None:
  if min(cfg.crop) < 1 or cfg.crop[0] > cfg.resize[0] or (
      cfg.crop[1] > cfg.resize[1]):
    raise ValueError(f"crop {cfg.crop} must fit inside resize {cfg.resize} "
                     f"(height, width).")
  if not 0 < cfg.scale[0] <= cfg.scale[1] or cfg.scale[0] < 1.0:
    raise ValueError(f"scale must be (min, max) with 1 <= min <= max (a "
                     f"scale below 1 would leave the crop uncovered), got "
                     f"{cfg.scale}.")
  if not 0 < cfg.color[0] <= cfg.color[1]:
    raise ValueError(f"color must be (min, max) with 0 < min <= max, got "
                     f"{cfg.color}.")
  if not 0 <= cfg.rotation_degrees < 90:
    raise ValueError(f"rotation_degrees must be in [0, 90), got "
                     f"{cfg.rotation_degrees}.")


def to_trunk_range(image):
  """uint8/float [0, 255] -> float32 [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def _resize_pair(image, depth, size):
  image = tf.image.resize(tf.cast(image, tf.float32), size, "bilinear",
                          antialias=True)
  depth = tf.image.resize(depth[..., tf.newaxis], size, "nearest")[..., 0]
  return image, depth


def _rotate(image, interpolation, angle):
  """Rotates ``[H, W, C]`` by ``angle`` (radians) about its centre, fill 0."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  # Output pixel (x, y) reads input R(angle) (p - c) + c.
  transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                        sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[tf.newaxis], transforms=transform[tf.newaxis],
      output_shape=shape[:2], fill_value=0.0, interpolation=interpolation,
      fill_mode="CONSTANT")[0]


def train_example(image, depth, cfg: AugmentConfig, seed):
  """One augmented training pair.

  Args:
    image: uint8 ``[H, W, 3]``.
    depth: float32 ``[H, W]`` (metres, 0 = invalid).
    cfg: the sizes and ranges.
    seed: int ``[2]``, e.g. ``(run seed, example index)``: the same seed
      gives the same augmentation.

  Returns:
    ``(image float32 [crop_h, crop_w, 3] in [-1, 1], depth float32
    [crop_h, crop_w])``.
  """
  seeds = tf.random.experimental.stateless_split(
      tf.cast(seed, tf.int64), 5)
  image, depth = _resize_pair(image, depth, cfg.resize)
  s = tf.random.stateless_uniform([], seeds[0], cfg.scale[0], cfg.scale[1])
  size = tf.cast(tf.round(tf.constant(cfg.resize, tf.float32) * s), tf.int32)
  image, depth = _resize_pair(image, depth, size)
  depth = depth / s
  if cfg.rotation_degrees > 0:
    angle = tf.random.stateless_uniform([], seeds[1], -1.0, 1.0) * (
        cfg.rotation_degrees * math.pi / 180.0)
    image = _rotate(image, "BILINEAR", angle)
    depth = _rotate(depth[..., tf.newaxis], "NEAREST", angle)[..., 0]
  stacked = tf.concat([image, depth[..., tf.newaxis]], axis=-1)
  stacked = tf.image.stateless_random_crop(
      stacked, [cfg.crop[0], cfg.crop[1], 4], seeds[2])
  if cfg.flip:
    stacked = tf.image.stateless_random_flip_left_right(stacked, seeds[3])
  image, depth = stacked[..., :3], stacked[..., 3]
  factors = tf.random.stateless_uniform([3], seeds[4], cfg.color[0],
                                        cfg.color[1])
  image = tf.clip_by_value(image * factors, 0.0, 255.0)
  return to_trunk_range(image), depth


def eval_example(image, depth, cfg: AugmentConfig):
  """Evaluation pair: the whole frame at ``resize``; depth untouched.

  Returns:
    ``(image float32 [resize_h, resize_w, 3] in [-1, 1], depth float32
    [H, W])`` (full-resolution ground truth).
  """
  image = tf.image.resize(tf.cast(image, tf.float32), cfg.resize, "bilinear",
                          antialias=True)
  return to_trunk_range(image), tf.cast(depth, tf.float32)
