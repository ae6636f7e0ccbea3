"""Flags -> configs for python -m mtssl_tf.main: flagfiles and start-up errors."""

import glob
import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from mtssl_tf import config
from mtssl_tf import main
from mtssl_tf.tasks import base
from mtssl_tf.tasks import colorization
from mtssl_tf.tasks import relative_position

ROOT = os.path.dirname(os.path.dirname(__file__))
# Training flagfiles (eval_*.cfg are python -m mtssl_tf.evaluate's,
# experiment_*.cfg python -m mtssl_tf.experiment's).
FLAGFILES = sorted(f for f in glob.glob(os.path.join(ROOT, "flags", "*.cfg"))
                   if not os.path.basename(f).startswith(("eval_",
                                                          "experiment_")))


def _configs(*args):
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["main"] + list(args))
    return main.build_configs()


def test_there_is_a_flagfile_per_paper_experiment():
  names = {os.path.basename(f)[:-4] for f in FLAGFILES}
  assert {"rp", "col", "ex", "ms", "rp_col", "rp_ex", "rp_ms", "rp_col_ex",
          "all4", "rp_harmonized", "rp_col_harmonized",
          "all4_lasso", "imagenet_labels"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_every_flagfile_parses_and_validates(path):
  trunk, task_configs, data, train, export_dir = _configs(
      f"--flagfile={path}")
  name = os.path.basename(path)
  if name.startswith("demo_"):  # the tiny built-in demonstration's trunk
    assert trunk.depth == 26 and trunk.base_width == 8
  elif "sup" in task_configs:  # the supervised baseline: a standard ResNet
    assert trunk.depth == 101 and trunk.output_stride is None
    assert task_configs["sup"].num_classes == 1000
    assert train.model_dir == os.path.join("runs", name[:-4])
  else:  # a paper experiment
    assert trunk.depth == 101 and trunk.output_stride == 8
    assert train.model_dir == os.path.join("runs", name[:-4])
  assert set(task_configs) == set(data)
  assert export_dir is None
  if "harmonized" in name:
    assert task_configs["rp"].harmonize
  if "lasso" in name:
    assert train.lasso and train.lasso_l1 == 0.01
  for t in task_configs:
    assert data[t].source == "builtin", t


def test_task_options_and_maps():
  trunk, task_configs, _, train, _ = _configs(
      "--tasks=rp,col", "--col.head_width=64",
      "--rp.patch_units=((64,16,2),(32,16,2))", "--rp.harmonize=true",
      "--replicas_per_task=rp:2,col:2", "--task_step_cost=col:2.5",
      "--output_stride=16", "--profile_steps=3,5")
  assert task_configs["col"] == colorization.Config(head_width=64)
  assert task_configs["rp"] == relative_position.Config(
      patch_units=((64, 16, 2), (32, 16, 2)), harmonize=True)
  assert base.TrunkFacts.of(trunk).output_stride == 16
  assert train.replicas_per_task == {"rp": 2, "col": 2}
  assert train.task_step_cost == {"col": 2.5}
  assert train.profile_steps == (3, 5)


def test_each_task_reads_the_source_of_its_kind(tmp_path):
  _, _, data, _, _ = _configs("--tasks=rp,ms,col", "--motion_source=folder",
                              f"--motion_path={tmp_path}")
  assert data["ms"] == config.DataConfig(source="folder", path=str(tmp_path))
  assert data["rp"] == data["col"] == config.DataConfig()


@pytest.mark.parametrize("args,match", [
    (["--tasks=rp,jigsaw"], r"Unknown task\(s\) \['jigsaw'\].*registered"),
    (["--tasks=rp,rp"], "names a task twice"),
    (["--lasso_l1=0.1"], "--lasso is off"),
    (["--tasks=col", "--rp.harmonize=true"],
     r"--rp.harmonize configures task 'rp', which is not in --tasks"),
    (["--replicas_per_task=rp:1,ex:1"], r"names \['ex'\], which are not in"),
    (["--output_stride=4"], "--output_stride must be one of"),
    (["--depth=34"], "Unknown ResNet-v2 depth"),
    (["--image_source=folder"], "--image_path is required"),
    (["--profile_steps=5"], "two integers"),
    (["--col.head_width=wide"], "--col.head_width: invalid literal"),
    (["--ex.margin=1"], "'ex', which is not in --tasks"),
    (["--steps_per_cycle=rp:0"], r"--steps_per_cycle must be >= 1"),
    (["--replicas_per_task=rp:two"],
     r"--replicas_per_task: 'two' is not a valid int \(in 'rp:two'\)"),
    (["--task_step_cost=rp"], "expected key:value pairs like rp:2,col:1"),
    (["--mixed_precision=fp8"], r"--mixed_precision must be one of \("),
    (["--lasso", "--lasso_init=random"], r"--lasso_init must be one of"),
    (["--lasso_init=uniform"], "--lasso is off"),
    (["--max_steps=many"], r"--max_steps: invalid literal"),
    (["--rp.patch_size=-3"],
     r"Task 'rp': relative_position Config: patch_size=-3 must be > 0\. "
     r"Set it with --rp\.<field>=<value>"),
    (["--tasks=ex", "--ex.patch_size=300"], "must be <= image_size 256"),
    (["--tasks=rp,rot", "--rot.image_size=300"], "must be <= resize_size"),
    (["--checkpoint_every_steps=-1"],
     r"--checkpoint_every_steps must be >= 0 \(0: off\), got -1"),
    (["--learning_rate=-1"], "--learning_rate must be > 0, got -1.0"),
    (["--learning_rate=0"], "--learning_rate must be > 0"),
    (["--keep_checkpoints=0"], "--keep_checkpoints must be >= 1, got 0"),
    (["--checkpoint_every_secs=-5"], "--checkpoint_every_secs must be >= 0"),
    (["--init_checkpoint=/nonexistent/model.ckpt"],
     r"--init_checkpoint '/nonexistent/model.ckpt' is not a checkpoint \(no "
     r"/nonexistent/model.ckpt.index\)"),
])
def test_invalid_flags_fail_with_a_message(args, match):
  with pytest.raises(main.UsageError, match=match):
    _configs(*args)


def test_head_width_multiplier_scales_every_head_then_overrides_apply():
  _, paper, _, _, _ = _configs("--tasks=rp,col,ex,ms")
  _, small, _, _, _ = _configs("--tasks=rp,col,ex,ms",
                               "--head_width_multiplier=0.125",
                               "--ms.head_width=7")
  assert paper["col"].head_width == 4096 and small["col"].head_width == 512
  assert paper["rp"].fc_width == 4608 and small["rp"].fc_width == 576
  assert small["rp"].fc_bottleneck == 64
  assert small["rp"].patch_units == ((128, 16, 2), (64, 16, 2))
  assert small["ex"].patch_units == ((128, 16, 2), (64, 16, 2))
  assert small["ms"].head_width == 7  # the override wins
  assert small["rp"].patch_size == paper["rp"].patch_size  # not a width
  with pytest.raises(main.UsageError, match="must be > 0"):
    _configs("--head_width_multiplier=0")


def test_export_dir_is_checked_at_start_up(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(main.UsageError, match=r"--export_dir: Cannot write the "
                     r"export to .*file/sm.*is not a writable directory"):
    _configs(f"--export_dir={blocker}/sm")
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "todo.txt").write_text("keep me")
  with pytest.raises(main.UsageError, match=r"is not a SavedModel directory "
                     r".*refusing to replace it"):
    _configs(f"--export_dir={tmp_path}/notes")
  *_, export_dir = _configs(f"--export_dir={tmp_path}/new/sm")
  assert export_dir == f"{tmp_path}/new/sm"
  assert not os.path.exists(f"{tmp_path}/new")  # nothing written


@pytest.mark.slow
def test_command_line_errors_exit_nonzero_with_the_message(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  blocker = tmp_path / "file"
  blocker.write_text("")
  for args, message in [
      (["--tasks=rp,foo"], "Unknown task(s) ['foo']"),
      (["--tasks=rp", "--depth=14", "--base_width=8",
        f"--model_dir={blocker}/run"], "is not writable"),
      (["--tasks=rp", "--depth=14", "--base_width=8", "--image_source=folder",
        f"--image_path={tmp_path}/missing", f"--model_dir={tmp_path}/run"],
       "does not exist"),
  ]:
    run = subprocess.run([sys.executable, "-m", "mtssl_tf.main", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    assert message in run.stderr
  assert not os.path.exists(tmp_path / "run")  # nothing written on failure
