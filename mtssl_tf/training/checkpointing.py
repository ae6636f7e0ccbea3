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

One run at a time: ``ModelDirLock`` holds an exclusive ``flock`` on
``<model_dir>/.lock`` for the whole run (the kernel drops it when the process
dies, so a killed run never leaves a lock that blocks); a second run on the
same directory is refused with the holder's pid and host.

No checkpoint holds non-finite values: the loop checks every checkpointed
variable before each save (``step.all_finite``); ``nonfinite_tensors``
inspects a checkpoint on disk and ``set_aside_from`` takes untrusted ones out
of the index. ``check_free_disk`` refuses to start the first save when the
disk cannot hold it.
"""

import dataclasses
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

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


def model_state(network, optimizers, state) -> Tuple[dict, list]:
  """What a training checkpoint holds, and every value in it.

  Returns ``(objects, values)``: the trackables of a
  ``tf.train.Checkpoint(**objects)`` (trunk, heads, lasso, per-task
  optimizers, run state), and the variables of trunk, heads, lasso and
  optimizers, which must all be finite before a save (issue 11: no
  checkpoint ever holds non-finite values). Shared by the synchronous loop
  and the parameter-server mode, so both save and check the same set.
  """
  objects = dict(trunk=network.trunk, heads=network.heads,
                 lasso=network.lasso, optimizers=optimizers, state=state)
  modules = ([network.trunk] + list(network.heads.values()) +
             list(network.lasso.values()) + list(optimizers.values()))
  return objects, [v for module in modules for v in module.variables]


def run_info(tasks: Sequence[str], trunk_config, lasso: bool) -> dict:
  return {"tasks": list(tasks),
          "trunk": dataclasses.asdict(trunk_config),
          "lasso": bool(lasso)}


def umask_mode(mode: int = 0o666) -> int:
  """``mode`` filtered by the process umask (what ``open()`` would create)."""
  umask = os.umask(0)
  os.umask(umask)
  return mode & ~umask


def _atomic_write_json(path: str, value: dict) -> None:
  directory = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=directory)
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  # mkstemp creates 0600; a run's files are shared like any other file.
  os.chmod(tmp, umask_mode())
  os.replace(tmp, path)


LOCK_FILE = ".lock"


class ModelDirLock:
  """Exclusive lock on a model directory for the lifetime of one run.

  ``acquire`` creates ``model_dir`` if needed and takes a non-blocking
  ``flock`` on ``model_dir/.lock``, then writes the holder's pid, host and
  start time into it. The lock belongs to the open file: it is released by
  ``release``, or by the kernel when the process exits or is killed, so a
  lock file left by a dead process never blocks a new run.

  Raises (``acquire``):
    ValueError: another live process holds the lock (the message names its
      pid and host), or the directory is not writable.
  """

  def __init__(self, model_dir: str):
    self.path = os.path.join(model_dir, LOCK_FILE)
    self._file = None

  def acquire(self) -> "ModelDirLock":
    directory = os.path.dirname(self.path)
    try:
      os.makedirs(directory, exist_ok=True)
      f = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    except OSError as e:
      raise ValueError(
          f"--model_dir {directory!r} is not writable ({e}); choose a "
          f"directory you can write to.") from None
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "unknown process"
      f.close()
      raise ValueError(
          f"--model_dir {directory!r} is in use by another training run "
          f"({holder}). Two runs in one directory would mix their "
          f"checkpoints; wait for that run to finish (or stop it), or choose "
          f"another --model_dir.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


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


def nonfinite_tensors(prefix: str) -> List[str]:
  """Names of the float tensors of checkpoint ``prefix`` with NaN or Inf."""
  reader = tf.train.load_checkpoint(prefix)
  bad = []
  for name, dtype in reader.get_variable_to_dtype_map().items():
    if dtype.is_floating and not np.all(np.isfinite(reader.get_tensor(name))):
      bad.append(name)
  return sorted(bad)


def newest_finite_checkpoint(prefixes: Sequence[str]) -> Optional[str]:
  """The last of ``prefixes`` (oldest first) whose values are all finite."""
  for prefix in reversed(list(prefixes)):
    try:
      if not nonfinite_tensors(prefix):
        return prefix
    except (tf.errors.OpError, ValueError):
      continue
  return None


def _checkpoint_number(prefix: str) -> int:
  return int(prefix.rsplit("-", 1)[1])


def set_aside_from(model_dir: str, first_bad_step: int):
  """Makes the newest trusted finite checkpoint the one a rerun resumes from.

  Checkpoints numbered ``>= first_bad_step`` are not trusted (e.g. the state
  whose very next loss was NaN, though finite itself); neither are
  checkpoints with NaN/Inf values. They stay on disk but leave the index
  (the "checkpoint" file), so ``tf.train.latest_checkpoint`` and a rerun
  pick the newest trusted one.

  Returns:
    (the trusted prefix or None, the prefixes set aside).
  """
  state = tf.train.get_checkpoint_state(model_dir)
  prefixes = list(state.all_model_checkpoint_paths) if state else []
  trusted = [p for p in prefixes if _checkpoint_number(p) < first_bad_step]
  good = newest_finite_checkpoint(trusted)
  kept = [p for p in trusted if good and
          _checkpoint_number(p) <= _checkpoint_number(good)]
  aside = [p for p in prefixes if p not in kept]
  if aside:
    if good:
      tf.compat.v1.train.update_checkpoint_state(model_dir, good, kept)
    else:
      index = os.path.join(model_dir, "checkpoint")
      os.replace(index, index + ".set_aside")
  return good, aside


def variables_bytes(variables) -> int:
  """Bytes that ``variables`` take in a checkpoint (their values)."""
  return int(sum(np.prod(v.shape) * v.dtype.size for v in variables))


def check_free_disk(directory: str, needed_bytes: int, keep: int) -> None:
  """Raises ValueError if ``directory``'s disk cannot hold the next save.

  A save needs ``needed_bytes`` next to the checkpoints kept (the old one is
  deleted only after the new one is complete). The message states the
  footprint of ``keep`` checkpoints so the user can plan the run.
  """
  free = shutil.disk_usage(directory).free
  if free < needed_bytes * 1.05:
    raise ValueError(
        f"Not enough free disk in {directory!r} for a checkpoint: one takes "
        f"{needed_bytes / 2**20:.0f} MiB ({keep} kept: "
        f"{keep * needed_bytes / 2**20:.0f} MiB) but {free / 2**20:.0f} MiB "
        f"are free. Free some space, use a --model_dir on a larger disk, or "
        f"shrink the model (--head_width_multiplier, --keep_checkpoints).")
