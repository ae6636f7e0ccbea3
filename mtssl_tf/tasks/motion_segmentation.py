"""Motion segmentation pretext task "ms" (paper §2, §3.4; Pathak et al. 2017).

One 240x320 video frame in; for every 8x8 block (the trunk's stride 8, a
30x40 grid) the logit of "this pixel will move". The task module follows
``tasks/base.py``.

Data: the task consumes the "video_frames" source kind
(``data/motion_source.py``): 240x320 frames with 0/255 masks from motion
records (``tools/make_motion_masks.py``) or, by default, a few synthetic
videos with exact masks. Bad records are dropped and counted by the source.

Labels: the mask is binarised at 128, then each 8x8 block becomes foreground
when at least half of its pixels are (area average >= 0.5). Augmentation:
a random horizontal flip, the same for frame and mask (per-example stateless
seeds). Examples: ``images`` float32 ``[B, 240, 320, 3]`` in [-1, 1];
``labels = {"mask": float32 [B, 30, 40]}`` (1 = will move).

Head (paper §3.4): 1x1 conv/4096 + ReLU, 1x1 conv/4096 + ReLU, 1x1 conv/1;
outputs ``{"logits": float32 [B, h, w, 1]}``. Loss: per-pixel sigmoid
cross-entropy, foreground pixels weighted by ``Config.positive_weight`` (1 =
the paper's plain cross-entropy), averaged over pixels. Metrics: pixel
accuracy and foreground IoU over the batch (logit > 0 is foreground; a batch
with no foreground in prediction or label has IoU 1).
"""

import dataclasses
from typing import Optional

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import motion_source
from mtssl_tf.models import heads
from mtssl_tf.tasks import base

NAME = "ms"
AUTOTUNE = tf.data.AUTOTUNE
_FRAME_SHAPE = motion_source.FRAME_SHAPE


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the motion segmentation task.

  Attributes:
    head_width: channels of the two hidden 1x1 convs (4096).
    positive_weight: weight of foreground pixels in the loss (1: unweighted).
    weight_decay: L2 weight decay of the head's kernels (TF-Slim convention).
    builtin_videos: synthetic videos of the "builtin" source.
    builtin_frames: frames per synthetic video.
    shuffle_buffer: records held for shuffling ("tfrecord", "folder").
  """
  head_width: int = 4096
  positive_weight: float = 1.0
  weight_decay: float = 1e-4
  builtin_videos: int = 3
  builtin_frames: int = 8
  shuffle_buffer: int = 256

  def validate(self) -> None:
    base.check_config(
        self, positive=("head_width", "positive_weight",
                        "builtin_videos", "builtin_frames", "shuffle_buffer"),
        non_negative=("weight_decay",))

  def scale_head(self, multiplier: float) -> "Config":
    return dataclasses.replace(
        self, head_width=base.scale_width(self.head_width, multiplier))

# A tiny configuration for tests and smoke runs (tasks/base.py): trains in
# seconds on a depth-14, width-8 trunk.
TINY = Config(head_width=16, builtin_videos=2, builtin_frames=3)


def downsample_mask(mask, stride: int):
  """uint8 ``[..., H, W, 1]`` 0/255 mask -> float32 0/1 ``[..., H/s, W/s]``.

  A block is foreground when at least half its pixels are (>= 128).
  """
  mask = tf.convert_to_tensor(mask)
  foreground = tf.cast(mask >= 128, tf.float32)
  batched = foreground if foreground.shape.rank == 4 else foreground[None]
  fraction = tf.nn.avg_pool2d(batched, stride, stride, "VALID")[..., 0]
  labels = tf.cast(fraction >= 0.5, tf.float32)
  return labels if foreground.shape.rank == 4 else labels[0]


class Task:
  """The motion segmentation task (contract in ``tasks/base.py``)."""

  name = NAME
  source_kind = base.VIDEO_FRAMES
  trunk_inputs_per_example = 1

  def __init__(self, config: Config = Config(),
               trunk: base.TrunkFacts = base.PAPER_TRUNK):
    for size in _FRAME_SHAPE:
      if size % trunk.output_stride:
        raise ValueError(
            f"The trunk's output stride {trunk.output_stride} must divide the "
            f"frame size {_FRAME_SHAPE}.")
    self.config = config
    self.output_stride = trunk.output_stride

  @property
  def input_shape(self):
    return _FRAME_SHAPE + (3,)

  # ---- data -----------------------------------------------------------------

  def _example(self, frame, mask, seed):
    # Flip frame and mask together so that they stay aligned.
    both = tf.image.stateless_random_flip_left_right(
        tf.concat([frame, mask], axis=-1), seed=seed)
    images = base.to_trunk_range(both[..., :3])
    return images, {"mask": downsample_mask(both[..., 3:],
                                            self.output_stride)}

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed: Optional[int] = None, skipped=None):
    """``(batched (images, labels), skip counter)``; shapes: module docstring.

    The counter is the source's (``motion_source.SKIP_REASONS``).
    """
    cfg = self.config
    source = motion_source.MotionSource(data, cfg.builtin_videos,
                                        cfg.builtin_frames, cfg.shuffle_buffer,
                                        skipped=skipped)
    pair_seeds = tf.data.Dataset.random(seed=seed).batch(2)
    examples = tf.data.Dataset.zip((source.dataset(seed), pair_seeds))
    examples = examples.map(
        lambda pair, s: self._example(pair[0], pair[1], s),
        num_parallel_calls=AUTOTUNE, deterministic=seed is not None)
    batches = examples.batch(batch_size, drop_remainder=True)
    return batches.prefetch(AUTOTUNE), source.skipped

  # ---- model ----------------------------------------------------------------

  def build_head(self, feature_shape) -> tf_keras.Model:
    """``[N, h, w, C]`` features -> ``{"logits": [N, h, w, 1]}``.

    ``feature_shape`` is ``(h, w, C)`` (a leading batch entry is ignored).
    """
    cfg = self.config
    return heads.conv_head(feature_shape, (1, 1), cfg.head_width, 1,
                           f"{NAME}_head", cfg.weight_decay,
                           model_name="motion_segmentation_head")

  # ---- loss and metrics -----------------------------------------------------

  @staticmethod
  def _logits(labels, outputs):
    logits = tf.cast(outputs["logits"], tf.float32)[..., 0]
    mask = labels["mask"]
    grids = (logits.shape[1:], mask.shape[1:])
    if all(g.is_fully_defined() for g in grids) and grids[0] != grids[1]:
      raise ValueError(
          f"Logits grid {logits.shape[1:]} differs from the mask grid "
          f"{mask.shape[1:]}; the task was built for another trunk stride.")
    return logits

  def loss(self, labels, outputs) -> tf.Tensor:
    """Per-pixel sigmoid cross-entropy, averaged over pixels."""
    logits = self._logits(labels, outputs)
    return tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(
        labels=labels["mask"], logits=logits,
        pos_weight=self.config.positive_weight))

  def metrics(self, labels, outputs):
    """Pixel accuracy and foreground IoU of ``logit > 0`` over the batch."""
    predicted = tf.cast(self._logits(labels, outputs) > 0, tf.float32)
    truth = labels["mask"]
    intersection = tf.reduce_sum(predicted * truth)
    union = tf.reduce_sum(tf.maximum(predicted, truth))
    return {
        "pixel_accuracy": tf.reduce_mean(
            tf.cast(tf.equal(predicted, truth), tf.float32)),
        "foreground_iou": tf.where(union > 0,
                                   tf.math.divide_no_nan(intersection, union),
                                   1.0),
    }

  def summary_images(self, images, labels, outputs):
    """The frames with the predicted and the true mask overlaid (uint8)."""
    frames = (tf.cast(images, tf.float32) + 1.0) / 2.0
    size = tf.shape(images)[1:3]
    predicted = tf.cast(tf.cast(outputs["logits"], tf.float32) > 0, tf.float32)
    return {
        "predicted_mask": _overlay(frames, predicted, size, (1.0, 0.0, 0.0)),
        "true_mask": _overlay(frames, labels["mask"][..., None], size,
                              (0.0, 1.0, 0.0)),
    }


def _overlay(frames, mask, size, rgb):
  """Blends ``rgb`` at half opacity into ``frames`` where ``mask`` is 1."""
  mask = tf.image.resize(mask, size, method="nearest") * 0.5
  blended = frames * (1.0 - mask) + tf.constant(rgb) * mask
  return tf.image.convert_image_dtype(blended, tf.uint8, saturate=True)
