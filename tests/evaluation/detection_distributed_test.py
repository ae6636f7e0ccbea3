"""Detector training under tf.distribute and mixed precision (issue 12 item 4).

On 2 logical CPU devices (MirroredStrategy, each replica half of a global
batch of 2) one detector step must give the same update as the default
strategy on one device with the same 2 images, from the same weights; a
mixed_bfloat16 step must run with a finite loss. Logical devices must be
configured before TensorFlow starts, so the check runs in a fresh process.

The set-up makes the step deterministic: one parsed batch is fed to both
(the parser's RPN anchor sampling is random), batch norm is frozen (a
replica's batch statistics are its own half), and the RoI sampler keeps
every candidate (8 proposals + the ground truth < 64 RoIs, at most 25 %
foreground), so no random subset differs between the runs.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

SCRIPT = r'''
import json, sys, time
import numpy as np
from mtssl_tf.training import replicas
mirrored = replicas.make_strategy("mirrored", num_cpu_devices=2)
import tensorflow as tf
import tf_keras
from mtssl_tf import config as config_lib
from mtssl_tf.data import synthetic_voc
from mtssl_tf.data import voc_records
from mtssl_tf.evaluation import detection_training
from mtssl_tf.models import faster_rcnn_c4
from mtssl_tf.training import speed

tmp = sys.argv[1]
synthetic_voc.make_devkit(tmp + "/voc", 2, 0, seed=0)
voc_records.make_records(voc_records.VocRecordsConfig(
    tmp + "/records", voc_dir=tmp + "/voc"))
trunk = config_lib.TrunkConfig(depth=14, base_width=8, output_stride=16)
det = faster_rcnn_c4.DetectorConfig(
    anchor_sizes=(16.0, 32.0, 64.0), num_proposals=8, test_num_proposals=8,
    num_sampled_rois=64, rpn_filters=16)
size = (64, 96)
batch = next(iter(detection_training.dataset(
    tmp + "/records/trainval-*",
    detection_training.make_parser(det, size), 2, True)))
data = tf.data.Dataset.from_tensors(batch).repeat()
settings = detection_training.TrainSettings(
    steps=1, batch_size=2, learning_rate=0.1, decay_steps=(),
    output_size=size, freeze_batch_norm=True, checkpoint_every=10**6)
initial = None
timing = {}


def one_step(strategy, precision, name):
  global initial
  with strategy.scope(), speed.precision_policy(precision):
    tf_keras.utils.set_random_seed(0)
    model = faster_rcnn_c4.build_detector(trunk, det)
    faster_rcnn_c4.create_weights(model, det, size)
  detection_training.freeze_batch_norm(model)  # fixes get_weights' order
  if initial is None:
    initial = model.get_weights()
  model.set_weights(initial)
  logs = []
  began = time.time()
  losses = detection_training.train(model, data, settings, f"{tmp}/{name}",
                                    strategy=strategy, log=logs.append)
  spread = max((float(np.max(np.abs(c.numpy() - v.numpy())))
                for v in model.weights for c in getattr(v, "values", [v])),
               default=0.0)
  timing[name] = time.time() - began
  return model, losses, spread, logs


single, single_losses, _, _ = one_step(tf.distribute.get_strategy(),
                                       "float32", "single")
pair, pair_losses, spread, pair_logs = one_step(mirrored, "float32", "pair")
moved, scale, error = 0, 0.0, 0.0
for w0, a, b in zip(initial, single.get_weights(), pair.get_weights()):
  moved += int(not np.array_equal(w0, a))
  scale = max(scale, float(np.max(np.abs(a - w0))))
  error = max(error, float(np.max(np.abs(a - b))))
mixed, mixed_losses, _, _ = one_step(tf.distribute.get_strategy(),
                                     "mixed_bfloat16", "mixed")
print("RESULT " + json.dumps({
    "replicas": mirrored.num_replicas_in_sync, "moved": moved,
    "update_scale": scale, "max_error": error, "spread": spread,
    "single_loss": single_losses["total_loss"],
    "pair_loss": pair_losses["total_loss"],
    "pair_logs": pair_logs,
    "mixed_dtype": mixed.compute_dtype,
    "mixed_loss": mixed_losses["total_loss"],
    "mixed_skipped": mixed_losses["skipped_steps"], "timing": timing}))
'''


@pytest.mark.slow
def test_mirrored_step_equals_single_device_and_mixed_precision_runs(
    tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")][-1]
  result = json.loads(line[len("RESULT "):])
  assert result["replicas"] == 2
  assert result["moved"] > 10, result
  # The step logs say what is happening while the first step traces.
  assert any("tracing the first step (2 replica(s)" in l
             for l in result["pair_logs"]), result["pair_logs"]
  assert any("step 1 took" in l for l in result["pair_logs"])
  # Same losses (mean over replicas = the global-batch mean) and the same
  # update to float32 rounding (lr 0.1: updates up to ~1e-1).
  assert abs(result["single_loss"] - result["pair_loss"]) < 1e-4 * (
      1 + abs(result["single_loss"])), result
  assert result["update_scale"] > 1e-3, result
  assert result["max_error"] < 1e-4 * result["update_scale"] + 1e-6, result
  assert result["spread"] == 0.0  # both replicas hold the same weights
  assert result["mixed_dtype"] == "bfloat16"
  assert result["mixed_skipped"] == 0
  assert result["mixed_loss"] == pytest.approx(result["single_loss"], rel=0.1)
