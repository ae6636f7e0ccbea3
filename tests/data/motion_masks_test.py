"""Tests of data/motion_masks.py: the parts on hand-made inputs, the whole
labeller against the exact masks of generated videos."""

import cv2
import numpy as np
import pytest
import skimage.data

from mtssl_tf.data import motion_masks
from mtssl_tf.data import synthetic_video

CONFIG = motion_masks.MotionMaskConfig()


def _iou(mask, truth):
  mask, truth = mask > 0, truth > 0
  return (mask & truth).sum() / (mask | truth).sum()


def test_resize_frame_crops_to_4_3_then_resizes():
  # 16:9 frame whose columns are numbered: the sides are cut, not squeezed.
  wide = np.tile(np.arange(1920, dtype=np.float32)[None, :], (1080, 1))
  out = motion_masks.resize_frame(wide)
  assert out.shape == (240, 320)
  # Kept columns 240..1679 (1440 = 1080 * 4 / 3 wide, centred).
  assert out[0, 0] == pytest.approx(240 + 2.25, abs=1.0)
  assert out[0, -1] == pytest.approx(1679 - 2.25, abs=1.0)
  tall = np.tile(np.arange(800, dtype=np.float32)[:, None, None], (1, 300, 3))
  out = motion_masks.resize_frame(tall)
  assert out.shape == (240, 320, 3)
  assert out[0, 0, 0] == pytest.approx(287.5, abs=1.5)  # rows 287..512 kept
  small = np.zeros((60, 80, 3), np.uint8)
  assert motion_masks.resize_frame(small).shape == (240, 320, 3)
  exact = np.arange(240 * 320 * 3, dtype=np.uint8).reshape(240, 320, 3)
  np.testing.assert_array_equal(motion_masks.resize_frame(exact), exact)


@pytest.mark.parametrize("method", motion_masks.FLOW_METHODS)
def test_flow_of_a_translation(method):
  image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
  image = cv2.resize(image, (320, 320))[40:280]
  # Frame 1 shows the scene moved by (dx, dy) = (3, -2).
  shifted = np.roll(image, shift=(-2, 3), axis=(0, 1))
  flow = motion_masks.FlowEstimator(method)(image, shifted)
  assert flow.shape == (240, 320, 2) and flow.dtype == np.float32
  interior = flow[20:-20, 20:-20].reshape(-1, 2)
  np.testing.assert_allclose(np.median(interior, axis=0), [3.0, -2.0],
                             atol=0.15)


def test_unknown_flow_method():
  with pytest.raises(ValueError, match="dis"):
    motion_masks.MotionMaskConfig(flow="tvl1")
  with pytest.raises(ValueError, match="farneback"):
    motion_masks.FlowEstimator("tvl1")


def test_track_points_follows_flow_and_stops_at_border_and_occlusion():
  steps, height, width = 3, 6, 8
  forward = np.zeros((steps, height, width, 2), np.float32)
  forward[..., 0] = 2.0                              # everything moves right
  backward = -forward.copy()
  # Step 1: the backward flow disagrees in column 5 of frame 2 (occlusion).
  backward[1, :, 5, 0] = 2.0
  positions, live = motion_masks.track_points(forward, backward)
  assert positions.shape == (4, 6, 8, 2) and live.shape == (4, 6, 8)
  np.testing.assert_allclose(positions[3, 2, 0], [6.0, 2.0])
  np.testing.assert_allclose(positions[:, 4, 1, 0], [1, 3, 5, 7])
  assert live[0].all()
  # x = 6, 7 leave the frame (width 8) in the first step.
  assert not live[1][:, 6:].any() and live[1][:, :6].all()
  # Pixels that reach x = 5 at step 2 (x0 = 1) fail the check there.
  assert live[1][:, 1].all() and not live[2][:, 1].any()
  assert live[2][:, 0].all() and live[3][:, 0].all()


def test_camera_homography_ignores_outliers():
  rng = np.random.default_rng(0)
  truth = np.array([[1.01, 0.02, 3.0], [-0.01, 0.99, -2.0], [1e-5, 0, 1]])
  source = rng.uniform(0, 300, (1000, 2)).astype(np.float32)
  target = cv2.perspectiveTransform(source[None].astype(np.float64),
                                    truth)[0].astype(np.float32)
  target[:300] += rng.uniform(-30, 30, (300, 2)).astype(np.float32)
  homography, inliers = motion_masks.camera_homography(source, target, CONFIG,
                                                       rng)
  np.testing.assert_allclose(homography / homography[2, 2], truth, atol=2e-3)
  assert inliers == pytest.approx(0.7, abs=0.03)
  assert motion_masks.camera_homography(source[:5], target[:5], CONFIG,
                                        rng) == (None, 0.0)


def test_moving_fraction_of_an_independently_moving_block():
  steps, height, width = 4, 40, 60
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
  start = np.stack([xs, ys], -1)
  block = (ys >= 10) & (ys < 20) & (xs >= 10) & (xs < 25)
  positions = [start]
  for k in range(steps):
    # Camera: zoom 1 % and pan (1, 0.5) per step; block: extra 2 px right.
    moved = (positions[-1] - 30) * 1.01 + 30 + np.float32([1.0, 0.5])
    moved[block] += np.float32([2.0, 0.0])
    positions.append(moved)
  positions = np.stack(positions)
  live = np.ones(positions.shape[:3], bool)
  live[2:, 30:, 50:] = False         # these tracks stop after step 1
  fraction = motion_masks.moving_fraction(positions, live, CONFIG)
  assert fraction.shape == (height, width)
  np.testing.assert_allclose(fraction[block], 1.0)
  np.testing.assert_allclose(fraction[~block], 0.0, atol=1e-6)


def test_moving_fraction_without_camera_model():
  rng = np.random.default_rng(1)
  positions = rng.uniform(0, 50, (3, 20, 30, 2)).astype(np.float32)
  live = np.ones((3, 20, 30), bool)
  assert motion_masks.moving_fraction(positions, live, CONFIG) is None


def test_clean_mask():
  foreground = np.zeros((100, 100), bool)
  foreground[20:60, 20:60] = True
  foreground[40, 30:50] = False      # a thin texture-less gap: closed
  foreground[80, 80] = True          # an isolated flow error: opened away
  foreground[5:9, 90:94] = True      # 16 px < 0.2 % of the frame: dropped
  mask = motion_masks.clean_mask(foreground, CONFIG)
  assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
  assert mask[40, 40] == 255 and mask[30, 30] == 255
  assert mask[80, 80] == 0 and mask[7, 92] == 0
  assert abs((mask > 0).sum() - 1600) < 60


@pytest.mark.parametrize("camera_motion", synthetic_video.CAMERA_MOTIONS)
def test_mask_matches_ground_truth(camera_motion):
  ious = []
  for seed in (10, 11):
    video = synthetic_video.generate_video(num_frames=11,
                                           camera_motion=camera_motion,
                                           seed=seed)
    mask = motion_masks.motion_mask(video.frames, CONFIG)
    assert mask.shape == (240, 320) and mask.dtype == np.uint8
    ious.append(_iou(mask, video.masks[0]))
  assert min(ious) >= 0.6, ious


def test_farneback_also_labels():
  video = synthetic_video.generate_video(num_frames=11, seed=12)
  config = motion_masks.MotionMaskConfig(flow="farneback")
  assert _iou(motion_masks.motion_mask(video.frames, config),
              video.masks[0]) >= 0.5


def test_no_objects_no_foreground():
  video = synthetic_video.generate_video(num_frames=11, num_objects=0,
                                         seed=13)
  mask = motion_masks.motion_mask(video.frames, CONFIG)
  assert (mask > 0).mean() < 0.01


def test_unrelated_frames_have_no_camera_model():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (11, 240, 320, 3), dtype=np.uint8)
  assert motion_masks.motion_mask(frames, CONFIG) is None


def test_window_length_is_checked():
  with pytest.raises(ValueError, match="track_length"):
    motion_masks.motion_mask(np.zeros((5, 240, 320, 3), np.uint8), CONFIG)
