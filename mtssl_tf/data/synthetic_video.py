"""Synthetic videos with exact ground-truth motion masks.

Test data for the motion-segmentation labels (paper §2, Pathak et al. 2017):
a textured static scene seen by a moving camera, with independently moving
textured objects in front of it. Because the scene is generated, we know for
every pixel whether it belongs to an object that moves on its own (the "will
it move" label the ms task learns) and the exact camera motion.

Rendering (numpy + OpenCV warps, no downloads):
  * The scene is a mosaic of scikit-image photos, multiplied by a grayscale
    texture (grass / gravel / brick) so that flat photo regions still carry
    the texture dense optical flow needs. It is unbounded: warps outside the
    mosaic reflect it (``BORDER_REFLECT_101``), which is still a rigid scene.
  * The camera is a homography ``world -> frame t`` per frame: "static"
    (identity), "pan" (constant translation of 1.5-3 px/frame at 240x320) or
    "pan+zoom" (the pan plus a zoom of 0.4-0.8 %/frame about the frame
    centre, in or out).
  * Each object is a photo crop cut to an ellipse, moving in image
    coordinates with its own velocity (bouncing off the frame borders),
    rotating by up to 1 degree/frame and scaled with the camera zoom. Its
    image velocity differs from the background's pan velocity by at least
    ``1.5 px/frame`` (for every bounce direction), so it is "independently
    moving" in the sense of the labels, not merely carried by the camera.
  * Objects are composited with anti-aliased alpha; ``masks`` is
    ``alpha >= 0.5`` of the union of objects. Gaussian sensor noise is added.

Speeds and sizes are stated at 240x320 and scale with ``min(height, width)``.
Everything is deterministic given ``seed``.

Shapes: ``frames`` uint8 [T, H, W, 3] (RGB), ``masks`` bool [T, H, W],
``object_ids`` int32 [T, H, W] (0 = background, k = object k on top),
``homographies`` float64 [T, 3, 3] mapping frame-0 pixel coordinates of the
background to frame-t pixel coordinates (``homographies[0]`` is identity).
"""

import dataclasses
import functools
import os

import cv2
import numpy as np
import skimage.data

CAMERA_MOTIONS = ("static", "pan", "pan+zoom")

# Sizes and speeds at the reference size min(H, W) = 240 (SPEC: 240x320).
_REFERENCE_SIZE = 240.0
_PAN_SPEED = (1.5, 3.0)            # px/frame
_ZOOM_RATE = (0.004, 0.008)        # relative scale change per frame
_OBJECT_SPEED = (1.5, 3.5)         # px/frame
_MIN_RELATIVE_SPEED = 1.5          # px/frame, object vs background pan
_OBJECT_RADIUS = (0.12, 0.2)       # ellipse semi-axes, fraction of min(H, W)
_MAX_ROTATION_DEG = 1.0            # per frame

_SCENE_PHOTOS = ("coffee", "rocket", "astronaut", "immunohistochemistry",
                 "hubble_deep_field", "retina")
_OBJECT_PHOTOS = ("chelsea", "astronaut", "coffee", "colorwheel", "rocket",
                  "immunohistochemistry")
_TEXTURES = ("grass", "gravel", "brick")

_VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


@dataclasses.dataclass
class SyntheticVideo:
  """A generated video and its ground truth (shapes in the module doc)."""
  frames: np.ndarray
  masks: np.ndarray
  object_ids: np.ndarray
  homographies: np.ndarray
  camera_motion: str


@functools.lru_cache(maxsize=None)
def _photo(name):
  image = getattr(skimage.data, name)()
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  return image[..., :3]


def _scene(rng, height, width):
  """A [2H, 2W, 3] uint8 mosaic of four photos times a grayscale texture."""
  names = rng.choice(_SCENE_PHOTOS, size=4, replace=False)
  tiles = [cv2.resize(_photo(n), (width, height), interpolation=cv2.INTER_AREA)
           for n in names]
  mosaic = np.concatenate([np.concatenate(tiles[:2], axis=1),
                           np.concatenate(tiles[2:], axis=1)], axis=0)
  texture = _photo(str(rng.choice(_TEXTURES)))[..., 0].astype(np.float32)
  texture = cv2.resize(texture, (mosaic.shape[1], mosaic.shape[0]))
  # Contrast 0.6..1.4 around the mosaic: texture without hiding the photos.
  gain = 0.6 + 0.8 * (texture - texture.min()) / np.ptp(texture)
  return np.clip(mosaic * gain[..., None], 0, 255).astype(np.uint8)


def _object_sprite(rng, radius_x, radius_y):
  """Returns a photo crop [h, w, 3] float32 and its ellipse alpha [h, w]."""
  h, w = 2 * radius_y + 3, 2 * radius_x + 3
  photo = _photo(str(rng.choice(_OBJECT_PHOTOS)))
  scale = max(h / photo.shape[0], w / photo.shape[1]) * rng.uniform(1.0, 1.5)
  photo = cv2.resize(photo, None, fx=scale, fy=scale)
  y0 = rng.integers(0, photo.shape[0] - h + 1)
  x0 = rng.integers(0, photo.shape[1] - w + 1)
  sprite = photo[y0:y0 + h, x0:x0 + w].astype(np.float32)
  # A random colour cast so objects do not blend into a scene of the same photo.
  sprite = np.clip(sprite * rng.uniform(0.6, 1.4, size=3), 0, 255)
  # Anti-aliased ellipse: draw at 4x and area-downsample.
  big = np.zeros((4 * h, 4 * w), np.float32)
  cv2.ellipse(big, (2 * w, 2 * h), (4 * radius_x, 4 * radius_y), 0, 0, 360,
              1.0, thickness=-1)
  alpha = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
  return sprite, alpha


def _object_velocity(rng, speed_range, background_velocity):
  """A velocity at least _MIN_RELATIVE_SPEED (scaled) from the background's.

  Bounces flip velocity components, so all four sign combinations are
  checked against the background velocity.
  """
  min_relative = _MIN_RELATIVE_SPEED * speed_range[0] / _OBJECT_SPEED[0]
  for _ in range(1000):
    angle = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(*speed_range) * np.array([np.cos(angle),
                                                     np.sin(angle)])
    flips = velocity * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    if np.linalg.norm(flips - background_velocity, axis=1).min() >= min_relative:
      return velocity
  raise RuntimeError("Could not sample an object velocity; widen the ranges.")


def _bounce(start, velocity, t, low, high):
  """Position at time t of a point bouncing between low and high (per axis)."""
  span = np.maximum(high - low, 1e-6)
  phase = np.mod(start - low + velocity * t, 2 * span)
  return low + np.where(phase > span, 2 * span - phase, phase)


def _translation(x, y):
  return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)


def generate_video(num_frames=30, height=240, width=320, num_objects=3,
                   camera_motion="pan+zoom", seed=0, noise_std=2.0):
  """Renders a synthetic video with exact motion masks.

  Args:
    num_frames: number of frames T (>= 1).
    height, width: frame size (>= 32 each).
    num_objects: number of independently moving objects (>= 0).
    camera_motion: one of ``CAMERA_MOTIONS``.
    seed: everything (scene, objects, motions, noise) is a function of it.
    noise_std: standard deviation of the Gaussian sensor noise, in 0..255.

  Returns:
    A ``SyntheticVideo`` (shapes in the module docstring).
  """
  if camera_motion not in CAMERA_MOTIONS:
    raise ValueError(f"camera_motion must be one of {CAMERA_MOTIONS}, "
                     f"got {camera_motion!r}.")
  if num_frames < 1 or height < 32 or width < 32 or num_objects < 0:
    raise ValueError("Need num_frames >= 1, height and width >= 32 and "
                     f"num_objects >= 0; got {num_frames}, {height}x{width}, "
                     f"{num_objects}.")
  rng = np.random.default_rng(seed)
  unit = min(height, width) / _REFERENCE_SIZE
  scene = _scene(rng, height, width)

  # Camera: world (scene mosaic) -> frame t. Frame 0 looks at the mosaic centre.
  pan = np.zeros(2)
  zoom_rate = 0.0
  if camera_motion != "static":
    angle = rng.uniform(0, 2 * np.pi)
    pan = rng.uniform(*_PAN_SPEED) * unit * np.array([np.cos(angle),
                                                      np.sin(angle)])
  if camera_motion == "pan+zoom":
    zoom_rate = rng.uniform(*_ZOOM_RATE) * rng.choice([-1.0, 1.0])
  centre = np.array([width / 2, height / 2])
  world_to_frame = []
  for t in range(num_frames):
    scale = (1 + zoom_rate) ** t
    world_to_frame.append(
        _translation(*centre) @ np.diag([scale, scale, 1.0]) @
        _translation(*(-centre)) @ _translation(*(-pan * t)) @
        _translation(-width / 2, -height / 2))
  world_to_frame = np.stack(world_to_frame)
  homographies = world_to_frame @ np.linalg.inv(world_to_frame[0])

  # Objects: (sprite, alpha, start, velocity, angle0, spin) in image coordinates.
  objects = []
  for _ in range(num_objects):
    rx, ry = (int(rng.uniform(*_OBJECT_RADIUS) * min(height, width))
              for _ in range(2))
    sprite, alpha = _object_sprite(rng, rx, ry)
    speed = tuple(s * unit for s in _OBJECT_SPEED)
    velocity = _object_velocity(rng, speed, -pan)
    start = rng.uniform([0, 0], [width, height])
    objects.append((sprite, alpha, start, velocity, rng.uniform(0, 360),
                    rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG)))

  frames = np.empty((num_frames, height, width, 3), np.uint8)
  object_ids = np.zeros((num_frames, height, width), np.int32)
  size = (width, height)
  for t in range(num_frames):
    image = cv2.warpPerspective(scene, world_to_frame[t], size,
                                flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
    image = image.astype(np.float32)
    scale = (1 + zoom_rate) ** t
    for k, (sprite, alpha, start, velocity, angle0, spin) in enumerate(objects):
      # Keep the object centre inside the frame (its body may leave it).
      position = _bounce(start, velocity, t, np.zeros(2),
                         np.array([width, height], np.float64))
      h, w = alpha.shape
      rotation = np.eye(3)
      rotation[:2] = cv2.getRotationMatrix2D((0, 0), angle0 + spin * t, scale)
      sprite_to_frame = (_translation(*position) @ rotation @
                         _translation(-(w - 1) / 2, -(h - 1) / 2))
      a = cv2.warpPerspective(alpha, sprite_to_frame, size,
                              flags=cv2.INTER_LINEAR)
      rgb = cv2.warpPerspective(sprite, sprite_to_frame, size,
                                flags=cv2.INTER_LINEAR)
      image = image * (1 - a[..., None]) + rgb * a[..., None]
      object_ids[t][a >= 0.5] = k + 1
    if noise_std > 0:
      image += rng.normal(0, noise_std, image.shape).astype(np.float32)
    frames[t] = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return SyntheticVideo(frames=frames, masks=object_ids > 0,
                        object_ids=object_ids, homographies=homographies,
                        camera_motion=camera_motion)


def write_video(path, frames, fps=10.0):
  """Writes RGB uint8 frames [T, H, W, 3] to ``path`` (.avi: MJPG, .mp4: mp4v).

  Both codecs are built into opencv-python-headless; MJPG is near-lossless at
  OpenCV's default quality, mp4v is smaller but blurs fine texture.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in _VIDEO_CODECS:
    raise ValueError(f"Unsupported video extension {ext!r} for {path}; use one "
                     f"of {sorted(_VIDEO_CODECS)}.")
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError("frames must be uint8 [T, H, W, 3], got "
                     f"{frames.dtype} {frames.shape}.")
  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*_VIDEO_CODECS[ext]),
                           float(fps), (width, height))
  if not writer.isOpened():
    raise IOError(f"OpenCV could not open {path} for writing.")
  try:
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()
