"""Speed options of the training step (TrainConfig; measured by tools/benchmark.py).

None of these change what is computed, only how fast (mixed precision also
changes the rounding). All are off by default, except that mixed precision
is "auto":

  jit_compile       XLA-compile each task's forward + backward (the data read
                    and the RMSProp update stay outside: iterator ops cannot
                    be compiled). On this project's 2-core CPU XLA was about 3x
                    slower than TF's default oneDNN kernels (SPEC.md); it is
                    there for GPUs and TPUs.
  mixed_precision   "auto" (default): "mixed_bfloat16" where the hardware
                    multiplies bf16 natively (a CPU with AMX_BF16 or
                    AVX512_BF16, a GPU of compute capability >= 8.0, a TPU),
                    else "float32" (``resolve_precision``). Without native
                    bf16, TensorFlow emulates it: on this project's 2-core
                    AVX-512 CPU without AMX a bf16 matmul ran at 61 against
                    281 GFLOP/s in fp32 and the rp step was 2.5x slower
                    (issue 16), so an explicit "mixed_bfloat16" there logs a
                    warning. On a CPU with AMX it was 2x faster.
                    "mixed_bfloat16" (or "mixed_float16"): layers compute in
                    16 bits, variables, optimizer slots, losses and gradients
                    stay float32 (tf_keras mixed-precision policy). bfloat16
                    has float32's exponent range, so it needs no loss scaling;
                    CPUs with AVX512_BF16 / AMX_BF16 run its convolutions on
                    bf16 units. float16 without loss scaling can underflow
                    gradients and is slow on CPUs: use it only on GPUs, at
                    your own risk (no loss scaling is applied).
  intra_op_threads / inter_op_threads
                    TensorFlow's thread pools (0 = TensorFlow's default, one
                    thread per core for both). They must be set before
                    TensorFlow starts its runtime: main.py applies them first.
  steps_per_call    global steps run inside one tf.function call, which saves
                    the per-call Python and dispatch overhead (it matters for
                    small networks; a paper-scale step takes seconds).
"""

import contextlib
from typing import Iterable, Optional

from absl import logging
import tensorflow as tf
import tf_keras

from mtssl_tf import config

PRECISIONS = config.MIXED_PRECISIONS
# CPU flags (Linux /proc/cpuinfo) of native bf16 matmul units.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# What emulated bf16 cost where it was measured (issue 16, tools/benchmark.py
# options section): the warning quotes it.
EMULATED_BF16_SLOWDOWN = ("a bf16 matmul ran at 61 vs 281 GFLOP/s in float32 "
                          "and the rp training step was 2.5x slower, "
                          "measured on a 2-core AVX-512 CPU without AMX")


def check_precision(name: str) -> str:
  if name not in PRECISIONS:
    raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got "
                     f"{name!r}.")
  return name


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset:
  """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def _accelerator_has_bf16() -> bool:
  """A TPU, or a GPU of compute capability >= 8.0 (Ampere and later)."""
  if tf.config.list_logical_devices("TPU"):
    return True
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    if tuple(details.get("compute_capability", (0, 0))) >= (8, 0):
      return True
  return False


def native_bf16(flags: Optional[Iterable[str]] = None,
                accelerator: Optional[bool] = None) -> bool:
  """Whether bf16 matmuls run on native units here.

  Args:
    flags: CPU flags (default: this machine's ``cpu_flags()``).
    accelerator: whether an accelerator with native bf16 is present
      (default: asks TensorFlow).
  """
  if accelerator is None:
    accelerator = _accelerator_has_bf16()
  flags = cpu_flags() if flags is None else frozenset(flags)
  return accelerator or any(f in flags for f in BF16_CPU_FLAGS)


def resolve_precision(name: str, flags: Optional[Iterable[str]] = None,
                      accelerator: Optional[bool] = None) -> str:
  """The tf_keras policy for ``name``: "auto" picks bf16 only where native.

  An explicit "mixed_bfloat16" without native bf16 is kept (the user asked
  for it) with a logged warning saying what it costs.
  """
  check_precision(name)
  if name not in ("auto", "mixed_bfloat16"):
    return name
  native = native_bf16(flags, accelerator)
  if name == "auto":
    return "mixed_bfloat16" if native else "float32"
  if not native:
    logging.warning(
        "--mixed_precision=mixed_bfloat16 on hardware without native bf16 "
        "matmul (no %s CPU flag, no TPU or GPU with compute capability >= "
        "8.0): TensorFlow emulates bf16 and it is SLOWER than float32 (%s). "
        "Use --mixed_precision=auto or float32.", "/".join(BF16_CPU_FLAGS),
        EMULATED_BF16_SLOWDOWN)
  return name


@contextlib.contextmanager
def precision_policy(name: str):
  """Builds layers under the tf_keras policy for ``name`` (``"auto"`` is
  resolved by ``resolve_precision``); restores the previous policy after."""
  policy = resolve_precision(name)
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> None:
  """Sets TensorFlow's thread pools (0 keeps a pool's current setting).

  Raises:
    ValueError: a negative count, or TensorFlow's runtime already started
      with other settings (set threads before running any TensorFlow op).
  """
  if intra_op < 0 or inter_op < 0:
    raise ValueError(f"Thread counts must be >= 0 (0 = TensorFlow's "
                     f"default), got intra {intra_op}, inter {inter_op}.")
  threading = tf.config.threading
  for value, getter, setter, name in (
      (intra_op, threading.get_intra_op_parallelism_threads,
       threading.set_intra_op_parallelism_threads, "intra_op_threads"),
      (inter_op, threading.get_inter_op_parallelism_threads,
       threading.set_inter_op_parallelism_threads, "inter_op_threads")):
    if not value or getter() == value:
      continue
    try:
      setter(value)
    except RuntimeError:
      raise ValueError(
          f"{name}={value} cannot be applied: TensorFlow's runtime has "
          f"already started. Set thread counts before running any "
          f"TensorFlow op (python -m mtssl_tf.main does).") from None
