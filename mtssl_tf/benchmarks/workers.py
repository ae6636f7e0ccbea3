"""One benchmark measurement per process (tools/benchmark.py runs each in a
subprocess, so that thread settings apply from the start and the peak
resident memory belongs to one configuration).

Every worker takes a JSON-able spec dict and returns a JSON-able result dict.
Spec keys shared by all workers: ``trunk`` (TrunkConfig fields), ``batch_size``,
``steps``, ``warmup``, ``overrides`` (task -> Config field -> flag text),
``intra_op_threads`` / ``inter_op_threads``. Results carry ``peak_rss_mb`` and
``matmul_gflops`` (this process's best fp32 matmul, measured before and after
the timed calls: the better of the two).

Kinds:
  peak      fp32 and bf16 matmul peaks, memory bandwidth (``x + 1``).
  task      training step of ``tasks`` (one or several, one cycle) at
            ``precision``, ``jit_compile``, ``steps_per_call``.
  trunk     trunk-alone forward + backward: TF-Slim and ours (``precisions``),
            alternated ``rounds`` times.
  options   one task's step with each speed option (``variants``), alternated.
  multitask each single-task step and the joint step of ``tasks`` on one
            shared network, alternated (the multi-task overhead).
  pipeline  examples/s of a task's tf.data pipeline, no model, from the
            built-in source or (``source: folder``) JPEG files on disk.
  breakdown where one task's step goes (``breakdown.py``).
  levers    one task's step before and after issue 16's changes
            (``legacy.py``: elementwise RMSProp dividing by a group of one,
            rp's 3x3-conv fc units, rp's fc units as 1x1 Conv2D layers
            rather than matmuls), alternated; ``variants`` picks them.

``legacy: true`` in a task spec builds the pre-issue-16 step (its peak
memory is then that of the old implementation).
"""

import os
import tempfile
import time
import typing
from typing import Dict

import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf import config_flags
from mtssl_tf.benchmarks import breakdown
from mtssl_tf.benchmarks import legacy
from mtssl_tf.benchmarks import memory
from mtssl_tf.benchmarks import task_step
from mtssl_tf.benchmarks import timing
from mtssl_tf.benchmarks import trunk_step
from mtssl_tf.models import flops
from mtssl_tf.tasks import base
from mtssl_tf.tasks import registry
from mtssl_tf.training import optimizers
from mtssl_tf.training import speed


def _trunk_config(spec) -> config_lib.TrunkConfig:
  return config_lib.TrunkConfig(**spec.get("trunk", {}))


def _tasks(names, spec, old_heads=False) -> Dict[str, object]:
  """Tasks at their defaults (the paper's) with the spec's overrides, built
  for the spec's trunk. ``old_heads``: a head variant of
  ``legacy.task_class`` ("matmul": the current heads, "conv1x1", "conv3x3";
  True: the pre-issue-16 ``conv3x3``) for the tasks that had another."""
  if isinstance(old_heads, bool):
    old_heads = "conv3x3" if old_heads else "matmul"
  trunk = base.TrunkFacts.of(_trunk_config(spec))
  tasks = {}
  for name in names:
    config_class = registry.get_module(name).Config
    hints = typing.get_type_hints(config_class)
    values = {field: config_flags.parse_value(text, hints[field])
              for field, text in spec.get("overrides", {}).get(name, {}).items()}
    replaced = legacy.task_class(name, old_heads)
    if replaced:
      tasks[name] = replaced(config_class(**values), trunk)
    else:
      tasks[name] = registry.build(name, config_class(**values), trunk)
  return tasks


def _task_flops(tasks, spec) -> int:
  trunk = _trunk_config(spec)
  return sum(flops.task_flops(trunk, t, spec["batch_size"])["training"]
             for t in tasks.values())


def run_peak(spec) -> dict:
  del spec
  return {"matmul_gflops": timing.matmul_peak(tf.float32),
          "bf16_matmul_gflops": timing.matmul_peak(tf.bfloat16),
          "memory_gbps": timing.memory_bandwidth()}


def run_task(spec) -> dict:
  """The step's time, and its memory: peak RSS of the timed steps, RSS
  before any model (``rss_import_mb``) and the floor (``memory.py``; traced
  after the timing, so the peak is the step's)."""
  rss_import = timing.peak_memory_mb()
  old = spec.get("legacy", False)
  tasks = _tasks(spec["tasks"], spec, old_heads=old)
  batches = task_step.cached_batches(tasks, spec["batch_size"])
  calls = spec.get("steps_per_call", 1)
  step = task_step.build_task_step(
      _trunk_config(spec), tasks, batches,
      precision=spec.get("precision", "float32"),
      jit_compile=spec.get("jit_compile", False), steps_per_call=calls,
      optimizer_class=(legacy.ElementwiseRMSProp if old else
                       optimizers.SlimRMSProp))
  peak = timing.matmul_peak()
  times = timing.time_calls(step, spec["steps"], spec["warmup"])
  peak = max(peak, timing.matmul_peak())
  rss_step = timing.peak_memory_mb()
  return {"step_times": [t / calls for t in times],
          "step_seconds": timing.median(times) / calls,
          "training_flops": _task_flops(tasks, spec),
          "examples_per_step": spec["batch_size"], "matmul_gflops": peak,
          "rss_import_mb": rss_import, "rss_step_mb": rss_step,
          "memory_floor": memory.floor(step.network, batches)}


def run_trunk(spec) -> dict:
  """TF-Slim (built first: see trunk_step) and ours, alternated."""
  size, batch = spec["image_size"], spec["batch_size"]
  images = np.random.default_rng(0).uniform(
      -1, 1, (batch, size, size, 3)).astype(np.float32)
  trunk = _trunk_config(spec)
  contenders = {}
  if spec.get("slim", True):
    contenders["TF-Slim resnet_v2 (graph, Session)"] = trunk_step.build_slim_step(
        images, trunk.depth, trunk.output_stride, trunk.base_width)
  for precision in spec.get("precisions", ["float32"]):
    contenders[f"mtssl_tf {precision}"] = trunk_step.build_trunk_step(
        images, trunk, precision)
  peak = timing.matmul_peak()
  times = timing.alternate(contenders, spec["rounds"], spec["warmup"])
  peak = max(peak, timing.matmul_peak())
  return {"times": times,
          "step_seconds": {k: timing.median(v) for k, v in times.items()},
          "training_flops": flops.TRAINING_MULTIPLIER * flops.trunk_flops(
              trunk, size, size, batch),
          "examples_per_step": batch, "matmul_gflops": peak}


def run_options(spec) -> dict:
  """One task's step under each option, alternated in this process."""
  tasks = _tasks([spec["task"]], spec)
  batches = task_step.cached_batches(tasks, spec["batch_size"])
  trunk = _trunk_config(spec)
  settings = {"baseline": {}, "xla": {"jit_compile": True},
              "mixed_bfloat16": {"precision": "mixed_bfloat16"},
              "steps_per_call": {"steps_per_call": spec["steps_per_call"]}}
  contenders, calls = {}, {}
  for name in spec["variants"]:
    kwargs = settings[name]
    contenders[name] = task_step.build_task_step(trunk, tasks, batches,
                                                 **kwargs)
    calls[name] = kwargs.get("steps_per_call", 1)
  peak = timing.matmul_peak()
  times = timing.alternate(contenders, spec["rounds"], spec["warmup"])
  peak = max(peak, timing.matmul_peak())
  per_step = {k: [t / calls[k] for t in v] for k, v in times.items()}
  return {"times": per_step,
          "step_seconds": {k: timing.median(v) for k, v in per_step.items()},
          "training_flops": _task_flops(tasks, spec),
          "examples_per_step": spec["batch_size"], "matmul_gflops": peak}


def run_multitask(spec) -> dict:
  """Single-task steps and the joint step on one network, alternated."""
  names = spec["tasks"]
  tasks = _tasks(names, spec)
  batches = task_step.cached_batches(tasks, spec["batch_size"])
  groups = [[t] for t in names] + [names]
  contenders = task_step.build_task_steps(
      _trunk_config(spec), tasks, batches, groups,
      precision=spec.get("precision", "float32"))
  times = timing.alternate(contenders, spec["rounds"], spec["warmup"])
  seconds = {k: timing.median(v) for k, v in times.items()}
  joint = "+".join(names)
  return {"times": times, "step_seconds": seconds,
          "overhead": seconds[joint] / sum(seconds[t] for t in names)}


def _jpeg_folder(directory: str) -> str:
  """The built-in sample photos written as JPEG files (quality 90) under
  ``directory``: the folder source then reads and decodes files from disk."""
  from mtssl_tf.data import sample_data  # pylint: disable=g-import-not-at-top
  for name, photo in sample_data.load_photos():
    tf.io.write_file(os.path.join(directory, f"{name}.jpg"),
                     tf.io.encode_jpeg(photo, quality=90))
  return directory


def run_pipeline(spec) -> dict:
  """Examples/s of a task's pipeline alone; ``source`` "builtin" (decoded
  photos in memory) or "folder" (the same photos as JPEG files on disk)."""
  name = spec["tasks"][0]
  task = _tasks([name], spec)[name]
  with tempfile.TemporaryDirectory() as tmp:
    data = (config_lib.DataConfig(source="folder", path=_jpeg_folder(tmp))
            if spec.get("source") == "folder" else config_lib.DataConfig())
    dataset, _ = task.make_dataset(data, spec["batch_size"], seed=0)
    iterator = iter(dataset)
    for _ in range(spec["warmup"]):
      next(iterator)
    start = time.perf_counter()
    for _ in range(spec["steps"]):
      tf.nest.map_structure(lambda t: t.numpy(), next(iterator))
    seconds = time.perf_counter() - start
  return {"examples_per_second": spec["steps"] * spec["batch_size"] / seconds,
          "batches": spec["steps"], "source": spec.get("source", "builtin")}


# Levers of the levers section: (head variant of legacy.task_class, old
# optimizer).
LEVERS = {"before": ("conv3x3", True), "fused RMSProp": ("conv3x3", False),
          "1x1 fc units": ("matmul", True),
          "conv fc units": ("conv1x1", False), "after": ("matmul", False)}


def run_levers(spec) -> dict:
  """One task's step before/after issue 16 (and each lever), alternated."""
  name = spec["task"]
  contenders = {}
  for variant in spec["variants"]:
    old_head, old_opt = LEVERS[variant]
    tasks = _tasks([name], spec, old_heads=old_head)
    batches = task_step.cached_batches(tasks, spec["batch_size"])
    contenders[variant] = task_step.build_task_step(
        _trunk_config(spec), tasks, batches,
        optimizer_class=(legacy.ElementwiseRMSProp if old_opt else
                         optimizers.SlimRMSProp))
  peak = timing.matmul_peak()
  times = timing.alternate(contenders, spec["rounds"], spec["warmup"])
  peak = max(peak, timing.matmul_peak())
  return {"times": times,
          "step_seconds": {k: timing.median(v) for k, v in times.items()},
          "training_flops": _task_flops(_tasks([name], spec), spec),
          "examples_per_step": spec["batch_size"], "matmul_gflops": peak}


def run_breakdown(spec) -> dict:
  name = spec["task"]
  tasks = _tasks([name], spec)
  rss_start = timing.peak_memory_mb()
  peak = timing.matmul_peak()
  result = breakdown.measure(_trunk_config(spec), tasks[name],
                             spec["batch_size"], spec["rounds"],
                             spec["warmup"])
  result["matmul_gflops"] = max(peak, timing.matmul_peak())
  counts = flops.task_flops(_trunk_config(spec), tasks[name],
                            spec["batch_size"])
  result.update(trunk_flops=counts["trunk"], head_flops=counts["head"],
                training_flops=counts["training"], rss_start_mb=rss_start,
                examples_per_step=spec["batch_size"])
  return result


KINDS = {"peak": run_peak, "task": run_task, "trunk": run_trunk,
         "options": run_options, "multitask": run_multitask,
         "pipeline": run_pipeline, "breakdown": run_breakdown,
         "levers": run_levers}


def run(spec) -> dict:
  """Applies the spec's thread settings and runs its worker."""
  speed.configure_threads(spec.get("intra_op_threads", 0),
                          spec.get("inter_op_threads", 0))
  if spec["kind"] not in KINDS:
    raise ValueError(f"Unknown worker kind {spec['kind']!r}; kinds are "
                     f"{sorted(KINDS)}.")
  result = KINDS[spec["kind"]](spec)
  result["peak_rss_mb"] = timing.peak_memory_mb()
  result["pid"] = os.getpid()
  return result
