"""Builds TF-Slim's resnet_v2 (the paper's reference trunk) for tests.

TF-Slim 1.1.0 on TF 2.20 needs tf_keras's legacy layers under their old module
names before its batch_norm can be built (SPEC.md, dependency stack).
"""

import sys

import numpy as np
import tensorflow as tf
import tf_keras  # noqa: F401  (registers tf_keras.src)
from tf_keras.src import legacy_tf_layers
from tf_keras.src.legacy_tf_layers import base as legacy_base
from tf_keras.src.legacy_tf_layers import normalization as legacy_normalization

sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy_tf_layers)
sys.modules.setdefault("tf_keras.legacy_tf_layers.base", legacy_base)
sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization",
                       legacy_normalization)

import tf_slim  # noqa: E402  pylint: disable=g-import-not-at-top
from tf_slim.nets import resnet_utils  # noqa: E402
from tf_slim.nets import resnet_v2 as slim_resnet_v2  # noqa: E402

from mtssl_tf.models import resnet_v2  # noqa: E402


def slim_blocks(depth):
  """TF-Slim Block objects for a depth of our RESNET_SPECS table."""
  units = resnet_v2.RESNET_SPECS[depth]
  return [slim_resnet_v2.resnet_v2_block(f"block{b + 1}", base_depth=64 * m,
                                         num_units=n, stride=s)
          for b, (n, m, s) in enumerate(zip(units, (1, 2, 4, 8),
                                            resnet_v2.BLOCK_STRIDES))]


def build_and_save(depth, checkpoint_prefix, images, output_strides, seed=0):
  """Builds slim resnet_v2_<depth> with random non-trivial weights and saves it.

  Every variable is random: conv weights (He init), biases, and all batch-norm
  parameters including moving means and variances, so that inference-mode
  batch norm is exercised.

  Args:
    depth: a depth of RESNET_SPECS.
    checkpoint_prefix: where to save the TF-Slim checkpoint.
    images: dict name -> float32 [N, H, W, 3] numpy inputs.
    output_strides: output strides to evaluate at (None, 8, 16).
    seed: seed of the random weights.

  Returns:
    (outputs, num_block3_params): outputs[(name, output_stride)] is a dict of
    numpy arrays {"block3": ..., "net": postnorm output after block 4}, and the
    trainable parameter count of the network up to block 3.
  """
  rng = np.random.default_rng(seed)
  scope = f"resnet_v2_{depth}"
  outputs = {}
  with tf.Graph().as_default() as graph:
    tf.compat.v1.set_random_seed(seed)
    placeholders = {name: tf.compat.v1.placeholder(tf.float32, image.shape)
                    for name, image in images.items()}
    nets = {}
    with tf_slim.arg_scope(resnet_utils.resnet_arg_scope()):
      for i, (name, os_) in enumerate(
          (n, s) for n in images for s in output_strides):
        net, end_points = slim_resnet_v2.resnet_v2(
            placeholders[name], slim_blocks(depth), num_classes=None,
            is_training=False, global_pool=False, output_stride=os_,
            reuse=i > 0, scope=scope)
        nets[(name, os_)] = {"block3": end_points[f"{scope}/block3"],
                             "net": net}
    variables = tf.compat.v1.global_variables()
    num_params = sum(
        int(np.prod(v.shape)) for v in tf.compat.v1.trainable_variables()
        if "/block4/" not in v.name and "/postnorm/" not in v.name)
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      for v in variables:
        shape = v.shape.as_list()
        leaf = v.op.name.rsplit("/", 1)[-1]
        if leaf == "moving_variance":
          value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "gamma":
          value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("beta", "moving_mean", "biases"):
          value = rng.normal(0.0, 0.2, shape)
        else:
          continue  # conv weights keep their (random) He initialisation
        v.load(value.astype(np.float32), sess)
      tf.compat.v1.train.Saver(variables).save(sess, checkpoint_prefix)
      for key, tensors in nets.items():
        outputs[key] = sess.run(tensors,
                                {placeholders[key[0]]: images[key[0]]})
  return outputs, num_params
