"""Video-frame sources: frames and motion masks for the "video_frames" tasks.

The counterpart of ``sources.ImageSource`` for tasks whose ``source_kind`` is
"video_frames" (motion segmentation, paper §2). ``MotionSource(data)
.dataset(seed)`` yields shuffled uint8 pairs ``(frame [240, 320, 3],
mask [240, 320, 1])`` (mask 0/255, 255 = will move), repeated forever.
``DataConfig.source`` selects where they come from:

  "tfrecord"  motion records (``tfrecord_format.py``: frame PNG 240x320, mask
              PNG 0/255 at frame resolution) in the files matching the glob
              ``path``.
  "folder"    every file below ``path`` whose name contains ".tfrecord"
              (recursively), in the same format; ``tools/make_motion_masks.py``
              writes such a folder from videos (``motion_records.py``).
  "builtin"   frames and exact ground-truth masks of a few synthetic videos
              (``synthetic_video.py``: textured objects moving on their own
              under camera pan/zoom), generated deterministically at start-up
              in about a second per video.

Unusable sources fail at construction (no files; no motion records among the
first records, with a pointer to ``tools/make_motion_masks.py``). Bad records
are dropped and counted in ``MotionSource.skipped`` (reasons
``SKIP_REASONS``): "bad_record" (not an Example, or missing/empty frame or
mask bytes), "undecodable" (a PNG that does not decode), "wrong_size" (frame
not 240x320, or mask not the frame's size; read from the PNG header before
decoding), "bad_shard" (a truncated or
corrupt shard: its readable records are used; ``skipping.read_tfrecords``).
Counts are of distinct records/shards; ``skipped.items()`` lists them.
"""

import functools
import glob
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import decode
from mtssl_tf.data import skipping
from mtssl_tf.data import synthetic_video
from mtssl_tf.data import tfrecord_format

AUTOTUNE = tf.data.AUTOTUNE
SOURCES = ("builtin", "folder", "tfrecord")
SKIP_REASONS = ("bad_record", "undecodable", "wrong_size", "bad_shard")
# Records read at start-up to check that a source holds motion records.
PROBE_RECORDS = 16
FRAME_SHAPE = (tfrecord_format.FRAME_HEIGHT, tfrecord_format.FRAME_WIDTH)


@functools.lru_cache(maxsize=4)
def builtin_frames(num_videos: int, frames_per_video: int):
  """Frames uint8 ``[N, 240, 320, 3]`` and masks uint8 0/255
  ``[N, 240, 320, 1]`` of ``num_videos`` synthetic videos (cycling through
  the camera motions; video i has seed i)."""
  frames, masks = [], []
  for i in range(num_videos):
    video = synthetic_video.generate_video(
        num_frames=frames_per_video, height=FRAME_SHAPE[0],
        width=FRAME_SHAPE[1],
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
  """Decoded frame and mask, or empty ones ("wrong_size") when a header
  says that either is not 240x320: a huge image in a damaged or foreign
  record is never decoded (``decode.header_shape``)."""
  def fits(png):  # the right size, or a header that does not say
    shape = decode.header_shape(png)
    return (tf.reduce_all(tf.equal(shape, FRAME_SHAPE)) |
            tf.reduce_all(tf.equal(shape, -1)))
  sized = fits(frame_png) & fits(mask_png)

  def decoded():
    frame = decode.decode_rgb(frame_png)
    mask = tf.io.decode_image(mask_png, channels=1, dtype=tf.uint8,
                              expand_animations=False)
    mask.set_shape([None, None, 1])
    return frame, mask
  return tf.cond(sized, decoded, lambda: (tf.zeros([0, 0, 3], tf.uint8),
                                          tf.zeros([0, 0, 1], tf.uint8)))


def _right_size(frame, mask):
  return tf.logical_and(
      tf.reduce_all(tf.equal(tf.shape(frame)[:2], FRAME_SHAPE)),
      tf.reduce_all(tf.equal(tf.shape(mask)[:2], FRAME_SHAPE)))


class MotionSource:
  """Frames and motion masks from one ``DataConfig`` (see module docstring).

  Args:
    data: where the records come from.
    builtin_videos, builtin_frames: synthetic videos of the "builtin" source
      and frames per video.
    shuffle_buffer: records held for shuffling ("tfrecord", "folder").
    skipped: the ``skipped`` counter of an earlier ``MotionSource`` of the
      same ``data``, to count into instead of a new one (None: a new one);
      the records, checked by that source, are not checked again, so this
      one creates no variables and reads nothing at construction (see
      ``sources.ImageSource``).

  Attributes:
    skipped: the ``SkipCounter`` of this source's dropped records
      (reasons ``SKIP_REASONS``).

  Raises:
    ValueError: an unknown or unusable source (see the module docstring).
  """

  def __init__(self, data: config_lib.DataConfig, builtin_videos: int = 3,
               builtin_frames: int = 8, shuffle_buffer: int = 256,
               skipped: Optional[skipping.SkipCounter] = None):
    if data.source not in SOURCES:
      raise ValueError(
          f"Video-frame tasks read sources {list(SOURCES)}, got "
          f"{data.source!r}. Make motion records from videos with "
          f"`python -m tools.make_motion_masks`.")
    self.data = data
    self.builtin_videos = builtin_videos
    self.builtin_frames = builtin_frames
    self.shuffle_buffer = shuffle_buffer
    self.skipped = skipped or skipping.SkipCounter(SKIP_REASONS)
    self._files = None
    if data.source != "builtin":
      self._files = _find_record_files(data)
      if skipped is None:
        _check_motion_records(self._files, data.source)

  def dataset(self, seed: Optional[int] = None,
              repeat: bool = True) -> tf.data.Dataset:
    """Shuffled uint8 ``(frame [240, 320, 3], mask [240, 320, 1])`` pairs.

    With ``repeat=False`` every record is read once (e.g. to inspect a data
    set).
    """
    repeat_count = None if repeat else 1
    if self.data.source == "builtin":
      frames, masks = builtin_frames(self.builtin_videos, self.builtin_frames)
      pairs = tf.data.Dataset.from_tensor_slices((frames, masks))
      return pairs.shuffle(len(frames), seed=seed,
                           reshuffle_each_iteration=True).repeat(repeat_count)
    files, skipped = self._files, self.skipped
    records = skipping.read_tfrecords(
        files, skipped, shuffle_seed=seed, repeat=repeat,
        deterministic=seed is not None)
    records = records.shuffle(self.shuffle_buffer, seed=seed)
    by_name = lambda name, *_: name  # pylint: disable=g-long-lambda
    encoded = decode.map_or_skip(
        records, lambda name, record: (name,) + _lenient_parse(record),
        skipped, "bad_record", deterministic=seed is not None,
        name_fn=by_name)
    encoded = encoded.filter(lambda name, frame, mask: skipped.keep(
        _has_frame_and_mask(frame, mask), "bad_record", name,
        "missing frame or mask bytes"))
    pairs = decode.map_or_skip(
        encoded, lambda name, frame, mask: (name,) + _decode_pair(frame, mask),
        skipped, "undecodable", deterministic=seed is not None,
        name_fn=by_name)
    pairs = pairs.filter(lambda name, frame, mask: skipped.keep(
        _right_size(frame, mask), "wrong_size", name,
        f"frame or mask not {FRAME_SHAPE[0]}x{FRAME_SHAPE[1]}"))
    return pairs.map(lambda name, frame, mask: (
        tf.ensure_shape(frame, FRAME_SHAPE + (3,)),
        tf.ensure_shape(mask, FRAME_SHAPE + (1,))))
