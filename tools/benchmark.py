r"""Benchmarks mtssl_tf at the paper's scale: ``python -m tools.benchmark``.

Prints Markdown tables and writes every number to --output_json:

  tasks      training step per registered task and for rp+col together
             (one cycle = one update of each task, as the training loop), at
             the paper's configuration: ResNet-v2-101, output stride 8, each
             task's default input size and head. Median step time after
             warm-up, examples/s, GFLOP/s from the analytic FLOP count of trunk
             + head (models/flops.py; training = 3x forward) and that as a
             fraction of the best fp32 2048^3 matmul measured in the run. Each
             configuration runs in its own process; inputs are one cached
             batch drawn from the task's real pipeline (section pipelines
             times the pipelines).
  multitask  the multi-task overhead: the single-task steps of
             --multitask_tasks and their joint step, on one shared network,
             alternated for --rounds rounds in one process (per precision).
  trunk      the trunk alone (forward + backward, --trunk_size^2, batch
             --trunk_batch_size, to block 3 at output stride 8) next to TF-Slim
             resnet_v2 (graph mode, Session, is_training=True) on the same
             input, alternated for --rounds rounds in one process.
  pipelines  examples/s of each task's tf.data pipeline with no model, and
             its ratio to the examples/s its training step consumes: from
             the built-in source (decoded photos in memory) and, for image
             tasks, from the same photos as JPEG files in a folder on disk.
  breakdown  where each task's step goes (benchmarks/breakdown.py): trunk
             forward/backward, head forward/backward, the RMSProp update,
             alternated on one network per task (--breakdown_tasks), with
             GFLOP/s and % of peak of the trunk and head parts, the input
             pipeline's time per batch (section pipelines) and the memory
             floor of weights + gradients + slots.
  levers     issue 16's changes before/after (benchmarks/legacy.py): the
             elementwise RMSProp with the division by a group of one and
             rp's 3x3-conv fc units against the fused kernel and 1x1 fc
             units as matmuls, alternated in one process per task
             (--levers_tasks, --levers). Variants: before; fused RMSProp
             (only); 1x1 fc units (only); conv fc units (fused RMSProp, fc
             units as 1x1 Conv2D layers: the state before the matmuls);
             after.
             --compare_legacy also runs the tasks section with the old
             implementation (its own process: peak memory before/after).
  options    speed options a user can turn on in training (main.py flags):
             XLA (--jit_compile), bf16 (--mixed_precision=mixed_bfloat16),
             --steps_per_call, alternated in one process on --options_task;
             thread settings (--intra_op_threads/--inter_op_threads), one
             process per setting, alternated over --thread_rounds rounds.
Peak resident memory (ru_maxrss) is reported per process.

Examples:

  # Everything (10-30 minutes on a 2-core CPU):
  python -m tools.benchmark --output_json=runs/benchmark.json

  # Only the trunk against TF-Slim, 7 alternating rounds:
  python -m tools.benchmark --sections=trunk --rounds=7

  # rp and col in bf16 only, 3 timed steps:
  python -m tools.benchmark --sections=tasks --tasks=rp,col \
      --precisions=mixed_bfloat16 --steps=3

The machine may be shared: compare figures only within one run (ratios are
measured in alternation or in the same process where possible).
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List

from absl import app
from absl import flags

from mtssl_tf import config_flags
from mtssl_tf.tasks import registry

SECTIONS = ("tasks", "multitask", "trunk", "pipelines", "options",
            "breakdown", "levers")
LEVERS = ("before", "fused RMSProp", "1x1 fc units", "conv fc units",
          "after")
TASK_CHOICES = tuple(registry.names())
RESULT_PREFIX = "BENCHMARK_RESULT "

_SECTIONS = flags.DEFINE_list("sections", list(SECTIONS),
                              f"Sections to run, any of {SECTIONS}.")
_TASKS = flags.DEFINE_list(
    "tasks", list(TASK_CHOICES) + ["rp+col"],
    "Task configurations of the tasks section: a task name, or several joined "
    "by '+' trained together (one update each per step).")
_PRECISIONS = flags.DEFINE_list(
    "precisions", ["float32", "mixed_bfloat16"],
    "Precisions of the tasks and trunk sections (float32, mixed_bfloat16, "
    "mixed_float16).")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 2, "Examples per task per step (rp: pairs, ex: images).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (or batches).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 5, "Alternating rounds of the trunk and options sections.")
_MULTITASK_TASKS = flags.DEFINE_list(
    "multitask_tasks", ["rp", "col"], "Tasks of the multitask section.")
_TRUNK_SIZE = flags.DEFINE_integer("trunk_size", 256,
                                   "Input side of the trunk section.")
_TRUNK_BATCH_SIZE = flags.DEFINE_integer("trunk_batch_size", 2,
                                         "Batch of the trunk section.")
_SLIM = flags.DEFINE_bool("slim", True,
                          "Include TF-Slim in the trunk section.")
_OPTIONS_TASK = flags.DEFINE_string("options_task", "rp",
                                    "Task the options section runs.")
_OPTIONS = flags.DEFINE_list(
    "options", ["xla", "mixed_bfloat16", "steps_per_call", "threads"],
    "Options to measure against the baseline.")
_STEPS_PER_CALL = flags.DEFINE_integer(
    "steps_per_call", 4, "Value of the steps_per_call option.")
_THREAD_SETTINGS = flags.DEFINE_list(
    "thread_settings", ["2:1", "1:1", "1:2"],
    "intra:inter thread counts tried by the threads option (0 = default; "
    "TensorFlow's default is always run too).")
_THREAD_ROUNDS = flags.DEFINE_integer(
    "thread_rounds", 2, "Rounds over the thread settings (one process each).")
_BREAKDOWN_TASKS = flags.DEFINE_list(
    "breakdown_tasks", list(TASK_CHOICES),
    "Tasks of the breakdown section (default: every registered task).")
_LEVERS_TASKS = flags.DEFINE_list("levers_tasks", ["rp", "ex"],
                                  "Tasks of the levers section.")
_LEVERS = flags.DEFINE_list(
    "levers", ["before", "after"],
    f"Variants of the levers section, any of {LEVERS} (each is one more "
    f"network in memory).")
_COMPARE_LEGACY = flags.DEFINE_bool(
    "compare_legacy", False, "Also run the tasks section with the "
    "pre-issue-16 implementation (benchmarks/legacy.py).")
_DEPTH = flags.DEFINE_integer("depth", 101, "Trunk depth.")
_BASE_WIDTH = flags.DEFINE_integer("base_width", 64,
                                   "Trunk base width (64 = ResNet-v2).")
_OUTPUT_STRIDE = flags.DEFINE_integer("output_stride", 8,
                                      "Trunk output stride (0: nominal).")
# Each task's Config fields as --<task>.<field>, as in mtssl_tf/main.py
# (e.g. --col.head_width=256 for a small smoke run).
for _name in TASK_CHOICES:
  config_flags.define_flags(_name, registry.get_module(_name).Config)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None,
                                   "Write all results to this JSON file.")
_WORKER_TIMEOUT = flags.DEFINE_float(
    "worker_timeout", 3600.0, "Seconds one measurement process may take.")
_WORKER = flags.DEFINE_string(
    "worker", None, "Internal: run one measurement from this JSON spec and "
    "print its result.")


def _overrides() -> Dict[str, Dict[str, str]]:
  """Task -> field -> flag text of the --<task>.<field> flags given (parsed
  by the worker, ``workers.task_config``)."""
  out = {}
  for name in TASK_CHOICES:
    for field in dataclasses.fields(registry.get_module(name).Config):
      value = flags.FLAGS[config_flags.flag_name(name, field.name)].value
      if value is not None:
        out.setdefault(name, {})[field.name] = value
  return out


def _check_flags():
  unknown = set(_SECTIONS.value) - set(SECTIONS)
  if unknown:
    raise app.UsageError(f"--sections: unknown {sorted(unknown)}; choose from "
                         f"{SECTIONS}.")
  for config in _TASKS.value:
    bad = [t for t in config.split("+") if t not in TASK_CHOICES]
    bad += [t for t in _MULTITASK_TASKS.value if t not in TASK_CHOICES]
    bad += [t for t in _BREAKDOWN_TASKS.value + _LEVERS_TASKS.value
            if t not in TASK_CHOICES]
    if bad:
      raise app.UsageError(f"--tasks: unknown task(s) {bad} in {config!r}; "
                           f"tasks are {TASK_CHOICES}.")
  unknown_levers = set(_LEVERS.value) - set(LEVERS)
  if unknown_levers:
    raise app.UsageError(f"--levers: unknown {sorted(unknown_levers)}; "
                         f"choose from {LEVERS}.")
  if min(_STEPS.value, _ROUNDS.value, _BATCH_SIZE.value) < 1 or (
      _WARMUP.value < 0):
    raise app.UsageError("--steps, --rounds, --batch_size must be >= 1 and "
                         "--warmup >= 0.")


def _base_spec() -> dict:
  return {"trunk": {"depth": _DEPTH.value, "base_width": _BASE_WIDTH.value,
                    "output_stride": _OUTPUT_STRIDE.value or None},
          "batch_size": _BATCH_SIZE.value, "steps": _STEPS.value,
          "warmup": _WARMUP.value, "overrides": _overrides()}


def _run_worker(spec: dict, log) -> dict:
  """Runs one measurement in a fresh process; returns its result + spec."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, "-m", "tools.benchmark", f"--worker={json.dumps(spec)}"],
      env=env, capture_output=True, text=True,
      timeout=_WORKER_TIMEOUT.value, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(
        f"Benchmark process for {spec} failed (exit {proc.returncode}):\n"
        f"{proc.stderr[-3000:]}")
  result = dict(spec, **json.loads(lines[-1][len(RESULT_PREFIX):]))
  log(f"  {spec['kind']} {spec.get('tasks', spec.get('task', ''))} "
      f"{'(legacy) ' if spec.get('legacy') else ''}"
      f"{spec.get('precision', '')} done in {time.monotonic() - start:.0f}s")
  return result


def _reads_image_folders(task: str) -> bool:
  """An image task reading a flat folder (sup reads class sub-folders)."""
  return (registry.get_module(task).Task.source_kind == "images" and
          task != "sup")


def _machine() -> dict:
  cpu = platform.processor() or "?"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f
                 if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
          "load_start": round(os.getloadavg()[0], 2)}


def run_benchmark(log=print) -> dict:
  """Runs the selected sections; returns the results dict (see report.py)."""
  base = _base_spec()
  sections = _SECTIONS.value
  results = {"machine": _machine(), "flags": {
      k: flags.FLAGS[k].value for k in (
          "sections", "tasks", "precisions", "batch_size", "steps", "warmup",
          "rounds", "depth", "base_width", "output_stride", "breakdown_tasks",
          "levers_tasks", "levers", "compare_legacy")}}
  log("Measuring the matmul peak")
  peak = _run_worker(dict(base, kind="peak"), log)
  results["machine"].update(
      matmul_gflops=peak["matmul_gflops"],
      bf16_matmul_gflops=peak["bf16_matmul_gflops"],
      memory_gbps=peak["memory_gbps"],
      tensorflow=peak.get("tensorflow", "?"))
  if "trunk" in sections:
    log("Trunk vs TF-Slim")
    results["trunk"] = [_run_worker(dict(
        base, kind="trunk", image_size=_TRUNK_SIZE.value,
        batch_size=_TRUNK_BATCH_SIZE.value, rounds=_ROUNDS.value,
        slim=_SLIM.value, precisions=_PRECISIONS.value), log)]
  if "tasks" in sections:
    log("Training step per task")
    implementations = [True, False] if _COMPARE_LEGACY.value else [False]
    results["tasks"] = [
        _run_worker(dict(base, kind="task", tasks=config.split("+"),
                         precision=precision, legacy=old), log)
        for precision in _PRECISIONS.value for config in _TASKS.value
        for old in implementations]
  if "multitask" in sections:
    log("Multi-task overhead")
    results["multitask"] = [
        _run_worker(dict(base, kind="multitask", tasks=_MULTITASK_TASKS.value,
                         precision=precision, rounds=_ROUNDS.value), log)
        for precision in _PRECISIONS.value]
  if "pipelines" in sections:
    log("Input pipelines")
    singles = sorted({t for c in _TASKS.value for t in c.split("+")},
                     key=TASK_CHOICES.index)
    results["pipelines"] = [
        _run_worker(dict(base, kind="pipeline", tasks=[t], source=source,
                         steps=max(_STEPS.value, 10)), log)
        for t in singles for source in ("builtin", "folder")
        if source == "builtin" or _reads_image_folders(t)]
  if "breakdown" in sections:
    log("Where each task's step goes")
    results["breakdown"] = [
        _run_worker(dict(base, kind="breakdown", task=t,
                         rounds=_ROUNDS.value), log)
        for t in _BREAKDOWN_TASKS.value]
  if "levers" in sections:
    log("Issue 16's changes, before and after")
    results["levers"] = [
        _run_worker(dict(base, kind="levers", task=t, rounds=_ROUNDS.value,
                         variants=[v for v in _LEVERS.value
                                   if t == "rp" or "fc" not in v]), log)
        for t in _LEVERS_TASKS.value]
  if "options" in sections:
    log("Speed options")
    variants = ["baseline"] + [o for o in _OPTIONS.value
                               if o in ("xla", "mixed_bfloat16",
                                        "steps_per_call")]
    if len(variants) > 1:
      results["options"] = [_run_worker(dict(
          base, kind="options", task=_OPTIONS_TASK.value, variants=variants,
          rounds=_ROUNDS.value, steps_per_call=_STEPS_PER_CALL.value), log)]
    if "threads" in _OPTIONS.value:
      results["threads"] = _thread_results(base, log)
  results["machine"]["load_end"] = round(os.getloadavg()[0], 2)
  results["machine"]["note"] = (
      f"Load average {results['machine']['load_start']} at the start and "
      f"{results['machine']['load_end']} at the end of the run: other "
      f"processes share these {results['machine']['cores']} cores; compare "
      f"figures within this run only.")
  return results


def _thread_results(base, log) -> List[dict]:
  settings = [(0, 0)]
  for item in _THREAD_SETTINGS.value:
    intra, _, inter = item.partition(":")
    settings.append((int(intra or 0), int(inter or 0)))
  runs = {s: [] for s in settings}
  for _ in range(_THREAD_ROUNDS.value):
    for intra, inter in settings:
      runs[(intra, inter)].append(_run_worker(dict(
          base, kind="task", tasks=[_OPTIONS_TASK.value],
          precision="float32", intra_op_threads=intra,
          inter_op_threads=inter), log))
  out = []
  for (intra, inter), rs in runs.items():
    best = min(rs, key=lambda r: r["step_seconds"])
    out.append(dict(best, intra_op_threads=intra, inter_op_threads=inter,
                    rounds=[r["step_seconds"] for r in rs],
                    step_seconds=sorted(r["step_seconds"] for r in rs)[
                        len(rs) // 2]))
  return out


def main(argv):
  del argv
  if _WORKER.value:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from mtssl_tf.benchmarks import workers  # pylint: disable=g-import-not-at-top
    result = workers.run(json.loads(_WORKER.value))
    result["tensorflow"] = tf.__version__
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0
  _check_flags()
  from mtssl_tf.benchmarks import report  # pylint: disable=g-import-not-at-top
  try:
    results = run_benchmark(log=lambda m: print(m, file=sys.stderr,
                                                flush=True))
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  text = report.markdown(results)
  print(text)
  if _OUTPUT_JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT_JSON.value)),
                exist_ok=True)
    with open(_OUTPUT_JSON.value, "w") as f:
      json.dump(dict(results, markdown=text), f, indent=1)
    print(f"Wrote {_OUTPUT_JSON.value}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  app.run(main)
