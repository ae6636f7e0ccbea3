"""python -m mtssl_tf.experiment as a user runs it: pre-train to compute
points, evaluate each, tabulate; a rerun resumes and redoes nothing."""

import json
import math
import os
import subprocess
import sys

import pytest

from mtssl_tf.reporting import compute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = 3.5 * 4 * 350 / 1281167  # 3.5 rp updates of batch 4 per checkpoint


def _experiment(*args):
  return subprocess.run(
      [sys.executable, "-m", "mtssl_tf.experiment",
       "--train_flagfile=flags/demo_rp.cfg", "--row=rp", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_experiment_end_to_end_and_resume(tmp_path):
  args = [f"--experiments_root={tmp_path}", f"--tick_gpu_hours={TICK!r}",
          "--checkpoints=1,2", "--evals=imagenet_linear",
          "--eval_flagfile=flags/eval_builtin_linear.cfg",
          "--train_flag=--depth=14", "--train_flag=--log_every_steps=1",
          "--eval_flag=--imagenet_linear.steps=3",
          "--eval_flag=--recompute_bn_stats=16"]
  done = _experiment(*args)
  assert done.returncode == 0, done.stderr[-3000:]
  experiment = json.load(open(f"{tmp_path}/rp/experiment.json"))
  # Checkpoint k at the first step whose cost reaches k * TICK: 4 and 7.
  assert {k: v["step"] for k, v in experiment["checkpoints"].items()} == {
      "1": math.ceil(3.5), "2": 7}
  assert experiment["step_cost_gpu_hours"]["rp"] == pytest.approx(
      4 * compute.example_cost("rp"))
  assert [r["checkpoint"] for r in experiment["results"]] == [1, 2]
  table = open(f"{tmp_path}/rp/table.md").read().splitlines()
  assert table[0].startswith("| row | checkpoint | ImageNet top1 | "
                             "ImageNet top1 (paper) | ImageNet |")
  assert table[2].startswith("| rp | 1 |") and "| 36.21 |" in table[2]
  # Rerun: pre-training is already done, evaluations are skipped.
  again = _experiment(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Already at step 7" in again.stdout + again.stderr
  assert again.stdout.count("exists (use --overwrite") == 2
  assert json.load(open(f"{tmp_path}/rp/experiment.json"))["results"] == (
      experiment["results"])


def test_flags_the_experiment_owns_are_refused(tmp_path):
  done = _experiment(f"--experiments_root={tmp_path}",
                     "--train_flag=--max_steps=5")
  assert done.returncode == 2 and "--max_steps" in done.stderr
  assert not os.path.exists(f"{tmp_path}/rp")
