"""Tests of the rotation task: labels decode the rotation, data, head, loss."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.tasks import registry
from mtssl_tf.tasks import rotation as rot

SIDE = 32
# Crop = the whole SIDE x SIDE fixture, no flip: inputs are exact rotations.
EXACT = rot.Config(image_size=SIDE, resize_size=SIDE, flip=False,
                   patch_units=((32, 8, 2), (16, 8, 2)))


def _fixture():
  """An asymmetric uint8 image: no two of its rotations are equal."""
  return np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3),
                                           dtype=np.uint8)


def _decode(row, original):
  """The k in 0..3 with ``row == rot90(original, k)`` (None if none)."""
  matches = [k for k in range(4)
             if np.allclose(row, np.rot90(original, k), atol=1e-5)]
  assert len(matches) <= 1
  return matches[0] if matches else None


def test_rot90_turns_counter_clockwise():
  # The documented direction, golden: the top-right pixel goes top-left.
  image = np.array([[1, 2], [3, 4]])[..., None]
  np.testing.assert_array_equal(np.rot90(image)[..., 0], [[2, 4], [1, 3]])
  np.testing.assert_array_equal(tf.image.rot90(image).numpy()[..., 0],
                                [[2, 4], [1, 3]])


@pytest.mark.parametrize("in_tf_data", [False, True])
@pytest.mark.parametrize("all_rotations", [True, False])
def test_labels_match_the_rotation_applied(in_tf_data, all_rotations):
  task = rot.Task(rot.Config(**{**EXACT.__dict__,
                                "all_rotations": all_rotations}))
  image = _fixture()
  original = image / 255.0 * 2.0 - 1.0
  seeds = tf.constant([[s, 7] for s in range(12)], tf.int64)
  if in_tf_data:
    examples = list(tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: task.make_example(image, s)))
  else:
    examples = [task.make_example(image, s) for s in seeds]
  seen = set()
  for rows, labels in examples:
    assert rows.shape == (task.trunk_inputs_per_example, SIDE, SIDE, 3)
    for row, label in zip(rows.numpy(), labels.numpy()):
      assert _decode(row, original) == label
      seen.add(int(label))
  assert seen == {0, 1, 2, 3}
  if all_rotations:
    assert all(list(labels.numpy()) == [0, 1, 2, 3] for _, labels in examples)


def test_flip_happens_before_the_rotation():
  task = rot.Task(rot.Config(**{**EXACT.__dict__, "flip": True}))
  image = _fixture()
  flipped = np.zeros(2, bool)
  for s in range(10):
    rows, labels = task.make_example(image, tf.constant([s, 1], tf.int64))
    base = rows.numpy()[0]  # label 0: the (possibly flipped) crop
    is_flipped = np.allclose(base, image[:, ::-1] / 255.0 * 2 - 1, atol=1e-5)
    flipped[int(is_flipped)] = True
    for row, label in zip(rows.numpy(), labels.numpy()):
      assert _decode(row, base) == label
  assert flipped.all()  # both happen


def test_make_dataset_layout():
  task = rot.Task(rot.TINY)
  dataset, skipped = task.make_dataset(config.DataConfig(), 3, seed=0)
  images, labels = next(iter(dataset))
  assert images.shape == (12, 64, 64, 3) and images.dtype == tf.float32
  assert -1.0 <= images.numpy().min() and images.numpy().max() <= 1.0
  np.testing.assert_array_equal(labels["rotation"], [0, 1, 2, 3] * 3)
  # Rows 4i..4i+3 are the rotations of one crop.
  for i in range(3):
    group = images.numpy()[4 * i:4 * i + 4]
    for k in range(4):
      np.testing.assert_allclose(group[k], np.rot90(group[0], k), atol=1e-6)
  assert skipped.total() == 0


def test_harmonized_input_is_replicated_lightness():
  task = rot.Task(rot.Config(**{**EXACT.__dict__, "harmonize": True}))
  rows, _ = task.make_example(_fixture(), tf.constant([0, 0], tf.int64))
  rows = rows.numpy()
  np.testing.assert_array_equal(rows[..., 0], rows[..., 1])
  np.testing.assert_array_equal(rows[..., 0], rows[..., 2])
  # L of the fixture's first pixel, mapped [0, 100] -> [-1, 1].
  from skimage import color  # pylint: disable=g-import-not-at-top
  lightness = color.rgb2lab(_fixture()[:1, :1] / 255.0)[0, 0, 0]
  assert rows[0, 0, 0, 0] == pytest.approx(lightness / 50.0 - 1.0, abs=1e-3)


def test_head_loss_and_metrics():
  task = rot.Task()
  head = task.build_head((28, 28, 1024))
  outputs = head(tf.zeros([2, 28, 28, 1024]))
  assert outputs["logits"].shape == (2, 4)
  labels = {"rotation": tf.constant([0, 3])}
  logits = tf.constant([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
  expected = np.mean([-np.log(np.exp(2) / (np.exp(2) + 3)),
                      -np.log(1 / (np.e + 3))])
  assert task.loss(labels, {"logits": logits}).numpy() == pytest.approx(
      expected, rel=1e-5)
  assert task.metrics(labels, {"logits": logits})["accuracy"].numpy() == 0.5


def test_summary_images_show_the_four_rotations():
  task = rot.Task(EXACT)
  rows, labels = task.make_example(_fixture(), tf.constant([0, 0], tf.int64))
  images = task.summary_images(rows, {"rotation": labels}, {})["rotations"]
  assert images.dtype == tf.uint8 and images.shape == (1, SIDE, 4 * SIDE, 3)
  np.testing.assert_array_equal(images[0, :, :SIDE], _fixture())


def test_registered_and_validated():
  assert isinstance(registry.build("rot"), rot.Task)
  with pytest.raises(ValueError, match="resize_size"):
    rot.Task(rot.Config(image_size=64, resize_size=32))
