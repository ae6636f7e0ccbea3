"""Tests of data/synthetic_video.py: the generated ground truth is exact."""

import cv2
import numpy as np
import pytest

from mtssl_tf.data import synthetic_video


def test_deterministic_given_seed():
  a = synthetic_video.generate_video(num_frames=4, height=48, width=64,
                                     seed=7)
  b = synthetic_video.generate_video(num_frames=4, height=48, width=64,
                                     seed=7)
  c = synthetic_video.generate_video(num_frames=4, height=48, width=64,
                                     seed=8)
  np.testing.assert_array_equal(a.frames, b.frames)
  np.testing.assert_array_equal(a.masks, b.masks)
  np.testing.assert_array_equal(a.homographies, b.homographies)
  assert not np.array_equal(a.frames, c.frames)


def test_shapes_and_dtypes():
  video = synthetic_video.generate_video(num_frames=5, height=40, width=56,
                                         num_objects=2, camera_motion="pan")
  assert video.frames.shape == (5, 40, 56, 3)
  assert video.frames.dtype == np.uint8
  assert video.masks.shape == (5, 40, 56) and video.masks.dtype == bool
  assert video.object_ids.shape == (5, 40, 56)
  assert video.homographies.shape == (5, 3, 3)
  np.testing.assert_allclose(video.homographies[0], np.eye(3), atol=1e-9)
  assert video.camera_motion == "pan"


def test_masks_are_the_union_of_objects():
  video = synthetic_video.generate_video(num_frames=6, height=96, width=128,
                                         num_objects=3, seed=1)
  np.testing.assert_array_equal(video.masks, video.object_ids > 0)
  assert set(np.unique(video.object_ids)) <= {0, 1, 2, 3}
  # Objects are sizeable (semi-axes 12-20 % of the short side) but do not
  # cover the frame.
  assert 0.03 < video.masks.mean() < 0.6
  none = synthetic_video.generate_video(num_frames=3, height=48, width=64,
                                        num_objects=0)
  assert not none.masks.any() and not none.object_ids.any()


def test_objects_move_on_their_own():
  video = synthetic_video.generate_video(num_frames=6, height=120, width=160,
                                         num_objects=1, camera_motion="static",
                                         noise_std=0.0, seed=3)
  first, last = video.masks[0], video.masks[-1]
  # The object's pixels change place while the static background does not.
  assert (first != last).mean() > 0.01
  # Anti-aliased object edges (alpha < 0.5) lie just outside the masks.
  objects = (video.masks[0] | video.masks[-1]).astype(np.uint8)
  background = cv2.dilate(objects, np.ones((5, 5), np.uint8)) == 0
  assert background.mean() > 0.5
  np.testing.assert_array_equal(video.frames[0][background],
                                video.frames[-1][background])


@pytest.mark.parametrize("camera_motion", ["pan", "pan+zoom"])
def test_homographies_explain_the_background(camera_motion):
  video = synthetic_video.generate_video(num_frames=8, height=120, width=160,
                                         num_objects=2, noise_std=0.0,
                                         camera_motion=camera_motion, seed=2)
  t = 7
  assert not np.allclose(video.homographies[t], np.eye(3))
  warped = cv2.warpPerspective(video.frames[0], video.homographies[t],
                               (160, 120), flags=cv2.INTER_LINEAR)
  inside = cv2.warpPerspective(np.ones((120, 120 + 40), np.uint8),
                               video.homographies[t], (160, 120)) > 0
  # Background in both frames, away from the frame border.
  source_background = cv2.warpPerspective(
      (~video.masks[0]).astype(np.uint8), video.homographies[t],
      (160, 120), flags=cv2.INTER_NEAREST) > 0
  background = (inside & source_background & ~video.masks[t])
  background = cv2.erode(background.astype(np.uint8), np.ones((5, 5))) > 0
  assert background.mean() > 0.3
  error = np.abs(warped.astype(float) - video.frames[t])[background]
  # Two bilinear resamplings of a textured scene: small mean error...
  assert error.mean() < 8.0
  # ... while the frames themselves differ a lot (the camera did move).
  moved = np.abs(video.frames[0].astype(float) - video.frames[t])[background]
  assert moved.mean() > 3 * error.mean()


def test_bad_arguments():
  with pytest.raises(ValueError, match="camera_motion"):
    synthetic_video.generate_video(camera_motion="dolly")
  with pytest.raises(ValueError, match="num_frames"):
    synthetic_video.generate_video(num_frames=0)


@pytest.mark.parametrize("ext", [".avi", ".mp4"])
def test_write_video_reads_back(tmp_path, ext):
  video = synthetic_video.generate_video(num_frames=7, height=64, width=96)
  path = str(tmp_path / f"clip{ext}")
  synthetic_video.write_video(path, video.frames, fps=12)
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  capture.release()
  assert len(frames) == 7
  assert frames[0].shape == (64, 96, 3)
  # Lossy codecs, but the picture is the same.
  assert np.abs(frames[3].astype(float) - video.frames[3]).mean() < 12.0


def test_write_video_rejects_bad_input(tmp_path):
  frames = np.zeros((2, 32, 32, 3), np.uint8)
  with pytest.raises(ValueError, match="extension"):
    synthetic_video.write_video(str(tmp_path / "x.gif"), frames)
  with pytest.raises(ValueError, match="uint8"):
    synthetic_video.write_video(str(tmp_path / "x.avi"),
                                frames.astype(np.float32))
