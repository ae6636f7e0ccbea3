"""VOC07 SVM and low-shot on a generated VOCdevkit."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import synthetic_voc
from mtssl_tf.data import voc
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import pretrained
from mtssl_tf.evaluation import voc07_svm
from tests.evaluation import eval_fixtures


def test_image_labels_follow_the_devkit():
  def obj(name, difficult):
    return voc.VocObject(name, (1, 1, 5, 5), difficult, False)
  records = [voc.VocImage("1", "a.jpg", 9, 9, (obj("cat", False),
                                                obj("dog", True))),
             voc.VocImage("2", "b.jpg", 9, 9, (obj("dog", True),
                                                obj("dog", False)))]
  labels = voc07_svm.image_labels(records)
  cat, dog = voc.CLASSES.index("cat"), voc.CLASSES.index("dog")
  assert labels[0, cat] == 1 and labels[0, dog] == 0
  assert labels[1, dog] == 1 and labels[1, cat] == -1
  assert (labels == -1).sum() == 2 * 20 - 3


def test_low_shot_samples_are_seeded_and_distinct():
  train_y = -np.ones((30, 20), np.int8)
  train_y[::2, 3] = 1
  a = voc07_svm.low_shot_positives(train_y, 3, 4, sample=0, seed=0)
  assert len(a) == 4 and (train_y[a, 3] == 1).all()
  np.testing.assert_array_equal(
      a, voc07_svm.low_shot_positives(train_y, 3, 4, sample=0, seed=0))
  assert not np.array_equal(
      a, voc07_svm.low_shot_positives(train_y, 3, 4, sample=1, seed=0))


@pytest.fixture(scope="module")
def devkit(tmp_path_factory):
  """The generated devkit with two bad test JPEGs that the annotation checks
  (JPEG header vs annotation) let through: a truncated file, and a 1000x2
  strip (256x128000 after resizing the shorter side to 256)."""
  root = synthetic_voc.make_devkit(str(tmp_path_factory.mktemp("voc")),
                                   num_trainval=24, num_test=16,
                                   num_classes=3, image_size=(64, 80))
  voc_dir = os.path.join(root, "VOC2007")
  with open(os.path.join(voc_dir, "ImageSets", "Main", "test.txt")) as f:
    truncated, strip = f.read().split()[:2]
  jpeg = os.path.join(voc_dir, "JPEGImages", truncated + ".jpg")
  data = open(jpeg, "rb").read()
  with open(jpeg, "wb") as f:
    f.write(data[:len(data) * 6 // 10])
  with open(os.path.join(voc_dir, "JPEGImages", strip + ".jpg"), "wb") as f:
    f.write(tf.io.encode_jpeg(np.full((2, 1000, 3), 90, np.uint8)).numpy())
  xml = os.path.join(voc_dir, "Annotations", strip + ".xml")
  text = open(xml).read()
  text = re.sub(r"<width>\d+</width>", "<width>1000</width>", text)
  text = re.sub(r"<height>\d+</height>", "<height>2</height>", text)
  text = re.sub(r"<bndbox>.*?</bndbox>", "<bndbox><xmin>1</xmin><ymin>1</ymin>"
                "<xmax>10</xmax><ymax>2</ymax></bndbox>", text, flags=re.S)
  with open(xml, "w") as f:
    f.write(text)
  return root


@pytest.mark.slow
def test_svm_and_low_shot_end_to_end_and_resume(devkit, tmp_path,
                                               monkeypatch):
  ctx = eval_base.EvalContext(
      pretrained=pretrained.load(pretrained.PretrainedSpec(
          "random_init", trunk=eval_fixtures.TINY_TRUNK)),
      output_dir=str(tmp_path),
      writer=tf.summary.create_file_writer(str(tmp_path)),
      log=lambda m: None, recompute_bn_stats=16)
  cfg = voc07_svm.Config(devkit=devkit, resize=72, crop=64, batch_size=8,
                         costs=(0.1, 10.0), low_shot_k=(1, 4),
                         low_shot_samples=2)
  voc07_svm.check(cfg)
  result = voc07_svm.run(ctx, cfg)
  m = result.metrics
  assert 0 < m["map"] <= 1 and 0 < m["map_11point"] <= 1
  assert set(result.details["per_class"]) <= set(synthetic_voc.used_classes(3))
  assert result.counts["test_images"] == 16
  # The bad JPEGs are skipped with their reasons and counted, not fatal.
  assert result.counts["skipped_images"] == {"undecodable": 1,
                                             "degenerate_aspect": 1}
  low = result.details["low_shot"]
  assert set(low) == {"1", "4"}
  assert low["1"]["min"] <= low["1"]["mean"] <= low["1"]["max"]
  # Chance mAP is the positive rate; features of a random trunk still beat it
  # on coloured shapes.
  test_y = np.load(os.path.join(str(tmp_path), "features_test",
                                "features-00000.npz"))["labels"]
  rates = [(test_y[:, voc.CLASSES.index(c)] == 1).mean()
           for c in result.details["per_class"]]
  assert m["map"] > np.mean(rates) + 0.1
  fits = len(os.listdir(os.path.join(str(tmp_path), "svm")))
  # classes x costs x (one full fit + 2 ks x 2 samples of low-shot)
  assert fits == result.counts["svm_fits"] == (
      result.counts["classes"] * 2 * (1 + 2 * 2))
  # Resumed (or re-run): every cell is read from disk, nothing is refitted.
  monkeypatch.setattr(voc07_svm, "_svm", lambda *a: 1 / 0)
  assert voc07_svm.run(ctx, cfg).metrics == m


def test_missing_devkit_is_a_start_up_error(tmp_path):
  with pytest.raises(ValueError, match="VOC2007"):
    voc07_svm.check(voc07_svm.Config(devkit=str(tmp_path)))
  with pytest.raises(ValueError, match="costs"):
    voc07_svm.check(voc07_svm.Config(costs=()))
