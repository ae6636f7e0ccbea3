"""Tests of data/video_frames.py: decoding, bad videos, the label stream."""

import numpy as np
import pytest

from mtssl_tf.data import motion_masks
from mtssl_tf.data import synthetic_video
from mtssl_tf.data import video_frames

CONFIG = motion_masks.MotionMaskConfig()


def _reason(path, **kwargs):
  with pytest.raises(video_frames.VideoError) as error:
    list(video_frames.read_frames(str(path), **kwargs))
  return error.value.reason


def test_read_frames_resizes_every_frame(tmp_path):
  video = synthetic_video.generate_video(num_frames=6, height=72, width=96)
  path = str(tmp_path / "v.avi")
  synthetic_video.write_video(path, video.frames)
  stats = {}
  frames = list(video_frames.read_frames(path, stats=stats))
  assert len(frames) == 6 and stats == {"frames": 6, "width": 96,
                                        "height": 72, "declared_frames": 6}
  assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8
             for f in frames)
  # RGB order kept through the BGR codec: compare with a direct resize.
  expected = motion_masks.resize_frame(video.frames[2])
  assert np.abs(frames[2].astype(float) - expected).mean() < 12.0


def test_a_truncated_video_is_read_with_a_note(tmp_path):
  """Before: the first 30% of a video was labelled with no hint of it."""
  video = synthetic_video.generate_video(num_frames=20, height=48, width=64)
  path = tmp_path / "v.avi"
  synthetic_video.write_video(str(path), video.frames)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) * 3 // 10])
  stats = {}
  frames = list(video_frames.read_frames(str(path), stats=stats))
  assert 2 <= len(frames) <= 8 and stats["declared_frames"] == 20
  assert stats["truncated"] == (
      f"truncated: decoded {len(frames)} of the 20 frames its header "
      f"declares (a cut-off or damaged file)")
  whole = tmp_path / "whole.avi"
  whole.write_bytes(data)
  stats = {}
  assert len(list(video_frames.read_frames(str(whole), stats=stats))) == 20
  assert "truncated" not in stats


def test_bad_videos(tmp_path):
  (tmp_path / "empty.mp4").write_bytes(b"")
  assert _reason(tmp_path / "empty.mp4") == "empty_file"
  (tmp_path / "garbage.mp4").write_bytes(
      np.random.default_rng(0).bytes(4000))
  assert _reason(tmp_path / "garbage.mp4") == "unreadable"
  video = synthetic_video.generate_video(num_frames=2, height=48, width=64)
  synthetic_video.write_video(str(tmp_path / "v.avi"), video.frames)
  assert _reason(tmp_path / "v.avi", max_pixels=48 * 64 - 1) == (
      "huge_resolution")
  assert len(list(video_frames.read_frames(str(tmp_path / "v.avi"),
                                           max_pixels=48 * 64))) == 2


def test_labelled_frames_reuses_flow_and_matches_single_windows():
  video = synthetic_video.generate_video(num_frames=18, seed=5)
  labelled = list(video_frames.labelled_frames(video.frames, 4, CONFIG))
  # Windows 0..10 and 4..14 (indices <= 17) label their middle frames.
  assert [index for index, _, _ in labelled] == [5, 9]
  for index, frame, mask in labelled:
    np.testing.assert_array_equal(frame, video.frames[index])
    np.testing.assert_array_equal(
        mask, motion_masks.motion_mask(video.frames[index - 5:index + 6],
                                       CONFIG))
  first = list(video_frames.labelled_frames(video.frames, 1, CONFIG,
                                            max_records=2))
  assert [index for index, _, _ in first] == [5, 6]


def test_short_streams():
  frames = np.zeros((10, 240, 320, 3), np.uint8)
  with pytest.raises(video_frames.VideoError, match="10 frames") as error:
    list(video_frames.labelled_frames(frames, 1, CONFIG))
  assert error.value.reason == "too_short"
  with pytest.raises(video_frames.VideoError) as error:
    list(video_frames.labelled_frames(frames[:1], 1, CONFIG))
  assert error.value.reason == "one_frame"
  with pytest.raises(ValueError, match="frame_stride"):
    list(video_frames.labelled_frames(frames, 0, CONFIG))
