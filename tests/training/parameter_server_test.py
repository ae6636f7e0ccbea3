"""Asynchronous tasks on a localhost parameter-server cluster (issue 15).

Each test starts tools/launch_cluster.py (1 ps, workers, and
tests/training/ps_chief.py as the chief: toy tasks, depth-14 trunk) in
subprocesses. Task b's batches wait in its worker's input pipeline (a slow
task that costs no CPU; the machine running the tests is shared).
"""

import ast
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.tasks import task_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _launch(spec, workers, restarts=3, pid_file=None):
  args = [sys.executable, "-m", "tools.launch_cluster", f"--workers={workers}",
          "--ps=1", "--module=tests.training.ps_chief",
          f"--restarts={restarts}"]
  if pid_file:
    args.append(f"--pid_file={pid_file}")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  # Its own process group, so that a failing test can stop the whole cluster.
  return subprocess.Popen(args + ["--", json.dumps(spec)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)


def _stop(proc):
  if proc.poll() is None:
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    proc.wait()


def _result(output):
  lines = [l for l in output.splitlines() if l.startswith("RESULT ")]
  assert lines, output[-4000:]
  return json.loads(lines[-1][len("RESULT "):])


def _finish(proc, timeout=600):
  try:
    output = proc.communicate(timeout=timeout)[0]
  finally:
    _stop(proc)
  assert proc.returncode == 0, output[-4000:]
  return output


@pytest.mark.slow
def test_fast_task_does_not_wait_for_slow_task(tmp_path):
  spec = {"model_dir": str(tmp_path / "run"), "max_steps": 50,
          "sleep_ms": {"b": 1000}, "workers": {"a": 1, "b": 1}}
  result = _result(_finish(_launch(spec, "a:1,b:1")))
  # Budget: 50 synchronous cycles' compute = 100 updates, split by speed.
  state = result["state"]
  assert state["steps_a"] + state["steps_b"] == 100
  assert state["cost"] == 100.0 and state["global_step"] == 50
  assert state["steps_b"] >= 3, state
  updates = result["updates"]
  assert len(updates["a"]) == state["steps_a"]
  assert state["steps_a"] >= 3 * state["steps_b"], state
  for t in ("a", "b"):
    losses = [u[2] for u in updates[t]]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0], (t, losses)
  # While b's updates (after its first, which includes tracing) are in
  # flight, a completes several of its own: a never waits for b.
  overlapped = [sum(1 for s, e, _, _ in updates["a"] if bs <= s and e <= be)
                for bs, be, _, _ in updates["b"][1:]]
  assert overlapped and sum(overlapped) >= 2 * len(overlapped), overlapped
  assert max(overlapped) >= 3, overlapped
  a_times = [e - s for s, e, _, _ in updates["a"][2:]]
  b_times = [e - s for s, e, _, _ in updates["b"][1:]]
  assert np.median(a_times) < 0.5 * np.median(b_times), (a_times, b_times)


@pytest.mark.slow
def test_killed_worker_is_replaced_and_the_run_finishes(tmp_path):
  pid_file = tmp_path / "pids.json"
  # Both tasks wait in their pipelines, so the run lasts >= ~10 s after its
  # first step however fast the machine is (with only b slow, a finished
  # the run before the kill on an idle machine: CI, session 2).
  spec = {"model_dir": str(tmp_path / "run"), "max_steps": 40,
          "sleep_ms": {"a": 200, "b": 400}, "workers": {"a": 1, "b": 1}}
  proc = _launch(spec, "a:1,b:1", pid_file=str(pid_file))
  try:
    # Kill worker 0 once training is under way.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      time.sleep(0.5)
      if (tmp_path / "run" / "train").exists():
        time.sleep(3.0)
        assert proc.poll() is None, "the run ended before the kill"
        os.kill(json.loads(pid_file.read_text())["worker:0"], signal.SIGKILL)
        break
  except BaseException:
    _stop(proc)
    raise
  output = _finish(proc)
  assert "worker:0 died (SIGKILL)" in output
  state = _result(output)["state"]
  assert state["steps_a"] + state["steps_b"] == 80


@pytest.mark.slow
def test_killed_chief_resumes_at_saved_task_steps(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pid_file = tmp_path / "pids.json"
  model_dir = tmp_path / "run"
  spec = {"model_dir": str(model_dir), "max_steps": 30,
          "checkpoint_every_steps": 2, "log_every_steps": 2,
          "keep_checkpoints": 100,  # the resumed one is read at the end
          "sleep_ms": {"b": 300}, "workers": {"a": 1, "b": 1}}
  proc = _launch(spec, "a:1,b:1", pid_file=str(pid_file))
  try:
    # Kill the chief right after its first checkpoint.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      time.sleep(0.2)
      if model_dir.exists() and any(
          p.startswith("ckpt-") and p.endswith(".index")
          for p in os.listdir(model_dir)):
        # The index appears just before the chief logs "Saved ..."; give it
        # that moment so the log names the checkpoint the restart reads.
        time.sleep(1.0)
        os.kill(json.loads(pid_file.read_text())["chief"], signal.SIGKILL)
        break
  except BaseException:
    _stop(proc)
    raise
  output = _finish(proc)
  assert "chief died (SIGKILL)" in output
  lines = output.splitlines()
  died = next(i for i, l in enumerate(lines) if "chief died (SIGKILL)" in l)
  saved = [l.split()[1] for l in lines[:died] if l.startswith("Saved ")]
  resumed = [l for l in lines if l.startswith("Resumed from ")]
  assert len(resumed) == 1, output[-4000:]
  # The restart resumes from the last checkpoint the killed chief wrote (it
  # is named in the resume line), at the per-task steps stored in that file.
  # The kill may fall between a save and its "Saved" line (a race a
  # 2-worker test run once hit), so the file, not the log, is the reference.
  path = resumed[0].split()[2]
  number = int(path.rsplit("-", 1)[1])
  assert number >= max((int(p.rsplit("-", 1)[1]) for p in saved),
                       default=0), (path, saved)
  reader = tf.train.load_checkpoint(path)
  stored = {"global_step": reader.get_tensor(
                "state/global_step/.ATTRIBUTES/VARIABLE_VALUE"),
            "cost": reader.get_tensor("state/cost/.ATTRIBUTES/VARIABLE_VALUE")}
  stored.update({f"steps_{t}": reader.get_tensor(
      f"state/task_steps/{t}/.ATTRIBUTES/VARIABLE_VALUE") for t in "ab"})
  at = ast.literal_eval(resumed[0].split(" at ", 1)[1])
  assert at == {k: type(at[k])(v) for k, v in stored.items()}, (at, stored)
  assert at["global_step"] == number < 30, at
  state = _result(output)["state"]
  assert state["global_step"] == 30
  assert state["steps_a"] + state["steps_b"] == 60


@pytest.mark.slow
def test_group_of_two_workers_applies_their_average(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mtssl_tf import config  # pylint: disable=g-import-not-at-top
  from mtssl_tf.models import multitask  # pylint: disable=g-import-not-at-top
  from tests.training import ps_chief  # pylint: disable=g-import-not-at-top

  # Run 1 writes the initial weights (ckpt-0); run 2, in the same chief,
  # resumes and makes one update of task a from a round of two closures.
  # In run 3 the loss is NaN (after its 2 evaluations in run 2): the NaN
  # guard stops the run and sets ckpt-1 aside (the state whose loss was NaN).
  spec = {"model_dir": str(tmp_path / "run"), "max_steps": [0, 1, 2],
          "random_start": True, "learning_rate": 0.05, "batch_size": 2,
          "workers": {"a": 2}, "nan_after": {"a": 2}}
  output = _finish(_launch(spec, "2"))
  runs = [json.loads(l[len("RESULT "):]) for l in output.splitlines()
          if l.startswith("RESULT ")]
  assert [r["state"]["steps_a"] for r in runs] == [0, 1], output[-3000:]
  stopped, = [l for l in output.splitlines() if l.startswith("NONFINITE ")]
  assert "Task 'a' had a non-finite loss in its update 2" in stopped, stopped
  assert "Nothing non-finite was saved" in stopped, stopped
  assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-0")
  (_, _, loss, parts), = runs[1]["updates"]["a"]
  starts = [int(p["first_index"]) for p in parts]
  assert len(starts) == 2 and starts[0] != starts[1]  # different batches

  # Hand computation from the initial weights: each closure's gradient on
  # its own batch, averaged, then TF1 RMSProp (ms starts at 1).
  trunk = config.TrunkConfig(depth=14, base_width=8)
  net = multitask.MultiTaskNetwork(trunk, {"a": ps_chief.SlowTask(name="a")})
  variables = net.task_variables("a")
  ckpt = tf.train.Checkpoint(trunk=net.trunk, heads=net.heads)
  ckpt.read(runs[0]["checkpoint"]).expect_partial()
  w0 = [v.numpy() for v in variables]
  grads, losses = [], []
  for start in starts:
    examples = [ps_chief.example(tf.constant(i, tf.int64))
                for i in (start, start + 1)]
    images = tf.stack([e[0] for e in examples])
    labels = {"label": tf.stack([e[1]["label"] for e in examples])}
    grad, _, task_loss, _ = net.forward_backward("a", images, labels)
    grads.append([g.numpy() for g in grad])
    losses.append(float(task_loss))
  assert abs(loss - np.mean(losses)) < 1e-4, (loss, losses)
  expected = []
  for w, g0, g1 in zip(w0, *grads):
    g = (g0 + g1) / 2.0
    ms = 0.9 * 1.0 + 0.1 * g ** 2
    expected.append(w - 0.05 * g / np.sqrt(ms + 1.0))
  ckpt.read(runs[1]["checkpoint"]).expect_partial()
  moved = sum(int(not np.allclose(v.numpy(), w)) for v, w in
              zip(variables, w0))
  error = max(float(np.max(np.abs(v.numpy() - e)))
              for v, e in zip(variables, expected))
  assert moved > 10
  assert error < 2e-5, error


# The README's launcher command on the built-in tasks, with a tiny trunk and
# heads (as tests/training/multi_worker_test.py).
TINY_RP_COL = ["--tasks=rp,col", "--depth=14", "--base_width=8",
               "--batch_size=2", "--image_summary_every_steps=0",
               "--rp.patch_units=((32,8,2),(16,8,2))", "--rp.fc_width=32",
               "--rp.fc_bottleneck=8", "--col.head_width=16",
               "--col.image_size=64"]


def _launch_main(flags):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  proc = subprocess.Popen(
      [sys.executable, "-m", "tools.launch_cluster", "--workers=rp:1,col:1",
       "--ps=1", "--module=mtssl_tf.main", "--"] + flags, cwd=ROOT, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      start_new_session=True)
  try:
    output = proc.communicate(timeout=600)[0]
  finally:
    _stop(proc)
  return proc.returncode, output


@pytest.mark.slow
def test_builtin_tasks_train_through_the_launcher(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mtssl_tf.training import checkpointing  # pylint: disable=g-import-not-at-top

  # A bad flag (a missing image folder) fails before anything is written.
  code, output = _launch_main(TINY_RP_COL + [
      "--image_source=folder", f"--image_path={tmp_path}/missing",
      f"--model_dir={tmp_path}/bad"])
  assert code == 2, output[-3000:]
  assert "does not exist" in output
  assert not os.path.exists(tmp_path / "bad")

  # rp and col on a folder with a corrupt image and a non-image file: each
  # task's worker pipeline counts its skips into the chief's counter.
  images = tmp_path / "images"
  task_fixtures.image_folder(str(images), non_image=True)
  model_dir = tmp_path / "run"
  code, output = _launch_main(TINY_RP_COL + [
      "--image_source=folder", f"--image_path={images}", "--max_steps=4",
      "--checkpoint_every_steps=2", "--log_every_steps=1",
      f"--model_dir={model_dir}"])
  assert code == 0, output[-4000:]
  done, = [l for l in output.splitlines() if l.startswith("Done: ")]
  state = eval(done[len("Done: "):done.index("}") + 1])  # pylint: disable=eval-used
  # Budget: 4 synchronous cycles' compute = 8 updates, split by speed.
  assert state["global_step"] == 4 and state["cost"] == 8.0, state
  assert state["steps_rp"] >= 1 and state["steps_col"] >= 1, state
  latest = tf.train.latest_checkpoint(str(model_dir))
  assert latest.endswith("ckpt-4"), latest
  assert not checkpointing.nonfinite_tensors(latest)
  reader = tf.train.load_checkpoint(latest)
  for t in ("rp", "col"):  # each task's RMSProp applied its own updates
    iterations = [n for n in reader.get_variable_to_shape_map()
                  if n.startswith(f"optimizers/{t}/iter")]
    assert iterations, sorted(reader.get_variable_to_shape_map())[:20]
    assert reader.get_tensor(iterations[0]) == state[f"steps_{t}"]
  # The chief held the model dir's lock (released: the file stays).
  assert (model_dir / ".lock").read_text().startswith("pid ")
  report = json.loads((model_dir / "skipped_inputs.json").read_text())
  for t in ("rp", "col"):
    assert report[t]["files"]["unsupported_format"] == 1, report[t]
    assert report[t]["files"]["undecodable"] == 1, report[t]
    assert report[t]["events"]["undecodable"] >= 1, report[t]
