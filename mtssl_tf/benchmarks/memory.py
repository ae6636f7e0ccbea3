"""The memory floor of a training step (issue 16): what it cannot do without.

A step of task t must hold, at its peak:

  weights       every variable of the network (trunk, all heads, lasso,
                batch-norm statistics), float32;
  slots         two RMSProp slots (ms, mom) per variable of each task, one
                set per task (paper §4: the trunk carries one per task);
  gradients     one value per variable of task t: the NaN guard
                (``training/step.py``) checks them all before applying any;
  activations   the forward tensors t's backward pass reads, counted on the
                traced graph of ``MultiTaskNetwork.forward_backward``: every
                distinct float tensor produced by a forward op and consumed
                by a gradient op, except variable reads and constants (those
                are the weights). E.g. a convolution's input (for its kernel
                gradient), a batch norm's input, a ReLU's output.

The floor of a configuration is weights + slots + the largest task's
gradients + activations (tasks run one after another within a cycle), plus
the process's resident memory before any model exists (TensorFlow and its
libraries: ``timing.peak_memory_mb`` after import). Measured peak resident
memory above it is allocator reuse and fragmentation, kernel scratch
(oneDNN) and temporaries of the update and of the finite checks.
"""

from typing import Dict, Mapping

import tensorflow as tf

_ALIASES = ("Identity", "Reshape", "Cast", "ReadVariableOp", "Const")


def _nbytes(tensor) -> int:
  n = tensor.shape.num_elements()
  return int(n) * tensor.dtype.size if n is not None else 0


def _is_weight(tensor) -> bool:
  """A tensor that is a variable read or a constant (through aliases)."""
  op = tensor.op
  while op.type in _ALIASES:
    if op.type in ("ReadVariableOp", "Const"):
      return True
    if not op.inputs:
      return False
    op = op.inputs[0].op
  return False


def saved_activation_bytes(graph) -> int:
  """Bytes of the forward tensors read by gradient ops in ``graph`` (a
  FuncGraph holding a ``tf.GradientTape`` forward and its gradient)."""
  seen, total = set(), 0
  for op in graph.get_operations():
    if not op.name.startswith("gradient_tape/"):
      continue
    for tensor in op.inputs:
      if (tensor.name in seen or not tensor.dtype.is_floating or
          tensor.op.name.startswith("gradient_tape/") or _is_weight(tensor)):
        continue
      seen.add(tensor.name)
      total += _nbytes(tensor)
  return total


def _variables_bytes(variables) -> int:
  return sum(int(v.shape.num_elements()) * v.dtype.size for v in variables)


def floor(network, batches: Mapping[str, tuple]) -> Dict[str, object]:
  """The memory floor of one cycle of ``network``'s tasks, in bytes.

  Args:
    network: a built ``models.multitask.MultiTaskNetwork``.
    batches: task name -> ``(images, labels)`` of the step's batch.

  Returns:
    ``{"weights", "slots", "tasks": {t: {"gradients", "activations"}},
    "step": weights + slots + max_t(gradients + activations)}``.
  """
  weights = _variables_bytes(network.trunk.variables) + sum(
      _variables_bytes(m.variables) for m in
      list(network.heads.values()) + list(network.lasso.values()))
  slots = sum(2 * _variables_bytes(network.task_variables(t))
              for t in network.task_names)
  per_task = {}
  for t in network.task_names:
    images, labels = batches[t]
    traced = tf.function(
        lambda x, y, t=t: network.forward_backward(t, x, y)[0]
    ).get_concrete_function(images, labels)
    per_task[t] = {
        "gradients": _variables_bytes(network.task_variables(t)),
        "activations": saved_activation_bytes(traced.graph)}
  peak_task = max(v["gradients"] + v["activations"] for v in per_task.values())
  return {"weights": weights, "slots": slots, "tasks": per_task,
          "step": weights + slots + peak_task}
