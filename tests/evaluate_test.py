"""python -m mtssl_tf.evaluate as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys

import pytest

from tests.evaluation import eval_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _evaluate(*args):
  return subprocess.run(
      [sys.executable, "-m", "mtssl_tf.evaluate", *args], cwd=ROOT,
      capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_linear_probe_on_a_training_dir_writes_results(tmp_path):
  eval_fixtures.write_model_dir(str(tmp_path / "run"),
                                task_steps={"rp": 3})
  root = eval_fixtures.write_imagenet(str(tmp_path / "inet"),
                                      per_class=(4, 2))
  out = str(tmp_path / "out")
  args = ["--eval=imagenet_linear", f"--model_dir={tmp_path}/run",
          f"--output_dir={out}", "--imagenet_linear.data.source=folder",
          f"--imagenet_linear.data.train_path={root}/train",
          f"--imagenet_linear.data.val_path={root}/val",
          "--imagenet_linear.resize=36", "--imagenet_linear.crop=32",
          "--imagenet_linear.batch_size=4", "--imagenet_linear.steps=6",
          "--imagenet_linear.eval_batch_size=6",
          "--imagenet_linear.checkpoint_every_steps=3"]
  done = _evaluate(*args)
  assert done.returncode == 0, done.stderr[-2000:]
  results = json.load(open(f"{out}/results.json"))
  assert set(results["metrics"]) == {"top1", "top5"}
  assert results["config"]["steps"] == 6
  assert results["config"]["data"]["train_path"] == f"{root}/train"
  assert results["evaluated"]["source"] == "model_dir"
  assert results["evaluated"]["checkpoint"].endswith("ckpt-1")
  assert results["evaluated"]["block4"] == "random"  # a self-supervised run
  # 3 training steps of BN updates: statistics re-estimated automatically.
  assert results["common"]["recompute_bn_stats"] == 1024
  assert results["counts"]["val_examples"] == 6
  row = open(f"{out}/results.md").read()
  assert row.splitlines()[0] == "| evaluated | evaluation | top1 | top5 |"
  assert row.splitlines()[2].startswith("| run | imagenet_linear | ")
  assert "Re-estimated the statistics" in done.stdout
  assert "have seen 3 updates" in done.stderr  # the auto re-estimation note
  assert results["wall_seconds"] > 0
  # Progress lines with rate and ETA (the last item always prints one).
  assert "imagenet_linear train 6/6 (100%)" in done.stdout
  assert "imagenet_linear validation 6/6 (100%)" in done.stdout
  assert "ETA" in done.stdout and "step/s" in done.stdout
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
  # Finished: not run again.
  again = _evaluate(*args)
  assert again.returncode == 0 and "exists" in again.stdout


# The first case is the quick tier's smoke test of the entry point; each
# further case costs a process start (~7 s of CPU).
@pytest.mark.parametrize("args, message", [
    (["--eval=imagenet_linear"], "exactly one of"),
    pytest.param(["--eval=imagenet_linear", "--random_init", "--model_dir=/x"],
                 "exactly one of", marks=pytest.mark.slow),
    pytest.param(["--eval=imagenet_linear", "--random_init",
                  "--imagenet_linear.data.source=folder"],
                 "train_path is required", marks=pytest.mark.slow),
    pytest.param(["--eval=imagenet_linear", "--random_init",
                  "--imagenet_linear.steps=many"], "--imagenet_linear.steps",
                 marks=pytest.mark.slow),
])
def test_start_up_errors_write_nothing(tmp_path, args, message):
  done = _evaluate(*args, f"--output_dir={tmp_path}/out")
  assert done.returncode == 2
  assert message in done.stderr
  assert not os.path.exists(f"{tmp_path}/out")
