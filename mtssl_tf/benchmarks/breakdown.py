"""Where one task's training step goes: trunk, head, update (issue 16).

Times, alternated on ONE network (``timing.alternate``), the pieces of the
training step of ``training/step.py`` on a cached batch:

  trunk_fwd      the trunk to block 3 (training mode)
  trunk_fwd_bwd  the same plus gradients of mean(block3**2) + weight decay
                 with respect to the trunk's variables
  fwd            trunk + head + task loss + regularisation
  fwd_bwd        that plus the gradients (``MultiTaskNetwork.forward_backward``)
  update         the task's RMSProp applied to fixed gradients
  step           fwd_bwd + update in one function (the training step)

and derives by differences: trunk forward, trunk backward (trunk_fwd_bwd -
trunk_fwd), head forward and loss (fwd - trunk_fwd), head backward ((fwd_bwd
- fwd) - (trunk_fwd_bwd - trunk_fwd)), the update, and what the whole step
costs beyond the sum of its parts (``other``: scheduling, the loss-finite
check; negative when the parts overlap). Differences of medians of a noisy
machine: read them as shares, not as exact seconds. Input time is the
pipeline section's (the step reads a prefetched batch).

Memory: weights, gradients and the two RMSProp slots take 16 bytes per
parameter; ``param_counts`` gives what that floor is for the task.
"""

from typing import Dict

import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.benchmarks import task_step
from mtssl_tf.benchmarks import timing
from mtssl_tf.models import multitask
from mtssl_tf.training import optimizers

BYTES_PER_PARAMETER = 16  # float32 weight, gradient, ms and mom slots


def _num(variables) -> int:
  return int(sum(v.shape.num_elements() for v in variables))


def measure(trunk_config: config_lib.TrunkConfig, task, batch_size: int,
            rounds: int, warmup: int) -> Dict[str, object]:
  """Times the pieces of ``task``'s step; returns seconds and parts.

  Returns:
    ``{"times": name -> [s], "step_seconds": name -> median s, "parts":
    part -> s, "param_counts": {"trunk", "head"}}``.
  """
  name = task.name
  images, labels = task_step.cached_batches({name: task}, batch_size)[name]
  network = multitask.MultiTaskNetwork(trunk_config, {name: task})
  variables = network.task_variables(name)
  trunk_variables = network.trunk.trainable_variables
  opt = optimizers.SlimRMSProp(1e-3, name=f"rmsprop_{name}")
  opt.build(variables)

  @tf.function
  def trunk_fwd():
    return tf.reduce_sum(network.trunk(images, training=True)["block3"])

  @tf.function
  def trunk_fwd_bwd():
    with tf.GradientTape() as tape:
      block3 = network.trunk(images, training=True)["block3"]
      loss = tf.reduce_mean(tf.square(block3)) + tf.add_n(
          network.trunk.losses)
    return tape.gradient(loss, trunk_variables)

  @tf.function
  def fwd():
    outputs = network(name, images, training=True)
    return network.tasks[name].loss(labels, outputs) + (
        network.regularization_loss(name))

  @tf.function
  def fwd_bwd():
    return network.forward_backward(name, images, labels)[0]

  fixed = [tf.constant(g) for g in fwd_bwd()]

  @tf.function
  def update():
    opt.apply_gradients(zip(fixed, variables))
    return opt.iterations.read_value()

  @tf.function
  def step():
    grads, _, _, total = network.forward_backward(name, images, labels)
    tf.cond(tf.math.is_finite(total),
            lambda: opt.apply_gradients(zip(grads, variables)), tf.no_op)
    return total

  def blocking(fn):
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())

  fns = {"trunk_fwd": trunk_fwd, "trunk_fwd_bwd": trunk_fwd_bwd, "fwd": fwd,
         "fwd_bwd": fwd_bwd, "update": update, "step": step}
  times = timing.alternate({k: blocking(f) for k, f in fns.items()}, rounds,
                           warmup)
  s = {k: timing.median(v) for k, v in times.items()}
  trunk_bwd = s["trunk_fwd_bwd"] - s["trunk_fwd"]
  parts = {"trunk forward": s["trunk_fwd"], "trunk backward": trunk_bwd,
           "head forward + loss": s["fwd"] - s["trunk_fwd"],
           "head backward": s["fwd_bwd"] - s["fwd"] - trunk_bwd,
           "update": s["update"]}
  parts["other"] = s["step"] - sum(parts.values())
  return {"times": times, "step_seconds": s, "parts": parts,
          "param_counts": {"trunk": _num(trunk_variables),
                           "head": _num(variables) - _num(trunk_variables)}}
