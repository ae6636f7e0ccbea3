"""Tests of data/motion_masks.py: the parts on hand-made inputs, the whole
labeller against the exact masks of generated videos."""

import dataclasses
import os

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


def _block_tracks(steps, block_step):
  """Tracks [steps + 1, 40, 60, 2] under a zoom + pan camera, with the block
  rows 10..19, columns 10..24 moving ``block_step`` px/step more."""
  ys, xs = np.mgrid[0:40, 0:60].astype(np.float32)
  block = (ys >= 10) & (ys < 20) & (xs >= 10) & (xs < 25)
  positions = [np.stack([xs, ys], -1)]
  for _ in range(steps):
    # Camera: zoom 1 % and pan (1, 0.5) per step.
    moved = (positions[-1] - 30) * 1.01 + 30 + np.float32([1.0, 0.5])
    moved[block] += np.float32(block_step)
    positions.append(moved)
  return np.stack(positions), block


def test_track_deviation_accumulates_over_the_trajectory():
  positions, block = _block_tracks(4, [0.3, 0.4])
  live = np.ones(positions.shape[:3], bool)
  live[2:, 30:, 50:] = False         # these tracks stop after step 1
  # RANSAC's inlier distance under the block's 0.5 px/step, so that the
  # camera fit (refined on its inliers) does not take the block in.
  config = motion_masks.MotionMaskConfig(ransac_threshold=0.25)
  deviation, sigma = motion_masks.track_deviation(
      positions, live, config, np.random.default_rng(0))
  assert deviation.shape == (4, 40, 60) and sigma < 1e-3
  # The block drifts 0.5 px per step (growing with the zoom) from where the
  # camera sends it.
  np.testing.assert_allclose(deviation[:, block].mean(axis=1),
                             [0.5, 1.005, 1.515, 2.03], atol=0.01)
  np.testing.assert_allclose(deviation[:, ~block], 0.0, atol=1e-3)
  assert (deviation[1:, 30:, 50:] == 0).all()
  # 0.5 px/step (not above the old 0.5 px/frame test) moves by step 3.
  moving = motion_masks.moving_tracks(positions, live, config,
                                      np.random.default_rng(0))
  np.testing.assert_array_equal(moving, block)
  short = motion_masks.moving_tracks(positions[:2], live[:2], config,
                                     np.random.default_rng(0))
  assert not short.any()             # 0.5 px after 1 step: under 1.0


def test_deviation_threshold_follows_the_camera_noise():
  positions, block = _block_tracks(4, [1.0, 0.0])
  rng = np.random.default_rng(0)
  # Flow noise of 0.3 px per step on every track: the block (4 px after 4
  # steps) is still found, the background (a random walk) is not.
  noisy = positions + np.cumsum(
      rng.normal(0, 0.3, positions.shape), axis=0).astype(np.float32)
  live = np.ones(positions.shape[:3], bool)
  moving = motion_masks.moving_tracks(noisy, live, CONFIG, rng)
  assert moving[block].mean() > 0.5 and moving[~block].mean() < 0.02
  # An absolute 1 px threshold would take much of the background.
  fixed = motion_masks.MotionMaskConfig(noise_factor=0.0)
  assert motion_masks.moving_tracks(noisy, live, fixed,
                                    rng)[~block].mean() > 0.3


def test_track_deviation_without_camera_model():
  rng = np.random.default_rng(1)
  positions = rng.uniform(0, 50, (3, 20, 30, 2)).astype(np.float32)
  live = np.ones((3, 20, 30), bool)
  assert motion_masks.track_deviation(positions, live, CONFIG, rng) is None


def test_fill_holes():
  mask = np.zeros((20, 30), np.uint8)
  mask[2:12, 2:12] = 255
  mask[5:8, 5:8] = 0                 # enclosed: filled
  mask[15:20, 20:30] = 255
  mask[17:20, 24:27] = 0             # open to the border: kept
  filled = motion_masks.fill_holes(mask)
  expected = mask.copy()
  expected[5:8, 5:8] = 255
  np.testing.assert_array_equal(filled, expected)


def test_clean_mask():
  foreground = np.zeros((100, 100), bool)
  foreground[20:60, 20:60] = True
  foreground[40, 30:50] = False      # a thin texture-less gap: closed
  foreground[28:36, 28:36] = False   # an enclosed hole: filled
  foreground[80, 80] = True          # an isolated flow error: opened away
  foreground[5:9, 90:94] = True      # 16 px < 0.2 % of the frame: dropped
  config = motion_masks.MotionMaskConfig(open_radius=2, close_radius=3,
                                         min_region_fraction=0.002)
  mask = motion_masks.clean_mask(foreground, config)
  assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
  assert mask[40, 40] == 255 and mask[32, 32] == 255
  assert mask[80, 80] == 0 and mask[7, 92] == 0
  assert abs((mask > 0).sum() - 1600) < 60
  unfilled = dataclasses.replace(config, fill_holes=False)
  assert motion_masks.clean_mask(foreground, unfilled)[32, 32] == 0


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


def _walker_video(motion, num_frames=11, seed=0):
  """A static camera on a textured scene and one textured ellipse (36x80
  px, a near pedestrian at 240x320) that moves as ``motion`` says.

  Returns frames uint8 [T, 240, 320, 3] and exact masks bool [T, 240, 320].
  The failure modes seen on real street footage (issue 11): "slow" moves
  0.35 px/frame, "approaching" grows 2 %/frame about its centre (walking
  toward the camera: the centre does not move) and "lateral" crosses at
  2 px/frame.
  """
  rng = np.random.default_rng(seed)
  scene = cv2.GaussianBlur(rng.uniform(0, 255, (240, 320, 3)).astype(
      np.float32), (0, 0), 2.0)
  scene = 30 + 195 * (scene - scene.min()) / np.ptp(scene)
  sprite = skimage.data.chelsea()[100:260, 150:230].astype(np.float32)
  sprite = cv2.resize(sprite, (37, 81))
  alpha = np.zeros((81 * 4, 37 * 4), np.float32)
  cv2.ellipse(alpha, (74, 162), (72, 160), 0, 0, 360, 1.0, thickness=-1)
  alpha = cv2.resize(alpha, (37, 81), interpolation=cv2.INTER_AREA)
  velocity, growth = {"slow": ((0.3, 0.18), 0.0),
                      "approaching": ((0.0, 0.0), 0.02),
                      "lateral": ((2.0, 0.0), 0.0)}[motion]
  frames, masks = [], []
  for t in range(num_frames):
    scale = 1 + growth * t
    centre = np.float32([150, 110]) + t * np.float32(velocity)
    sprite_to_frame = np.float32([[scale, 0, centre[0] - 18 * scale],
                                  [0, scale, centre[1] - 40 * scale]])
    a = cv2.warpAffine(alpha, sprite_to_frame, (320, 240))[..., None]
    rgb = cv2.warpAffine(sprite, sprite_to_frame, (320, 240))
    image = scene * (1 - a) + rgb * a + rng.normal(0, 2, scene.shape)
    frames.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
    masks.append(a[..., 0] >= 0.5)
  return np.stack(frames), np.stack(masks)


@pytest.mark.parametrize("motion", ["slow", "approaching", "lateral"])
def test_walker_failure_modes(motion):
  frames, masks = _walker_video(motion)
  mask = motion_masks.motion_mask(frames, CONFIG) > 0
  truth = masks[CONFIG.label_index]
  assert _iou(mask, truth) >= 0.8
  # The mask sits on the frame it labels, not shifted along the motion.
  np.testing.assert_allclose(np.argwhere(mask).mean(0),
                             np.argwhere(truth).mean(0), atol=1.5)


# OpenCV's sample street scene (static camera, pedestrians, 768x576), shipped
# by Debian's opencv-doc package; the test is skipped where it is absent.
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(VTEST), reason="needs opencv-doc")
def test_real_street_footage_agrees_with_background_subtraction():
  # Independent reference (module docstring): MOG2 learned over the first
  # 200 frames, then applied with learning rate 0; shadows dropped.
  capture = cv2.VideoCapture(VTEST)
  frames = []
  while len(frames) < 200:
    ok, frame = capture.read()
    assert ok
    frames.append(motion_masks.resize_frame(frame[..., ::-1]))
  capture.release()
  mog = cv2.createBackgroundSubtractorMOG2(history=200, detectShadows=True)
  for frame in frames:
    mog.apply(frame, learningRate=-1)
  ious, recalls = [], []
  for start in (0, 60, 120):
    mask = motion_masks.motion_mask(np.stack(frames[start:start + 11]),
                                    CONFIG) > 0
    reference = mog.apply(frames[start + CONFIG.label_index], learningRate=0)
    reference = cv2.medianBlur(np.where(reference == 255, 255, 0).astype(
        np.uint8), 5) > 0
    ious.append(_iou(mask, reference))
    recalls.append((mask & reference).sum() / reference.sum())
  # Measured: IoU 0.36, 0.44, 0.40 and recall >= 0.89; the old labeller
  # (first frame, per-step test, half-resolution flow) had IoU 0.08, 0.45,
  # 0.28 and recall down to 0.72.
  assert np.mean(ious) >= 0.35 and min(recalls) >= 0.8, (ious, recalls)
