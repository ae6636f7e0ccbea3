"""VOC07 SVM and low-shot on a generated VOCdevkit."""

import json
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


def test_low_shot_samples_k_positives_and_19k_negatives_never_difficult():
  train_y = -np.ones((200, 20), np.int8)
  train_y[::4, 3] = 1   # 50 positives
  train_y[1::8, 3] = 0  # 25 difficult-only images
  pos, neg = voc07_svm.low_shot_sample(train_y, 3, 2, sample=0, seed=0)
  assert len(pos) == 2 and (train_y[pos, 3] == 1).all()
  assert len(neg) == 19 * 2 and (train_y[neg, 3] == -1).all()
  again = voc07_svm.low_shot_sample(train_y, 3, 2, sample=0, seed=0)
  np.testing.assert_array_equal(pos, again[0])
  np.testing.assert_array_equal(neg, again[1])
  other = voc07_svm.low_shot_sample(train_y, 3, 2, sample=1, seed=0)
  assert not np.array_equal(neg, other[1])
  # Fewer negatives than 19k: all of them, still no difficult image.
  pos, neg = voc07_svm.low_shot_sample(train_y, 3, 8, sample=0, seed=0)
  assert len(pos) == 8 and len(neg) == 125 and (train_y[neg, 3] == -1).all()


def test_default_costs_are_goyal_et_al_s_grid():
  costs = voc07_svm.Config().costs
  assert len(costs) == 26 and len(set(costs)) == 26
  assert costs[:10] == (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0,
                        100.0)
  assert costs[10] == 0.0625 and costs[-1] == 2.0 ** -19


def test_svms_on_separable_features_reach_perfect_map(tmp_path, monkeypatch):
  """The SVM stage alone, on cached features where each used class adds a
  direction: every AP is 1, each class's cost is the argmax of its
  cross-validated AP, and the low-shot statistics are over the samples."""
  devkit = synthetic_voc.make_devkit(str(tmp_path / "voc"), num_trainval=30,
                                     num_test=20, num_classes=3,
                                     image_size=(48, 64))
  out = tmp_path / "out"
  rng = np.random.default_rng(0)
  for key, split in (("train", "trainval"), ("test", "test")):
    records, _ = voc.read_split(devkit, split)
    labels = voc07_svm.image_labels(records)
    x = 4.0 * (labels == 1) + rng.normal(0, 0.3, labels.shape) + 1.0
    os.makedirs(out / f"features_{key}")
    np.savez(out / f"features_{key}" / "features-00000.npz",
             features=x.astype(np.float32), labels=labels)
    (out / f"features_{key}" / "COMPLETE").write_text("1\n")
  ctx = eval_base.EvalContext(
      pretrained=pretrained.load(pretrained.PretrainedSpec(
          "random_init", trunk=eval_fixtures.TINY_TRUNK)),
      output_dir=str(out), writer=tf.summary.create_file_writer(str(out)),
      log=lambda m: None, recompute_bn_stats=0)
  cfg = voc07_svm.Config(devkit=devkit, costs=(1e-7, 1e-3, 1.0),
                         low_shot_k=(1, 2), low_shot_samples=2)
  result = voc07_svm.run(ctx, cfg)
  assert result.metrics["map"] == pytest.approx(1.0)
  assert result.metrics["map_11point"] == pytest.approx(1.0)
  assert result.counts["classes"] >= 2
  for name, cost in result.details["chosen_cost"].items():
    cls = voc.CLASSES.index(name)
    cv = [json.load(open(out / "svm" / f"full_c{cls}_cost{c:.10g}.json"))[
        "cv_ap"] for c in cfg.costs]
    assert cost == cfg.costs[int(np.nanargmax(cv))]
  for k in ("1", "2"):
    low = result.details["low_shot"][k]
    assert low["min"] <= low["mean"] <= low["max"] and low["std"] >= 0
    assert low["cost"] in cfg.costs


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
