"""The training loop on a tiny trunk with toy tasks (tests/training/toy_task.py)."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.training import checkpointing
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


@pytest.mark.slow
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


@pytest.mark.slow
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
  def stamps():  # .lock records the latest holder, nothing of the run
    return {f: os.path.getmtime(os.path.join(tmp_path, f))
            for f in os.listdir(tmp_path) if f != ".lock"}
  files = stamps()
  with pytest.raises(ValueError, match="holds a different run"):
    _train(tmp_path, _tasks("a", "b"), max_steps=4)
  assert stamps() == files
  assert result.checkpoint.endswith("ckpt-2")


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  tasks = _tasks("a", nan_after=3)  # the 4th loss, i.e. global step 4
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"Task 'a' had a non-finite loss at global step 4 "
                           r".*the newest checkpoint, .*ckpt-2, is finite"):
    _train(tmp_path, tasks, max_steps=10, checkpoint_every_steps=2)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")


def _all_checkpoints_finite(model_dir):
  prefixes = tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_paths
  assert prefixes
  for prefix in prefixes:
    assert checkpointing.nonfinite_tensors(prefix) == [], prefix


@pytest.mark.slow
def test_nan_guard_checks_the_updated_values_not_just_the_loss(tmp_path):
  """At learning rate 3e38 the loss and gradients are finite but the update
  makes weights Inf: the run stops at that very step, before any save, and
  names a checkpoint that is truly finite (the old guard saved ckpt-3 with Inf
  weights and called it the last good one)."""
  steep = dict(loss_scale=100.0)  # large gradients, kept large by a tiny
  _train(tmp_path, _tasks("a", **steep), max_steps=2,  # learning rate
         checkpoint_every_steps=1, learning_rate=1e-12)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"Task 'a' had non-finite values after its update "
                           r".*at global step 3 .*the newest checkpoint, "
                           r".*ckpt-2, is finite and a rerun resumes") as e:
    _train(tmp_path, _tasks("a", **steep), max_steps=10,
           checkpoint_every_steps=1, learning_rate=3e38)
  assert "set aside" not in str(e.value)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
  _all_checkpoints_finite(str(tmp_path))


@pytest.mark.slow
def test_a_checkpoint_whose_next_loss_is_nan_is_set_aside(tmp_path):
  """At 1e38 step 3's update leaves huge but finite weights (saved as ckpt-3)
  and step 4's loss is NaN: ckpt-3 cannot be resumed from, so it is set aside
  and the message and a rerun at a sane learning rate use ckpt-2."""
  _train(tmp_path, _tasks("a"), max_steps=2, checkpoint_every_steps=1)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"non-finite loss at global step 4 .*the newest "
                           r"checkpoint, .*ckpt-2, is finite .*ckpt-3 set "
                           r"aside"):
    _train(tmp_path, _tasks("a"), max_steps=10, checkpoint_every_steps=1,
           learning_rate=1e38)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
  _all_checkpoints_finite(str(tmp_path))
  result, lines = _train(tmp_path, _tasks("a"), max_steps=4,
                         checkpoint_every_steps=1)
  assert any("Resumed from" in line and "ckpt-2" in line for line in lines)
  assert result.state["global_step"] == 4
  _all_checkpoints_finite(str(tmp_path))


def test_nan_guard_on_a_fresh_run_saves_nothing(tmp_path):
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"at global step 1 .*no usable checkpoint"):
    _train(tmp_path, _tasks("a", loss_scale=100.0), max_steps=10,
           checkpoint_every_steps=1, learning_rate=3e38)
  assert tf.train.latest_checkpoint(str(tmp_path)) is None


@pytest.mark.slow
def test_resume_passes_over_a_nonfinite_checkpoint(tmp_path):
  """A checkpoint with NaN (from a version without the guard) is never
  resumed from: the newest finite one is."""
  result, _ = _train(tmp_path, _tasks("a"), max_steps=2,
                     checkpoint_every_steps=1)
  prefix = result.checkpoint  # ckpt-2; rewritten with one NaN tensor
  reader = tf.train.load_checkpoint(prefix)
  names = sorted(n for n, dtype in reader.get_variable_to_dtype_map().items()
                 if dtype != tf.variant)  # not the input pipeline state
  values = [reader.get_tensor(n) for n in names]
  poisoned = [n for n in names if n.startswith("trunk/") and
              n.endswith("VARIABLE_VALUE")][0]
  values[names.index(poisoned)] = np.full_like(
      values[names.index(poisoned)], np.nan)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                    shape_and_slices=[""] * len(names), tensors=values)
  assert checkpointing.nonfinite_tensors(prefix) == [poisoned]
  result, lines = _train(tmp_path, _tasks("a"), max_steps=3)
  assert any("ckpt-2 holds non-finite values" in line for line in lines)
  assert any(line.startswith("Resumed from") and "ckpt-1" in line
             for line in lines)
  assert result.state["global_step"] == 3
  assert checkpointing.nonfinite_tensors(result.checkpoint) == []


@pytest.mark.slow
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


def test_a_second_run_on_the_same_model_dir_is_refused(tmp_path):
  with checkpointing.ModelDirLock(str(tmp_path)):
    with pytest.raises(ValueError, match=rf"in use by another training run "
                       rf"\(pid {os.getpid()} on host"):
      _train(tmp_path, _tasks("a"), max_steps=1)
  assert not os.path.exists(tmp_path / "run.json")


class _BadSourceTask(toy_task.Task):
  def make_dataset(self, data, batch_size, seed=None):
    raise ValueError("Image folder '/nonexistent' does not exist.")


def test_nothing_is_written_before_the_inputs_are_validated(tmp_path):
  """A source that fails at start-up leaves no run.json (which would refuse
  a corrected run with other tasks as 'a different run')."""
  model_dir = tmp_path / "run"
  with pytest.raises(ValueError, match="does not exist"):
    _train(model_dir, {"a": _BadSourceTask(name="a")}, max_steps=1)
  assert not model_dir.exists()
  with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
    _train(model_dir, _tasks("a"), max_steps=1, keep_checkpoints=0)
  with pytest.raises(ValueError, match="init_checkpoint .* is not a "
                     "checkpoint"):
    _train(model_dir, _tasks("a"), max_steps=1,
           init_checkpoint=str(tmp_path / "missing"))
  assert not model_dir.exists()
  result, _ = _train(model_dir, _tasks("b"), max_steps=1)  # not refused
  assert result.state["global_step"] == 1


def test_first_eta_excludes_tracing(tmp_path):
  """Tracing the step takes 4 s here; the ETA of the first progress line
  (2 steps left) comes from the steps after it (it said >= 4 s before)."""
  _, lines = _train(tmp_path, _tasks("a", trace_seconds=4.0), max_steps=4,
                    log_every_steps=2, checkpoint_every_steps=0)
  first = [line for line in lines if line.startswith("step 2/4")][0]
  hours, minutes, seconds = map(int, first.rsplit("ETA ", 1)[1].split(":"))
  assert hours * 3600 + minutes * 60 + seconds < 3, first


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
  """The input pipelines' positions are checkpointed: a run stopped at step
  3 and resumed sees the same batches as an uninterrupted run."""
  whole, _ = _train(tmp_path / "whole", _tasks("a", "b"), max_steps=6,
                    checkpoint_every_steps=0)
  _train(tmp_path / "split", _tasks("a", "b"), max_steps=3,
         checkpoint_every_steps=0)
  rest, _ = _train(tmp_path / "split", _tasks("a", "b"), max_steps=6)
  for t in ("a", "b"):
    assert rest.loss_history[t] == whole.loss_history[t][3:], t
