"""Compute accounting, save policy, model_dir checks, lock and NaN helpers."""

import json
import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.training import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_step_cost_is_steps_times_cost():
  assert checkpointing.step_cost({"rp": 1.0, "col": 2.5},
                                 {"rp": 10, "col": 4}) == 20.0


def test_save_policy_cost_thresholds_steps_and_time():
  now = [0.0]
  policy = checkpointing.SavePolicy(every_steps=0, every_secs=0,
                                    every_cost=10.0, clock=lambda: now[0])
  assert policy.should_save(1, 9.5) is None
  assert policy.should_save(2, 10.0) == "cost crossed 10"
  policy.saved(2, 10.0)
  assert policy.should_save(3, 19.0) is None
  assert policy.should_save(5, 31.0) == "cost crossed 30"

  policy = checkpointing.SavePolicy(every_steps=3, every_secs=60.0,
                                    clock=lambda: now[0])
  assert policy.should_save(2, 0) is None
  assert policy.should_save(3, 0) == "every 3 steps"
  policy.saved(3, 0)
  now[0] = 61.0
  assert policy.should_save(4, 0) == "every 60 s"


def test_model_dir_records_the_run_and_refuses_another(tmp_path):
  trunk = config.TrunkConfig(depth=14)
  model_dir = str(tmp_path / "run")
  info = checkpointing.run_info(["rp", "col"], trunk, lasso=False)
  assert checkpointing.prepare_model_dir(model_dir, info) is False
  assert checkpointing.prepare_model_dir(model_dir, info) is True
  before = open(os.path.join(model_dir, "run.json")).read()
  other = checkpointing.run_info(["rp"], config.TrunkConfig(depth=26), False)
  with pytest.raises(ValueError, match=r"tasks: checkpoint has \['rp', "
                     r"'col'\].*asks for \['rp'\].*new --model_dir"):
    checkpointing.prepare_model_dir(model_dir, other)
  assert open(os.path.join(model_dir, "run.json")).read() == before
  assert json.loads(before)["trunk"]["depth"] == 14


def test_unwritable_model_dir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="not writable"):
    checkpointing.prepare_model_dir(str(blocker / "run"), {})


def test_run_json_gets_the_umask_permissions(tmp_path):
  old = os.umask(0o022)
  try:
    model_dir = str(tmp_path / "run")
    checkpointing.prepare_model_dir(model_dir, {"tasks": ["rp"]})
  finally:
    os.umask(old)
  mode = stat.S_IMODE(os.stat(os.path.join(model_dir, "run.json")).st_mode)
  assert mode == 0o644  # was 0600 (mkstemp's), unreadable by other accounts


_HOLD_LOCK = """
import sys, time
from mtssl_tf.training import checkpointing
lock = checkpointing.ModelDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_model_dir_lock_names_the_holder_and_dies_with_it(tmp_path):
  model_dir = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, model_dir],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError,
                       match=rf"in use by another training run \(pid "
                             rf"{holder.pid} on host {socket.gethostname()}"
                             rf".*choose another --model_dir"):
      checkpointing.ModelDirLock(model_dir).acquire()
  finally:
    holder.kill()  # SIGKILL: no chance to clean up
    holder.wait()
  # The dead holder's lock file is still there but does not block.
  assert f"pid {holder.pid}" in open(os.path.join(model_dir, ".lock")).read()
  with checkpointing.ModelDirLock(model_dir):
    with pytest.raises(ValueError, match=rf"pid {os.getpid()}"):
      checkpointing.ModelDirLock(model_dir).acquire()
  checkpointing.ModelDirLock(model_dir).acquire().release()


def test_set_aside_from_keeps_the_newest_trusted_finite_checkpoint(tmp_path):
  model_dir = str(tmp_path)
  value = tf.Variable([1.0, 2.0])
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=value),
                                       model_dir, max_to_keep=5)
  for step in (1, 2, 3, 4):
    if step == 2:
      value.assign([np.nan, 0.0])
    if step == 3:
      value.assign([1.0, 2.0])
    manager.save(checkpoint_number=step)
  assert checkpointing.nonfinite_tensors(
      os.path.join(model_dir, "ckpt-2")) == ["v/.ATTRIBUTES/VARIABLE_VALUE"]
  good, aside = checkpointing.set_aside_from(model_dir, first_bad_step=4)
  assert good.endswith("ckpt-3") and [os.path.basename(p) for p in aside] == [
      "ckpt-4"]
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-3")
  good, aside = checkpointing.set_aside_from(model_dir, first_bad_step=3)
  assert good.endswith("ckpt-1")  # ckpt-2 holds a NaN
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-1")
  assert os.path.exists(os.path.join(model_dir, "ckpt-3.index"))  # kept
  good, aside = checkpointing.set_aside_from(model_dir, first_bad_step=1)
  assert good is None and tf.train.latest_checkpoint(model_dir) is None


def test_check_free_disk(tmp_path):
  checkpointing.check_free_disk(str(tmp_path), 1024, keep=5)
  with pytest.raises(ValueError, match=r"Not enough free disk .*one takes "
                     r".* MiB \(5 kept: .* MiB\) but .* MiB are free"):
    checkpointing.check_free_disk(str(tmp_path), 2**62, keep=5)
