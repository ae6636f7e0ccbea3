"""Timing, machine peak and memory measurements for tools/benchmark.py.

The machines this project runs on are shared and noisy, so: every figure is a
median over several calls after warm-up calls (tracing, oneDNN primitive
creation, memory pools); implementations that are compared are timed in
alternation inside one process (``alternate``); and the matmul peak is the
best of several calls, measured in the same process as the step it is
compared with.
"""

import resource
import time
from typing import Callable, Dict, List, Mapping

import numpy as np
import tensorflow as tf


def matmul_peak(dtype=tf.float32, size: int = 2048, repeats: int = 5) -> float:
  """Best GFLOP/s of a ``size``^3 ``tf.matmul`` (``2 * size**3`` FLOPs)."""
  rng = tf.random.Generator.from_seed(0)
  a = tf.cast(rng.normal((size, size)), dtype)
  b = tf.cast(rng.normal((size, size)), dtype)
  matmul = tf.function(tf.matmul)
  matmul(a, b).numpy()  # warm-up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).numpy()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best / 1e9


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
  """Best GB/s of ``v.assign_add(ones)`` on a float32 variable of
  ``megabytes``: in place, as the fused RMSProp kernel works (reads v and
  ones, writes v: ``3 * megabytes`` moved). An op with a fresh output of
  that size is several times slower: glibc maps large blocks anew and the
  kernel faults in and zeroes every page."""
  n = megabytes * 2 ** 20 // 4
  variable = tf.Variable(tf.zeros((n,), tf.float32))
  ones = tf.ones((n,), tf.float32)

  @tf.function
  def add():
    variable.assign_add(ones)
    return tf.constant(0)

  add().numpy()  # warm-up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    add().numpy()
    best = min(best, time.perf_counter() - start)
  return 3 * megabytes * 2 ** 20 / best / 1e9


def time_calls(fn: Callable[[], object], steps: int,
               warmup: int) -> List[float]:
  """Seconds of each of ``steps`` calls of ``fn`` after ``warmup`` calls.

  ``fn`` must block until its work is done (e.g. call ``.numpy()``).
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def alternate(fns: Mapping[str, Callable[[], object]], rounds: int,
              warmup: int) -> Dict[str, List[float]]:
  """Times every ``fn`` once per round, in turn, after ``warmup`` rounds.

  Alternating spreads the machine's load changes over all contenders, so
  their ratio is meaningful even when absolute times drift.
  """
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times


def median(times: List[float]) -> float:
  return float(np.median(times)) if times else float("nan")


def peak_memory_mb() -> float:
  """Peak resident set size of this process so far (Linux: ru_maxrss KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
