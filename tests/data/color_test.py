"""Tests for the TF sRGB <-> Lab conversion against scikit-image (golden)."""

import numpy as np
import pytest
import skimage.color
import skimage.data
import tensorflow as tf

from mtssl_tf.data import color


def _random_pixels(n=20000, seed=0):
  rng = np.random.default_rng(seed)
  rgb = rng.uniform(size=(n, 3))
  # Include the dark linear segment and the exact corners of the cube.
  rgb[:8] = np.array([[r, g, b] for r in (0, 1) for g in (0, 1)
                      for b in (0, 1)])
  rgb[8:200] *= 0.03
  return rgb.astype(np.float32)


def test_rgb_to_lab_matches_skimage_on_random_pixels():
  rgb = _random_pixels()
  expected = skimage.color.rgb2lab(rgb.astype(np.float64))
  got = color.rgb_to_lab(rgb).numpy()
  np.testing.assert_allclose(got, expected, atol=1e-3)


def test_lab_to_rgb_matches_skimage_on_random_lab():
  rng = np.random.default_rng(1)
  lab = np.stack([rng.uniform(0, 100, 20000), rng.uniform(-110, 110, 20000),
                  rng.uniform(-110, 110, 20000)], axis=-1).astype(np.float32)
  # Keep impossible colours (z < 0) in: skimage clamps them, so must we.
  import warnings  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    expected = skimage.color.lab2rgb(lab.astype(np.float64))
  got = color.lab_to_rgb(lab).numpy()
  np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_real_photos_both_directions(name):
  image = getattr(skimage.data, name)()  # uint8 [H, W, 3]
  lab = color.rgb_to_lab(image).numpy()
  np.testing.assert_allclose(lab, skimage.color.rgb2lab(image), atol=1e-3)
  rgb = color.lab_to_rgb(lab).numpy()
  np.testing.assert_allclose(rgb, skimage.color.lab2rgb(lab), atol=1e-3)
  np.testing.assert_allclose(rgb, image / 255.0, atol=2e-3)  # round trip


def test_batched_and_inside_tf_data():
  images = np.stack([skimage.data.astronaut()[:64, :64],
                     skimage.data.coffee()[:64, :64]])
  batch = color.rgb_to_lab(images).numpy()
  assert batch.shape == (2, 64, 64, 3)
  ds = tf.data.Dataset.from_tensor_slices(images).map(color.rgb_to_lab)
  singles = np.stack(list(ds.as_numpy_iterator()))
  np.testing.assert_allclose(singles, batch, atol=1e-5)
  back = tf.data.Dataset.from_tensor_slices(batch).map(color.lab_to_rgb)
  np.testing.assert_allclose(np.stack(list(back.as_numpy_iterator())),
                             images / 255.0, atol=2e-3)


def test_known_values():
  lab = color.rgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0],
                                   [1.0, 0.0, 0.0]], np.float32)).numpy()
  # The sRGB matrix rows do not sum exactly to the D65 white: a, b ~ 5e-3.
  np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-2)
  np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-3)
  np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=1e-2)


def test_gradients_are_finite_everywhere():
  rgb = tf.Variable(_random_pixels(2000))
  with tf.GradientTape() as tape:
    lab = color.rgb_to_lab(rgb)
    back = color.lab_to_rgb(lab, clip=False)
    loss = tf.reduce_sum(lab) + tf.reduce_sum(back)
  grad = tape.gradient(loss, rgb).numpy()
  assert np.all(np.isfinite(grad))
  # Away from the clamps the round trip is the identity: d(back)/d(rgb) = 1.
  with tf.GradientTape() as tape:
    total = tf.reduce_sum(color.lab_to_rgb(color.rgb_to_lab(rgb), clip=False))
  jac_sum = tape.gradient(total, rgb).numpy()
  interior = np.all((rgb.numpy() > 0.1) & (rgb.numpy() < 0.9), axis=-1)
  np.testing.assert_allclose(jac_sum[interior], 1.0, atol=1e-3)


def test_rejects_wrong_channel_count():
  with pytest.raises(ValueError, match="3 channels"):
    color.rgb_to_lab(np.zeros((4, 4, 4), np.float32))
  with pytest.raises(TypeError, match="uint8 or floating"):
    color.rgb_to_lab(np.zeros((4, 4, 3), np.int32))
