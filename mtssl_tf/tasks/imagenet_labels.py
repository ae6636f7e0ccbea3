"""Supervised ImageNet classification ("sup"): the "ImageNet labels" baseline.

Paper §5 ("ImageNet Baseline"): "we train a full ResNet-101 model on
ImageNet" -- the same trunk plus block 4 and a 1000-way classifier -- "with
the standard learning rate schedule of Szegedy et al. [38] (multiply the
learning rate by 0.94 every 2 epochs)"; block 4 is transferred into the
detector's box head for PASCAL (§5), blocks 1-3 feed every evaluation.

Why a task in the multi-task loop and not its own entry point: the loop
already is TF-Slim's training set-up (RMSProp with decay 0.9, momentum 0.9,
epsilon 1.0, its own slots, weight decay, the NaN guard, resumable
checkpoints, TensorBoard, the compute accounting of ``mtssl_tf.experiment``)
and its checkpoints are what ``mtssl_tf.evaluate --model_dir`` reads. A
task only adds its data, head, loss and its learning-rate schedule (the
optional ``learning_rate_decay`` of tasks/base.py). ``--tasks=sup`` alone
is the baseline; mixing it with pretext tasks also works (not a paper row).

Data: ImageNet-layout class folders (``<image_path>/<wnid>/*.JPEG``, classes
the sorted folder names), TFRecords of ``tools/make_tfrecords.py``, a TFDS
set with class labels, or the built-in photos (each a class), read by
``data/labelled_images.py`` (the evaluations' reader: bad files are skipped
and counted). Examples: TF-Slim ``inception_preprocessing.preprocess_for_train``
in its default fast mode: a random crop from
``sample_distorted_bounding_box`` (area 5-100 %, aspect 3/4-4/3, at least
10 % of the image, 100 attempts, else the whole image), bilinear resize to
``image_size``, random left-right flip, random brightness (+-32/255) then
saturation (x0.5-1.5), clipped; inputs in [-1, 1].

Head (``BLOCK4_IN_HEAD``): the trunk's block 4 and post-norm built by
``resnet_v2.block4`` with layer names ``sup_head/block4/unit_u/...`` and
``sup_head/postnorm`` (the converter's and the evaluations' block-4 names
behind the prefix, so ``evaluation/pretrained.py`` copies them into
``build_trunk(include_block4=True)``), global average pooling and a linear
layer to ``num_classes`` logits (TF-Slim resnet_v2's ``logits``: He
initialisation, L2 weight decay, a bias). Shapes at 224x224 with the
nominal-stride trunk: block 3 ``[B, 14, 14, 1024]`` -> block 4 ``[B, 14, 14,
2048]`` (block 4 has stride 1 in TF-Slim) -> pool ``[B, 2048]`` -> logits
``[B, 1000]``. Loss: softmax cross-entropy (optionally label-smoothed);
metrics: top-1 accuracy and top-5 recall.

What the paper does not say is TF-Slim's ``train_image_classifier.py``
default, stated here and in flags/imagenet_labels.cfg: batch 32, initial
learning rate 0.01, weight decay 4e-5, no label smoothing, decay 0.94 every
2 epochs of ``examples_per_epoch`` images (1,281,167 for ImageNet; 0 counts
the examples of the data given). Szegedy et al. [38] themselves used a
learning rate of 0.045 on many replicas (and Inception-v3 label smoothing
0.1); both are flags (--learning_rate, --sup.label_smoothing). The decay
steps are ``int(lr_decay_epochs * examples_per_epoch / global_batch)``
(TF-Slim's ``_configure_learning_rate``), the global batch being the batch
summed over the task's replicas (TF-Slim divides by its synchronous
replicas likewise), counted in the task's own updates. Under
``--strategy=parameter_server`` the global batch is the batch times the
task's group of workers (one update averages the group's batches).
"""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import labelled_images
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import base

NAME = "sup"
AUTOTUNE = tf.data.AUTOTUNE
# The head begins with the trunk's block 4 (tasks/base.py).
BLOCK4_IN_HEAD = True
IMAGENET_TRAIN_IMAGES = 1_281_167


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of supervised classification (defaults: TF-Slim on ImageNet).

  Attributes:
    num_classes: classifier outputs (1000 for ImageNet); the data may have
      fewer classes, never more.
    image_size: side of the square training crop (224).
    crop_area_range: (min, max) fraction of the image a random crop covers
      (TF-Slim inception preprocessing: (0.05, 1.0)).
    crop_aspect_range: (min, max) width/height of a random crop ((0.75,
      1.33)).
    flip: random left-right flip.
    color_distortion: random brightness (+-32/255) then saturation
      (x0.5-1.5), TF-Slim's fast mode.
    label_smoothing: weight of the uniform distribution mixed into the
      one-hot targets (TF-Slim default 0; Inception-v3 used 0.1).
    weight_decay: L2 weight decay of block 4 and the logits (TF-Slim
      train_image_classifier default 4e-5; the trunk's is --weight_decay).
    lr_decay_rate: learning-rate factor per decay (Szegedy et al.: 0.94).
    lr_decay_epochs: epochs between decays (Szegedy et al.: 2).
    examples_per_epoch: training images per epoch (ImageNet: 1281167);
      0 counts the examples of the training data.
  """
  num_classes: int = 1000
  image_size: int = 224
  crop_area_range: Tuple[float, float] = (0.05, 1.0)
  crop_aspect_range: Tuple[float, float] = (0.75, 1.33)
  flip: bool = True
  color_distortion: bool = True
  label_smoothing: float = 0.0
  weight_decay: float = 4e-5
  lr_decay_rate: float = 0.94
  lr_decay_epochs: float = 2.0
  examples_per_epoch: int = IMAGENET_TRAIN_IMAGES

  def validate(self) -> None:
    base.check_config(
        self, positive=("num_classes", "image_size", "lr_decay_rate",
                        "lr_decay_epochs"),
        non_negative=("weight_decay", "examples_per_epoch"),
        fractions=("label_smoothing",),
        ranges=("crop_area_range", "crop_aspect_range"))
    if self.crop_area_range[1] > 1:
      raise ValueError(f"imagenet_labels Config: crop_area_range="
                       f"{self.crop_area_range!r} must lie in (0, 1].")

  def scale_head(self, multiplier: float) -> "Config":
    # Block 4's widths are the trunk's (--base_width), not the head's.
    del multiplier
    return self


# A tiny configuration for tests and smoke runs (tasks/base.py): the nine
# built-in photos as classes, 32x32 crops.
TINY = Config(num_classes=9, image_size=32, examples_per_epoch=0)


def labelled_config(data: config_lib.DataConfig
                    ) -> labelled_images.LabelledDataConfig:
  """The task's data source as the classification reader's config."""
  if data.source == "tfds":
    return labelled_images.LabelledDataConfig(
        source="tfds", tfds_name=data.tfds_name,
        tfds_train_split=data.tfds_split, tfds_data_dir=data.tfds_data_dir,
        tfds_manual_dir=data.tfds_manual_dir)
  return labelled_images.LabelledDataConfig(source=data.source,
                                            train_path=data.path)


def distorted_crop(image, seed, cfg: Config):
  """uint8 ``[H, W, 3]`` -> float32 [0, 1] ``[S, S, 3]`` (module docstring:
  TF-Slim's inception preprocessing for training, fast mode)."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  image = tf.image.convert_image_dtype(image, tf.float32)
  whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), whole, seeds[0], min_object_covered=0.1,
      aspect_ratio_range=cfg.crop_aspect_range,
      area_range=cfg.crop_area_range, max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, size)
  image = tf.image.resize(image, (cfg.image_size, cfg.image_size))
  if cfg.flip:
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
  if cfg.color_distortion:
    image = tf.image.stateless_random_brightness(image, 32.0 / 255.0,
                                                 seeds[2])
    image = tf.image.stateless_random_saturation(image, 0.5, 1.5, seeds[3])
  image = tf.clip_by_value(image, 0.0, 1.0)
  image.set_shape((cfg.image_size, cfg.image_size, 3))
  return image


class Task:
  """Supervised classification (contract: ``tasks/base.py``)."""

  name = NAME
  source_kind = base.IMAGES
  trunk_inputs_per_example = 1

  def __init__(self, cfg: Config = Config(),
               trunk: base.TrunkFacts = base.PAPER_TRUNK):
    self.config = cfg
    self.trunk = trunk
    # Examples per epoch when the config leaves it to the data (0): set
    # by make_dataset.
    self.examples_per_epoch = cfg.examples_per_epoch or None

  @property
  def input_shape(self):
    return (self.config.image_size, self.config.image_size, 3)

  # ---- data -----------------------------------------------------------------

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed: Optional[int] = None, skipped=None):
    """``(images [B, S, S, 3], {"label": int32 [B]})`` batches and the
    reader's skip counter. Raises ValueError when the data has more classes
    than ``num_classes``."""
    with tf.init_scope():  # the reader lists (and crops) eagerly, also when
      # make_dataset is traced (a parameter-server worker's dataset function)
      reader = labelled_images.LabelledImages(labelled_config(data), "train",
                                              skipped=skipped)
    classes = len(reader.class_names)
    if classes > self.config.num_classes:
      raise ValueError(
          f"{NAME}: the training data has {classes} classes but "
          f"--{NAME}.num_classes={self.config.num_classes}; set "
          f"--{NAME}.num_classes={classes} (or more).")
    if not self.config.examples_per_epoch:
      self.examples_per_epoch = reader.num_examples
    examples = tf.data.Dataset.zip(
        (reader.dataset(training=True, seed=seed),
         tf.data.Dataset.random(seed).batch(2)))

    def example(pair, seed):
      image, label = pair
      return (base.to_trunk_range(distorted_crop(image, seed, self.config)),
              {"label": tf.cast(label, tf.int32)})
    examples = examples.map(lambda pair, s: example(pair, s),
                            num_parallel_calls=AUTOTUNE,
                            deterministic=seed is not None)
    batches = examples.batch(batch_size, drop_remainder=True)
    return batches.prefetch(AUTOTUNE), reader.skipped

  def learning_rate_decay(self, global_batch_size: int) -> Tuple[int, float]:
    """``(decay_steps, decay_rate)``: ``lr_decay_rate`` every
    ``lr_decay_epochs`` epochs of ``global_batch_size`` examples per update
    (at least 1 step)."""
    if not self.examples_per_epoch:
      raise ValueError(f"{NAME}: examples per epoch unknown; call "
                       f"make_dataset first or set "
                       f"--{NAME}.examples_per_epoch.")
    steps = int(self.config.lr_decay_epochs * self.examples_per_epoch /
                global_batch_size)
    return max(1, steps), self.config.lr_decay_rate

  # ---- model ----------------------------------------------------------------

  def block4_trunk_config(self, channels: int) -> config_lib.TrunkConfig:
    """The trunk whose block 4 the head builds, from the block-3 channels
    (``16 * base_width``) and the trunk facts."""
    if channels % 16:
      raise ValueError(f"{NAME}: block-3 features have {channels} channels; "
                       f"a ResNet-v2 block 3 has 16 x base_width.")
    stride = self.trunk.output_stride
    return config_lib.TrunkConfig(
        depth=self.trunk.depth,
        output_stride=None if stride == base.NOMINAL_OUTPUT_STRIDE else stride,
        base_width=channels // 16, weight_decay=self.config.weight_decay)

  def build_head(self, feature_shape) -> tf_keras.Model:
    """``[N, h, w, 16 b]`` block-3 features -> ``{"logits": [N, classes]}``
    through block 4 (``[N, h, w, 32 b]``) and global average pooling."""
    cfg = self.config
    features = tf_keras.Input(shape=tuple(feature_shape), name="features")
    x = resnet_v2.block4(features, self.block4_trunk_config(
        feature_shape[-1]), prefix=f"{NAME}_head/")
    x = tf_keras.layers.GlobalAveragePooling2D(name=f"{NAME}_head/pool")(x)
    logits = tf_keras.layers.Dense(
        cfg.num_classes, name=f"{NAME}_head/logits",
        kernel_initializer=tf_keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_in", distribution="truncated_normal"),
        kernel_regularizer=(tf_keras.regularizers.l2(0.5 * cfg.weight_decay)
                            if cfg.weight_decay else None))(x)
    return tf_keras.Model(features, {"logits": logits}, name=f"{NAME}_head")

  def loss(self, labels, outputs):
    smoothing = self.config.label_smoothing
    if not smoothing:
      return base.classification_loss(labels["label"], outputs["logits"])
    logits = tf.cast(outputs["logits"], tf.float32)
    targets = tf.one_hot(labels["label"], self.config.num_classes)
    targets = targets * (1.0 - smoothing) + smoothing / self.config.num_classes
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
        labels=targets, logits=logits))

  def metrics(self, labels, outputs):
    label = tf.cast(labels["label"], tf.int32)
    logits = tf.cast(outputs["logits"], tf.float32)
    top5 = tf.math.in_top_k(label, logits, min(5, self.config.num_classes))
    return {"accuracy": base.classification_accuracy(label, logits),
            "top5": tf.reduce_mean(tf.cast(top5, tf.float32))}

  def summary_images(self, images, labels, outputs, max_images=4):
    """``{"crops": uint8 [n, S, S, 3]}``: the trunk inputs."""
    del labels, outputs
    crops = tf.clip_by_value(images[:max_images], -1.0, 1.0)
    return {"crops": tf.cast(tf.round((crops + 1.0) * 127.5), tf.uint8)}
