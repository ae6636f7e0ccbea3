"""Video decoding and the sliding window of frames the motion labeller needs.

``read_frames`` decodes any file OpenCV can read, frame by frame, and
resizes each frame at once to 240x320 (``motion_masks.resize_frame``), so a
long or high-resolution video never sits in memory; only the current window
of ``track_length + 1`` small frames does. ``labelled_frames`` runs the
labeller of ``motion_masks.py`` on every ``frame_stride``-th frame, computing
each consecutive flow pair once even when windows overlap (stride < 10).

Bad videos raise ``VideoError`` with a short machine-readable ``reason``:
  "empty_file"       zero bytes
  "unreadable"       OpenCV cannot open it or decodes no frame
  "huge_resolution"  more than ``max_pixels`` pixels per frame
  "one_frame"        a single frame (a still image)
  "too_short"        fewer than ``track_length + 1`` frames (no window)

A video that decodes fewer frames than its header declares (a truncated or
damaged file; e.g. the first 30% of an AVI) is still used, with a
truncation note in ``stats["truncated"]``, which the motion-record builder
puts in its report and manifest.
"""

import collections
import os

import cv2
import numpy as np

from mtssl_tf.data import motion_masks

# 8K UHD: larger frames are more likely a mistake (or a panorama) than video.
DEFAULT_MAX_PIXELS = 7680 * 4320
# Frame counts in headers can be estimates (from duration x frame rate): a
# shortfall up to this fraction (or 2 frames) is not called a truncation.
TRUNCATION_TOLERANCE = 0.02


class VideoError(Exception):
  """A video that cannot be labelled; ``reason`` is one of the module's."""

  def __init__(self, reason, detail):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


def read_frames(path, max_pixels=DEFAULT_MAX_PIXELS, stats=None):
  """Yields RGB uint8 frames [240, 320, 3] of the video at ``path``.

  Args:
    path: a video file in any format OpenCV decodes.
    max_pixels: frames with more pixels raise ``VideoError``.
    stats: optional dict; receives "width", "height" (source size),
      "frames" (frames decoded so far), "declared_frames" (the header's
      count, when it has one) and, at the end, "truncated" (a note) when
      clearly fewer frames decoded than declared.

  Raises:
    VideoError: "empty_file", "unreadable" or "huge_resolution".
  """
  stats = {} if stats is None else stats
  stats["frames"] = 0
  if os.path.getsize(path) == 0:
    raise VideoError("empty_file", "the file has zero bytes")
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise VideoError("unreadable", "OpenCV cannot open it as a video")
    # Check the declared size before decoding a possibly enormous frame.
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    _check_size(width, height, max_pixels)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if declared > 0:
      stats["declared_frames"] = declared
    while True:
      ok, frame = capture.read()
      if not ok or frame is None:
        break
      if stats["frames"] == 0:
        height, width = frame.shape[:2]
        _check_size(width, height, max_pixels)
        stats["width"], stats["height"] = width, height
      if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
      else:
        frame = cv2.cvtColor(frame[..., :3], cv2.COLOR_BGR2RGB)
      stats["frames"] += 1
      yield motion_masks.resize_frame(frame)
  finally:
    capture.release()
  if stats["frames"] == 0:
    raise VideoError("unreadable", "OpenCV decodes no frame from it")
  declared = stats.get("declared_frames", 0)
  if declared - stats["frames"] > max(2, TRUNCATION_TOLERANCE * declared):
    stats["truncated"] = (
        f"truncated: decoded {stats['frames']} of the {declared} frames its "
        f"header declares (a cut-off or damaged file)")


def _check_size(width, height, max_pixels):
  if width * height > max_pixels:
    raise VideoError("huge_resolution",
                     f"{width}x{height} frames exceed max_pixels={max_pixels}")


def labelled_frames(frames, frame_stride, config, max_records=0):
  """Motion masks of every ``frame_stride``-th frame of a frame stream.

  The window ``i .. i + track_length`` (i = 0, s, 2s, ...) labels its frame
  ``i + config.label_index`` (the middle one by default), so the first
  ``label_index`` and last ``track_length - label_index`` frames of a video
  get no label of their own.

  Args:
    frames: iterable of RGB uint8 [240, 320, 3] (e.g. ``read_frames``).
    frame_stride: label frames 0, s, 2s, ... (>= 1).
    config: a ``motion_masks.MotionMaskConfig``.
    max_records: stop after this many labelled windows (0: no limit).

  Yields:
    ``(index, frame, mask)`` of the labelled frame; mask is uint8 [240, 320] 0/255, or None when
    the window has no camera model (e.g. a shot cut).

  Raises:
    VideoError: "one_frame" or "too_short" once the stream has ended.
  """
  if frame_stride < 1:
    raise ValueError(f"frame_stride must be >= 1, got {frame_stride}.")
  length = config.track_length + 1
  flow = motion_masks.FlowEstimator(config.flow)
  window = collections.deque(maxlen=length)   # (index, rgb, gray)
  flows = {}                                  # k -> (forward, backward) k->k+1
  labelled = 0
  count = 0
  for index, frame in enumerate(frames):
    count = index + 1
    window.append((index, frame, motion_masks.to_gray(frame)))
    if len(window) < length:
      continue
    first = window[0][0]
    if first % frame_stride:
      continue
    for k in list(flows):
      if k < first:
        del flows[k]
    for (k, _, a), (_, _, b) in zip(list(window)[:-1], list(window)[1:]):
      if k not in flows:
        flows[k] = (flow(a, b), flow(b, a))
    pairs = [flows[k] for k in range(first, first + length - 1)]
    mask = motion_masks.mask_from_flows(np.stack([p[0] for p in pairs]),
                                        np.stack([p[1] for p in pairs]),
                                        config)
    anchor = config.label_index
    yield first + anchor, window[anchor][1], mask
    labelled += 1
    if max_records and labelled >= max_records:
      return
  if count == 1:
    raise VideoError("one_frame", "a single frame has no motion")
  if count < length:
    raise VideoError("too_short", f"{count} frames; a label needs "
                     f"{length} (tracks over {config.track_length} frames)")
