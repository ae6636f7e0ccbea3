"""Speed options of the training step (TrainConfig; measured by tools/benchmark.py).

None of these change what is computed, only how fast (mixed precision also
changes the rounding). All are off by default:

  jit_compile       XLA-compile each task's forward + backward (the data read
                    and the RMSProp update stay outside: iterator ops cannot
                    be compiled). On this project's 2-core CPU XLA was about 3x
                    slower than TF's default oneDNN kernels (SPEC.md); it is
                    there for GPUs and TPUs.
  mixed_precision   "mixed_bfloat16" (or "mixed_float16"): layers compute in
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

import tensorflow as tf
import tf_keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_precision(name: str) -> str:
  if name not in PRECISIONS:
    raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got "
                     f"{name!r}.")
  return name


@contextlib.contextmanager
def precision_policy(name: str):
  """Builds layers under the tf_keras policy ``name``; restores it after."""
  check_precision(name)
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(name)
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
