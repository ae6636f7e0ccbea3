"""Motion segmentation pretext task "ms" (paper §2, §3.4; Pathak et al. 2017).

One 240x320 video frame in; for every 8x8 block (the trunk's stride 8, a
30x40 grid) the logit of "this pixel will move". The task module follows
``tasks/base.py``.

Data (``DataConfig.source``):
  "tfrecord"  motion records (``data/tfrecord_format.py``: frame PNG 240x320,
              mask PNG 0/255 at frame resolution) in the files matching the
              glob ``path``.
  "folder"    every file below ``path`` whose name contains ".tfrecord"
              (recursively), in the same format; ``tools/make_motion_masks.py``
              writes such a folder from videos.
  "builtin"   frames and exact ground-truth masks of a few synthetic videos
              (``data/synthetic_video.py``: textured objects moving on their
              own under camera pan/zoom), generated deterministically at
              start-up in about a second per video.
Unusable sources fail at start-up (no files; no motion records among the
first records, with a pointer to ``tools/make_motion_masks.py``). Bad records
are dropped and counted in ``Task.skipped`` (reasons ``SKIP_REASONS``):
"bad_record" (not an Example, or missing/empty frame or mask bytes),
"undecodable" (a PNG that does not decode), "wrong_size" (frame not 240x320,
or mask not the frame's size), "bad_shard" (a truncated or corrupt shard:
its readable records are used; ``skipping.read_tfrecords``). Counts are of
distinct records/shards; ``Task.skipped.items()`` lists them.

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
import functools
import glob
import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import decode
from mtssl_tf.data import skipping
from mtssl_tf.data import sources
from mtssl_tf.data import synthetic_video
from mtssl_tf.data import tfrecord_format
from mtssl_tf.models import heads
from mtssl_tf.tasks import base

NAME = "ms"
AUTOTUNE = tf.data.AUTOTUNE
SOURCES = ("builtin", "folder", "tfrecord")
SKIP_REASONS = ("bad_record", "undecodable", "wrong_size", "bad_shard")
# Records read at start-up to check that a source holds motion records.
PROBE_RECORDS = 16
_FRAME_SHAPE = (tfrecord_format.FRAME_HEIGHT, tfrecord_format.FRAME_WIDTH)


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the motion segmentation task.

  Attributes:
    output_stride: the trunk's output stride; masks are downsampled by it.
    head_width: channels of the two hidden 1x1 convs (4096).
    positive_weight: weight of foreground pixels in the loss (1: unweighted).
    weight_decay: L2 weight decay of the head's kernels (TF-Slim convention).
    builtin_videos: synthetic videos of the "builtin" source.
    builtin_frames: frames per synthetic video.
    shuffle_buffer: records held for shuffling ("tfrecord", "folder").
  """
  output_stride: int = 8
  head_width: int = 4096
  positive_weight: float = 1.0
  weight_decay: float = 1e-4
  builtin_videos: int = 3
  builtin_frames: int = 8
  shuffle_buffer: int = 256


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


@functools.lru_cache(maxsize=4)
def builtin_frames(num_videos: int, frames_per_video: int):
  """Frames uint8 ``[N, 240, 320, 3]`` and masks uint8 0/255
  ``[N, 240, 320, 1]`` of ``num_videos`` synthetic videos (cycling through
  the camera motions; video i has seed i)."""
  frames, masks = [], []
  for i in range(num_videos):
    video = synthetic_video.generate_video(
        num_frames=frames_per_video, height=_FRAME_SHAPE[0],
        width=_FRAME_SHAPE[1],
        camera_motion=synthetic_video.CAMERA_MOTIONS[
            i % len(synthetic_video.CAMERA_MOTIONS)], seed=i)
    frames.append(video.frames)
    masks.append(video.masks.astype(np.uint8)[..., None] * 255)
  return np.concatenate(frames), np.concatenate(masks)


def _find_record_files(data: config_lib.DataConfig):
  if not data.path:
    raise ValueError(
        f"DataConfig(source={data.source!r}) needs a path: a folder of motion "
        f"TFRecords for 'folder', a file glob for 'tfrecord'.")
  if data.source == "tfrecord":
    files = sorted(f for f in glob.glob(data.path) if os.path.isfile(f))
    if not files:
      raise ValueError(
          f"TFRecord glob {data.path!r} matches no files. Make motion records "
          f"from videos with `python -m tools.make_motion_masks`.")
    return files
  if not os.path.isdir(data.path):
    raise ValueError(f"Motion record folder {data.path!r} does not exist or "
                     f"is not a directory.")
  files = sorted(
      os.path.join(root, name)
      for root, _, names in os.walk(data.path, followlinks=True)
      for name in names if ".tfrecord" in name)
  if not files:
    raise ValueError(
        f"Folder {data.path!r} holds no *.tfrecord files. Make motion records "
        f"from videos with `python -m tools.make_motion_masks`.")
  return files


def _lenient_parse(serialized):
  """Parses a motion record; missing frame/mask bytes give b""."""
  features = {
      key: tf.io.FixedLenFeature([], tf.string, default_value="")
      for key in (tfrecord_format.IMAGE_ENCODED, tfrecord_format.MASK_ENCODED)}
  parsed = tf.io.parse_single_example(serialized, features)
  return (parsed[tfrecord_format.IMAGE_ENCODED],
          parsed[tfrecord_format.MASK_ENCODED])


def _has_frame_and_mask(frame_png, mask_png):
  return tf.logical_and(tf.strings.length(frame_png) > 0,
                        tf.strings.length(mask_png) > 0)


def _check_motion_records(files, source):
  """Raises unless one of the first records has frame and mask bytes."""
  records = tf.data.TFRecordDataset(files[:PROBE_RECORDS]).take(PROBE_RECORDS)
  records = records.map(_lenient_parse).ignore_errors()
  for frame_png, mask_png in records:
    if _has_frame_and_mask(frame_png, mask_png):
      return
  raise ValueError(
      f"The {source} source {files[0]!r}... holds no motion-segmentation "
      f"records (none of its first {PROBE_RECORDS} records has both "
      f"{tfrecord_format.IMAGE_ENCODED!r} and "
      f"{tfrecord_format.MASK_ENCODED!r}). Make them from videos with "
      f"`python -m tools.make_motion_masks`.")


def _decode_pair(frame_png, mask_png):
  frame = decode.decode_rgb(frame_png)
  mask = tf.io.decode_image(mask_png, channels=1, dtype=tf.uint8,
                            expand_animations=False)
  mask.set_shape([None, None, 1])
  return frame, mask


def _right_size(frame, mask):
  return tf.logical_and(
      tf.reduce_all(tf.equal(tf.shape(frame)[:2], _FRAME_SHAPE)),
      tf.reduce_all(tf.equal(tf.shape(mask)[:2], _FRAME_SHAPE)))


class Task:
  """The motion segmentation task (contract in ``tasks/base.py``)."""

  name = NAME

  def __init__(self, config: Config = Config()):
    for size in _FRAME_SHAPE:
      if size % config.output_stride:
        raise ValueError(
            f"output_stride {config.output_stride} must divide the frame size "
            f"{_FRAME_SHAPE}.")
    self.config = config
    self.skipped = None

  @property
  def input_shape(self):
    return _FRAME_SHAPE + (3,)

  # ---- data -----------------------------------------------------------------

  def pairs(self, data: config_lib.DataConfig, seed: Optional[int] = None,
            repeat: bool = True) -> tf.data.Dataset:
    """Shuffled uint8 ``(frame [240, 320, 3], mask [240, 320, 1])`` pairs.

    Bad records are dropped and counted in a new ``self.skipped``. With
    ``repeat=False`` every record is read once (e.g. to inspect a data set).

    Raises:
      ValueError: an unknown or unusable source (see the module docstring).
    """
    if data.source not in SOURCES:
      raise ValueError(
          f"Motion segmentation reads sources {list(SOURCES)}, got "
          f"{data.source!r}. Make motion records from videos with "
          f"`python -m tools.make_motion_masks`.")
    self.skipped = sources.SkipCounter(SKIP_REASONS)
    repeat_count = None if repeat else 1
    if data.source == "builtin":
      frames, masks = builtin_frames(self.config.builtin_videos,
                                     self.config.builtin_frames)
      pairs = tf.data.Dataset.from_tensor_slices((frames, masks))
      return pairs.shuffle(len(frames), seed=seed,
                           reshuffle_each_iteration=True).repeat(repeat_count)
    files = _find_record_files(data)
    _check_motion_records(files, data.source)
    skipped = self.skipped
    records = skipping.read_tfrecords(
        files, skipped, shuffle_seed=seed, repeat=repeat,
        deterministic=seed is not None)
    records = records.shuffle(self.config.shuffle_buffer, seed=seed)
    by_name = lambda name, *_: name  # pylint: disable=g-long-lambda
    encoded = decode.map_or_skip(
        records, lambda name, record: (name,) + _lenient_parse(record),
        skipped, "bad_record", name_fn=by_name)
    encoded = encoded.filter(lambda name, frame, mask: skipped.keep(
        _has_frame_and_mask(frame, mask), "bad_record", name,
        "missing frame or mask bytes"))
    pairs = decode.map_or_skip(
        encoded, lambda name, frame, mask: (name,) + _decode_pair(frame, mask),
        skipped, "undecodable", name_fn=by_name)
    pairs = pairs.filter(lambda name, frame, mask: skipped.keep(
        _right_size(frame, mask), "wrong_size", name,
        f"frame or mask not {_FRAME_SHAPE[0]}x{_FRAME_SHAPE[1]}"))
    return pairs.map(lambda name, frame, mask: (
        tf.ensure_shape(frame, _FRAME_SHAPE + (3,)),
        tf.ensure_shape(mask, _FRAME_SHAPE + (1,))))

  def _example(self, frame, mask, seed):
    # Flip frame and mask together so that they stay aligned.
    both = tf.image.stateless_random_flip_left_right(
        tf.concat([frame, mask], axis=-1), seed=seed)
    images = base.to_trunk_range(both[..., :3])
    return images, {"mask": downsample_mask(both[..., 3:],
                                            self.config.output_stride)}

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed: Optional[int] = None) -> tf.data.Dataset:
    """Batched ``(images, labels)``; see the module docstring for shapes.

    Skipped records are counted in ``self.skipped`` (``SKIP_REASONS``).
    """
    pair_seeds = tf.data.Dataset.random(seed=seed).batch(2)
    examples = tf.data.Dataset.zip((self.pairs(data, seed), pair_seeds))
    examples = examples.map(
        lambda pair, s: self._example(pair[0], pair[1], s),
        num_parallel_calls=AUTOTUNE, deterministic=seed is not None)
    return examples.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)

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
          f"{mask.shape[1:]}; Config.output_stride must match the trunk's.")
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
