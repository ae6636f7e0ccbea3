"""Tests of the colorization task: targets, mask, loss, head, decoder, data."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mtssl_tf import config as config_lib
from mtssl_tf.data import ab_bins
from mtssl_tf.data import tfrecord_format
from mtssl_tf.tasks import base
from mtssl_tf.tasks import colorization
from mtssl_tf.tasks import registry
from tests.tasks import task_fixtures

TINY = colorization.Config(image_size=64, head_width=32)


def _lab(rgb):
  from skimage import color  # pylint: disable=g-import-not-at-top
  return color.rgb2lab(np.asarray(rgb, np.float64)[None, None] / 255.0)[0, 0]


def _example(image, config=TINY):
  return colorization.lab_example(tf.constant(image, tf.uint8),
                                  config.image_size, 8,
                                  config.grayscale_threshold)


def test_targets_are_area_averages_of_8x8_blocks():
  red, green, blue = (200, 30, 30), (30, 180, 40), (40, 60, 220)
  image = np.zeros((16, 16, 3), np.uint8)
  image[:8, :] = red
  image[8:, :8] = blue
  image[8:, 8:12] = green  # half green, half blue block
  image[8:, 12:] = blue
  config = colorization.Config(image_size=16)
  images, labels = _example(image, config)
  assert images.shape == (16, 16, 3)
  np.testing.assert_allclose(images[0, 0].numpy(),
                             [_lab(red)[0] / 50 - 1] * 3, atol=1e-3)
  ab = labels["ab"].numpy()
  assert ab.shape == (2, 2, 2)
  np.testing.assert_allclose(ab[0, 0], _lab(red)[1:], atol=0.05)
  np.testing.assert_allclose(ab[1, 0], _lab(blue)[1:], atol=0.05)
  np.testing.assert_allclose(ab[1, 1],
                             (_lab(green)[1:] + _lab(blue)[1:]) / 2, atol=0.05)
  assert labels["colour"].numpy() == 1.0


@pytest.mark.parametrize("in_tf_data", [False, True])
def test_grayscale_images_are_masked(in_tf_data):
  rng = np.random.default_rng(0)
  gray = np.repeat(rng.integers(0, 256, (64, 64, 1)), 3, -1).astype(np.uint8)
  # Chroma of about 3 (a JPEG'd grayscale photo): still grayscale.
  tinted = gray.astype(np.int32) + np.array([3, 0, 2])
  tinted = np.clip(tinted, 0, 255).astype(np.uint8)
  colourful = gray.copy()
  colourful[:8, :8] = (220, 40, 40)  # one coloured block is enough
  images = np.stack([gray, tinted, colourful])
  fn = lambda im: _example(im)[1]["colour"]  # noqa: E731
  if in_tf_data:
    flags = list(tf.data.Dataset.from_tensor_slices(images).map(
        lambda im: colorization.lab_example(im, 64, 8, 5.0)[1]["colour"]))
  else:
    flags = [fn(im) for im in images]
  np.testing.assert_array_equal([f.numpy() for f in flags], [0.0, 0.0, 1.0])


def test_loss_hand_computed():
  task = colorization.Task(TINY)
  weights = ab_bins.rebalancing_weights(ab_bins.load_prior())
  ab = np.array([[[[3.0, 2.0]]], [[[40.0, -20.0]]]], np.float32)  # [2,1,1,2]
  logits = np.random.default_rng(1).normal(size=(2, 1, 1, 313))
  labels = {"ab": tf.constant(ab), "colour": tf.constant([1.0, 0.0])}
  outputs = {"logits": tf.constant(logits, tf.float32)}
  soft = ab_bins.soft_encode(ab[0, 0, 0]).numpy()
  log_softmax = logits[0, 0, 0] - np.log(np.sum(np.exp(logits[0, 0, 0])))
  index = {tuple(c): i for i, c in enumerate(ab_bins.bin_centres())}
  expected = weights[index[(0, 0)]] * -np.sum(soft * log_softmax)
  assert task.loss(labels, outputs).numpy() == pytest.approx(expected,
                                                             rel=1e-5)
  # Both colour: the mean of both pixels' weighted cross-entropies.
  labels["colour"] = tf.constant([1.0, 1.0])
  soft2 = ab_bins.soft_encode(ab[1, 0, 0]).numpy()
  log_softmax2 = logits[1, 0, 0] - np.log(np.sum(np.exp(logits[1, 0, 0])))
  second = weights[index[(40, -20)]] * -np.sum(soft2 * log_softmax2)
  assert task.loss(labels, outputs).numpy() == pytest.approx(
      (expected + second) / 2, rel=1e-5)
  labels["colour"] = tf.constant([0.0, 0.0])
  assert task.loss(labels, outputs).numpy() == 0.0


def test_metrics_hand_computed():
  task = colorization.Task(TINY)
  index = {tuple(c): i for i, c in enumerate(ab_bins.bin_centres())}
  ab = tf.constant([[[[1.0, 1.0], [31.0, 9.0], [-50.0, 52.0]]]])  # [1,1,3,2]
  order = np.arange(313, dtype=np.float32)
  logits = np.tile(order, (1, 1, 3, 1))
  logits[0, 0, 0, index[(0, 0)]] = 1000.0  # top-1 right
  logits[0, 0, 1, index[(30, 10)]] = 310.5  # 3rd best: top-5 only
  metrics = task.metrics({"ab": ab, "colour": tf.constant([1.0])},
                         {"logits": tf.constant(logits)})
  assert metrics["bin_accuracy"].numpy() == pytest.approx(1 / 3)
  assert metrics["bin_top5_accuracy"].numpy() == pytest.approx(2 / 3)


def test_head_has_about_35m_parameters():
  head = colorization.Task(colorization.Config()).build_head((32, 32, 1024))
  expected = (2 * 2 * 1024 * 4096 + 4096) + (4096 * 4096 + 4096) + (
      4096 * 313 + 313)
  assert head.count_params() == expected
  assert abs(head.count_params() - 35e6) / 35e6 < 0.02
  outputs = head(tf.zeros([1, 32, 32, 1024]))
  assert outputs["logits"].shape == (1, 32, 32, 313)


def test_decoder_round_trip():
  centres = ab_bins.bin_centres()
  index = {tuple(c): i for i, c in enumerate(centres)}
  chosen = [(20, 20), (-30, 10), (0, -40)]
  images = tf.zeros([3, 16, 16, 3])  # L = 50
  logits = tf.one_hot([[[index[c]] * 2] * 2 for c in chosen], 313) * 30.0
  rgb = colorization.colorize(images, logits)
  assert rgb.dtype == tf.uint8 and rgb.shape == (3, 16, 16, 3)
  from skimage import color  # pylint: disable=g-import-not-at-top
  lab = color.rgb2lab(rgb.numpy())
  for i, centre in enumerate(chosen):
    np.testing.assert_allclose(lab[i, 8, 8], [50.0, *centre], atol=1.5)


def test_summary_images():
  task = colorization.Task(TINY)
  images = tf.random.uniform([2, 64, 64, 3], -1, 1)
  labels = {"ab": tf.zeros([2, 8, 8, 2]), "colour": tf.ones([2])}
  summaries = task.summary_images(images, labels,
                                  {"logits": tf.zeros([2, 8, 8, 313])})
  assert set(summaries) == {"input_lightness", "predicted_colour",
                            "target_colour"}
  for image in summaries.values():
    assert image.dtype == tf.uint8 and image.shape == (2, 64, 64, 3)


def _write_images(folder, count=3):
  rng = np.random.default_rng(0)
  paths = []
  for i in range(count):
    image = rng.integers(0, 256, (40 + 10 * i, 70, 3)).astype(np.uint8)
    path = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
    Image.fromarray(image).save(path)
    paths.append(path)
  return paths


def _check_batch(dataset, batch=2, size=64):
  images, labels = next(iter(dataset))
  assert images.shape == (batch, size, size, 3) and images.dtype == tf.float32
  assert -1.0 <= images.numpy().min() and images.numpy().max() <= 1.0
  # L is replicated 3 times.
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  assert labels["ab"].shape == (batch, size // 8, size // 8, 2)
  assert labels["colour"].shape == (batch,)


@pytest.mark.slow
def test_datasets_from_all_sources(tmp_path):
  task = colorization.Task(TINY)
  _check_batch(task.make_dataset(config_lib.DataConfig(), 2, seed=0)[0])
  paths = _write_images(tmp_path)
  (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  folder, skipped = task.make_dataset(
      config_lib.DataConfig(source="folder", path=str(tmp_path)), 2, seed=0)
  _check_batch(folder)
  for _ in folder.take(4):  # 8 images: two full passes over the 4 files
    pass
  assert skipped.as_dict()["undecodable"] >= 1
  (tmp_path / "broken.jpg").unlink()
  record_file = tmp_path / "images.tfrecord"
  with tf.io.TFRecordWriter(str(record_file)) as writer:
    for path in paths:
      writer.write(tfrecord_format.image_example(
          path.read_bytes(), path.suffix[1:], path.name))
  _check_batch(task.make_dataset(
      config_lib.DataConfig(source="tfrecord", path=str(record_file)), 2,
      seed=0)[0])


def test_targets_follow_the_trunk_stride():
  task = colorization.Task(TINY, base.TrunkFacts(output_stride=16))
  _, labels = next(iter(task.make_dataset(config_lib.DataConfig(), 2,
                                          seed=0)[0]))
  assert labels["ab"].shape == (2, 4, 4, 2)


def test_seeded_pipeline_is_reproducible():
  task = colorization.Task(TINY)
  first = next(iter(task.make_dataset(config_lib.DataConfig(), 2, seed=3)[0]))
  second = next(iter(task.make_dataset(config_lib.DataConfig(), 2,
                                       seed=3)[0]))
  np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())


def test_registered_as_col():
  assert isinstance(registry.build("col", TINY), colorization.Task)
  assert registry.build("col").input_shape == (256, 256, 3)


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match="multiple of the trunk's output stride"):
    colorization.Task(colorization.Config(image_size=60))
  with pytest.raises(ValueError, match=r"output stride \(32\)"):
    colorization.Task(colorization.Config(image_size=80),
                      base.TrunkFacts(output_stride=32))


@pytest.mark.slow
def test_tiny_network_learns():
  task = colorization.Task(TINY)
  images, labels = next(iter(task.make_dataset(config_lib.DataConfig(), 4,
                                               seed=0)[0]))
  losses = task_fixtures.train_steps(task, images, labels, 40)
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
