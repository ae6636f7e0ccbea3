"""The contract every pretext task module follows (paper §2, §3.4).

A task module (``relative_position.py``, ``colorization.py``, ...) defines
``NAME`` (its registry name), ``Config`` (a frozen dataclass of its options,
every field with the paper's default plus size knobs such as head widths, and
an "Attributes:" docstring: entry points turn each field into a flag
``--<NAME>.<field>``, see ``config_flags.py``), ``TINY`` (a ``Config`` with
narrow heads and small inputs that trains in seconds on a depth-14, width-8
trunk: the contract and end-to-end tests use it) and ``Task``, constructed as
``Task(config, trunk)`` and holding to the ``Task`` protocol below.

What a task needs from the trunk is passed in explicitly, never looked up by
a config field's name: ``TrunkFacts`` (the output stride, e.g. to downsample
dense targets) at construction, the per-example feature shape ``(h, w, C)``
in ``build_head``. What it needs from the data is named by ``source_kind``:
"images" (``data/sources.py``: decoded RGB photos of any size) or
"video_frames" (``data/motion_source.py``: 240x320 frames with motion
masks); entry points build one ``DataConfig`` per kind and give each task
the one of its kind.

A task module may set ``BLOCK4_IN_HEAD = True``: its head begins with the
trunk's block 4 and post-norm, built by ``resnet_v2.block4`` with the prefix
``<name>_head/`` (the supervised "ImageNet labels" baseline,
``imagenet_labels.py``). Evaluations that use block 4 (detection, paper §5)
then transfer it from a training run (``evaluation/pretrained.py``).

A task may also define ``learning_rate_decay(global_batch_size)`` returning
``(decay_steps, decay_rate)``: its RMSProp multiplies the learning rate by
``decay_rate`` every ``decay_steps`` of its own updates (staircase; the loop
calls it after ``make_dataset``, with the task's batch summed over its
replicas). The self-supervised tasks have none (paper §4: no schedule).

A ``Config`` defines ``validate()`` (raises ValueError naming a field the
task cannot train with; ``check_config`` below does the common checks;
``registry.build`` and the entry point call it) and ``scale_head(multiplier)``
(the Config with every hidden width of the head times ``multiplier``, 1 the
paper's; ``--head_width_multiplier``; see ``scale_width``);
``tests/tasks/contract_test.py`` checks both for every registered task.

The training loop only uses this contract, so adding a task means one module
plus one line in ``registry.py``; ``tests/tasks/contract_test.py`` holds
every registered task to it.
"""

import dataclasses
from typing import Dict, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import sources
from mtssl_tf.models import resnet_v2

IMAGES = "images"
VIDEO_FRAMES = "video_frames"
SOURCE_KINDS = (IMAGES, VIDEO_FRAMES)


@dataclasses.dataclass(frozen=True)
class TrunkFacts:
  """What a task may know about the trunk it trains.

  Attributes:
    output_stride: pixels per block-3 feature (8 in the paper; 32 without
      atrous convolution): dense tasks predict on this grid.
    depth: the ResNet-v2 depth (101 in the paper): a head that continues
      the trunk with its block 4 (``resnet_v2.block4``) builds that many
      block-4 units.
  """
  output_stride: int = 8
  depth: int = 101

  @classmethod
  def of(cls, trunk: config_lib.TrunkConfig) -> "TrunkFacts":
    """The facts of a trunk configuration."""
    return cls(output_stride=trunk.output_stride or NOMINAL_OUTPUT_STRIDE,
               depth=trunk.depth)


# Block 3's stride without atrous convolution (root x blocks 1-3: 32).
NOMINAL_OUTPUT_STRIDE = resnet_v2.ROOT_STRIDE * int(
    np.prod(resnet_v2.BLOCK_STRIDES[:3]))


# The paper's trunk (ResNet-101 v2 at output stride 8), the default of tests.
PAPER_TRUNK = TrunkFacts(output_stride=8)


@runtime_checkable
class Task(Protocol):
  """What the training loop, the network and the benchmarks use of a task.

  Attributes:
    name: the registry name (``NAME``).
    source_kind: "images" or "video_frames" (``SOURCE_KINDS``).
    trunk_inputs_per_example: trunk inputs per example (2 for siamese pairs,
      9 for jigsaw tiles; their features go to the head as one batch, §3.1).
    input_shape: ``(H, W, 3)`` of one trunk input.
  """
  name: str
  source_kind: str
  trunk_inputs_per_example: int

  @property
  def input_shape(self) -> Tuple[int, int, int]:
    ...

  def make_dataset(self, data: config_lib.DataConfig, batch_size: int,
                   seed: Optional[int] = None,
                   skipped: Optional[sources.SkipCounter] = None
                   ) -> Tuple[tf.data.Dataset, Optional[sources.SkipCounter]]:
    """``(dataset, skipped)``.

    ``seed`` (an int, or a scalar int64 tensor) seeds every random choice of
    the pipeline; None: unseeded. ``skipped``: None, or the counter an
    earlier call on the same ``data`` returned; the new pipeline then counts
    into it and returns it, and neither re-checks the source nor creates
    variables (so it can be built in a ``tf.function``: the parameter-server
    workers' dataset functions, ``training/parameter_server.py``).

    ``dataset`` yields ``(images, labels)`` batches, repeated and prefetched:
    ``images`` float32 ``[batch_size * trunk_inputs_per_example, H, W, 3]``
    in [-1, 1], fed to the trunk as one batch; ``labels`` a dict of tensors.
    ``skipped`` counts the inputs its source dropped, by reason (corrupt or
    unusable inputs are skipped, never fatal); the loop logs it and writes it
    to TensorBoard. (None only for generated data that cannot be bad.)
    """
    ...

  def build_head(self, feature_shape: Tuple[int, int, int]) -> tf_keras.Model:
    """The head: ``[N, h, w, C]`` features -> a dict of output tensors.

    ``feature_shape`` is ``(h, w, C)``, the per-input shape of the trunk
    representation (last block-3 unit, or a LassoCombine) for
    ``input_shape``. Layer names start with ``<name>_head/`` so that
    variables never collide with the trunk's or another head's (optimizer
    slots and checkpoints are keyed by them).
    """
    ...

  def loss(self, labels: Dict[str, tf.Tensor],
           outputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Scalar float32 task loss averaged over the batch (head weight decay
    is added by the loop from ``head.losses``)."""
    ...

  def metrics(self, labels: Dict[str, tf.Tensor],
              outputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Scalar metrics by name (logged and written to TensorBoard)."""
    ...

  def summary_images(self, images: tf.Tensor, labels: Dict[str, tf.Tensor],
                     outputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """TensorBoard images by name, uint8 ``[n, height, width, 3]``; the
    task's inputs as the trunk sees them, at least."""
    ...


def scale_width(width: int, multiplier: float) -> int:
  """``width * multiplier`` rounded, at least 1 (a head's hidden width)."""
  return max(1, int(round(width * multiplier)))


def scale_units(units, multiplier: float):
  """Scales the ``(depth, bottleneck, stride)`` units of a head's ResNet
  units (``heads.PATCH_UNITS``): depth and bottleneck, not the stride."""
  return tuple((scale_width(depth, multiplier),
                scale_width(bottleneck, multiplier), stride)
               for depth, bottleneck, stride in units)


def check_config(config, positive=(), non_negative=(), fractions=(),
                 ranges=()) -> None:
  """Checks the fields of a task ``Config``; raises ValueError naming one.

  Args:
    config: a task's Config dataclass.
    positive: fields (numbers, or nested tuples of numbers) that must be > 0.
    non_negative: fields that must be >= 0.
    fractions: fields that must lie in [0, 1].
    ranges: pairs of fields ``(low, high)``, or tuple fields ``(low, high)``,
      that must satisfy 0 < low <= high.
  """
  name = type(config).__module__.rsplit(".", 1)[-1]

  def leaves(value):
    if isinstance(value, (tuple, list)):
      return [x for v in value for x in leaves(v)]
    return [value]

  def fail(field, rule):
    raise ValueError(f"{name} Config: {field}={getattr(config, field)!r} "
                     f"must be {rule}.")

  for field in dataclasses.fields(config):
    default = field.default
    value = getattr(config, field.name)
    if isinstance(default, bool) and not isinstance(value, bool):
      fail(field.name, "True or False")
    elif (isinstance(default, (int, float)) and not isinstance(default, bool)
          and (isinstance(value, bool) or not isinstance(value, (int, float)))):
      fail(field.name, f"a number like {default!r}")
    elif (isinstance(default, int) and not isinstance(default, bool) and
          not isinstance(value, int)):
      fail(field.name, f"an integer like {default!r}")
  for field in positive:
    if not all(isinstance(v, (int, float)) and v > 0
               for v in leaves(getattr(config, field))):
      fail(field, "> 0")
  for field in non_negative:
    if not getattr(config, field) >= 0:
      fail(field, ">= 0")
  for field in fractions:
    if not 0 <= getattr(config, field) <= 1:
      fail(field, "in [0, 1]")
  for item in ranges:
    low, high = ((getattr(config, item[0]), getattr(config, item[1]))
                 if isinstance(item, tuple) else getattr(config, item))
    if not 0 < low <= high:
      fail(item if isinstance(item, str) else item[1],
           f"a range with 0 < low <= high (low {low!r}, high {high!r})")


def classification_loss(label, logits):
  """Mean softmax cross-entropy of int ``label [N]`` and ``logits [N, K]``
  (float32 whatever the compute precision): the loss of rp, rot and jig."""
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(label, tf.int32), logits=tf.cast(logits, tf.float32)))


def classification_accuracy(label, logits):
  """Fraction of rows of ``logits [N, K]`` whose argmax is ``label [N]``."""
  predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
  correct = tf.equal(predicted, tf.cast(label, tf.int32))
  return tf.reduce_mean(tf.cast(correct, tf.float32))


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
