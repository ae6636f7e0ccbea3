r"""Throughput vs workers per task: synchronous lockstep vs asynchronous tasks.

  python -m tools.scaling_model --step_times=rp:0.9,col:3.6 \
      --workers=1,2,4,8,16,32 --link_gbps=10 --ps=4

A first-order model (paper §4, Figure 2), fed with measured numbers: each
task's seconds per update on one worker (``--step_times``, or the single-task
rows of ``tools/benchmark.py --output_json``), and the bytes of one update's
gradients, counted from the trunk (``--depth``/``--base_width``, as trained)
plus a head of ``--head_mparams`` million parameters. Compute and
communication do not overlap; per-worker step time does not change with the
group size (data parallel, fixed batch per worker).

Synchronous lockstep (``--strategy=mirrored``/``multi_worker``): every global
step updates every task once, so it lasts as long as the slowest task, plus a
ring all-reduce over all N = sum of workers of

  * before issue 15: tasks x G bytes (zeros for the other tasks): 2 (N-1)/N
    x tasks x G per worker;
  * after (on one host): each task's G summed over its own group only
    (multi-worker still all-reduces tasks x G: a host sees only its replicas).

Asynchronous tasks (``--strategy=parameter_server``): task t's group of k
workers does one update per round of ``step_t + 2 G / link`` (pull the
weights, push the gradients), independently of other tasks, until the
parameter servers' total bandwidth ``ps x link`` is used up: all tasks'
rounds together move sum_t k rate_t 2 G bytes per second.

Printed per group size k (workers per task): updates/s per task and images/s
in total, for each mode, and which limit binds.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import json

from absl import app
from absl import flags

_STEP_TIMES = flags.DEFINE_string(
    "step_times", "", "Seconds per update of each task on one worker, e.g. "
    "rp:0.9,col:3.6 (measure with tools/benchmark.py --sections=tasks).")
_BENCHMARK_JSON = flags.DEFINE_string(
    "benchmark_json", "", "Or: read them from tools/benchmark.py's "
    "--output_json (its single-task rows).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per update per worker.")
_DEPTH = flags.DEFINE_integer("depth", 101, "Trunk depth (gradient size).")
_BASE_WIDTH = flags.DEFINE_integer("base_width", 64, "Trunk base width.")
_HEAD_MPARAMS = flags.DEFINE_float(
    "head_mparams", 2.0, "Parameters of one head, in millions.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2", "4", "8", "16", "32"],
                             "Workers per task to model.")
_LINK_GBPS = flags.DEFINE_float("link_gbps", 10.0,
                                "Network bandwidth of each host, Gbit/s.")
_PS = flags.DEFINE_integer("ps", 4, "Parameter servers (async mode).")


def trunk_bytes(depth: int, base_width: int) -> int:
  """float32 bytes of the trunk's trainable variables (built, not run)."""
  from mtssl_tf import config  # pylint: disable=g-import-not-at-top
  from mtssl_tf.models import resnet_v2  # pylint: disable=g-import-not-at-top
  trunk = resnet_v2.build_trunk(config.TrunkConfig(depth=depth,
                                                   base_width=base_width))
  return 4 * sum(int(v.shape.num_elements())
                 for v in trunk.trainable_variables)


def model(step_times, grad_bytes, k, link_bps, num_ps, batch):
  """Returns {"sync_before", "sync_after", "async"} -> (updates/s per task,
  images/s total, binding limit)."""
  tasks = list(step_times)
  n = k * len(tasks)
  ring = 2.0 * (n - 1) / n if n > 1 else 0.0
  slowest = max(step_times.values())
  out = {}
  for name, reduced in (("sync_before", len(tasks) * grad_bytes),
                        ("sync_after", grad_bytes)):
    step = slowest + ring * reduced * 8 / link_bps
    rate = {t: 1.0 / step for t in tasks}
    limit = "slowest task" if slowest >= step - slowest else "all-reduce"
    out[name] = (rate, sum(rate.values()) * k * batch, limit)
  comm = 2.0 * grad_bytes * 8 / link_bps
  rate = {t: 1.0 / (s + comm) for t, s in step_times.items()}
  traffic = sum(k * r * 2.0 * grad_bytes * 8 for r in rate.values())
  capacity = num_ps * link_bps
  limit = "per-task compute"
  if traffic > capacity:
    rate = {t: r * capacity / traffic for t, r in rate.items()}
    limit = "ps bandwidth"
  out["async"] = (rate, sum(rate.values()) * k * batch, limit)
  return out


def main(argv):
  del argv
  if _BENCHMARK_JSON.value:
    with open(_BENCHMARK_JSON.value, encoding="utf-8") as f:
      rows = json.load(f).get("tasks", [])
    step_times = {r["tasks"][0]: float(r["step_seconds"]) for r in rows
                  if len(r["tasks"]) == 1}
  else:
    step_times = {}
    for item in filter(None, _STEP_TIMES.value.split(",")):
      name, _, value = item.partition(":")
      step_times[name.strip()] = float(value)
  if len(step_times) < 1:
    raise app.UsageError("Give --step_times=rp:0.9,col:3.6 or "
                         "--benchmark_json with single-task rows.")
  grad_bytes = (trunk_bytes(_DEPTH.value, _BASE_WIDTH.value) +
                int(4e6 * _HEAD_MPARAMS.value))
  print(f"step s/update: {step_times}; gradient of one update: "
        f"{grad_bytes / 2**20:.1f} MiB; link {_LINK_GBPS.value:g} Gbit/s; "
        f"{_PS.value} ps")
  header = (f"{'k':>3} | {'mode':<11} | " +
            " | ".join(f"{t + ' upd/s':>10}" for t in step_times) +
            f" | {'images/s':>9} | limit")
  print(header)
  print("-" * len(header))
  for k in (int(w) for w in _WORKERS.value):
    results = model(step_times, grad_bytes, k, _LINK_GBPS.value * 1e9,
                    _PS.value, _BATCH.value)
    for mode, (rate, images, limit) in results.items():
      print(f"{k:>3} | {mode:<11} | " +
            " | ".join(f"{rate[t]:>10.3f}" for t in step_times) +
            f" | {images:>9.1f} | {limit}")


if __name__ == "__main__":
  app.run(main)
