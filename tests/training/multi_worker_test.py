"""Two workers on localhost with MultiWorkerMirroredStrategy from TF_CONFIG:
one replica each, rp on worker 0 (the chief) and col on worker 1; only the
chief writes the model directory."""

import json
import os
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.slow
def test_two_workers_train_and_the_chief_writes(tmp_path):
  model_dir = tmp_path / "run"
  workers = [f"localhost:{p}" for p in _free_ports(2)]
  args = [sys.executable, "-u", "-m", "mtssl_tf.main", "--tasks=rp,col",
          "--strategy=multi_worker", "--depth=14", "--base_width=8",
          "--max_steps=3", "--log_every_steps=1", f"--model_dir={model_dir}",
          "--checkpoint_every_steps=2", "--image_summary_every_steps=0",
          "--rp.patch_units=((32,8,2),(16,8,2))",
          "--rp.fc_width=32", "--rp.fc_bottleneck=8",
          "--col.head_width=16", "--col.image_size=64"]
  procs = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers},
                 "task": {"type": "worker", "index": index}}
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config),
               TF_CPP_MIN_LOG_LEVEL="2")
    procs.append(subprocess.Popen(args, cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT))
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=600)[0])
  finally:
    for proc in procs:
      proc.kill()
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
  chief, other = outputs
  assert "Replica plan (2 replicas): rp: replicas [0], col: replicas [1]" in chief
  assert "step 3/3" in chief and "step 3/3" not in other
  assert "'global_step': 3, 'cost': 6.0, 'steps_rp': 3, 'steps_col': 3" in chief
  assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-3")
  assert sorted(p for p in os.listdir(model_dir) if not p.startswith("ckpt")) \
      == [".lock", "checkpoint", "run.json", "train"]  # no worker scratch
