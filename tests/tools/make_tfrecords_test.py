"""tools/make_tfrecords.py as a user runs it."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "tools.make_tfrecords", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_tool(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for i in range(5):
    Image.fromarray(np.full((6, 7, 3), i * 40, np.uint8)).save(
        images / f"{i}.jpg")
  (images / "bad.png").write_bytes(b"nope")
  out = tmp_path / "out"
  run = _run(f"--input_dir={images}", f"--output_dir={out}",
             "--images_per_shard=2")
  assert run.returncode == 0, run.stderr[-2000:]
  assert "Wrote 5 images in 3 shards" in run.stdout
  assert "skipped bad.png: undecodable" in run.stdout
  assert "checked 6/6 images" in run.stdout

  run = _run(f"--input_dir={tmp_path / 'nothing'}", f"--output_dir={out}2")
  assert run.returncode == 1 and "does not exist" in run.stderr
