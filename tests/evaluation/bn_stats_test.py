"""Re-estimated batch-norm statistics: what precise-BN should give."""

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf.evaluation import bn_stats
from mtssl_tf.models import resnet_v2
from tests.evaluation import eval_fixtures


def _images(n, seed):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32)


def test_moving_statistics_are_the_mean_of_batch_statistics(tmp_path):
  tf_keras.utils.set_random_seed(0)
  trunk = resnet_v2.build_trunk(eval_fixtures.TINY_TRUNK)
  batches = [_images(4, s) for s in range(3)]
  # Independent reference: the first BN layer normalises conv1's pre-pool
  # output's successor; take its input from a sub-model in training mode.
  first = bn_stats.batch_norm_layers(trunk)[0]
  probe = tf_keras.Model(trunk.input, first.input)
  means = [np.mean(probe(b, training=True).numpy(), axis=(0, 1, 2))
           for b in batches]
  used = bn_stats.recompute(trunk, tf.data.Dataset.from_tensor_slices(
      np.stack(batches)), num_images=12, log=lambda m: None)
  assert used == 12
  np.testing.assert_allclose(first.moving_mean.numpy(), np.mean(means, 0),
                             rtol=1e-4, atol=1e-5)
  assert first.momentum == eval_fixtures.TINY_TRUNK.batch_norm_decay


def test_recomputed_stats_make_a_random_trunk_usable_in_inference(tmp_path):
  # A trunk whose stats stay at their initial values after a few training
  # steps of large weights: inference activations blow up; re-estimated
  # statistics keep them at the scale training mode sees.
  tf_keras.utils.set_random_seed(1)
  cfg = eval_fixtures.TINY_TRUNK
  trunk = resnet_v2.build_trunk(
      resnet_v2.config_lib.TrunkConfig(depth=26, base_width=8,
                                       output_stride=8))
  for v in trunk.trainable_variables:
    if "kernel" in v.name:
      v.assign(v * 8.0)
  images = _images(8, 3)
  before = np.abs(trunk(images, training=False)["block3"].numpy()).max()
  train_mode = np.abs(trunk(images, training=True)["block3"].numpy()).max()
  bn_stats.recompute_cached(trunk, tf.data.Dataset.from_tensors(images),
                            8, str(tmp_path / "bn"), log=lambda m: None)
  after = np.abs(trunk(images, training=False)["block3"].numpy()).max()
  assert before > 100 * after
  assert after < 10 * train_mode
  # A second call restores the saved statistics instead of recomputing.
  moved = resnet_v2.build_trunk(
      resnet_v2.config_lib.TrunkConfig(depth=26, base_width=8,
                                       output_stride=8))
  moved.set_weights(trunk.get_weights())
  for layer in bn_stats.batch_norm_layers(moved):
    layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
  bn_stats.recompute_cached(moved, None, 8, str(tmp_path / "bn"),
                            log=lambda m: None)
  for restored, saved in zip(bn_stats.batch_norm_layers(moved),
                             bn_stats.batch_norm_layers(trunk)):
    np.testing.assert_array_equal(restored.moving_mean.numpy(),
                                  saved.moving_mean.numpy())
  del cfg
