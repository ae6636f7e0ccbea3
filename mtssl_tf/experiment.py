r"""One paper experiment end to end: ``python -m mtssl_tf.experiment``.

Pre-trains the experiment of a training flagfile (resuming if already done),
takes checkpoints at the paper's compute points (§6: summed per-task cost
crossing multiples of ``--tick_gpu_hours``, ``reporting/compute.py``), runs
every requested evaluation on every selected checkpoint, and writes
``experiment.json`` and ``table.md`` (ours beside the paper's published
numbers) under ``<--experiments_root>/<row>``:

  python -m mtssl_tf.experiment --train_flagfile=flags/rp_col.cfg \
      --evals=imagenet_linear,voc07_svm --checkpoints=1,7 \
      --eval_flagfile=flags/eval_imagenet_linear.cfg \
      --train_flag=--image_source=folder --train_flag=--image_path=/data/in

Pre-training and each evaluation run as their own processes
(``python -m mtssl_tf.main`` / ``python -m mtssl_tf.evaluate``), so each keeps
its own flags, resumes after a kill, and is skipped when done (an evaluation
whose results.json exists is not run again). Rerunning the same command after
an interruption continues where it stopped. ``python -m mtssl_tf.paper_report``
gathers experiments into the paper's tables and figures.
"""

import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

from absl import app
from absl import flags

from mtssl_tf.reporting import compute
from mtssl_tf.reporting import tables

_TRAIN_FLAGFILE = flags.DEFINE_string(
    "train_flagfile", None, "The experiment's training flagfile (flags/*.cfg: "
    "one per paper table row).")
_TRAIN_FLAG = flags.DEFINE_multi_string(
    "train_flag", [], "An extra flag for python -m mtssl_tf.main (repeat), "
    "e.g. --train_flag=--image_path=/data/imagenet/train.")
_EVALS = flags.DEFINE_list("evals", ["imagenet_linear"],
                           "Evaluations to run on each checkpoint.")
_EVAL_FLAGFILE = flags.DEFINE_multi_string(
    "eval_flagfile", [], "Flagfiles for python -m mtssl_tf.evaluate (repeat; "
    "e.g. flags/eval_imagenet_linear.cfg with the data paths).")
_EVAL_FLAG = flags.DEFINE_multi_string(
    "eval_flag", [], "An extra flag for python -m mtssl_tf.evaluate (repeat).")
_EVAL_LASSO = flags.DEFINE_bool(
    "eval_lasso", False, "Also evaluate with the evaluation's own lasso "
    "(Table 4's '+ Eval Lasso' rows).")
_CHECKPOINTS = flags.DEFINE_list(
    "checkpoints", ["7"], "Compute points to evaluate: checkpoint k is taken "
    "after k * --tick_gpu_hours of pre-training (7 = 16.8K GPU-hours, Tables "
    "2-4).")
_TICK = flags.DEFINE_float(
    "tick_gpu_hours", compute.TICK_GPU_HOURS, "GPU-hours between checkpoints "
    "(the paper's ~2.4K; small values make short demonstrations).")
_RANDOM_BASELINE = flags.DEFINE_bool(
    "random_baseline", False, "Also evaluate a randomly initialised trunk of "
    "the same architecture (Figures 3-4's 'Random Init').")
_EXPERIMENTS_ROOT = flags.DEFINE_string(
    "experiments_root", "runs/experiments", "Experiments go to "
    "<experiments_root>/<row>/ (pre-training, evaluations, experiment.json).")
_ROW = flags.DEFINE_string(
    "row", None, "The paper table row (default: the flagfile's name, e.g. "
    "rp_col).")

EXPERIMENT_FILE = "experiment.json"
# Training flags that the experiment sets itself.
_OWNED = ("--model_dir", "--max_steps", "--task_step_cost",
          "--checkpoint_every_cost", "--checkpoint_every_steps",
          "--checkpoint_every_secs", "--keep_checkpoints")


def _read_flag_lines(path: str) -> List[str]:
  lines = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line.startswith("--flagfile="):
        lines += _read_flag_lines(line.split("=", 1)[1])
      elif line.startswith("--"):
        lines.append(line)
  return lines


def training_plan(flag_lines: List[str]) -> Tuple[List[str], Dict[str, int],
                                                  Dict[str, int]]:
  """(tasks, batch size per task, updates per cycle per task) of the flags,
  with mtssl_tf.main's defaults (rp,col; batch 2; 1 update per cycle)."""
  values = {}
  for line in flag_lines:
    name, _, value = line.partition("=")
    values[name] = value
  tasks = [t for t in values.get("--tasks", "rp,col").split(",") if t]
  batch = int(values.get("--batch_size", 2))

  def task_map(name):
    text = values.get(name, "")
    return {k: int(v) for k, v in (item.split(":") for item in text.split(",")
                                   if item)}
  per_task = task_map("--task_batch_size")
  return (tasks, {t: per_task.get(t, batch) for t in tasks},
          task_map("--steps_per_cycle"))


def _run(command: List[str], what: str) -> None:
  print(f"== {what}: {' '.join(command)}", flush=True)
  done = subprocess.run(command, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"{what} failed (exit {done.returncode}); rerun the "
                       f"same command to resume.")


def checkpoint_costs(model_dir: str) -> List[Tuple[str, float, int]]:
  """(prefix, summed cost, global step) of every checkpoint kept."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  state = tf.train.get_checkpoint_state(model_dir)
  found = []
  for prefix in (state.all_model_checkpoint_paths if state else []):
    prefix = os.path.join(model_dir, os.path.basename(prefix))
    cost = float(tf.train.load_variable(
        prefix, "state/cost/.ATTRIBUTES/VARIABLE_VALUE"))
    step = int(tf.train.load_variable(
        prefix, "state/global_step/.ATTRIBUTES/VARIABLE_VALUE"))
    found.append((prefix, cost, step))
  return sorted(found, key=lambda item: item[2])


def run(argv):
  """Pre-train, checkpoint at compute points, evaluate, tabulate."""
  del argv
  try:
    if not _TRAIN_FLAGFILE.value or not os.path.isfile(_TRAIN_FLAGFILE.value):
      raise ValueError(f"--train_flagfile must name a training flagfile "
                       f"(flags/*.cfg), got {_TRAIN_FLAGFILE.value!r}.")
    owned = [f for f in _TRAIN_FLAG.value if f.split("=")[0] in _OWNED]
    if owned:
      raise ValueError(f"The experiment sets {owned} itself; drop them.")
    checkpoints = sorted({int(k) for k in _CHECKPOINTS.value})
    if not checkpoints or checkpoints[0] < 1:
      raise ValueError("--checkpoints must be positive integers, e.g. 1,7.")
    if _TICK.value <= 0:
      raise ValueError("--tick_gpu_hours must be positive.")
    row = _ROW.value or os.path.splitext(
        os.path.basename(_TRAIN_FLAGFILE.value))[0]
    exp_dir = os.path.join(_EXPERIMENTS_ROOT.value, row)
    lines = _read_flag_lines(_TRAIN_FLAGFILE.value) + list(_TRAIN_FLAG.value)
    tasks, batch_sizes, per_cycle = training_plan(lines)
    costs = compute.step_costs(batch_sizes)
    steps = {k: compute.steps_for_checkpoint(k, batch_sizes, per_cycle,
                                             _TICK.value)
             for k in checkpoints}
    model_dir = os.path.join(exp_dir, "pretrain")
    os.makedirs(exp_dir, exist_ok=True)

    # ---- Pre-training (resumes; saves at every crossed compute tick) --------
    _run([sys.executable, "-m", "mtssl_tf.main",
          f"--flagfile={_TRAIN_FLAGFILE.value}", *_TRAIN_FLAG.value,
          f"--model_dir={model_dir}", f"--max_steps={max(steps.values())}",
          "--task_step_cost=" + ",".join(f"{t}:{c!r}"
                                         for t, c in costs.items()),
          f"--checkpoint_every_cost={_TICK.value!r}",
          "--checkpoint_every_steps=0", "--checkpoint_every_secs=0",
          f"--keep_checkpoints={max(checkpoints) + 2}"], "pre-training")

    # ---- Evaluations of each selected checkpoint ------------------------------
    kept = checkpoint_costs(model_dir)
    selected = {}
    for k in checkpoints:
      reached = [c for c in kept if c[1] >= k * _TICK.value * (1 - 1e-9)]
      if not reached:
        raise RuntimeError(f"No checkpoint of {model_dir} reached "
                           f"checkpoint {k} ({k * _TICK.value} GPU-hours).")
      selected[k] = reached[0]
    variants = [("", [])] + ([("_lasso", ["--lasso"])]
                             if _EVAL_LASSO.value else [])
    eval_args = ([f"--flagfile={f}" for f in _EVAL_FLAGFILE.value]
                 + list(_EVAL_FLAG.value))
    runs = []  # (checkpoint or "random_init", eval, suffix, output_dir)
    for k, (prefix, _, _) in selected.items():
      for name in _EVALS.value:
        for suffix, extra in variants:
          out = os.path.join(exp_dir, "eval", f"{name}{suffix}", f"ckpt{k}")
          _run([sys.executable, "-m", "mtssl_tf.evaluate", f"--eval={name}",
                f"--model_dir={prefix}", f"--output_dir={out}", *eval_args,
                *extra], f"{name}{suffix} on checkpoint {k}")
          runs.append((k, name, suffix, out))
    if _RANDOM_BASELINE.value:
      with open(os.path.join(model_dir, "run.json"), encoding="utf-8") as f:
        trunk = json.load(f)["trunk"]
      for name in _EVALS.value:
        out = os.path.join(exp_dir, "eval", name, "random_init")
        _run([sys.executable, "-m", "mtssl_tf.evaluate", f"--eval={name}",
              "--random_init", f"--depth={trunk['depth']}",
              f"--base_width={trunk['base_width']}",
              f"--output_dir={out}", *eval_args], f"{name} on random init")
        runs.append(("random_init", name, "", out))

    # ---- experiment.json and table.md ------------------------------------------
    experiment = {
        "row": row, "train_flagfile": _TRAIN_FLAGFILE.value,
        "train_flags": list(_TRAIN_FLAG.value), "tasks": tasks,
        "batch_sizes": batch_sizes, "step_cost_gpu_hours": costs,
        "tick_gpu_hours": _TICK.value,
        "checkpoints": {str(k): {"prefix": p, "cost_gpu_hours": c, "step": s}
                        for k, (p, c, s) in selected.items()},
        "results": []}
    for k, name, suffix, out in runs:
      with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        result = json.load(f)
      experiment["results"].append({
          "checkpoint": k, "evaluation": name,
          "eval_lasso": bool(suffix), "output_dir": out,
          "metrics": result["metrics"],
          "abs_alpha": result.get("details", {}).get("abs_alpha"),
          "pretrain_alpha": result.get("evaluated", {}).get(
              "pretrain_alpha")})
    tables.write_json(os.path.join(exp_dir, EXPERIMENT_FILE), experiment)
    table = tables.experiment_table(experiment)
    with open(os.path.join(exp_dir, "table.md"), "w", encoding="utf-8") as f:
      f.write(table)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  print(table)
  print(f"Wrote {os.path.join(exp_dir, EXPERIMENT_FILE)}; tables and figures "
        f"of several experiments: python -m mtssl_tf.paper_report "
        f"--runs={_EXPERIMENTS_ROOT.value}")
  return 0


def main():
  app.run(run)


if __name__ == "__main__":
  main()
