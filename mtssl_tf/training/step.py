"""One multi-task training update, written once (paper §4, Figure 2).

The training loop (``training/loop.py``), the benchmark
(``benchmarks/task_step.py``) and the parameter-server mode
(``training/parameter_server.py``) all run their updates through
``TaskStep``:

  * ``forward_backward(t, images, labels)``: task t's forward and backward
    pass on one batch (optionally XLA-compiled), gradients with respect to
    ``network.task_variables(t)`` (trunk, t's lasso row, t's head) and logs;
  * ``replica_result(t, rid, plan)``: what replica ``rid`` contributes to t's
    update: its batch's gradients, or zeros when it is outside t's group;
  * ``cycle``: each task's contributions summed over the replicas of that
    task's own group only (no other task's zeros exchanged on one host);
  * ``apply(t, ...)``: the group average applied by t's own RMSProp, skipped
    when the loss or a gradient is not finite, and t's step counter
    advanced; then the NaN guard's verdict (logs["nonfinite"]: ``FINITE``,
    ``BAD_LOSS``, ``BAD_GRADS`` or ``BAD_VALUES`` when the update left a
    weight, batch-norm statistic or RMSProp slot non-finite), on which the
    loop stops before any save.

``run_cycles`` unrolls ``steps_per_call`` cycles in one ``tf.function``
trace, the same way for the loop and the benchmark.
"""

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

Logs = Dict[str, tf.Tensor]

# The NaN guard's verdict on one update of one task (``TaskStep.apply``).
FINITE, BAD_LOSS, BAD_GRADS, BAD_VALUES = 0, 1, 2, 3
NONFINITE_WHAT = {
    BAD_LOSS: "a non-finite loss",
    BAD_GRADS: "non-finite gradients",
    BAD_VALUES: "non-finite values after its update (weights, batch-norm "
                "statistics or RMSProp slots)"}


def all_finite(values) -> tf.Tensor:
  """Scalar bool: every float value of ``values`` (variables or tensors) is
  finite."""
  checks = [tf.reduce_all(tf.math.is_finite(v)) for v in values
            if v.dtype.is_floating]
  return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def log_keys(task, head, labels_spec) -> Tuple[str, ...]:
  """Names of ``task.metrics`` outputs, found by tracing (no computation)."""
  outputs_spec = tf.nest.map_structure(
      lambda t: tf.TensorSpec(t.shape, t.dtype), head.output)
  traced = tf.function(task.metrics).get_concrete_function(
      labels_spec, outputs_spec)
  return tuple(sorted(traced.structured_outputs))


class TaskStep:
  """Per-task forward/backward, aggregation over a task's group and apply.

  Args:
    network: a ``models.multitask.MultiTaskNetwork``.
    optimizers: task name -> that task's ``SlimRMSProp`` (built).
    next_batch: task name -> ``(images, labels)`` of the next batch for this
      replica (called inside the replica function).
    task_steps: task name -> int64 counter advanced by every applied update
      (or None: not counted).
    jit_compile: XLA-compile each task's forward + backward (the batch is
      read outside the compiled function).
    label_specs: task name -> element spec of the labels; needed only when a
      replica computes zeros for a task outside its group.
  """

  def __init__(self, network, optimizers: Mapping[str, object],
               next_batch: Callable[[str], Tuple[tf.Tensor, object]],
               task_steps: Optional[Mapping[str, tf.Variable]] = None,
               jit_compile: bool = False,
               label_specs: Optional[Mapping[str, object]] = None):
    self.network = network
    self.tasks = network.tasks
    self.optimizers = optimizers
    self.next_batch = next_batch
    self.task_steps = task_steps
    self._label_specs = label_specs or {}
    # How ``cycle`` sums a task's contributions over its group: "auto",
    # "group" or "all_reduce" (see ``cycle``); traffic of the last trace.
    self.reduction = "auto"
    self.reduced_bytes: Dict[Tuple[str, ...], Dict[str, object]] = {}
    self._log_keys = {}
    self._fb = {
        t: (tf.function(lambda x, y, t=t: self._forward_backward(t, x, y),
                        jit_compile=True) if jit_compile else
            (lambda x, y, t=t: self._forward_backward(t, x, y)))
        for t in network.task_names}

  def _forward_backward(self, t, images, labels):
    grads, outputs, loss, total = self.network.forward_backward(
        t, images, labels)
    logs = {k: tf.cast(v, tf.float32)
            for k, v in self.tasks[t].metrics(labels, outputs).items()}
    logs.update(loss=loss, total_loss=total,
                examples=tf.cast(tf.shape(images)[0], tf.float32))
    return grads, logs

  def forward_backward(self, t: str, images, labels
                       ) -> Tuple[List[tf.Tensor], Logs]:
    """Task t on one batch ``images [B, H, W, 3]``.

    Returns:
      ``(grads, logs)``: gradients aligned with ``network.task_variables(t)``
      and float32 scalars: t's metrics, ``loss``, ``total_loss`` (loss plus
      regularisation) and ``examples`` (B).
    """
    return self._fb[t](images, labels)

  def _zero_logs(self, t) -> Logs:
    if t not in self._log_keys:
      self._log_keys[t] = log_keys(self.tasks[t], self.network.heads[t],
                                   self._label_specs[t])
    zeros = {k: tf.constant(0.0) for k in self._log_keys[t]}
    zeros.update(loss=tf.constant(0.0), total_loss=tf.constant(0.0),
                 examples=tf.constant(0.0))
    return zeros

  def replica_result(self, t: str, rid: int, plan, sync_head_stats: bool):
    """``(grads, logs, head_stats)`` that replica ``rid`` contributes to t.

    Replicas outside t's group contribute zeros. Head batch-norm moving
    statistics are sync-on-read variables that only t's replicas update;
    they are returned so that every replica can be given the group's mean
    (otherwise reading them would average in replicas that never saw t).
    """
    variables = self.network.task_variables(t)
    head_stats = self.network.heads[t].non_trainable_variables
    if t not in plan.tasks_of_replica[rid]:
      stats = ([tf.zeros(v.shape, v.dtype) for v in head_stats]
               if sync_head_stats else [])
      return [tf.zeros_like(v) for v in variables], self._zero_logs(t), stats
    images, labels = self.next_batch(t)
    grads, logs = self.forward_backward(t, images, labels)
    stats = ([tf.identity(v) for v in head_stats] if sync_head_stats
             else [])
    return grads, logs, stats

  def apply(self, t: str, grads: Sequence[tf.Tensor], logs: Logs,
            stats: Sequence[tf.Tensor] = (), group_size: int = 1) -> Logs:
    """Averages sums over t's group and applies t's RMSProp unless the loss
    or a gradient is non-finite (cross-replica context, or no strategy).

    Args:
      grads, logs, stats: sums over t's ``group_size`` replicas.

    Returns:
      The group-averaged logs (``examples`` stays the group's total) and
      ``nonfinite``, the NaN guard's verdict (int32 ``FINITE``, ...): after
      the update, every value it can have changed is checked (t's variables,
      all batch-norm statistics, which the forward pass moves even when the
      update is skipped, and t's RMSProp slots).
    """
    n = float(group_size)
    if group_size != 1:  # a group of one needs no average (and no 95M-
      grads = [g / n for g in grads]  # value division per rp step).
    for variable, value in zip(self.network.heads[t].non_trainable_variables,
                               stats):
      variable.assign(value / n)  # every replica gets the group's mean
    loss_ok = tf.math.is_finite(logs["total_loss"])
    grads_ok = all_finite(grads)
    finite = tf.logical_and(loss_ok, grads_ok)
    apply = lambda: self.optimizers[t].apply_gradients(  # noqa: E731
        zip(grads, self.network.task_variables(t)))
    tf.cond(finite, apply, tf.no_op)
    if self.task_steps is not None:
      self.task_steps[t].assign_add(tf.cast(finite, tf.int64))
    values_ok = all_finite(
        self.network.task_variables(t) +
        list(self.network.trunk.non_trainable_variables) +
        list(self.network.heads[t].non_trainable_variables) +
        list(self.optimizers[t].variables))
    averaged = {k: v / n for k, v in logs.items() if k != "examples"}
    averaged["examples"] = logs["examples"]
    averaged["nonfinite"] = tf.where(
        loss_ok, tf.where(grads_ok, tf.where(values_ok, FINITE, BAD_VALUES),
                          BAD_GRADS), BAD_LOSS)
    return averaged

  def cycle(self, active: Sequence[str], strategy, plan) -> Dict[str, Logs]:
    """One update of each task in ``active`` on all replicas of ``strategy``.

    Every replica computes the tasks ``plan`` gives it. A task's
    contributions are then summed over the replicas of the task's own group
    and applied by ``apply`` (cross-replica context). How they are summed
    (``reduction``, recorded with its traffic in ``reduced_bytes``):

      * "group" (all replicas local to this host: default and mirrored
        strategies): the group's per-replica results are added where they
        are, no collective: a replica sends only the tasks it computed (its
        one task's trunk + head gradients when replicas >= tasks).
      * "all_reduce" (replicas on other hosts, MultiWorkerMirroredStrategy):
        one all-reduce of every active task's results, zeros from replicas
        outside a group (tasks x trunk per replica), since a host only sees
        its own replicas' values.
    """
    multi = strategy.num_replicas_in_sync > 1
    reduction = self.reduction
    if reduction == "auto":
      local = not multi or (len(strategy.extended.worker_devices) ==
                            strategy.num_replicas_in_sync)
      reduction = "group" if local else "all_reduce"
    reduced = [0] * strategy.num_replicas_in_sync

    def replica_step():
      ctx = tf.distribute.get_replica_context()
      rid = tf.get_static_value(ctx.replica_id_in_sync_group)
      results = {t: self.replica_result(t, rid, plan, multi) for t in active}
      if multi and reduction == "all_reduce":
        reduced[rid] += _nbytes(results)
        results = ctx.all_reduce(tf.distribute.ReduceOp.SUM, results)
      elif multi:
        reduced[rid] += sum(_nbytes(results[t]) for t in active
                            if t in plan.tasks_of_replica[rid])
      return results

    per_replica = strategy.run(replica_step)
    self.reduced_bytes[tuple(active)] = {"reduction": reduction,
                                         "per_replica": reduced}
    sums = {}
    for t in active:
      members = (plan.group(t) if multi and reduction == "group" else [0])
      sums[t] = tf.nest.map_structure(
          lambda v, members=members: _add(
              [strategy.experimental_local_results(v)[r] for r in members]),
          per_replica[t])
    return {t: self.apply(t, *sums[t], group_size=plan.group_size(t))
            for t in active}


def _nbytes(structure) -> int:
  """Bytes of the (statically shaped) tensors in ``structure``."""
  return sum(int(t.shape.num_elements()) * t.dtype.size
             for t in tf.nest.flatten(structure))


def _add(values: Sequence[tf.Tensor]) -> tf.Tensor:
  return values[0] if len(values) == 1 else tf.add_n(values)


def run_cycles(cycle_fn: Callable[[Sequence[str]], Dict[str, Logs]],
               cycle: Sequence[Sequence[str]], n: int
               ) -> List[List[Dict[str, Logs]]]:
  """``n`` global steps, each running ``cycle_fn(active)`` for every
  ``active`` task tuple of ``cycle``, unrolled in one trace (call inside a
  ``tf.function``). Returns the logs, ``[n][len(cycle)]``."""
  return [[cycle_fn(active) for active in cycle] for _ in range(n)]
