"""Speed options (training/speed.py) and their use in the training loop."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtssl_tf import config
from mtssl_tf.training import loop
from mtssl_tf.training import speed
from tests.training import toy_task

TRUNK = config.TrunkConfig(depth=14, base_width=8)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _train(model_dir, **kwargs):
  tf_keras.utils.set_random_seed(0)  # the same initial weights in each run
  tasks = {n: toy_task.Task(name=n) for n in ("a", "b")}
  cfg = config.TrainConfig(model_dir=str(model_dir), **{
      "batch_size": 4, "learning_rate": 0.01, "log_every_steps": 2,
      "checkpoint_every_secs": 0, "max_steps": 5, **kwargs})
  lines = []
  result = loop.train(TRUNK, tasks, {t: None for t in tasks}, cfg,
                      log=lines.append)
  return result, lines


def test_precision_policy_is_scoped_and_checked():
  assert tf_keras.mixed_precision.global_policy().name == "float32"
  with speed.precision_policy("mixed_bfloat16"):
    layer = tf_keras.layers.Dense(2)
  assert layer.compute_dtype == "bfloat16" and layer.dtype == "float32"
  assert tf_keras.mixed_precision.global_policy().name == "float32"
  with pytest.raises(ValueError, match="mixed_bfloat16"):
    speed.check_precision("bfloat16")


def test_auto_precision_picks_bf16_only_where_native(monkeypatch):
  assert speed.resolve_precision("auto", flags={"avx2", "fma"},
                                 accelerator=False) == "float32"
  for flag in ("amx_bf16", "avx512_bf16"):
    assert speed.resolve_precision("auto", flags={"avx512f", flag},
                                   accelerator=False) == "mixed_bfloat16"
  assert speed.resolve_precision("auto", flags=set(),
                                 accelerator=True) == "mixed_bfloat16"
  # Explicit choices are kept whatever the hardware.
  assert speed.resolve_precision("float32", flags={"amx_bf16"},
                                 accelerator=True) == "float32"
  assert speed.resolve_precision("mixed_float16", flags=set(),
                                 accelerator=False) == "mixed_float16"
  # The defaults read this machine: patch what it reports.
  monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset({"amx_bf16"}))
  monkeypatch.setattr(speed, "_accelerator_has_bf16", lambda: False)
  with speed.precision_policy("auto"):
    assert tf_keras.mixed_precision.global_policy().name == "mixed_bfloat16"
  monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset({"avx512f"}))
  with speed.precision_policy("auto"):
    assert tf_keras.mixed_precision.global_policy().name == "float32"
  assert tf_keras.mixed_precision.global_policy().name == "float32"


def test_explicit_bf16_without_native_units_warns(monkeypatch):
  warnings = []
  monkeypatch.setattr(speed.logging, "warning",
                      lambda fmt, *args: warnings.append(fmt % args))
  assert speed.resolve_precision("mixed_bfloat16", flags={"avx512f"},
                                 accelerator=False) == "mixed_bfloat16"
  assert len(warnings) == 1
  assert "SLOWER than float32" in warnings[0] and "2.5x" in warnings[0]
  speed.resolve_precision("mixed_bfloat16", flags={"avx512_bf16"},
                          accelerator=False)
  assert len(warnings) == 1  # native: no warning


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nmodel name\t: X\n"
                     "flags\t\t: fpu sse avx512f amx_bf16 amx_tile\n\n")
  assert speed.cpu_flags(str(cpuinfo)) == {"fpu", "sse", "avx512f",
                                           "amx_bf16", "amx_tile"}
  assert speed.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_threads_are_checked_and_cannot_change_after_start():
  with pytest.raises(ValueError, match=">= 0"):
    speed.configure_threads(-1, 0)
  speed.configure_threads(0, 0)  # keeps the defaults: no error
  tf.constant(1.0) + 1.0  # the runtime has started
  current = tf.config.threading.get_intra_op_parallelism_threads()
  speed.configure_threads(current, 0)  # unchanged: no error
  with pytest.raises(ValueError, match="already started"):
    speed.configure_threads(current + 3, 0)


@pytest.mark.slow
def test_steps_per_call_matches_one_step_per_call(tmp_path):
  one, _ = _train(tmp_path / "one")
  three, lines = _train(tmp_path / "three", steps_per_call=3)
  assert three.state == one.state == {"global_step": 5, "cost": 10.0,
                                      "steps_a": 5, "steps_b": 5}
  for t in ("a", "b"):
    assert len(three.loss_history[t]) == 5
    np.testing.assert_allclose(three.loss_history[t], one.loss_history[t],
                               rtol=1e-4)
  # Progress lines still come every log_every_steps global steps.
  assert sum("loss" in line for line in lines) >= 3
  reader = tf.train.load_checkpoint(three.checkpoint)
  assert reader.get_tensor("state/global_step/.ATTRIBUTES/VARIABLE_VALUE") == 5


@pytest.mark.slow
def test_mixed_bfloat16_keeps_float32_variables(tmp_path):
  result, _ = _train(tmp_path, mixed_precision="mixed_bfloat16")
  trunk = result.network.trunk
  conv = trunk.get_layer("block1/unit_1/bottleneck_v2/conv1")
  assert conv.compute_dtype == "bfloat16"
  assert all(v.dtype == tf.float32 for v in trunk.trainable_variables)
  assert result.state["global_step"] == 5
  assert all(np.isfinite(result.loss_history[t]).all() for t in ("a", "b"))
  assert tf_keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_jit_compile_trains_like_the_default(tmp_path):
  default, _ = _train(tmp_path / "default", max_steps=3)
  xla, _ = _train(tmp_path / "xla", max_steps=3, jit_compile=True)
  for t in ("a", "b"):
    np.testing.assert_allclose(xla.loss_history[t], default.loss_history[t],
                               rtol=2e-3, atol=2e-4)


def test_invalid_options_fail_before_training(tmp_path):
  with pytest.raises(ValueError, match="steps_per_call"):
    _train(tmp_path / "a", steps_per_call=0)
  with pytest.raises(ValueError, match="mixed_precision"):
    _train(tmp_path / "b", mixed_precision="half")


def _main(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "mtssl_tf.main", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=900)


@pytest.mark.slow
def test_speed_flags_are_documented():
  result = _main("--helpfull")
  for flag in ("jit_compile", "mixed_precision", "intra_op_threads",
               "inter_op_threads", "steps_per_call"):
    assert f"{flag}:" in result.stdout


@pytest.mark.slow
def test_main_trains_with_speed_flags(tmp_path):
  result = _main(
      "--tasks=rp", "--depth=14", "--base_width=8", "--max_steps=3",
      "--rp.patch_units=((32,8,2),(16,8,2))",
      "--rp.fc_width=32", "--rp.fc_bottleneck=8",
      "--mixed_precision=mixed_bfloat16", "--steps_per_call=2",
      "--intra_op_threads=1", "--inter_op_threads=1", "--log_every_steps=1",
      "--image_summary_every_steps=0", f"--model_dir={tmp_path / 'run'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "'global_step': 3" in result.stdout
