"""The training loop on a tiny trunk with toy tasks (tests/training/toy_task.py)."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.training import loop
from tests.training import toy_task

TRUNK = config.TrunkConfig(depth=14, base_width=8)


def _tasks(*names, **kwargs):
  return {n: toy_task.Task(toy_task.Config(**kwargs), name=n) for n in names}


def _train(model_dir, tasks, **kwargs):
  cfg = config.TrainConfig(model_dir=str(model_dir), **{
      "batch_size": 4, "learning_rate": 0.01, "log_every_steps": 5,
      "checkpoint_every_secs": 0, **kwargs})
  lines = []
  result = loop.train(TRUNK, tasks, {t: None for t in tasks}, cfg,
                      log=lines.append)
  return result, lines


def _event_tags(model_dir):
  tags = {}
  for path in glob.glob(os.path.join(model_dir, "train", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return tags


def test_two_tasks_learn_with_their_own_optimizer_slots(tmp_path):
  result, lines = _train(tmp_path, _tasks("a", "b"), max_steps=20)
  assert result.state == {"global_step": 20, "cost": 40.0, "steps_a": 20,
                          "steps_b": 20}
  first = float(lines[1].split("a loss ")[1].split()[0])
  assert result.last_logs["a"]["loss"] < 0.5 * first
  assert result.last_logs["b"]["accuracy"] == 1.0
  assert any("ETA" in line and "img/s" in line for line in lines)

  names = [n for n, _ in tf.train.list_variables(result.checkpoint)]
  trunk_var = "block2.Sunit_1.Sbottleneck_v2.Sconv2.Skernel"
  for task in ("a", "b"):
    assert f"optimizers/{task}/ms/{trunk_var}/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert f"optimizers/{task}/mom/{trunk_var}/.ATTRIBUTES/VARIABLE_VALUE" in names
  # A head has slots only in its own task's optimizer.
  assert any(n.startswith("optimizers/a/ms/a_head.Slogits") for n in names)
  assert not any(n.startswith("optimizers/a/ms/b_head.Slogits") for n in names)
  assert not any(n.startswith("optimizers/b/ms/a_head.Slogits") for n in names)
  tags = _event_tags(str(tmp_path))
  assert {"a/loss", "a/accuracy", "b/trunk_images_per_sec", "cost"} <= set(tags)


def test_a_head_is_only_updated_by_its_task(tmp_path):
  """b trains at learning rate 0: a's updates move the shared trunk but
  never b's head."""
  rates = {"a": 0.01, "b": 0.0}
  result, _ = _train(tmp_path, _tasks("a", "b"), max_steps=0,
                     task_learning_rate=rates)
  initial = tf.train.load_checkpoint(result.checkpoint)
  result, _ = _train(tmp_path, _tasks("a", "b"), max_steps=3,
                     task_learning_rate=rates)
  final = tf.train.load_checkpoint(result.checkpoint)
  names = [n for n, _ in tf.train.list_variables(result.checkpoint)
           if n.endswith("VARIABLE_VALUE") and "optimizers" not in n]
  def changed(prefix):
    return [not np.array_equal(initial.get_tensor(n), final.get_tensor(n))
            for n in names if n.startswith(prefix) and "moving_" not in n]
  assert changed("heads/b/") and not any(changed("heads/b/"))
  assert any(changed("heads/a/"))
  assert any(changed("trunk/"))


def test_steps_per_cycle_and_compute_accounting(tmp_path):
  result, lines = _train(tmp_path, _tasks("a", "b"), max_steps=3,
                         steps_per_cycle={"a": 2}, task_step_cost={"b": 2.5},
                         checkpoint_every_steps=0, checkpoint_every_cost=5.0)
  assert result.state == {"global_step": 3, "cost": 13.5, "steps_a": 6,
                          "steps_b": 3}
  saves = [line for line in lines if line.startswith("Saved")]
  assert any("cost crossed 5" in s for s in saves)
  assert any("cost crossed 10" in s for s in saves)


def test_resume_continues_at_the_saved_step(tmp_path):
  result, _ = _train(tmp_path, _tasks("a"), max_steps=4)
  saved = {v.name: v.numpy() for v in result.network.trunk.weights}
  result, lines = _train(tmp_path, _tasks("a"), max_steps=4)
  assert any(line.startswith("Already at step 4") for line in lines)
  restored = {v.name: v.numpy() for v in result.network.trunk.weights}
  for name, value in saved.items():
    np.testing.assert_array_equal(restored[name], value)
  result, lines = _train(tmp_path, _tasks("a"), max_steps=6)
  assert any("Resumed from" in line and "ckpt-4" in line for line in lines)
  assert result.state["global_step"] == 6 and result.state["steps_a"] == 6


def test_incompatible_run_is_refused_and_left_untouched(tmp_path):
  result, _ = _train(tmp_path, _tasks("a"), max_steps=2)
  files = {f: os.path.getmtime(os.path.join(tmp_path, f))
           for f in os.listdir(tmp_path)}
  with pytest.raises(ValueError, match="holds a different run"):
    _train(tmp_path, _tasks("a", "b"), max_steps=4)
  assert {f: os.path.getmtime(os.path.join(tmp_path, f))
          for f in os.listdir(tmp_path)} == files
  assert result.checkpoint.endswith("ckpt-2")


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  tasks = _tasks("a", nan_after=3)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"Task 'a' has a non-finite loss.*global step 3.*"
                           r"ckpt-2"):
    _train(tmp_path, tasks, max_steps=10, checkpoint_every_steps=2)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")


def test_lasso_heatmap_and_images_in_tensorboard(tmp_path):
  result, _ = _train(tmp_path, _tasks("a", "b"), max_steps=4, lasso=True,
                     lasso_l1=0.01, log_every_steps=2,
                     image_summary_every_steps=2)
  tags = _event_tags(str(tmp_path))
  assert tags["lasso/abs_alpha"] == [2, 4]
  assert "a/inputs" in tags and "b/inputs" in tags
  alpha = result.network.alpha_matrix().numpy()
  assert alpha.shape == (2, 1)  # depth 14: one block-3 unit


def test_profile_steps_write_a_trace(tmp_path):
  _train(tmp_path, _tasks("a"), max_steps=4, profile_steps=(1, 2))
  traces = glob.glob(os.path.join(tmp_path, "profile", "**", "*.xplane.pb"),
                     recursive=True)
  assert traces and os.path.getsize(traces[0]) > 0
