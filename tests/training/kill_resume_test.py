"""kill -9 at an arbitrary moment, then resume (paper-scale runs take days).

The run reads TFRecord shards (one of them truncated): the hardest source to
resume exactly, since shards are interleaved and bad records skipped."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.tasks import registry
from mtssl_tf.training import loop
from tests.tasks import task_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
TINY_RP = ["--rp.patch_units=((32,8,2),(16,8,2))",
           "--rp.fc_width=32", "--rp.fc_bottleneck=8"]


def _records(folder):
  """Three shards of tiny JPEG records, the last one truncated."""
  os.makedirs(folder, exist_ok=True)
  for s in range(3):
    path = os.path.join(folder, f"train-{s}.tfrecord")
    task_fixtures.image_records(path, 3)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  return os.path.join(folder, "train-*")


def _main_args(model_dir, max_steps, records):
  return [sys.executable, "-u", "-m", "mtssl_tf.main", "--tasks=rp",
          "--image_source=tfrecord", f"--image_path={records}",
          "--depth=14", "--base_width=8", f"--model_dir={model_dir}",
          f"--max_steps={max_steps}", "--checkpoint_every_steps=1",
          "--keep_checkpoints=3", "--log_every_steps=1",
          "--image_summary_every_steps=0", *TINY_RP]


@pytest.mark.slow
def test_sigkill_then_resume_at_the_saved_step(tmp_path):
  model_dir = str(tmp_path / "run")
  records = _records(str(tmp_path / "records"))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen(_main_args(model_dir, 10_000, records), cwd=ROOT,
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  saves = 0
  deadline = time.monotonic() + 600
  for line in proc.stdout:  # wait for a few checkpoints
    saves += line.startswith("Saved")
    if saves >= 3 or time.monotonic() > deadline:
      break
  time.sleep(random.Random(os.getpid()).uniform(0.0, 1.5))
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert saves >= 3
  assert proc.returncode == -signal.SIGKILL

  latest = tf.train.latest_checkpoint(model_dir)
  step = int(latest.rsplit("-", 1)[1])
  reader = tf.train.load_checkpoint(latest)  # complete and readable
  saved = {n: reader.get_tensor(n)  # not the input pipelines' state (variant)
           for n, dtype in reader.get_variable_to_dtype_map().items()
           if dtype != tf.variant}
  assert int(saved["state/global_step/.ATTRIBUTES/VARIABLE_VALUE"]) == step

  # Resuming restores exactly the saved weights, counters and slots.
  task_cfg = registry.get_module("rp").Config(
      patch_units=((32, 8, 2), (16, 8, 2)), fc_width=32, fc_bottleneck=8)
  result = loop.train(
      config.TrunkConfig(depth=14, base_width=8), {
          "rp": registry.build("rp", task_cfg)},
      {"rp": config.DataConfig("tfrecord", records)},
      config.TrainConfig(model_dir=model_dir, max_steps=step),
      log=lambda s: None)
  assert result.state["global_step"] == step
  assert result.state["steps_rp"] == step
  check = tf.train.Checkpoint(trunk=result.network.trunk,
                              heads=result.network.heads)
  written = check.write(str(tmp_path / "restored"))
  for name, _ in tf.train.list_variables(written):
    if name.endswith("VARIABLE_VALUE"):
      np.testing.assert_array_equal(
          tf.train.load_checkpoint(written).get_tensor(name), saved[name],
          err_msg=name)

  # And the command line continues from there, on the same examples as a
  # run that was never interrupted (the input pipelines' positions are in
  # the checkpoint): the losses agree step for step.
  run = subprocess.run(_main_args(model_dir, step + 2, records), cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"Resumed from {latest}" in run.stdout
  assert f"'global_step': {step + 2}" in run.stdout
  reference = subprocess.run(
      _main_args(str(tmp_path / "uninterrupted"), step + 2, records),
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert reference.returncode == 0, reference.stderr[-3000:]
  resumed, whole = _losses(run.stdout), _losses(reference.stdout)
  assert sorted(resumed) == [step + 1, step + 2]
  assert resumed == {s: whole[s] for s in resumed}, (resumed, whole)


def _losses(stdout):
  """{step: "rp loss" text} of the progress lines (4 decimals)."""
  losses = {}
  for line in stdout.splitlines():
    if line.startswith("step "):
      step = int(line.split()[1].split("/")[0])
      losses[step] = line.split("rp loss ")[1].split()[0]
  return losses

