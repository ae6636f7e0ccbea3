"""SavedModel export round trip: load in a fresh process, compare outputs."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf import export
from mtssl_tf.tasks import base
from mtssl_tf.training import loop
from tests.training import toy_task

ROOT = os.path.dirname(os.path.dirname(__file__))

LOAD_SCRIPT = r'''
import sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = {}
for name in ("features", "lasso_a", "lasso_b"):
  fn = model.signatures[name]
  for key, value in fn(images=tf.constant(images)).items():
    out[f"{name}/{key}"] = value.numpy()
floats = (images.astype(np.float32) / 127.5 - 1.0)
for key, value in model.signatures["features_float"](
    images=tf.constant(floats)).items():
  out[f"features_float/{key}"] = value.numpy()
np.savez(sys.argv[3], **out)
print("signatures", sorted(model.signatures))
'''


def _load_in_fresh_process(export_dir, images, tmp_path):
  np.save(tmp_path / "images.npy", images)
  out = tmp_path / "out.npz"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  run = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, export_dir,
                        str(tmp_path / "images.npy"), str(out)],
                       capture_output=True, text=True, timeout=600, env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "features_float" in run.stdout and "serving_default" in run.stdout
  return dict(np.load(out))


@pytest.mark.slow
def test_export_round_trip_with_lasso(tmp_path):
  trunk_cfg = config.TrunkConfig(depth=26, base_width=8)
  tasks = {n: toy_task.Task(name=n) for n in ("a", "b")}
  cfg = config.TrainConfig(model_dir=str(tmp_path / "run"), max_steps=3,
                           batch_size=2, lasso=True, lasso_l1=0.01,
                           lasso_init="uniform", checkpoint_every_secs=0)
  result = loop.train(trunk_cfg, tasks, {"a": None, "b": None}, cfg,
                      log=lambda s: None)
  network = result.network
  export_dir = export.export(export.module_from_network(network),
                             str(tmp_path / "saved_model"))
  images = np.random.default_rng(0).integers(
      0, 256, (2, 40, 48, 3)).astype(np.uint8)
  loaded = _load_in_fresh_process(export_dir, images, tmp_path)

  endpoints = network.trunk(base.to_trunk_range(images), training=False)
  for sig in ("features", "features_float"):
    np.testing.assert_allclose(loaded[f"{sig}/block3"], endpoints["block3"],
                               rtol=1e-4, atol=1e-4)
    for unit in network.unit_names:
      np.testing.assert_allclose(loaded[f"{sig}/{unit.replace('/', '_')}"],
                                 endpoints[unit], rtol=1e-4, atol=1e-4)
  for task in ("a", "b"):
    want = network.representation(task, endpoints)
    np.testing.assert_allclose(loaded[f"lasso_{task}/representation"], want,
                               rtol=1e-4, atol=1e-4)
  assert loaded["features/block3"].shape == (2, 5, 6, 128)

  # The standalone exporter rebuilds the same model from the model_dir.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  second = str(tmp_path / "from_checkpoint")
  run = subprocess.run(
      [sys.executable, "-m", "mtssl_tf.export",
       f"--checkpoint={tmp_path / 'run'}", f"--export_dir={second}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "lasso_a" in run.stdout
  reloaded = _load_in_fresh_process(second, images, tmp_path)
  for key, value in loaded.items():
    np.testing.assert_allclose(reloaded[key], value, rtol=1e-5, atol=1e-5)

  run = subprocess.run(
      [sys.executable, "-m", "mtssl_tf.export",
       f"--checkpoint={tmp_path / 'nothing'}", f"--export_dir={second}",
       "--overwrite"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert run.returncode == 1 and "neither a model_dir" in run.stderr
  assert tf.saved_model.contains_saved_model(second)


@pytest.mark.slow
def test_export_refuses_to_overwrite_and_uses_the_umask(tmp_path):
  trunk_cfg = config.TrunkConfig(depth=14, base_width=8)
  cfg = config.TrainConfig(model_dir=str(tmp_path / "run"), max_steps=0,
                           checkpoint_every_secs=0)
  loop.train(trunk_cfg, {"a": toy_task.Task(name="a")}, {"a": None}, cfg,
             log=lambda s: None)
  reference = tmp_path / "mkdir"
  reference.mkdir()  # what any new directory of this user gets
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  target = tmp_path / "sm"

  def run_export(*extra):
    return subprocess.run(
        [sys.executable, "-m", "mtssl_tf.export",
         f"--checkpoint={tmp_path / 'run'}", f"--export_dir={target}",
         *extra], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=env)

  first = run_export()
  assert first.returncode == 0, first.stderr[-3000:]
  for chatter in ("Found untraced functions", "Assets written to"):
    assert chatter not in first.stdout + first.stderr  # TF's INFO lines
  assert (os.stat(target).st_mode & 0o777) == (
      os.stat(reference).st_mode & 0o777)  # was 0700 (mkdtemp's)
  stamp = os.stat(target / "saved_model.pb").st_mtime_ns
  again = run_export()
  assert again.returncode == 1
  assert "already exists; pass --overwrite to replace it" in again.stderr
  assert os.stat(target / "saved_model.pb").st_mtime_ns == stamp
  assert run_export("--overwrite").returncode == 0
  assert os.stat(target / "saved_model.pb").st_mtime_ns != stamp
  notes = tmp_path / "notes"
  notes.mkdir()
  (notes / "todo.txt").write_text("keep me")
  target = notes
  refused = run_export("--overwrite")
  assert refused.returncode == 1 and "not a SavedModel" in refused.stderr
  assert (notes / "todo.txt").read_text() == "keep me"
