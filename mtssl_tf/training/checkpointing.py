"""Run state, compute accounting and when to checkpoint (paper §4, §6).

Compute accounting (paper §6, "Implementation details"): wall time is not
measured; a task's compute is its step count times a fixed per-step cost, and
the run's cost is the sum over tasks. Checkpoints are taken whenever the summed
cost crosses a multiple of ``checkpoint_every_cost`` (and on step/time
intervals).

Crash safety: ``tf.train.CheckpointManager`` writes a checkpoint's files under
temporary names and renames them, and updates its "checkpoint" index file
atomically after the checkpoint is complete, so a run killed with SIGKILL at
any moment restarts from the last complete checkpoint.

``run.json`` in the model directory records what was trained (tasks, trunk,
lasso). Resuming with a different task set or trunk is refused at start-up,
before anything is written, so an incompatible checkpoint is never overwritten.
"""

import dataclasses
import json
import os
import tempfile
import time
from typing import Dict, Mapping, Optional, Sequence

import tensorflow as tf

RUN_FILE = "run.json"
# Fields of run.json that must match to resume.
COMPATIBILITY_KEYS = ("tasks", "trunk", "lasso")


class RunState(tf.Module):
  """Global and per-task step counters and the accumulated compute cost."""

  def __init__(self, tasks: Sequence[str]):
    super().__init__(name="run_state")
    self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name="global_step")
    self.task_steps = {t: tf.Variable(0, dtype=tf.int64, trainable=False,
                                      name=f"steps_{t}") for t in tasks}
    self.cost = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                            name="cost")

  def as_dict(self) -> Dict[str, float]:
    values = {"global_step": int(self.global_step.numpy()),
              "cost": float(self.cost.numpy())}
    values.update({f"steps_{t}": int(v.numpy())
                   for t, v in self.task_steps.items()})
    return values


def run_info(tasks: Sequence[str], trunk_config, lasso: bool) -> dict:
  return {"tasks": list(tasks),
          "trunk": dataclasses.asdict(trunk_config),
          "lasso": bool(lasso)}


def _atomic_write_json(path: str, value: dict) -> None:
  directory = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=directory)
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def prepare_model_dir(model_dir: str, info: dict) -> bool:
  """Checks that ``model_dir`` is writable and holds a compatible run.

  Returns:
    True if the directory already holds this run (so training resumes).

  Raises:
    ValueError: unwritable directory, or a run with other tasks / trunk /
      lasso setting in it.
  """
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=model_dir, prefix=".probe_")
    probe.close()
  except OSError as e:
    raise ValueError(
        f"--model_dir {model_dir!r} is not writable ({e}); choose a "
        f"directory you can write to.") from None
  path = os.path.join(model_dir, RUN_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    diffs = [k for k in COMPATIBILITY_KEYS if previous.get(k) != info.get(k)]
    if diffs:
      details = "; ".join(f"{k}: checkpoint has {previous.get(k)}, this run "
                          f"asks for {info.get(k)}" for k in diffs)
      raise ValueError(
          f"--model_dir {model_dir!r} holds a different run ({details}). "
          f"Use a new --model_dir, or the same settings to resume. Nothing "
          f"was changed in that directory.")
    return True
  has_checkpoint = tf.train.latest_checkpoint(model_dir) is not None
  if has_checkpoint:
    raise ValueError(
        f"--model_dir {model_dir!r} holds checkpoints but no {RUN_FILE}; it "
        f"was not written by mtssl_tf training. Use a new --model_dir.")
  _atomic_write_json(path, info)
  return False


class SavePolicy:
  """Decides when to save: every N steps, every T seconds, every C cost."""

  def __init__(self, every_steps: int = 0, every_secs: float = 0.0,
               every_cost: float = 0.0, start_step: int = 0,
               start_cost: float = 0.0, clock=time.monotonic):
    self.every_steps = every_steps
    self.every_secs = every_secs
    self.every_cost = every_cost
    self._clock = clock
    self._last_time = clock()
    self._last_step = start_step
    self._cost_bucket = self._bucket(start_cost)

  def _bucket(self, cost: float) -> int:
    return int(cost // self.every_cost) if self.every_cost > 0 else 0

  def should_save(self, step: int, cost: float) -> Optional[str]:
    """Returns the reason to save now, or None."""
    reason = None
    if self.every_cost > 0 and self._bucket(cost) > self._cost_bucket:
      reason = f"cost crossed {self._bucket(cost) * self.every_cost:g}"
    elif self.every_steps > 0 and step - self._last_step >= self.every_steps:
      reason = f"every {self.every_steps} steps"
    elif (self.every_secs > 0 and
          self._clock() - self._last_time >= self.every_secs):
      reason = f"every {self.every_secs:g} s"
    return reason

  def saved(self, step: int, cost: float) -> None:
    self._last_step = step
    self._last_time = self._clock()
    self._cost_bucket = self._bucket(cost)


def step_cost(costs: Mapping[str, float], steps: Mapping[str, int]) -> float:
  """Sum over tasks of steps x per-step cost."""
  return float(sum(costs[t] * n for t, n in steps.items()))
