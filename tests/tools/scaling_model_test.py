"""tools/scaling_model.py on hand-computable inputs (run as a user runs it)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.slow
def test_lockstep_runs_at_the_slowest_task_and_async_does_not():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  # A depth-14 width-8 trunk and no head: G is small, so at 1000 Gbit/s
  # communication is negligible and the rates are 1/step time.
  run = subprocess.run(
      [sys.executable, "-m", "tools.scaling_model", "--step_times=a:0.5,b:2",
       "--depth=14", "--base_width=8", "--head_mparams=0", "--workers=1,2",
       "--link_gbps=1000", "--ps=1", "--batch_size=10"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  rows = {}
  for line in run.stdout.splitlines():
    cells = [c.strip() for c in line.split("|")]
    if len(cells) == 6 and cells[0].isdigit():
      rows[(int(cells[0]), cells[1])] = (float(cells[2]), float(cells[3]),
                                         float(cells[4]), cells[5])
  a, b, images, limit = rows[(2, "async")]
  assert abs(a - 2.0) < 0.01 and abs(b - 0.5) < 0.01
  assert abs(images - (a + b) * 2 * 10) < 0.5
  assert limit == "per-task compute"
  a, b, images, limit = rows[(2, "sync_before")]
  assert abs(a - 0.5) < 0.01 and a == b and limit == "slowest task"
  # Tasks x trunk all-reduced before, trunk after: after is never slower.
  assert rows[(2, "sync_after")][0] >= rows[(2, "sync_before")][0]
