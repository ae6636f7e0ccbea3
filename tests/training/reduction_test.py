"""Synchronous mode exchanges only each task's own gradients (issue 15).

On 2 logical CPU replicas with 2 tasks (replica 0 computes a, replica 1
computes b), ``TaskStep.cycle`` sums each task over its own group: a replica
hands over its one task's results (trunk + head) instead of all-reducing
every task's (tasks x trunk, zeros for the task it does not run). The update
must equal the all-reduce one. Logical devices must be configured before
TensorFlow starts, so the check runs in a fresh process.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

SCRIPT = r'''
import json
import numpy as np
from mtssl_tf.training import replicas
strategy = replicas.make_strategy("mirrored", num_cpu_devices=2)
import tensorflow as tf
import tf_keras
from mtssl_tf import config
from mtssl_tf.models import multitask
from mtssl_tf.training import optimizers
from mtssl_tf.training import step as step_lib
from tests.training import toy_task

names = ["a", "b"]
tasks = {n: toy_task.Task(name=n) for n in names}
batches = {n: next(iter(tasks[n].make_dataset(None, 2, seed=i)[0]))
           for i, n in enumerate(names)}
plan = replicas.plan_replicas(names, 2)
out = {}
for reduction in ("all_reduce", "group"):
  tf_keras.utils.set_random_seed(0)
  with strategy.scope():
    net = multitask.MultiTaskNetwork(config.TrunkConfig(depth=14, base_width=8),
                                     tasks)
    opts = {n: optimizers.SlimRMSProp(0.05, name=f"rmsprop_{n}")
            for n in names}
    for n in names:
      opts[n].build(net.task_variables(n))
  task_step = step_lib.TaskStep(net, opts, lambda t: batches[t],
                                label_specs={n: batches[n][1] for n in names})
  task_step.reduction = reduction
  run = tf.function(lambda: task_step.cycle(names, strategy, plan))
  logs = run()
  weights = {v.name: v.numpy() for n in names for v in net.task_variables(n)}
  out[reduction] = dict(
      weights=weights, loss={n: float(logs[n]["loss"]) for n in names},
      bytes=task_step.reduced_bytes[tuple(names)])
own = {n: sum(int(np.prod(v.shape)) * 4 for v in
              net.task_variables(n) + net.heads[n].non_trainable_variables)
       for n in names}
error = max(float(np.max(np.abs(out["group"]["weights"][k] -
                                out["all_reduce"]["weights"][k])))
            for k in out["group"]["weights"])
print("RESULT " + json.dumps({
    "error": error, "own": own, "num_weights": len(out["group"]["weights"]),
    "loss": {r: out[r]["loss"] for r in out},
    "bytes": {r: out[r]["bytes"] for r in out}}))
'''


@pytest.mark.slow
def test_each_task_is_reduced_over_its_own_group_only():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")][-1]
  result = json.loads(line[len("RESULT "):])
  own = result["own"]
  logs_bytes = 4 * 4  # loss, total_loss, examples, accuracy (float32)
  before, after = result["bytes"]["all_reduce"], result["bytes"]["group"]
  assert before["reduction"] == "all_reduce"
  assert after["reduction"] == "group"
  # Before: every replica all-reduces both tasks (its own and the other's
  # zeros); after: replica 0 hands over task a only, replica 1 task b only.
  total = own["a"] + own["b"] + 2 * logs_bytes
  assert before["per_replica"] == [total, total]
  assert after["per_replica"] == [own["a"] + logs_bytes,
                                  own["b"] + logs_bytes]
  assert after["per_replica"][0] < 0.55 * before["per_replica"][0]
  # The same update either way.
  assert result["num_weights"] > 20
  assert result["loss"]["group"] == result["loss"]["all_reduce"]
  assert result["error"] < 1e-6, result
