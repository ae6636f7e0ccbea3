"""Trunk-alone training steps: this project's trunk and TF-Slim's resnet_v2.

Both compute the same thing on the same ``[N, H, W, 3]`` input: the trunk up
to the end of block 3 in training mode (batch statistics, moving averages
updated), the loss ``mean(block3**2)`` plus the weight decay, and the
gradients with respect to every trunk variable (forward + backward, no
optimizer update). TF-Slim runs ``tf_slim.nets.resnet_v2`` (the paper's
reference code) in graph mode through a ``tf.compat.v1.Session``; ours runs the
tf_keras trunk in a ``tf.function``.

TF-Slim is a test and benchmark dependency only: its batch norm needs tf_keras
legacy layers under their old module names on TF 2.20 (SPEC.md), patched in
``build_slim_step``. Build the TF-Slim step BEFORE any tf_keras model of the
process: building v1 layers in a ``tf.Graph`` invalidates Keras models made
earlier.
"""

import sys
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.models import resnet_v2
from mtssl_tf.training import speed


def _import_slim():
  import tf_keras  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from tf_keras.src import legacy_tf_layers  # pylint: disable=g-import-not-at-top
  from tf_keras.src.legacy_tf_layers import base  # pylint: disable=g-import-not-at-top
  from tf_keras.src.legacy_tf_layers import normalization  # pylint: disable=g-import-not-at-top
  sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy_tf_layers)
  sys.modules.setdefault("tf_keras.legacy_tf_layers.base", base)
  sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization",
                         normalization)
  import tf_slim  # pylint: disable=g-import-not-at-top
  from tf_slim.nets import resnet_utils  # pylint: disable=g-import-not-at-top
  from tf_slim.nets import resnet_v2 as slim_resnet_v2  # pylint: disable=g-import-not-at-top
  return tf_slim, resnet_utils, slim_resnet_v2


def build_slim_step(images: np.ndarray, depth: int = 101,
                    output_stride: Optional[int] = 8,
                    base_width: int = 64) -> Callable[[], float]:
  """TF-Slim ``resnet_v2_<depth>`` forward + backward on ``images``.

  ``base_width`` other than 64 gives the tiny networks of the tests.

  Returns:
    A function running one step and returning the loss.
  """
  tf_slim, resnet_utils, slim_resnet_v2 = _import_slim()
  units = resnet_v2.RESNET_SPECS[depth]
  blocks = [slim_resnet_v2.resnet_v2_block(
      f"block{b + 1}", base_depth=base_width * m, num_units=n, stride=s)
            for b, (n, m, s) in enumerate(zip(
                units[:3], (1, 2, 4), resnet_v2.BLOCK_STRIDES))]
  graph = tf.Graph()
  with graph.as_default():
    placeholder = tf.compat.v1.placeholder(tf.float32, images.shape)
    with tf_slim.arg_scope(resnet_utils.resnet_arg_scope()):
      _, end_points = slim_resnet_v2.resnet_v2(
          placeholder, blocks, num_classes=None, is_training=True,
          global_pool=False, output_stride=output_stride,
          scope=f"resnet_v2_{depth}")
    block3 = end_points[f"resnet_v2_{depth}/block3"]
    loss = tf.reduce_mean(tf.square(block3)) + tf.add_n(
        tf.compat.v1.losses.get_regularization_losses())
    # The "postnorm" after the last block does not feed block3: no gradient.
    grads = [g for g in tf.compat.v1.gradients(
        loss, tf.compat.v1.trainable_variables()) if g is not None]
    updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    grad_sum = tf.add_n([tf.reduce_sum(g) for g in grads])
    session = tf.compat.v1.Session(graph=graph)
    session.run(tf.compat.v1.global_variables_initializer())
  # As in build_trunk_step: one reduction of every gradient is fetched,
  # rather than copying 27M gradient values out of the session.
  fetches = [loss, grad_sum, updates]

  def step():
    return float(session.run(fetches, {placeholder: images})[0])
  return step


def build_trunk_step(images: np.ndarray,
                     cfg: config_lib.TrunkConfig = config_lib.TrunkConfig(),
                     precision: str = "float32",
                     jit_compile: bool = False) -> Callable[[], float]:
  """This project's trunk, forward + backward on ``images`` (see module doc).

  Args:
    images: ``[N, H, W, 3]`` float32.
    cfg: the trunk.
    precision: a ``speed.PRECISIONS`` policy the trunk is built under.
    jit_compile: XLA-compile the step.
  """
  with speed.precision_policy(precision):
    trunk = resnet_v2.build_trunk(cfg)
  inputs = tf.constant(images)

  @tf.function(jit_compile=jit_compile)
  def step_fn(x):
    with tf.GradientTape() as tape:
      block3 = tf.cast(trunk(x, training=True)["block3"], tf.float32)
      loss = tf.reduce_mean(tf.square(block3)) + tf.add_n(trunk.losses)
    grads = tape.gradient(loss, trunk.trainable_variables)
    # Returning a reduction of every gradient keeps all of them computed.
    return loss, tf.add_n([tf.reduce_sum(g) for g in grads])

  def step():
    return float(step_fn(inputs)[0].numpy())
  return step
