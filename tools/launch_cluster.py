r"""Starts a parameter-server training cluster on localhost (paper §4, Fig. 2).

  python -m tools.launch_cluster --workers=rp:2,col:1 --ps=1 -- \
      --tasks=rp,col --model_dir=runs/async --max_steps=1000

starts one parameter server, three workers and the chief, each a process with
its own ``TF_CONFIG`` on a free localhost port, and runs
``python -m mtssl_tf.main --strategy=parameter_server
--replicas_per_task=rp:2,col:1 <training flags>`` as the chief (workers and
parameter servers only serve: ``replicas.serve_if_not_chief``). The chief's
output is this command's output; when the chief exits, the others are
stopped and its exit status is returned.

A worker or chief killed by a signal is restarted (``--restarts`` times
each): a restarted worker rejoins the running job (ClusterCoordinator
re-runs its lost closure elsewhere); a restarted chief resumes from the last
checkpoint in ``--model_dir``.

On a real cluster, run the same command on every host with ``TF_CONFIG``
naming all hosts and that host's own task (see README, "Asynchronous
training"); this tool only writes those ``TF_CONFIG`` values for localhost.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List

from absl import app
from absl import flags

_WORKERS = flags.DEFINE_string(
    "workers", "", "Workers per task, e.g. rp:2,col:1 (passed to the chief as "
    "--replicas_per_task), or a plain count, e.g. 3 (spread evenly).")
_PS = flags.DEFINE_integer("ps", 1, "Number of parameter servers.")
_MODULE = flags.DEFINE_string(
    "module", "mtssl_tf.main", "Python module the chief runs (with "
    "--strategy=parameter_server added unless --module is changed).")
_RESTARTS = flags.DEFINE_integer(
    "restarts", 3, "How often a worker or the chief killed by a signal is "
    "restarted (each).")
_SERVE = flags.DEFINE_bool(
    "serve", False, "Internal: run this process's tf.distribute.Server (a "
    "worker or parameter server; TF_CONFIG says which).")
_PID_FILE = flags.DEFINE_string(
    "pid_file", "", "If set, a JSON file with the process id of every task "
    "(\"chief\", \"worker:0\", ...), rewritten on restarts (for tests).")


def free_ports(n: int) -> List[int]:
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def cluster_spec(num_workers: int, num_ps: int) -> Dict[str, List[str]]:
  """``{"chief": [addr], "worker": [...], "ps": [...]}`` on free ports."""
  ports = [f"localhost:{p}" for p in free_ports(1 + num_workers + num_ps)]
  return {"chief": ports[:1], "worker": ports[1:1 + num_workers],
          "ps": ports[1 + num_workers:]}


def parse_workers(text: str):
  """"rp:2,col:1" -> (3, "rp:2,col:1"); "3" -> (3, "")."""
  text = text.strip()
  if text.isdigit():
    return int(text), ""
  counts = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    name, sep, value = item.partition(":")
    if not sep or not value.strip().isdigit() or int(value) < 1:
      raise app.UsageError(f"--workers: expected task:count pairs like "
                           f"rp:2,col:1 or a count, got {item!r}.")
    counts[name.strip()] = int(value)
  if not counts:
    raise app.UsageError("--workers is required, e.g. --workers=rp:2,col:1.")
  return sum(counts.values()), ",".join(f"{t}:{n}" for t, n in counts.items())


def main(argv):
  if _SERVE.value:
    from mtssl_tf.training import replicas  # pylint: disable=g-import-not-at-top
    replicas.serve_if_not_chief()
    return 0
  num_workers, per_task = parse_workers(_WORKERS.value)
  if _PS.value < 1:
    raise app.UsageError("--ps must be >= 1.")
  training_flags = list(argv[1:])
  cluster = cluster_spec(num_workers, _PS.value)
  chief_cmd = [sys.executable, "-u", "-m", _MODULE.value] + training_flags
  if _MODULE.value == "mtssl_tf.main":
    chief_cmd.append("--strategy=parameter_server")
    if per_task and not any(f.startswith("--replicas_per_task")
                            for f in training_flags):
      chief_cmd.append(f"--replicas_per_task={per_task}")
  serve_cmd = [sys.executable, "-m", "tools.launch_cluster", "--serve"]

  def start(job, index):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": job, "index": index}}))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if job == "chief":
      return subprocess.Popen(chief_cmd, env=env)
    return subprocess.Popen(serve_cmd, env=env, stdout=subprocess.DEVNULL)

  procs = {f"ps:{i}": start("ps", i) for i in range(_PS.value)}
  procs.update({f"worker:{i}": start("worker", i) for i in range(num_workers)})
  procs["chief"] = start("chief", 0)
  restarts = {key: 0 for key in procs}
  print(f"launch_cluster: {json.dumps(cluster)}", flush=True)

  def write_pids():
    if _PID_FILE.value:
      tmp = _PID_FILE.value + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump({k: p.pid for k, p in procs.items()}, f)
      os.replace(tmp, _PID_FILE.value)

  write_pids()

  def on_term(signum, frame):
    del frame
    raise SystemExit(128 + signum)  # runs the cleanup below

  signal.signal(signal.SIGTERM, on_term)
  try:
    while True:
      time.sleep(0.2)
      for key, proc in list(procs.items()):
        code = proc.poll()
        if code is None:
          continue
        killed = code < 0 and key != "ps" and not key.startswith("ps:")
        if key == "chief" and not (killed and restarts[key] < _RESTARTS.value):
          return code if code >= 0 else 128 - code
        if killed and restarts[key] < _RESTARTS.value:
          restarts[key] += 1
          print(f"launch_cluster: {key} died ({signal.Signals(-code).name});"
                f" restart {restarts[key]}/{_RESTARTS.value}", flush=True)
          job, index = ("chief", 0) if key == "chief" else (
              key.split(":")[0], int(key.split(":")[1]))
          procs[key] = start(job, index)
          write_pids()
        elif key.startswith("ps:"):
          print(f"launch_cluster: {key} exited ({code}); the run cannot go "
                f"on without its variables.", flush=True)
          procs["chief"].kill()
          return 1
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
    for proc in procs.values():
      proc.wait()


if __name__ == "__main__":
  app.run(main)
