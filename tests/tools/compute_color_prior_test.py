"""Tests of tools/compute_color_prior.py on a few tiny images."""

import os

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from mtssl_tf.data import ab_bins
from tools import compute_color_prior


@pytest.fixture(autouse=True)
def _parse_flags():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["compute_color_prior", "--output=unused"])


def _bin_index(ab):
  return {tuple(c): i for i, c in enumerate(ab_bins.bin_centres())}[ab]


def test_prior_of_a_folder(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  # Pure red, pure blue (both colour) and a gray image (left out).
  Image.fromarray(np.full((20, 30, 3), (255, 0, 0), np.uint8)).save(
      images / "red.png")
  Image.fromarray(np.full((30, 20, 3), (0, 0, 255), np.uint8)).save(
      images / "blue.jpg", quality=100)
  Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(
      images / "gray.png")
  output = tmp_path / "out" / "prior.npy"
  with flagsaver.flagsaver(source="folder", path=str(images), num_images=3,
                           image_size=16, output=str(output)):
    compute_color_prior.main(["compute_color_prior"])
  prior = ab_bins.load_prior(str(output))
  assert os.listdir(output.parent) == ["prior.npy"]
  # sRGB red is Lab (53.2, 80.1, 67.2), blue (32.3, 79.2, -107.9).
  red, blue = _bin_index((80, 70)), _bin_index((80, -110))
  gray = _bin_index((0, 0))
  assert prior[red] == pytest.approx(prior[blue], rel=0.05)
  assert prior[red] > 0.2 and prior[gray] < 1e-6
  # The smoothing gives neighbours exp(-2) of a peak (up to the border).
  assert prior[_bin_index((80, 60))] / prior[red] == pytest.approx(
      np.exp(-2.0), rel=0.15)


def test_gray_only_source_is_an_error(tmp_path):
  Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(tmp_path / "g.png")
  with flagsaver.flagsaver(source="folder", path=str(tmp_path), num_images=2,
                           output=str(tmp_path / "prior.npy")):
    with pytest.raises(ValueError, match="is in colour"):
      compute_color_prior.main(["compute_color_prior"])
  assert not (tmp_path / "prior.npy").exists()


def test_shipped_default_is_the_prior_of_the_builtin_photos(tmp_path):
  output = tmp_path / "prior.npy"
  with flagsaver.flagsaver(source="builtin", num_images=9, output=str(output)):
    compute_color_prior.main(["compute_color_prior"])
  np.testing.assert_allclose(ab_bins.load_prior(str(output)),
                             ab_bins.load_prior(), rtol=1e-6, atol=1e-12)
