"""The implementations issue 16 replaced, kept for before/after benchmarks.

tools/benchmark.py's ``levers`` section times these against the current code
in alternation, in one process, so the speed-up of each change is measured on
the same machine state. Nothing outside the benchmark uses them.

  ``ElementwiseRMSProp``  TF1 RMSProp written as ~9 elementwise ops per
      variable (what ``training/optimizers.py`` did), plus the division of
      every gradient by the task's group size that the update made even
      for a group of one. The current optimizer runs TF's fused
      ``ResourceApplyRMSProp`` kernel and skips the division.
  ``conv3x3_fc_unit`` / ``Conv3x3RelativePosition``  rp's "fully-connected"
      residual units as a full ResNet-v2 bottleneck unit on a 1x1 map, whose
      3x3 conv stores 8 dead taps per weight (6.3M weights at the paper's
      widths). The current head (``models/heads.py``) builds that conv 1x1.
  ``Conv1x1RelativePosition``  the fully-connected units' 1x1 convs as
      ``Conv2D`` layers on the 1x1 map, whose backward pass TF computes ~3x
      slower than the same products as matmuls; the current head's
      ``heads.PointwiseConv`` holds the same variables and computes matmuls
      with a hand-written backward pass.
"""

import tensorflow as tf
import tf_keras

from mtssl_tf.models import heads
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import relative_position
from mtssl_tf.training import optimizers


class ElementwiseRMSProp(optimizers.SlimRMSProp):
  """``SlimRMSProp`` as elementwise ops (same slots, same update)."""

  def apply_gradients(self, grads_and_vars):
    ops = []
    for grad, var, ms, mom in self._slots_of(grads_and_vars):
      grad = grad / 1.0  # the old loop's average over a group of one
      new_ms = self.decay * ms + (1.0 - self.decay) * tf.square(grad)
      new_mom = self.momentum * mom + self.learning_rate * grad * (
          tf.math.rsqrt(new_ms + self.epsilon))
      ops.append(ms.assign(new_ms))
      ops.append(mom.assign(new_mom))
      ops.append(var.assign_sub(new_mom))
    ops.append(self.iterations.assign_add(1))
    return tf.group(ops)


def conv3x3_fc_unit(x, depth: int, depth_bottleneck: int, name: str,
                    weight_decay: float = 1e-4):
  """``[N, C_in]`` -> ``[N, depth]``: a bottleneck unit on a 1x1 map."""
  x = tf_keras.layers.Reshape((1, 1, x.shape[-1]), name=name + "/to_1x1")(x)
  x = resnet_v2.bottleneck_unit(x, depth, depth_bottleneck, 1, name=name,
                                weight_decay=weight_decay)
  return tf_keras.layers.Flatten(name=name + "/flatten")(x)


class Conv3x3RelativePosition(relative_position.Task):
  """rp with the 3x3-conv fully-connected units (same data, loss, names)."""

  def _fc_unit(self, x, name):
    cfg = self.config
    return conv3x3_fc_unit(x, cfg.fc_width, cfg.fc_bottleneck, name,
                           cfg.weight_decay)


class Conv1x1RelativePosition(relative_position.Task):
  """rp with fully-connected units of 1x1 ``Conv2D`` layers (same variables)."""

  def _fc_unit(self, x, name):
    cfg = self.config
    return heads.fc_residual_unit(x, cfg.fc_width, cfg.fc_bottleneck, name,
                                  cfg.weight_decay,
                                  conv_class=tf_keras.layers.Conv2D)


# Replaced task classes by head variant, per task: the levers section
# (workers.py) builds a task through ``task_class`` and so names no task.
HEAD_VARIANTS = {"rp": {"conv1x1": Conv1x1RelativePosition,
                        "conv3x3": Conv3x3RelativePosition}}


def task_class(name: str, variant: str):
  """The class that builds task ``name`` with head ``variant`` ("matmul":
  the current head), or None for the registry's own ``Task``. A variant a
  task does not have is the current head (only rp's fc units changed)."""
  if variant not in ("matmul", "conv1x1", "conv3x3"):
    raise ValueError(f"Unknown head variant {variant!r}.")
  return HEAD_VARIANTS.get(name, {}).get(variant)
