"""Markdown tables and target checks of tools/benchmark.py results.

``results`` is the dict the tool writes as JSON: ``machine``, and per section
(``tasks``, ``trunk``, ``pipelines``, ``options``, ``threads``, ``breakdown``,
``levers``) the worker
results with their configuration. GFLOP/s is the analytic training FLOP count
(``models/flops.py``: 3x forward) over the median step time; "% peak" divides
it by the best fp32 2048^3 matmul measured in the run.
"""

import math
from typing import Dict, List, Optional, Sequence

# The targets (benchmark figures, never timed tests).
TRUNK_VS_SLIM_TARGET = 1.3
PEAK_FRACTION_TARGET = 0.7
TASK_PEAK_FRACTION_TARGET = 0.75  # issue 16: every task's fp32 step
PIPELINE_HEADROOM_TARGET = 3.0
MULTITASK_OVERHEAD_TARGET = 1.05


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  def cell(v):
    if isinstance(v, float):
      if math.isnan(v):
        return "n/a"
      return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def run_peak(results) -> float:
  """Best fp32 matmul GFLOP/s of any process of the run."""
  values = [results.get("machine", {}).get("matmul_gflops", 0.0)]
  for section in ("tasks", "trunk", "options", "threads", "breakdown",
                  "levers"):
    for row in results.get(section, []):
      values.append(row.get("matmul_gflops", 0.0))
  return max(values) or float("nan")


def _gflops(flop_count, seconds):
  return flop_count / seconds / 1e9 if seconds else float("nan")


def tasks_table(results) -> str:
  peak = run_peak(results)
  rows = []
  for r in results.get("tasks", []):
    s = r["step_seconds"]
    g = _gflops(r["training_flops"], s)
    rows.append(["+".join(r["tasks"]),
                 "before (legacy)" if r.get("legacy") else "current",
                 r["precision"], r["batch_size"], s,
                 r["examples_per_step"] / s, r["training_flops"] / 1e9, g,
                 100 * g / peak, r.get("rss_step_mb", r["peak_rss_mb"])])
  return table(["tasks", "implementation", "precision", "batch",
                "step s (median)", "examples/s", "GFLOP/step", "GFLOP/s",
                "% fp32 peak", "peak RSS MB"], rows)


def memory_table(results) -> str:
  """Per task configuration: peak RSS of its process's timed steps against
  the floor (benchmarks/memory.py): RSS after import + weights + slots +
  the largest task's gradients + saved activations."""
  rows = []
  for r in results.get("tasks", []):
    f = r.get("memory_floor")
    if not f:
      continue
    mb = lambda b: b / 2 ** 20  # noqa: E731
    grads = "+".join(f"{mb(v['gradients']):.0f}"
                     for v in f["tasks"].values())
    acts = "+".join(f"{mb(v['activations']):.0f}"
                    for v in f["tasks"].values())
    floor_mb = r["rss_import_mb"] + mb(f["step"])
    step_rss = r.get("rss_step_mb", r["peak_rss_mb"])
    rows.append(["+".join(r["tasks"]),
                 "before (legacy)" if r.get("legacy") else "current",
                 r["precision"], r["rss_import_mb"], mb(f["weights"]),
                 mb(f["slots"]), grads, acts, floor_mb, step_rss,
                 step_rss / floor_mb])
  return table(["tasks", "implementation", "precision",
                "RSS after import MB", "weights MB", "RMSProp slots MB",
                "gradients MB (per task)", "saved activations MB (per task)",
                "floor MB", "peak RSS MB", "peak / floor"], rows)


def _input_seconds(results, task: str, batch_size: int) -> float:
  for r in results.get("pipelines", []):
    if (r["tasks"] == [task] and r["examples_per_second"] and
        r.get("source", "builtin") == "builtin"):
      return batch_size / r["examples_per_second"]
  return float("nan")


# Bytes the fused RMSProp update moves per parameter: reads var, ms, mom
# and the gradient, writes var, ms and mom (float32).
RMSPROP_BYTES = 7 * 4

BREAKDOWN_PARTS = ("trunk forward", "trunk backward", "head forward + loss",
                   "head backward", "update", "other")


def breakdown_table(results) -> str:
  """Per task: seconds of each part, share of the step, % of peak (the
  process's own matmul peak where it measured one, else the run's best)."""
  rows = []
  for r in results.get("breakdown", []):
    peak = r.get("matmul_gflops") or run_peak(results)
    parts, step = r["parts"], r["step_seconds"]["step"]
    trunk_s = r["step_seconds"]["trunk_fwd_bwd"]
    head_s = parts["head forward + loss"] + parts["head backward"]
    trunk_g = _gflops(3 * r["trunk_flops"], trunk_s)
    # Parts are differences of medians: a small head's can come out <= 0
    # (noise); its rate is then unknown (n/a), not negative.
    head_g = (_gflops(3 * r["head_flops"], head_s) if head_s > 0
              else float("nan"))
    step_g = _gflops(r["training_flops"], step)
    params = r["param_counts"]
    floor_mb = 16 * (params["trunk"] + params["head"]) / 2 ** 20
    # Ceiling: the trunk at its measured rate (at TF-Slim's, section trunk),
    # the head at the matmul peak and the update at memory bandwidth
    # (RMSPROP_BYTES per parameter).
    bandwidth = results.get("machine", {}).get("memory_gbps") or float("nan")
    update_floor = (RMSPROP_BYTES * (params["trunk"] + params["head"]) /
                    bandwidth / 1e9)
    ceiling_s = trunk_s + 3 * r["head_flops"] / peak / 1e9 + update_floor
    ceiling = 100 * r["training_flops"] / peak / 1e9 / ceiling_s
    rows.append(
        [r["task"], step] +
        [f"{parts[p]:.3f} ({100 * parts[p] / step:.0f}%)"
         for p in BREAKDOWN_PARTS] +
        [_input_seconds(results, r["task"], r["examples_per_step"]),
         100 * trunk_g / peak, 100 * head_g / peak, 100 * step_g / peak,
         update_floor, ceiling,
         f"{params['trunk'] / 1e6:.1f}M + {params['head'] / 1e6:.1f}M",
         floor_mb, r.get("rss_start_mb", float("nan")), r["peak_rss_mb"]])
  return table(
      ["task", "step s"] + [f"{p} s" for p in BREAKDOWN_PARTS] +
      ["input s/batch (pipeline alone)", "trunk % peak", "head % peak",
       "step % peak", "update at memory bandwidth s",
       "ceiling % peak (trunk as measured, head at peak, update at "
       "bandwidth)", "params trunk + head", "weights+grads+slots MB",
       "RSS after import MB", "peak RSS MB"], rows)


def levers_table(results) -> str:
  """Variants alternated in one process; % of that process's own matmul peak
  (the run's best where a row has none); speed-up against ``before`` where
  it ran, else against the first variant."""
  rows = []
  for r in results.get("levers", []):
    peak = r.get("matmul_gflops") or run_peak(results)
    seconds = r["step_seconds"]
    base = seconds.get("before", next(iter(seconds.values())))
    for name, s in seconds.items():
      g = _gflops(r["training_flops"], s)
      rows.append([r["task"], name, s, g, peak, 100 * g / peak, base / s])
  return table(["task", "variant (alternated)", "step s (median)", "GFLOP/s",
                "fp32 matmul peak GFLOP/s (same process)", "% of that peak",
                "speed-up vs before (or first)"], rows)


def multitask_overhead(results) -> Dict[str, float]:
  """"<tasks> <precision>" -> joint step / sum of single-task steps.

  From the multitask section (alternated on one network) when it ran, else
  from the tasks section (separate processes: noisier).
  """
  out = {}
  for r in results.get("multitask", []):
    out[f"{'+'.join(r['tasks'])} {r['precision']}"] = r["overhead"]
  if out:
    return out
  rows = results.get("tasks", [])
  for precision in sorted({r["precision"] for r in rows}):
    by = {"+".join(r["tasks"]): r["step_seconds"] for r in rows
          if r["precision"] == precision}
    for joint in [k for k in by if "+" in k]:
      parts = joint.split("+")
      if all(p in by for p in parts):
        out[f"{joint} {precision}"] = by[joint] / sum(by[p] for p in parts)
  return out


def multitask_table(results) -> str:
  rows = []
  for r in results.get("multitask", []):
    joint = "+".join(r["tasks"])
    singles = sum(r["step_seconds"][t] for t in r["tasks"])
    rows.append([joint, r["precision"]] +
                [r["step_seconds"][t] for t in r["tasks"]] +
                [singles, r["step_seconds"][joint], r["overhead"],
                 r["peak_rss_mb"]])
  tasks = results["multitask"][0]["tasks"] if rows else []
  return table(["tasks", "precision"] + [f"{t} step s" for t in tasks] +
               ["sum s", "joint step s", "joint / sum", "peak RSS MB"], rows)


def trunk_table(results) -> str:
  peak = run_peak(results)
  rows = []
  for r in results.get("trunk", []):
    seconds = r["step_seconds"]
    slim = next((v for k, v in seconds.items() if k.startswith("TF-Slim")),
                float("nan"))
    for name, s in seconds.items():
      g = _gflops(r["training_flops"], s)
      rows.append([name, s, r["examples_per_step"] / s, g, 100 * g / peak,
                   slim / s])
  return table(["trunk fwd+bwd (alternated)", "step s (median)", "images/s",
                "GFLOP/s", "% fp32 peak", "speed vs TF-Slim"], rows)


def _step_rate(results, task: str, precision: str) -> Optional[float]:
  for r in results.get("tasks", []):
    if (r["tasks"] == [task] and r["precision"] == precision and
        not r.get("legacy")):
      return r["examples_per_step"] / r["step_seconds"]
  return None


def pipelines_table(results) -> str:
  precisions = sorted({r["precision"] for r in results.get("tasks", [])})
  rows = []
  for r in results.get("pipelines", []):
    task = r["tasks"][0]
    row = [task, r.get("source", "builtin"), r["examples_per_second"]]
    for precision in precisions:
      rate = _step_rate(results, task, precision)
      row += [rate or float("nan"),
              r["examples_per_second"] / rate if rate else float("nan")]
    rows.append(row + [r["peak_rss_mb"]])
  header = ["task", "source", "pipeline examples/s"]
  for precision in precisions:
    header += [f"step examples/s ({precision})", f"headroom ({precision})"]
  return table(header + ["peak RSS MB"], rows)


def options_table(results) -> str:
  rows = []
  for r in results.get("options", []):
    base = r["step_seconds"].get("baseline", float("nan"))
    for name, s in r["step_seconds"].items():
      rows.append([r["task"], name, s, r["examples_per_step"] / s, base / s])
  threads = results.get("threads", [])
  default = [r["step_seconds"] for r in threads
             if not r["intra_op_threads"] and not r["inter_op_threads"]]
  for r in threads:
    name = (f"threads intra={r['intra_op_threads'] or 'default'} "
            f"inter={r['inter_op_threads'] or 'default'}")
    base = min(default) if default else float("nan")
    rows.append(["+".join(r["tasks"]), name, r["step_seconds"],
                 r["examples_per_step"] / r["step_seconds"],
                 base / r["step_seconds"]])
  return table(["task", "option", "step s (median)", "examples/s",
                "speed-up vs baseline"], rows)


def targets(results) -> List[List[object]]:
  """[target, measured, met] rows for the issue's targets."""
  rows = []
  peak = run_peak(results)
  for r in results.get("trunk", []):
    seconds = r["step_seconds"]
    slim = next((v for k, v in seconds.items() if k.startswith("TF-Slim")),
                None)
    for name, s in seconds.items():
      if name.startswith("TF-Slim"):
        continue
      if slim:
        rows.append([f"trunk {name} >= {TRUNK_VS_SLIM_TARGET}x TF-Slim",
                     f"{slim / s:.2f}x", slim / s >= TRUNK_VS_SLIM_TARGET])
      frac = _gflops(r["training_flops"], s) / peak
      rows.append([f"trunk {name} >= {PEAK_FRACTION_TARGET:.0%} of fp32 "
                   f"matmul peak", f"{frac:.0%}", frac >= PEAK_FRACTION_TARGET])
  for r in results.get("tasks", []):
    if r.get("legacy") or r["precision"] != "float32":
      continue
    frac = _gflops(r["training_flops"], r["step_seconds"]) / peak
    rows.append([f"{'+'.join(r['tasks'])} step >= "
                 f"{TASK_PEAK_FRACTION_TARGET:.0%} of fp32 matmul peak",
                 f"{frac:.0%}", frac >= TASK_PEAK_FRACTION_TARGET])
  precisions = sorted({r["precision"] for r in results.get("tasks", [])})
  for r in results.get("pipelines", []):
    for precision in precisions:
      rate = _step_rate(results, r["tasks"][0], precision)
      if rate:
        ratio = r["examples_per_second"] / rate
        rows.append([f"{r['tasks'][0]} pipeline "
                     f"({r.get('source', 'builtin')}) >= "
                     f"{PIPELINE_HEADROOM_TARGET:.0f}x its {precision} step",
                     f"{ratio:.1f}x", ratio >= PIPELINE_HEADROOM_TARGET])
  for name, ratio in multitask_overhead(results).items():
    rows.append([f"{name} <= {MULTITASK_OVERHEAD_TARGET}x sum of single "
                 f"steps", f"{ratio:.3f}x", ratio <= MULTITASK_OVERHEAD_TARGET])
  return rows


def markdown(results) -> str:
  """The whole report."""
  m = results.get("machine", {})
  parts = [
      "## Machine",
      table(["CPU", "cores", "TensorFlow", "load avg (start, end)",
             "fp32 matmul GFLOP/s (best in run)", "bf16 matmul GFLOP/s",
             "memory GB/s (in-place add)"],
            [[m.get("cpu", "?"), m.get("cores", "?"), m.get("tensorflow", "?"),
              f"{m.get('load_start', '?')} / {m.get('load_end', '?')}",
              run_peak(results), m.get("bf16_matmul_gflops", float("nan")),
              m.get("memory_gbps", float("nan"))]]),
      m.get("note", "")]
  sections = (("tasks", "## Training step per task (cached batch)",
               tasks_table),
              ("memory", "## Peak memory against the floor (tasks section; "
               "floor = RSS after import + weights + slots + largest task's "
               "gradients and saved activations)", memory_table),
              ("multitask", "## Multi-task overhead (one network, "
               "alternated)", multitask_table),
              ("trunk", "## Trunk alone vs TF-Slim", trunk_table),
              ("pipelines", "## Input pipelines (no model)", pipelines_table),
              ("breakdown", "## Where each task's step goes (one network "
               "per task, alternated; parts by difference)", breakdown_table),
              ("levers", "## Issue 16's changes, before vs after "
               "(alternated in one process)", levers_table),
              ("options", "## Speed options", options_table))
  for key, title, render in sections:
    present = results.get("tasks" if key == "memory" else key)
    if present or (key == "options" and results.get("threads")):
      parts += [title, render(results)]
  rows = targets(results)
  if rows:
    parts += ["## Targets", table(["target", "measured", "met"], rows)]
  return "\n\n".join(p for p in parts if p) + "\n"
