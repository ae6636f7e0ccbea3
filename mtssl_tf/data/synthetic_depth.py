"""Rendered indoor-like scenes with exact depth, written as NYU v2 files.

Test and demo data for the depth evaluation (paper §5, NYU v2): a pinhole
camera (NYU's focal length, scaled to the image size) at a random height and
pitch looks into a box-shaped room — floor, back wall (turned about the
vertical axis), side walls — with 1-3 boxes standing on the floor. Every
surface is textured with a crop of a built-in photo (``sample_data.py``) in
its own plane coordinates and shaded by its orientation, so image cues and
depth agree the way they do in a real room. Depth is the exact z-depth of the
ray-cast first hit, in metres. A band of pixels is marked invalid (depth 0),
as the Kinect leaves holes, so that masking is exercised.

``write_nyu_files`` stores the scenes in the real files' formats:
``nyu_depth_v2_labeled.mat`` as MATLAB v7.3 (HDF5 with the 512-byte MATLAB
header; ``images [N, 3, W, H]`` uint8, ``depths [N, W, H]`` float32, the
column-major axis order MATLAB writes) and ``splits.mat`` as MATLAB v5
(scipy.io.savemat) with 1-based ``trainNdxs`` / ``testNdxs`` column vectors.

Hand-written (no library renders textured boxes with exact depth in a few
lines); deterministic given ``seed``.
"""

import os
from typing import Tuple

import numpy as np

from mtssl_tf.data import sample_data

# NYU's Kinect focal length (518.8 px at 640x480), scaled with the width.
_FOCAL_AT_640 = 518.8
_MATLAB_HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
                  b"Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def _rotation(pitch: float, yaw: float) -> np.ndarray:
  cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
  rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  return ry @ rx


def _texture(photo: np.ndarray, u: np.ndarray, v: np.ndarray,
             scale: float, offset: Tuple[float, float]) -> np.ndarray:
  """Samples ``photo`` at plane coordinates (metres), tiled by reflection."""
  h, w = photo.shape[:2]
  u = np.where(np.isfinite(u), u, 0.0)  # pixels this surface does not hit
  v = np.where(np.isfinite(v), v, 0.0)
  x = (u * scale + offset[0]) % (2 * w)
  y = (v * scale + offset[1]) % (2 * h)
  x = np.where(x >= w, 2 * w - 1 - x, x).astype(np.int64).clip(0, w - 1)
  y = np.where(y >= h, 2 * h - 1 - y, y).astype(np.int64).clip(0, h - 1)
  return photo[y, x].astype(np.float32)


def render_scene(height: int, width: int, rng: np.random.Generator,
                 photos) -> Tuple[np.ndarray, np.ndarray]:
  """Renders one scene.

  Returns:
    ``(image uint8 [height, width, 3], depth float32 [height, width])``,
    depth in metres (0 where marked invalid).
  """
  f = _FOCAL_AT_640 * width / 640.0
  v, u = np.mgrid[0:height, 0:width].astype(np.float64)
  rays = np.stack([(u + 0.5 - width / 2) / f, (v + 0.5 - height / 2) / f,
                   np.ones_like(u)], axis=-1)             # camera frame, z=1
  rot = _rotation(np.deg2rad(rng.uniform(-12, 12)),
                  np.deg2rad(rng.uniform(-15, 15)))
  dirs = rays @ rot.T                                      # world frame, y down
  cam_height = rng.uniform(1.0, 1.6)
  depth = np.full((height, width), np.inf)
  color = np.zeros((height, width, 3), np.float32)

  def hit(t, normal, uu, vv, photo_index, shade):
    nonlocal depth, color
    closer = (t > 0.05) & (t < depth)
    if not closer.any():
      return
    photo = photos[photo_index % len(photos)]
    tex = _texture(photo, uu, vv, rng.uniform(60, 140),
                   tuple(rng.uniform(0, 500, 2)))
    light = 0.55 + 0.45 * abs(np.dot(normal, [0.3, -0.8, -0.5]))
    depth = np.where(closer, t, depth)
    shade = np.asarray(shade, np.float32)
    shade = shade[..., None] if shade.ndim == 2 else shade
    color = np.where(closer[..., None], tex * light * shade, color)

  def plane(normal, offset, photo_index, shade=1.0):
    """Plane normal . X = offset; texture coordinates in the plane."""
    normal = np.asarray(normal, np.float64)
    denom = dirs @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
      t = np.where(np.abs(denom) > 1e-9, offset / denom, np.inf)
    points = dirs * t[..., None]
    a = np.cross(normal, [0.0, 1.0, 0.0] if abs(normal[1]) < 0.9
                 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(normal, a)
    hit(t, normal, points @ a, points @ b, photo_index, shade)

  order = rng.permutation(len(photos))
  back = rng.uniform(3.0, 8.0)
  half_width = rng.uniform(1.5, 3.0)
  wall_yaw = np.deg2rad(rng.uniform(-25, 25))
  plane([0, 1, 0], cam_height, order[0], 0.9)                       # floor
  plane([np.sin(wall_yaw), 0, np.cos(wall_yaw)], back, order[1 % len(order)])
  plane([1, 0, 0], half_width, order[2 % len(order)], 0.8)         # right
  plane([-1, 0, 0], half_width, order[3 % len(order)], 0.8)        # left
  plane([0, -1, 0], rng.uniform(1.2, 1.8), order[4 % len(order)], 1.1)  # ceil

  for k in range(rng.integers(1, 4)):                              # boxes
    size = rng.uniform([0.4, 0.3, 0.4], [1.2, 1.2, 1.2])
    center = np.array([rng.uniform(-half_width + 0.5, half_width - 0.5),
                       cam_height - size[1] / 2,
                       rng.uniform(1.5, back - 0.8)])
    lo, hi = center - size / 2, center + size / 2
    with np.errstate(divide="ignore", invalid="ignore"):
      t1, t2 = lo / dirs, hi / dirs
    t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
    inside = (t_near <= t_far) & (t_near > 0)
    t = np.where(inside, t_near, np.inf)
    face = np.argmax(np.minimum(t1, t2), axis=-1)
    points = dirs * t[..., None]
    uu = np.where(face == 0, points[..., 2], points[..., 0])
    vv = np.where(face == 1, points[..., 2], points[..., 1])
    normal = np.eye(3)[int(np.bincount(face[inside].ravel(), minlength=3)
                           .argmax())] if inside.any() else np.eye(3)[2]
    hit(t, normal, uu, vv, order[(5 + k) % len(order)],
        0.7 + 0.3 * (face == 1).astype(np.float32))

  depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
  noise = rng.normal(0, 3.0, color.shape)
  image = np.clip(color + noise, 0, 255).astype(np.uint8)
  # A Kinect-like hole: a thin vertical band without depth.
  x0 = rng.integers(0, width)
  depth[:, x0:x0 + max(1, width // 40)] = 0.0
  return image, depth


def render_scenes(num: int, height: int = 240, width: int = 320,
                  seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """``num`` scenes: uint8 ``[num, H, W, 3]``, float32 ``[num, H, W]``."""
  rng = np.random.default_rng(seed)
  photos = [p for _, p in sample_data.load_photos()]
  # Downscale big photos so textures are not a single flat region.
  photos = [p[::max(1, min(p.shape[:2]) // 300), ::max(
      1, min(p.shape[:2]) // 300)] for p in photos]
  images = np.zeros((num, height, width, 3), np.uint8)
  depths = np.zeros((num, height, width), np.float32)
  for n in range(num):
    images[n], depths[n] = render_scene(height, width, rng, photos)
  return images, depths


def write_labeled_mat(path: str, images: np.ndarray,
                      depths: np.ndarray) -> None:
  """Writes ``[N, H, W, 3]`` / ``[N, H, W]`` arrays as the labelled .mat.

  The layout is the real file's: MATLAB v7.3 (HDF5 with a 512-byte user
  block holding the MATLAB header), ``images [N, 3, W, H]`` uint8 and
  ``depths [N, W, H]`` float32.
  """
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, "w", userblock_size=512) as f:
    f.create_dataset("images", data=np.asarray(images, np.uint8)
                     .transpose(0, 3, 2, 1))
    f.create_dataset("depths", data=np.asarray(depths, np.float32)
                     .transpose(0, 2, 1))
  with open(path, "r+b") as f:
    f.write(_MATLAB_HEADER.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def write_splits_mat(path: str, train: np.ndarray, test: np.ndarray) -> None:
  """Writes 0-based index arrays as a MATLAB v5 ``splits.mat`` (1-based)."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  scipy.io.savemat(path, {
      "trainNdxs": (np.asarray(train) + 1).astype(np.float64).reshape(-1, 1),
      "testNdxs": (np.asarray(test) + 1).astype(np.float64).reshape(-1, 1)},
                   format="5")


def write_nyu_files(directory: str, num_train: int, num_test: int,
                    height: int = 240, width: int = 320,
                    seed: int = 0) -> Tuple[str, str]:
  """Renders scenes into ``directory``; returns (labeled .mat, splits .mat).

  Frames are interleaved between the splits (as the official split mixes
  scenes' frames by index); files that already exist are kept.
  """
  os.makedirs(directory, exist_ok=True)
  mat = os.path.join(directory, "nyu_depth_v2_labeled.mat")
  splits = os.path.join(directory, "splits.mat")
  if not (os.path.isfile(mat) and os.path.isfile(splits)):
    total = num_train + num_test
    images, depths = render_scenes(total, height, width, seed)
    order = np.random.default_rng(seed + 1).permutation(total)
    tmp = mat + ".tmp"
    write_labeled_mat(tmp, images, depths)
    os.replace(tmp, mat)
    write_splits_mat(splits, np.sort(order[:num_train]),
                     np.sort(order[num_train:]))
  return mat, splits
