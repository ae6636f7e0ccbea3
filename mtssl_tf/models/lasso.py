"""LassoCombine: a learned, sparse combination of block-3 unit outputs (§3.2).

Paper §3.2, Eq. (1): the representation fed to the head of task n is

    sum_m alpha_hat[n, m] * Unit_m,   with   sum_m alpha_hat[n, m]**2 = 1,

entries may be negative, and an L1 (lasso) penalty on alpha makes the
combination sparse, so each task concentrates the information it needs in a
few units. Evaluation tasks get their own alpha rows (paper Table 4).
"""

from typing import Sequence

import tensorflow as tf
import tf_keras

INITIALIZERS = ("last", "uniform")


@tf_keras.utils.register_keras_serializable(package="mtssl_tf")
class LassoCombine(tf_keras.layers.Layer):
  """Combines M equally shaped unit outputs with one L2-normalised alpha row.

  One layer serves one task, i.e. it holds one row of the paper's alpha matrix
  (shape ``[num_units]``). Why not one layer holding the whole N x M matrix:
  every task has its own RMSProp optimizer (paper §4, Figure 2), and an
  optimizer stepping a shared matrix variable would keep moving the other
  tasks' rows through its momentum even where their gradient is zero, and would
  pay every task's L1 penalty. With one row per layer each task's optimizer owns
  exactly its row. The matrix of Figure 5 is ``tf.stack`` of the layers'
  ``normalized_alpha()``.

  The forward pass normalises the row, ``alpha_hat = alpha / ||alpha||_2``,
  which enforces the paper's constraint exactly. The L1 penalty
  ``l1 * sum_m |alpha_hat_m|`` is added to ``layer.losses``. It is taken on the
  normalised row, the alpha that Eq. (1) uses: a penalty on the raw variable
  could be lowered by shrinking ||alpha|| without changing the output, which
  sparsifies nothing and drives the normalisation towards 0/0. On the unit
  sphere, sum |alpha_hat| >= 1 with equality exactly for one-hot rows.

  Args:
    l1: weight of the L1 penalty (0 disables it).
    initializer: "last" (one-hot on the last unit, so training starts from the
      naive shared-trunk network of Figure 1a) or "uniform" (all
      ``1 / sqrt(M)``).
    epsilon: floor of ``||alpha||`` in the normalisation.

  Call arguments:
    inputs: a list of M tensors of identical shape, e.g. the 23 block-3 unit
      outputs ``[N, H, W, C]`` of ResNet-v2-101.

  Returns:
    The combined tensor, same shape as each input.
  """

  def __init__(self, l1: float = 0.0, initializer: str = "last",
               epsilon: float = 1e-12, **kwargs):
    super().__init__(**kwargs)
    if initializer not in INITIALIZERS:
      raise ValueError(
          f"initializer must be one of {INITIALIZERS}, got {initializer!r}.")
    if l1 < 0:
      raise ValueError(f"l1 must be >= 0, got {l1}.")
    self.l1 = l1
    self.initializer = initializer
    self.epsilon = epsilon

  def build(self, input_shape):
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 1:
      raise ValueError(
          "LassoCombine takes a list of equally shaped unit outputs, got "
          f"{input_shape}.")
    shapes = [tf.TensorShape(s) for s in input_shape]
    for s in shapes[1:]:
      if not s.is_compatible_with(shapes[0]):
        raise ValueError(
            "LassoCombine inputs must all have the same shape (use "
            "output_stride 8 or 16 so that all block-3 units share one size); "
            f"got {[str(s) for s in shapes]}.")
    num_units = len(shapes)
    if self.initializer == "last":
      init = tf_keras.initializers.Constant(
          [0.0] * (num_units - 1) + [1.0])
    else:
      init = tf_keras.initializers.Constant(num_units ** -0.5)
    self.alpha = self.add_weight(
        name="alpha", shape=[num_units], initializer=init, trainable=True)
    super().build(input_shape)

  def normalized_alpha(self):
    """The row alpha_hat, ``[M]``, with unit L2 norm."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(self.alpha)))
    return self.alpha / tf.maximum(norm, self.epsilon)

  def call(self, inputs: Sequence[tf.Tensor]):
    alpha_hat = self.normalized_alpha()
    if self.l1:
      self.add_loss(self.l1 * tf.reduce_sum(tf.abs(alpha_hat)))
    weights = tf.cast(alpha_hat, inputs[0].dtype)
    return tf.add_n([weights[m] * x for m, x in enumerate(inputs)])

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape[0])

  def get_config(self):
    config = super().get_config()
    config.update(
        l1=self.l1, initializer=self.initializer, epsilon=self.epsilon)
    return config


def alpha_matrix(layers: Sequence[LassoCombine]) -> tf.Tensor:
  """Stacks the normalised rows of several layers into the N x M matrix."""
  return tf.stack([layer.normalized_alpha() for layer in layers], axis=0)
