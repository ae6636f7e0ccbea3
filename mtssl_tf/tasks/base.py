"""The contract every pretext task module follows (paper §2, §3.4).

A task module (``relative_position.py``, ``colorization.py``, ``exemplar.py``,
``motion_segmentation.py``) defines:

  ``NAME``      the registry name ("rp", "col", "ex", "ms").
  ``Config``    a frozen dataclass of the task's options, every field with the
                paper's default (plus size knobs, e.g. head widths, so tests can
                build tiny heads).
  ``Task``      a small class constructed as ``Task(config)`` with:

    name: str
    input_shape -> (H, W, 3)
        Shape of one trunk input (rp/ex 96x96, col 256x256, ms 240x320).
    make_dataset(data: config.DataConfig, batch_size: int, seed=None)
        -> tf.data.Dataset of ``(images, labels)``, batched, repeated and
        prefetched. ``images`` is float32 ``[batch_size * trunk_inputs_per_example,
        H, W, 3]`` in [-1, 1], fed to the trunk as one batch (siamese tasks put
        their patches in one trunk batch and the head rearranges them, paper
        §3.1). ``labels`` is a dict of tensors. Corrupt/unusable inputs are
        skipped and counted by the data source (``data/sources.py``).
    build_head(feature_shape) -> tf_keras.Model
        ``feature_shape`` is ``(h, w, C)``, the per-example shape of the trunk
        representation for ``input_shape``. The head maps ``[N, h, w, C]``
        (the last block-3 unit, or a LassoCombine output) to a dict of output
        tensors. Its layer names start with ``<NAME>_head/`` so that variable
        names never collide with the trunk's or another head's (optimizer
        slots and checkpoints are keyed by them).
    loss(labels, outputs) -> scalar float32
        The task loss averaged over the batch (head regularisation losses are
        added by the training loop from ``head.losses``).
    metrics(labels, outputs) -> dict[str, scalar]
    summary_images(images, labels, outputs) -> dict[str, uint8 [N, H, W, 3]]
        Images for TensorBoard (may be empty).
    skipped: data.sources.SkipCounter (or None before make_dataset)
        Counts of inputs the task's data source skipped, by reason; the
        training loop logs them and writes them to TensorBoard.

The training loop only uses this contract, so adding a task means one module
plus one line in ``registry.py``.
"""

import tensorflow as tf


def to_trunk_range(images):
  """Maps uint8 [0, 255] or float [0, 1] RGB to the trunk's [-1, 1] float32."""
  images = tf.convert_to_tensor(images)
  if images.dtype == tf.uint8:
    images = tf.cast(images, tf.float32) / 255.0
  return tf.cast(images, tf.float32) * 2.0 - 1.0


def lightness_to_trunk_range(lightness):
  """Maps Lab L in [0, 100] ``[..., 1]`` to 3 replicated channels in [-1, 1].

  This is the colorization input and the harmonized relative-position input
  (paper §3.3: "we replicate the L channel 3 times").
  """
  lightness = tf.convert_to_tensor(lightness, tf.float32) / 50.0 - 1.0
  return tf.concat([lightness] * 3, axis=-1)
