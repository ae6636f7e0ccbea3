"""VOC07 detection (evaluation/voc07_detection.py, detection_training.py) on
a generated VOC devkit: start-up checks, the evaluation contract, resume, and
a tiny detector that learns."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import synthetic_voc
from mtssl_tf.data import voc
from mtssl_tf.data import voc_records
from mtssl_tf.evaluation import detection_training
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import pretrained
from mtssl_tf.evaluation import voc07_detection
from mtssl_tf.models import faster_rcnn_c4

TINY = config_lib.TrunkConfig(depth=14, base_width=8, output_stride=8)


def test_check_names_what_is_missing(tmp_path):
  with pytest.raises(ValueError, match="make_voc_tfrecords"):
    voc07_detection.check(voc07_detection.Config())
  with pytest.raises(ValueError, match="No records match .*trainval-"):
    voc07_detection.check(voc07_detection.Config(records_dir=str(tmp_path)))
  with pytest.raises(ValueError, match="scale_min"):
    voc07_detection.check(voc07_detection.Config(records_dir="builtin",
                                                 scale_min=2.0))
  voc07_detection.check(voc07_detection.Config(records_dir="builtin"))


@pytest.mark.slow
def test_run_writes_per_class_results_and_resumes(tmp_path):
  logs = []
  ctx = eval_base.EvalContext(
      pretrained=pretrained.load(pretrained.PretrainedSpec(
          "random_init", trunk=TINY)),
      output_dir=str(tmp_path), log=logs.append,
      writer=tf.summary.create_file_writer(str(tmp_path)))
  cfg = voc07_detection.Config(
      records_dir="builtin", steps=2, batch_size=2, learning_rate=0.01,
      decay_steps=(), output_size=(64, 96), anchor_sizes=(32.0,),
      num_proposals=50, test_num_proposals=20, num_sampled_rois=16,
      checkpoint_every=1, builtin_images=(6, 3))
  result = voc07_detection.run(ctx, cfg)
  assert set(result.headline) <= set(result.metrics)
  assert 0.0 <= result.metrics["mAP@0.5"] <= 1.0
  assert result.counts["test_images_scored"] == 3
  assert result.counts["trainval_images"] == 6
  rows = result.details["per_class"]
  assert [r["class"] for r in rows] == list(voc.CLASSES)
  assert all(r["npos"] == 0 for r in rows
             if r["class"] not in synthetic_voc.used_classes())
  assert os.path.exists(tmp_path / "train" / "checkpoint")
  # A second run (as after a kill) resumes from the step-2 checkpoint.
  voc07_detection.run(ctx, voc07_detection.Config(
      **dict(vars(cfg), steps=3)))
  assert any("resumed detector training" in m and "at step 2" in m
             for m in logs), logs


# Batch-norm decay 0.9: after the test's 300 steps the moving statistics
# weigh their initial values 0.9**300 ~ 0; at TF-Slim's 0.997 they still
# weighed 0.997**300 = 0.41, so the trained detector ran at test time with
# statistics unlike training's. That, not a code change, made its score low
# and erratic (0.26 when written, 0.13 later; `git diff 2f4cc11 f96bdf6 --
# mtssl_tf/models mtssl_tf/data mtssl_tf/evaluation/detection_training.py`
# is empty): 0.12 at 0.997 vs 0.38 at 0.9, same code and seed.
TINY_STRIDE16 = config_lib.TrunkConfig(depth=14, base_width=8,
                                       output_stride=16, batch_norm_decay=0.9)
# Anchors for the ~20-50 px shapes of the generated set at 96x128.
TINY_DET = faster_rcnn_c4.DetectorConfig(
    anchor_sizes=(16.0, 32.0, 64.0), num_proposals=300,
    test_num_proposals=50, num_sampled_rois=64)
SIZE = (96, 128)
STEPS = 300


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
  """A generated devkit (160 trainval, 40 test images, 4 shape classes)."""
  tmp = tmp_path_factory.mktemp("tiny_voc")
  root, records = str(tmp / "voc"), str(tmp / "records")
  synthetic_voc.make_devkit(root, 160, 40, seed=0)
  for split in ("trainval", "test"):
    voc_records.make_records(voc_records.VocRecordsConfig(
        records, split, voc_dir=root))
  return records


def _train_and_score(records, train_dir, freeze_trunk):
  """Trains the tiny detector STEPS steps; (mAP@0.5, trunk before/after)."""
  tf_keras.utils.set_random_seed(0)
  model = faster_rcnn_c4.build_detector(TINY_STRIDE16, TINY_DET)
  trunk_before = [w.numpy() for w in model.backbone.trunk.weights]
  head_before = [w.numpy() for w in model.detection_head[0].weights]
  settings = detection_training.TrainSettings(
      steps=STEPS, batch_size=2, learning_rate=0.02, decay_steps=(225,),
      output_size=SIZE, scale_min=0.8, scale_max=1.25,
      freeze_batch_norm=False, freeze_trunk=freeze_trunk,
      checkpoint_every=10**6)
  train = detection_training.dataset(
      f"{records}/trainval-*",
      detection_training.make_parser(TINY_DET, SIZE, 0.8, 1.25, True), 2,
      True)
  detection_training.train(model, train, settings, train_dir)
  test = detection_training.dataset(
      f"{records}/test-*", detection_training.make_parser(TINY_DET, SIZE),
      4, False)
  result, seen = detection_training.evaluate(model, test, voc.CLASSES)
  assert seen == 40
  trunk_same = all(np.array_equal(a, w.numpy()) for a, w in
                   zip(trunk_before, model.backbone.trunk.weights))
  head_same = all(np.array_equal(a, w.numpy()) for a, w in
                  zip(head_before, model.detection_head[0].weights))
  return result["mAP@0.5"], trunk_same, head_same


@pytest.fixture(scope="module")
def tiny_runs(tiny_records, tmp_path_factory):
  """The fine-tuned detector and the frozen-random-trunk baseline, once."""
  tmp = tmp_path_factory.mktemp("tiny_runs")
  return {"fine_tuned": _train_and_score(tiny_records, str(tmp / "full"),
                                         False),
          "frozen_trunk": _train_and_score(tiny_records, str(tmp / "frozen"),
                                           True)}


@pytest.mark.slow
def test_tiny_detector_learns(tiny_runs):
  """Tiny trunk (depth 14, width 8), 4 shape classes on built-in photos.

  300 steps of 2 images at 96x128, all weights trained: 0.38 mAP@0.5
  measured (the untrained detector: 0.0005). 0.25 leaves room for the
  run-to-run variation of the parallel, randomly augmented input pipeline
  (+-0.07 seen between runs of one configuration) and is far above chance.
  """
  m_ap, trunk_same, head_same = tiny_runs["fine_tuned"]
  assert not trunk_same and not head_same
  assert m_ap > 0.25, m_ap


@pytest.mark.slow
def test_frozen_random_trunk_baseline_is_clearly_below(tiny_runs):
  """The issue's baseline: the same detector, same seed and steps, with the
  random trunk frozen and only the RPN and the random box head trained:
  0.15 measured against 0.38 fine-tuned (0.06-0.15 over the configurations
  tried). The random block-4 head alone finds coloured shapes fairly well,
  so the margin asserted is 0.1 below the fine-tuned score of the same run.
  """
  m_ap, trunk_same, head_same = tiny_runs["frozen_trunk"]
  assert trunk_same and not head_same  # freeze_trunk freezes the trunk only
  assert m_ap < tiny_runs["fine_tuned"][0] - 0.1, tiny_runs
