"""The multi-task training step on cached batches, for timing.

The step is the training loop's own update, ``training/step.py``'s
``TaskStep``: a ``MultiTaskNetwork``, each task's loss plus the network's
regularisation (and its metrics), the gradient with respect to
``network.task_variables(task)``, and that task's ``SlimRMSProp`` update
(skipped when the loss is not finite). One cycle updates every task once, in
order, as one global step of the loop on one replica. The speed options are
applied as the loop applies them (``training/speed.py``): the network is
built under the precision policy, XLA compiles each task's forward +
backward, and ``steps_per_call`` cycles are unrolled inside one
``tf.function`` call by ``step.run_cycles``, as in the loop.

Inputs are cached: one batch per task is drawn from the task's real
``make_dataset`` pipeline and kept as constant tensors, so step time measures
the model alone (tools/benchmark.py times the pipelines separately).
"""

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.models import multitask
from mtssl_tf.training import optimizers
from mtssl_tf.training import replicas
from mtssl_tf.training import speed
from mtssl_tf.training import step as step_lib


def cached_batches(tasks: Mapping[str, object], batch_size: int,
                   data: Optional[Mapping[str, config_lib.DataConfig]] = None,
                   seed: int = 0) -> Dict[str, Tuple[tf.Tensor, object]]:
  """One ``(images, labels)`` batch per task from its real input pipeline."""
  batches = {}
  for i, (name, task) in enumerate(tasks.items()):
    source = (data or {}).get(name, config_lib.DataConfig())
    dataset, _ = task.make_dataset(source, batch_size, seed=seed + i)
    batches[name] = next(iter(dataset))
  return batches


def build_task_step(trunk_config: config_lib.TrunkConfig,
                    tasks: Mapping[str, object],
                    batches: Mapping[str, Tuple[tf.Tensor, object]],
                    precision: str = "float32", jit_compile: bool = False,
                    steps_per_call: int = 1,
                    learning_rate: float = 1e-3,
                    optimizer_class=optimizers.SlimRMSProp
                    ) -> Callable[[], float]:
  """A function running ``steps_per_call`` training cycles of all ``tasks``.

  Returns:
    ``step()``, which blocks until done and returns the last cycle's summed
    loss; ``step.network`` is its ``MultiTaskNetwork``.
  """
  return build_task_steps(trunk_config, tasks, batches, [list(tasks)],
                          precision, jit_compile, steps_per_call,
                          learning_rate, optimizer_class)["+".join(tasks)]


def build_task_steps(trunk_config: config_lib.TrunkConfig,
                     tasks: Mapping[str, object],
                     batches: Mapping[str, Tuple[tf.Tensor, object]],
                     groups: Sequence[Sequence[str]],
                     precision: str = "float32", jit_compile: bool = False,
                     steps_per_call: int = 1,
                     learning_rate: float = 1e-3,
                     optimizer_class=optimizers.SlimRMSProp
                     ) -> Dict[str, Callable]:
  """Step functions of several task groups on ONE shared network.

  E.g. ``groups=[["rp"], ["col"], ["rp", "col"]]`` times the single-task
  steps and the joint step on the same variables, so that their difference
  is the multi-task overhead alone. ``optimizer_class`` is
  ``optimizers.SlimRMSProp`` or a stand-in with its interface
  (``benchmarks/legacy.py``'s pre-issue-16 update, for before/after runs).

  Returns:
    ``"+".join(group)`` -> ``step()`` as ``build_task_step``.
  """
  with speed.precision_policy(precision):
    network = multitask.MultiTaskNetwork(trunk_config, tasks)
  opts = {t: optimizer_class(learning_rate, name=f"rmsprop_{t}")
          for t in tasks}
  for t, opt in opts.items():
    opt.build(network.task_variables(t))
  # The loop's own update (training/step.py) on one replica that computes
  # every task of the group; batches are cached constants.
  task_step = step_lib.TaskStep(network, opts, lambda t: batches[t],
                                jit_compile=jit_compile)
  strategy = tf.distribute.get_strategy()

  def make_step(group):
    plan = replicas.plan_replicas(group, 1)

    @tf.function
    def call():
      logs = step_lib.run_cycles(
          lambda active: task_step.cycle(active, strategy, plan),
          [tuple(group)], steps_per_call)
      return tf.add_n([logs[-1][0][t]["total_loss"] for t in group])

    def step():
      return float(call().numpy())
    step.network = network  # for benchmarks/memory.py's floor
    return step

  return {"+".join(group): make_step(list(group)) for group in groups}
