"""Rotation ("rot"): by how many quarter turns was the image rotated?

Gidaris, Singh & Komodakis 2018 ("Unsupervised representation learning by
predicting image rotations", ICLR), on the shared trunk with a head on block
3 (paper §3.4 style). Their AlexNet "RotNet" reports, on PASCAL VOC 2007,
73.0 mAP classification (all layers fine-tuned), 54.4 mAP detection and 39.1
mIoU segmentation; Goyal et al. 2019 (Table 2, Places205 linear
classifiers on AlexNet conv1..conv5) list it at 21.5 / 31.0 / 35.1 / 34.6 /
33.7 top-1, next to jigsaw's 19.7 / 26.7 / 31.9 / 32.7 / 30.9.

One example is one image: resized so that its shorter side is
``resize_size`` (bilinear, antialiased), a random ``image_size`` square crop,
a random horizontal flip; then, as Gidaris et al. found best, all four
rotations of it go into the same batch (``all_rotations``; otherwise one
random rotation). Rotation k turns the image k * 90 degrees
counter-clockwise as displayed (``tf.image.rot90``, ``np.rot90``); the label
is k. Inputs are RGB in [-1, 1], or with ``harmonize`` the Lab lightness
replicated 3x (paper §3.3, as colorization's input).

Layout: ``images [4B, S, S, 3]`` (rows 4i..4i+3: rotations 0, 1, 2, 3 of
example i; with ``all_rotations=False``, ``[B, S, S, 3]``) and ``labels
{"rotation": int32 [4B]}``.

Head: the per-patch residual units of rp/ex (``models/heads.py``; 28x28x1024
-> 7x7x512 at S = 224), the ResNet-v2 "postnorm" (BN + ReLU), global average
pooling and a linear layer to 4 logits. Loss: softmax cross-entropy; metric:
accuracy. Summary images: each example's four trunk inputs side by side.
"""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import color
from mtssl_tf.data import sources
from mtssl_tf.models import heads
from mtssl_tf.tasks import base

NAME = "rot"
AUTOTUNE = tf.data.AUTOTUNE
NUM_ROTATIONS = 4


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the rotation task (defaults: Gidaris et al. 2018 on ImageNet).

  Attributes:
    image_size: side of the square trunk input (224).
    resize_size: the shorter image side before the random crop (256).
    flip: random horizontal flip before rotating.
    all_rotations: put all 4 rotations of each image in the batch (Gidaris
      et al.); False: one random rotation per image.
    harmonize: Lab-L input replicated 3x instead of RGB (paper §3.3).
    patch_units: ``(depth, bottleneck, stride)`` of the head's units.
    weight_decay: L2 weight decay of the head (TF-Slim convention).
  """
  image_size: int = 224
  resize_size: int = 256
  flip: bool = True
  all_rotations: bool = True
  harmonize: bool = False
  patch_units: Tuple[Tuple[int, int, int], ...] = heads.PATCH_UNITS
  weight_decay: float = 1e-4

  def validate(self) -> None:
    base.check_config(self, positive=("image_size", "resize_size",
                                      "patch_units"),
                      non_negative=("weight_decay",))
    if self.image_size > self.resize_size:
      raise ValueError(f"rotation Config: image_size {self.image_size} must "
                       f"be <= resize_size {self.resize_size}.")

  def scale_head(self, multiplier: float) -> "Config":
    return dataclasses.replace(
        self, patch_units=base.scale_units(self.patch_units, multiplier))

# A tiny configuration for tests and smoke runs (tasks/base.py): trains in
# seconds on a depth-14, width-8 trunk.
TINY = Config(image_size=64, resize_size=72,
              patch_units=((32, 8, 2), (16, 8, 2)))


def crop(image, seed, cfg: Config):
  """uint8 ``[H, W, 3]`` -> float32 [0, 1] ``[S, S, 3]``: shorter side to
  ``resize_size``, random square crop, random flip (stateless ``seed``)."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  image = tf.image.convert_image_dtype(image, tf.float32)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = float(cfg.resize_size) / tf.reduce_min(shape)
  size = tf.maximum(tf.cast(tf.math.ceil(shape * scale), tf.int32),
                    cfg.resize_size)
  image = tf.clip_by_value(tf.image.resize(image, size, antialias=True),
                           0.0, 1.0)
  image = tf.image.stateless_random_crop(
      image, [cfg.image_size, cfg.image_size, 3], seeds[0])
  if cfg.flip:
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
  return image


class Task:
  """The rotation task (contract: ``tasks/base.py``)."""

  name = NAME
  source_kind = base.IMAGES

  def __init__(self, cfg: Config = Config(),
               trunk: base.TrunkFacts = base.PAPER_TRUNK):
    del trunk  # the head takes the feature shape it is given
    if cfg.resize_size < cfg.image_size:
      raise ValueError(f"rot: resize_size ({cfg.resize_size}) must be at "
                       f"least image_size ({cfg.image_size}).")
    self.config = cfg
    self.trunk_inputs_per_example = NUM_ROTATIONS if cfg.all_rotations else 1

  @property
  def input_shape(self):
    return (self.config.image_size, self.config.image_size, 3)

  # ---- data -----------------------------------------------------------------

  def _to_trunk(self, image):
    if self.config.harmonize:
      return base.lightness_to_trunk_range(color.rgb_to_lab(image)[..., :1])
    return base.to_trunk_range(image)

  def make_example(self, image, seed):
    """uint8 ``[H, W, 3]`` -> (``[n, S, S, 3]`` in [-1, 1], int32 ``[n]``)
    with n = ``trunk_inputs_per_example``."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = self._to_trunk(crop(image, seeds[0], self.config))
    if self.config.all_rotations:
      labels = tf.range(NUM_ROTATIONS, dtype=tf.int32)
    else:
      labels = tf.random.stateless_uniform([1], seeds[1], 0, NUM_ROTATIONS,
                                           dtype=tf.int32)
    rotated = tf.map_fn(lambda k: tf.image.rot90(image, k), labels,
                        fn_output_signature=tf.float32)
    rotated.set_shape((self.trunk_inputs_per_example,) + self.input_shape)
    return rotated, labels

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed: Optional[int] = None, skipped=None):
    """``(images [nB, S, S, 3], {"rotation": [nB] int32})`` batches and the
    image source's skip counter."""
    source = sources.ImageSource(data, skipped=skipped)
    examples = tf.data.Dataset.zip(
        (source.dataset(seed), tf.data.Dataset.random(seed).batch(2)))
    examples = examples.map(self.make_example, num_parallel_calls=AUTOTUNE,
                            deterministic=seed is not None)
    n = self.trunk_inputs_per_example

    def to_trunk_batch(images, labels):
      images = tf.reshape(images, (n * batch_size,) + self.input_shape)
      return images, {"rotation": tf.reshape(labels, [n * batch_size])}
    batches = examples.batch(batch_size, drop_remainder=True)
    return batches.map(to_trunk_batch).prefetch(AUTOTUNE), source.skipped

  # ---- model ----------------------------------------------------------------

  def build_head(self, feature_shape) -> tf_keras.Model:
    """``[N, h, w, C]`` trunk features -> ``{"logits": [N, 4]}``."""
    cfg = self.config
    features = tf_keras.Input(shape=tuple(feature_shape), name="features")
    x = heads.patch_units(features, cfg.patch_units, "rot_head/units",
                          cfg.weight_decay)
    x = heads.final_preactivation(x, "rot_head/postnorm")
    x = tf_keras.layers.GlobalAveragePooling2D(name="rot_head/pool")(x)
    logits = tf_keras.layers.Dense(
        NUM_ROTATIONS, name="rot_head/logits",
        kernel_regularizer=tf_keras.regularizers.l2(0.5 * cfg.weight_decay))(x)
    return tf_keras.Model(features, {"logits": logits}, name="rot_head")

  def loss(self, labels, outputs):
    return base.classification_loss(labels["rotation"], outputs["logits"])

  def metrics(self, labels, outputs):
    return {"accuracy": base.classification_accuracy(labels["rotation"],
                                                     outputs["logits"])}

  def summary_images(self, images, labels, outputs, max_images=4):
    """``{"rotations": uint8 [n, S, kS, 3]}``: an example's k trunk inputs
    (its rotations) side by side."""
    del labels, outputs
    n = self.trunk_inputs_per_example
    groups = tf.reshape(images, (-1, n) + self.input_shape)[:max_images]
    side_by_side = tf.concat([groups[:, i] for i in range(n)], axis=2)
    side_by_side = tf.clip_by_value(side_by_side, -1.0, 1.0)
    return {"rotations": tf.cast(tf.round((side_by_side + 1.0) * 127.5),
                                 tf.uint8)}
