"""Tests of tools/compute_color_prior.py on a few tiny images.

The tool runs as a user runs it, in its own process (entry points define
absl flags, which must not meet another entry point's in the test process).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mtssl_tf.data import ab_bins

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run_tool(**flag_values):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  args = [f"--{k}={v}" for k, v in flag_values.items()]
  return subprocess.run(
      [sys.executable, "-m", "tools.compute_color_prior", *args], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)


def _bin_index(ab):
  return {tuple(c): i for i, c in enumerate(ab_bins.bin_centres())}[ab]


@pytest.mark.slow
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
  run = _run_tool(source="folder", path=images, num_images=3, image_size=16,
                  output=output)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "Wrote the colour prior of 2 colour images" in run.stdout
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


@pytest.mark.slow
def test_gray_only_source_is_an_error(tmp_path):
  Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(tmp_path / "g.png")
  run = _run_tool(source="folder", path=tmp_path, num_images=2,
                  output=tmp_path / "prior.npy")
  assert run.returncode == 1 and "is in colour" in run.stderr
  assert not (tmp_path / "prior.npy").exists()


@pytest.mark.slow
def test_shipped_default_is_the_prior_of_the_builtin_photos(tmp_path):
  output = tmp_path / "prior.npy"
  run = _run_tool(source="builtin", num_images=9, output=output)
  assert run.returncode == 0, run.stderr[-2000:]
  np.testing.assert_allclose(ab_bins.load_prior(str(output)),
                             ab_bins.load_prior(), rtol=1e-6, atol=1e-12)
