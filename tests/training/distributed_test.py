"""Per-task replica groups on 4 logical CPU devices (paper §4, Figure 2).

With 2 replicas per task, one update must equal the hand-computed one: each
task's gradient averaged over its own two replicas' batches, then its own
RMSProp (TF-Slim semantics), both tasks' updates applied to the shared trunk,
each head only by its task. Logical devices must be configured before
TensorFlow starts, so the check runs in a fresh process.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

SCRIPT = r'''
import dataclasses, json, sys
import numpy as np
from mtssl_tf.training import replicas
strategy = replicas.make_strategy("mirrored", num_cpu_devices=4)
import tensorflow as tf
from mtssl_tf import config
from mtssl_tf.models import multitask
from mtssl_tf.training import loop
from tests.training import toy_task

model_dir = sys.argv[1]
trunk = config.TrunkConfig(depth=14, base_width=8)
names = ["a", "b"]
tasks = lambda: {n: toy_task.Task(name=n) for n in names}
data = {n: None for n in names}
cfg = config.TrainConfig(model_dir=model_dir, max_steps=0, batch_size=2,
                         learning_rate=0.05, checkpoint_every_secs=0,
                         replicas_per_task={"a": 2, "b": 2})
initial = loop.train(trunk, tasks(), data, cfg, strategy=strategy,
                     log=lambda s: None).checkpoint
result = loop.train(trunk, tasks(), data, dataclasses.replace(cfg, max_steps=1),
                    strategy=strategy, log=lambda s: None)

# Hand computation on one device from the initial checkpoint.
ref_tasks = tasks()
net = multitask.MultiTaskNetwork(trunk, ref_tasks)
tf.train.Checkpoint(trunk=net.trunk, heads=net.heads).read(
    initial).expect_partial()
w0 = {v.name: v.numpy() for n in names for v in net.task_variables(n)}
bn_expected = {}
expected = dict(w0)
for i, n in enumerate(names):
  variables = net.task_variables(n)
  dataset, _ = ref_tasks[n].make_dataset(None, 2, seed=cfg.seed + i)
  batches = list(dataset.take(2))
  grads, pooled_means = [], []
  for images, labels in batches:
    block3 = net.trunk(images, training=True)["block3"]
    pooled_means.append(tf.reduce_mean(block3, [0, 1, 2]).numpy())
    with tf.GradientTape() as tape:
      outputs = net(n, images, training=True)
      total = ref_tasks[n].loss(labels, outputs) + net.regularization_loss(n)
    grads.append([g.numpy() for g in tape.gradient(total, variables)])
  # Head batch norm (momentum 0.99, moving mean starts at 0): each replica
  # of the group updates its copy; every copy must end at the group mean.
  bn_expected[n] = 0.01 * np.mean(pooled_means, axis=0)
  for v, g0, g1 in zip(variables, *grads):
    g = (g0 + g1) / 2.0
    ms = 0.9 * 1.0 + 0.1 * g ** 2
    expected[v.name] = expected[v.name] - 0.05 * g / np.sqrt(ms + 1.0)

errors, spread, moved = {}, 0.0, 0
for n in names:
  for v in result.network.task_variables(n):
    got = v.numpy()
    errors[v.name] = float(np.max(np.abs(got - expected[v.name])))
    moved += int(not np.allclose(got, w0[v.name]))
    replicas_values = [c.numpy() for c in v.values]
    spread = max(spread, max(float(np.max(np.abs(r - got)))
                             for r in replicas_values))
bn_error = 0.0
for n in names:
  moving_mean = result.network.heads[n].get_layer(f"{n}_head/bn").moving_mean
  for copy in moving_mean.values:
    bn_error = max(bn_error, float(np.max(np.abs(copy.numpy() -
                                                  bn_expected[n]))))
print("RESULT " + json.dumps({"max_error": max(errors.values()),
                              "bn_error": bn_error,
                              "bn_scale": float(np.max(np.abs(
                                  bn_expected["a"]))),
                              "worst": max(errors, key=errors.get),
                              "spread": spread, "moved": moved,
                              "num_replicas": len(v.values),
                              "state": result.state}))
'''


@pytest.mark.slow
def test_update_equals_per_group_average(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")][-1]
  result = json.loads(line[len("RESULT "):])
  assert result["num_replicas"] == 4
  assert result["state"] == {"global_step": 1, "cost": 2.0, "steps_a": 1,
                             "steps_b": 1}
  assert result["moved"] > 10
  assert result["spread"] == 0.0  # all replicas hold the same weights
  assert result["max_error"] < 2e-5, result
  # Every replica's copy of a head's batch-norm statistics is its group's
  # mean, also on the replicas of the other task.
  assert result["bn_scale"] > 1e-3
  assert result["bn_error"] < 1e-4 * result["bn_scale"] + 1e-7, result
