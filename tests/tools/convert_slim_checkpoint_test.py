"""The converter as a user runs it: ``python -m tools.convert_slim_checkpoint``."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mtssl_tf import config
from mtssl_tf.models import resnet_v2
from mtssl_tf.models import slim_conversion
from tests import slim_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
      [sys.executable, "-m", "tools.convert_slim_checkpoint", *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_converts_and_rejects(tmp_path):
  images = {"x": np.random.default_rng(3).uniform(
      -1, 1, (1, 48, 48, 3)).astype(np.float32)}
  slim_prefix = str(tmp_path / "resnet_v2_14.ckpt")
  want, _ = slim_reference.build_and_save(14, slim_prefix, images, (8,),
                                          seed=7)
  out_prefix = str(tmp_path / "out" / "trunk")

  result = _run(f"--input={slim_prefix}", f"--output={out_prefix}",
                "--depth=14")
  assert result.returncode == 0, result.stderr
  assert "Converted resnet_v2_14" in result.stdout
  assert "Ignored" in result.stdout  # block 4, postnorm

  trunk = resnet_v2.build_trunk(config.TrunkConfig(depth=14))
  slim_conversion.restore_trunk(trunk, out_prefix)
  got = trunk(images["x"], training=False)["block3"].numpy()
  ref = want[("x", 8)]["block3"]
  assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))

  # Wrong depth: exit code 1, a message naming both depths, nothing written.
  bad_out = tmp_path / "bad"
  result = _run(f"--input={slim_prefix}", f"--output={bad_out}/trunk",
                "--depth=50")
  assert result.returncode == 1
  assert "resnet_v2_14" in result.stderr and "depth 50" in result.stderr
  assert not bad_out.exists() or not os.listdir(bad_out)

  # Missing input.
  result = _run(f"--input={tmp_path}/nothing.ckpt", f"--output={bad_out}/t")
  assert result.returncode == 1
  assert "not a readable TensorFlow checkpoint" in result.stderr
