"""TF-Slim's RMSProp, one instance per task (paper §4, Figure 2).

Every task applies its own gradients with its own RMSProp, so the shared trunk
carries one set of slot variables per task. The update is TF1's
``tf.compat.v1.train.RMSPropOptimizer`` (what TF-Slim training used):

    ms  <- decay * ms + (1 - decay) * g**2          (ms starts at 1, as TF1)
    mom <- momentum * mom + lr * g / sqrt(ms + eps)
    var <- var - mom

with TF-Slim's defaults decay 0.9, momentum 0.9, epsilon 1.0. (tf_keras's
RMSprop has the same formula but starts ms at 0.)

Slots live in dicts keyed by the variable's path (e.g.
``block3/unit_7/bottleneck_v2/conv1/kernel``) so a checkpoint names them:
``optimizers/<task>/ms/<path>`` and ``optimizers/<task>/mom/<path>``
(``/`` is escaped as ``.S`` in checkpoint keys).

Each variable is updated by one fused kernel, TF's ``ResourceApplyRMSProp``
(the kernel behind TF1's RMSPropOptimizer: the formula above, with the
division written ``lr * g / sqrt(ms + eps)``), instead of ~9 separate
elementwise ops and their temporaries (issue 16 measured 0.40 s -> 0.15 s
for rp's 95M parameters on a 2-core CPU; tools/benchmark.py's breakdown and
levers sections measure it on yours).
tests/training/optimizers_test.py checks it against the formula written out.

Updates are applied in cross-replica context (the training loop all-reduces
the gradients first); slots are created under the strategy scope so they are
mirrored like the variables they belong to, and every copy is updated through
``strategy.extended.update`` (one kernel per device copy).
"""

from typing import Dict, Iterable, List, Sequence, Tuple

import tensorflow as tf


def variable_path(variable) -> str:
  """A stable name for a model variable: its name without ':0'."""
  return variable.name.split(":")[0]


class SlimRMSProp(tf.Module):
  """RMSProp with TF1/TF-Slim semantics and named slot variables.

  Args:
    learning_rate: initial step size (constant by default: no schedule for
      self-supervised tasks, paper §4).
    decay: moving-average decay of the squared gradient.
    momentum: momentum of the update.
    epsilon: added to the mean square inside the square root.
    name: module name, e.g. "rmsprop_rp".
    lr_decay_steps, lr_decay_rate: TF-Slim's staircase exponential decay
      (``tf.compat.v1.train.exponential_decay(..., staircase=True)``, the
      schedule of Szegedy et al. for ImageNet training): the update after
      ``i`` updates uses ``learning_rate * lr_decay_rate ** (i //
      lr_decay_steps)``; ``lr_decay_steps=0`` keeps it constant. ``i`` is
      ``iterations``, which the checkpoint holds, so a resumed run continues
      the schedule.
  """

  def __init__(self, learning_rate: float, decay: float = 0.9,
               momentum: float = 0.9, epsilon: float = 1.0,
               name: str = "rmsprop", lr_decay_steps: int = 0,
               lr_decay_rate: float = 1.0):
    super().__init__(name=name)
    if lr_decay_steps < 0 or not lr_decay_rate > 0:
      raise ValueError(f"{name}: lr_decay_steps must be >= 0 and "
                       f"lr_decay_rate > 0, got {lr_decay_steps}, "
                       f"{lr_decay_rate}.")
    self.learning_rate = learning_rate
    self.lr_decay_steps = int(lr_decay_steps)
    self.lr_decay_rate = float(lr_decay_rate)
    self.decay = decay
    self.momentum = momentum
    self.epsilon = epsilon
    self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name="iterations")
    self.ms: Dict[str, tf.Variable] = {}
    self.mom: Dict[str, tf.Variable] = {}
    self._keys: List[str] = []

  def build(self, variables: Sequence[tf.Variable]) -> None:
    """Creates the slots of ``variables`` (call under the strategy scope)."""
    keys = [variable_path(v) for v in variables]
    if len(set(keys)) != len(keys):
      raise ValueError(f"{self.name}: variable names are not unique.")
    for key, v in zip(keys, variables):
      if key in self.ms:
        continue
      self.ms[key] = tf.Variable(tf.ones(v.shape, v.dtype), trainable=False,
                                 name=f"ms/{key}")
      self.mom[key] = tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                  name=f"mom/{key}")
    self._keys = keys

  def current_learning_rate(self) -> tf.Tensor:
    """float32 learning rate of the next update (the schedule at
    ``iterations``)."""
    if not self.lr_decay_steps:
      return tf.constant(self.learning_rate, tf.float32)
    decays = tf.math.floordiv(self.iterations, self.lr_decay_steps)
    return self.learning_rate * tf.pow(
        tf.constant(self.lr_decay_rate, tf.float32), tf.cast(decays,
                                                              tf.float32))

  def slot_names(self) -> List[str]:
    return sorted(self.ms)

  def _slots_of(self, grads_and_vars):
    """``[(grad, var, ms, mom)]`` of the non-None gradients."""
    out = []
    for grad, var in grads_and_vars:
      if grad is None:
        continue
      key = variable_path(var)
      if key not in self.ms:
        raise ValueError(f"{self.name} was not built for variable {key!r}.")
      out.append((tf.convert_to_tensor(grad), var, self.ms[key],
                  self.mom[key]))
    return out

  def apply_gradients(
      self, grads_and_vars: Iterable[Tuple[tf.Tensor, tf.Variable]]):
    """Applies one update (cross-replica context, or no strategy)."""
    ops = []
    # Read before ``iterations`` advances (as TF-Slim's global step).
    learning_rate = self.current_learning_rate()
    for grad, var, ms, mom in self._slots_of(grads_and_vars):
      # A mirrored variable is updated on each device with that device's
      # copies of var, ms and mom (extended.update selects them). The
      # variable's own strategy is used: the caller need not be in its scope.
      ops.append(_strategy_of(var).extended.update(
          var, self._apply_one, args=(grad, ms, mom, learning_rate),
          group=True))
    ops.append(self.iterations.assign_add(1))
    return tf.group(ops)

  def _apply_one(self, var, grad, ms, mom, learning_rate):
    dtype = var.dtype.base_dtype
    return tf.raw_ops.ResourceApplyRMSProp(
        var=_handle(var), ms=_handle(ms), mom=_handle(mom),
        lr=tf.cast(learning_rate, dtype),
        rho=tf.constant(self.decay, dtype),
        momentum=tf.constant(self.momentum, dtype),
        epsilon=tf.constant(self.epsilon, dtype),
        grad=tf.cast(grad, dtype), use_locking=False)


def task_schedule(task, global_batch_size: int) -> Dict[str, object]:
  """``SlimRMSProp`` schedule arguments of ``task``: its optional
  ``learning_rate_decay(global_batch_size)`` (tasks/base.py), else none
  (constant, paper §4)."""
  decay = getattr(task, "learning_rate_decay", None)
  if decay is None:
    return {}
  steps, rate = decay(global_batch_size)
  return {"lr_decay_steps": steps, "lr_decay_rate": rate}


def _strategy_of(variable) -> tf.distribute.Strategy:
  inner = getattr(variable, "_variable", variable)  # tf_keras AutoCast
  if isinstance(inner, tf.distribute.DistributedValues):
    return inner.distribute_strategy
  return tf.distribute.get_strategy()


def _handle(variable):
  """The resource handle of a (possibly tf_keras AutoCast-wrapped) variable."""
  return getattr(variable, "_variable", variable).handle
