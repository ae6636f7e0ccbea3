"""sRGB <-> CIE L*a*b* conversion in TensorFlow (D65 white, 2° observer).

Colorization (paper §2, Zhang et al. 2016) and input harmonization (paper §3.3)
work in Lab. tensorflow-io's colour ops do not load on TF 2.20 (SPEC.md), so the
conversion is written here with core TF ops. It follows scikit-image's
``skimage.color.rgb2lab`` / ``lab2rgb`` exactly (same matrices, same
thresholds), which the tests use as the golden reference.

Conventions:
  * RGB is sRGB-encoded, float in [0, 1] (uint8 input is scaled by 1/255).
  * L is in [0, 100]; a and b are roughly in [-128, 127].
  * Any shape ``[..., 3]`` works: a single image ``[H, W, 3]`` inside tf.data, a
    batch ``[N, H, W, 3]``, or a list of pixels ``[P, 3]``.
  * Both directions are differentiable everywhere: the power functions are
    evaluated on inputs clamped away from 0 so that the branch ``tf.where``
    discards never produces inf/NaN gradients.
"""

import tensorflow as tf

# sRGB (linear) -> XYZ, D65, as in skimage.color.colorconv.xyz_from_rgb.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
# D65 reference white for the 2° observer (skimage's _illuminants['D65']['2']).
_D65_WHITE = (0.95047, 1.0, 1.08883)

_EPS = 1e-8


def _as_float_rgb(rgb):
  rgb = tf.convert_to_tensor(rgb)
  if rgb.dtype == tf.uint8:
    return tf.cast(rgb, tf.float32) / 255.0
  if not rgb.dtype.is_floating:
    raise TypeError(f"rgb must be uint8 or floating point, got {rgb.dtype}.")
  return rgb


def _check_channels(x, what):
  if x.shape.rank is not None and x.shape[-1] is not None and x.shape[-1] != 3:
    raise ValueError(
        f"{what} must have 3 channels in its last axis, got shape {x.shape}.")


def _xyz_from_rgb_matrix(dtype):
  # The matrix is applied as x @ M^T so that it acts on the last axis.
  return tf.transpose(tf.constant(_XYZ_FROM_RGB, dtype=dtype))


def _rgb_from_xyz_matrix(dtype):
  inverse = tf.linalg.inv(tf.constant(_XYZ_FROM_RGB, dtype=tf.float64))
  return tf.cast(tf.transpose(inverse), dtype)


def _matmul_last_axis(x, matrix):
  shape = tf.shape(x)
  flat = tf.reshape(x, [-1, 3])
  return tf.reshape(tf.matmul(flat, matrix), shape)


def rgb_to_lab(rgb, name=None):
  """Converts sRGB to CIE Lab (D65).

  Args:
    rgb: ``[..., 3]`` sRGB, float in [0, 1] or uint8.
    name: optional op name scope.

  Returns:
    ``[..., 3]`` float tensor of (L, a, b), L in [0, 100].
  """
  with tf.name_scope(name or "rgb_to_lab"):
    rgb = _as_float_rgb(rgb)
    _check_channels(rgb, "rgb")
    dtype = rgb.dtype
    # sRGB gamma -> linear RGB.
    linear = tf.where(
        rgb > 0.04045,
        tf.pow((tf.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4),
        rgb / 12.92)
    xyz = _matmul_last_axis(linear, _xyz_from_rgb_matrix(dtype))
    xyz = xyz / tf.constant(_D65_WHITE, dtype=dtype)
    f = tf.where(
        xyz > 0.008856,
        tf.pow(tf.maximum(xyz, 0.008856), 1.0 / 3.0),
        7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = tf.unstack(f, axis=-1)
    lightness = 116.0 * fy - 16.0
    a = 500.0 * (fx - fy)
    b = 200.0 * (fy - fz)
    return tf.stack([lightness, a, b], axis=-1)


def lab_to_rgb(lab, clip=True, name=None):
  """Converts CIE Lab (D65) to sRGB.

  Args:
    lab: ``[..., 3]`` float (L, a, b).
    clip: clip the result to [0, 1], as ``skimage.color.lab2rgb`` does. Colours
      outside the sRGB gamut are otherwise returned unclipped.
    name: optional op name scope.

  Returns:
    ``[..., 3]`` sRGB float tensor.
  """
  with tf.name_scope(name or "lab_to_rgb"):
    lab = tf.convert_to_tensor(lab)
    if not lab.dtype.is_floating:
      lab = tf.cast(lab, tf.float32)
    _check_channels(lab, "lab")
    dtype = lab.dtype
    lightness, a, b = tf.unstack(lab, axis=-1)
    fy = (lightness + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = fy - b / 200.0
    # skimage clamps negative z (impossible colours) to 0 before inverting.
    fz = tf.where(fz < 0.0, tf.zeros_like(fz), fz)
    f = tf.stack([fx, fy, fz], axis=-1)
    xyz = tf.where(
        f > 0.2068966,
        tf.pow(tf.maximum(f, 0.2068966), 3.0),
        (f - 16.0 / 116.0) / 7.787)
    xyz = xyz * tf.constant(_D65_WHITE, dtype=dtype)
    linear = _matmul_last_axis(xyz, _rgb_from_xyz_matrix(dtype))
    rgb = tf.where(
        linear > 0.0031308,
        1.055 * tf.pow(tf.maximum(linear, 0.0031308), 1.0 / 2.4) - 0.055,
        linear * 12.92)
    if clip:
      rgb = tf.clip_by_value(rgb, 0.0, 1.0)
    return rgb
