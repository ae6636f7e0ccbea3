"""The multi-task network: one shared trunk, a head per task (paper §3, Fig. 1).

Figure 1a (naive): every head reads the output of block 3 (the last block-3
unit). Figure 1b (lasso, §3.2): the head of task n reads a LassoCombine of all
block-3 unit outputs with its own alpha row.

Which variables each task's optimizer updates (paper §4): the trunk, its own
lasso row and its own head. A head is never updated by another task.
"""

from typing import Dict, List, Mapping, Optional, Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.models import resnet_v2


class MultiTaskNetwork(tf.Module):
  """Trunk + optional per-task LassoCombine + per-task heads.

  Args:
    trunk_config: the ResNet-v2 trunk.
    tasks: task name -> task object (the contract of tasks/base.py).
    lasso: feed heads a LassoCombine of the block-3 units instead of block3.
    lasso_l1: L1 weight of each LassoCombine.
    lasso_init: LassoCombine initializer ("last" or "uniform").
  """

  def __init__(self, trunk_config: config_lib.TrunkConfig,
               tasks: Mapping[str, object], lasso: bool = False,
               lasso_l1: float = 0.0, lasso_init: str = "last"):
    super().__init__(name="multitask")
    self.trunk_config = trunk_config
    self.task_names = list(tasks)
    self.tasks = dict(tasks)
    self.trunk = resnet_v2.build_trunk(trunk_config)
    self.unit_names = resnet_v2.unit_names(trunk_config.depth)
    self.lasso: Dict[str, lasso_lib.LassoCombine] = {}
    self.heads: Dict[str, tf_keras.Model] = {}
    for name, task in tasks.items():
      shape = self.feature_shape(task.input_shape)
      if lasso:
        if trunk_config.output_stride is None:
          raise ValueError(
              "--lasso needs all block-3 units to share one size: use "
              "--output_stride=8 or 16.")
        layer = lasso_lib.LassoCombine(l1=lasso_l1, initializer=lasso_init,
                                       name=f"lasso_{name}")
        # Built by a symbolic call so its variable is named lasso_<task>/alpha.
        layer([tf_keras.Input(shape[1:]) for _ in self.unit_names])
        self.lasso[name] = layer
      self.heads[name] = task.build_head(shape[1:])

  def feature_shape(self, input_shape) -> Tuple[Optional[int], ...]:
    """Block-3 shape ``(None, h, w, C)`` for a trunk input ``(H, W, 3)``."""
    shape = self.trunk.compute_output_shape((None,) + tuple(input_shape))
    return tuple(shape["block3"])

  def representation(self, task: str, endpoints: Mapping[str, tf.Tensor]):
    """What task's head reads: block3, or its LassoCombine of the units."""
    if task in self.lasso:
      return self.lasso[task]([endpoints[u] for u in self.unit_names])
    return endpoints["block3"]

  def __call__(self, task: str, images, training: bool = False):
    """Runs trunk and ``task``'s head; returns the head's outputs dict."""
    endpoints = self.trunk(images, training=training)
    return self.heads[task](self.representation(task, endpoints),
                            training=training)

  def regularization_loss(self, task: str):
    """Weight decay of trunk and head plus the task's lasso L1 penalty.

    Call after ``__call__`` in the same trace: the lasso penalty is a call
    loss of the last call.
    """
    losses = list(self.trunk.losses) + list(self.heads[task].losses)
    if task in self.lasso:
      losses += list(self.lasso[task].losses)
    return tf.add_n(losses) if losses else tf.constant(0.0)

  def forward_backward(self, task: str, images, labels):
    """One update's forward and backward pass of ``task`` (training mode).

    The loss is the task's loss plus ``regularization_loss``; gradients are
    taken with respect to ``task_variables(task)`` only (paper §4).

    Returns:
      ``(grads, outputs, loss, total)``: gradients aligned with
      ``task_variables(task)`` (zeros where a variable is unused), the head's
      outputs, the float32 task loss and the total loss.
    """
    variables = self.task_variables(task)
    with tf.GradientTape() as tape:
      outputs = self(task, images, training=True)
      loss = tf.cast(self.tasks[task].loss(labels, outputs), tf.float32)
      total = loss + tf.cast(self.regularization_loss(task), tf.float32)
    grads = tape.gradient(total, variables)
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
             for g, v in zip(grads, variables)]
    return grads, outputs, loss, total

  def task_variables(self, task: str) -> List[tf.Variable]:
    """Variables ``task``'s optimizer updates: trunk, its lasso row, head."""
    variables = list(self.trunk.trainable_variables)
    if task in self.lasso:
      variables += list(self.lasso[task].trainable_variables)
    return variables + list(self.heads[task].trainable_variables)

  def alpha_matrix(self):
    """``[num_tasks_with_lasso, num_units]`` matrix of normalised alphas."""
    return lasso_lib.alpha_matrix([self.lasso[t] for t in self.task_names
                                   if t in self.lasso])
