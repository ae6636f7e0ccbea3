"""Compute accounting, save policy and model_dir compatibility checks."""

import json
import os

import pytest

from mtssl_tf import config
from mtssl_tf.training import checkpointing


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
