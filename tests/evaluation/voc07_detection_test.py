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
  with pytest.raises(ValueError, match="strategy must be one of"):
    voc07_detection.check(voc07_detection.Config(records_dir="builtin",
                                                 strategy="multi_worker"))
  with pytest.raises(ValueError, match="needs voc07_detection.strategy="):
    voc07_detection.check(voc07_detection.Config(records_dir="builtin",
                                                 num_cpu_devices=2))
  with pytest.raises(ValueError, match="mixed_precision must be one of"):
    voc07_detection.check(voc07_detection.Config(records_dir="builtin",
                                                 mixed_precision="half"))
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
      checkpoint_every=1, builtin_images=(6, 3),
      # MirroredStrategy on this process's one CPU device: the strategy path
      # of run() (2 devices: detection_distributed_test.py).
      strategy="mirrored")
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


def _first_batches(records, global_seed, n=2):
  tf_keras.utils.set_random_seed(global_seed)
  ds = detection_training.dataset(
      f"{records}/trainval-*",
      detection_training.make_parser(TINY_DET, SIZE, 0.5, 2.0, True), 2,
      True, seed=0, deterministic=True)
  return [(images.numpy(), labels["rpn_score_targets"]["4"].numpy(),
           labels["gt_boxes"].numpy()) for images, labels in ds.take(n)]


def test_deterministic_input_repeats_given_the_seeds(tmp_path):
  """--voc07_detection.deterministic_input: jitter, crop, flip and the RPN
  anchor sample repeat exactly for the same seeds, and change with the
  global seed (so the comparison can fail)."""
  root, records = str(tmp_path / "voc"), str(tmp_path / "records")
  synthetic_voc.make_devkit(root, 4, 0, seed=0)
  voc_records.make_records(voc_records.VocRecordsConfig(records,
                                                        voc_dir=root))
  first, again = _first_batches(records, 0), _first_batches(records, 0)
  other = _first_batches(records, 1)
  for a, b in zip(first, again):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for a, c in zip(first, other)
             for x, y in zip(a, c))


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
# 600 steps: at 300 the fine-tuned detector had not yet passed the frozen
# baseline on the shape-only set (0.042 against 0.063, seed 0).
STEPS = 600


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
  """A generated devkit: 160 trainval, 40 test images, 4 shape classes.

  Every shape is painted in one colour (``colour_by_class=False``), so the
  outline is the only cue to the class. With a colour per class the frozen
  random trunk's baseline was no worse than fine-tuning (0.185 against 0.162
  at 300 steps): the trainable block-4 head read the class off the colour of
  random features.
  """
  tmp = tmp_path_factory.mktemp("tiny_voc")
  root, records = str(tmp / "voc"), str(tmp / "records")
  synthetic_voc.make_devkit(root, 160, 40, seed=0, colour_by_class=False)
  for split in ("trainval", "test"):
    voc_records.make_records(voc_records.VocRecordsConfig(
        records, split, voc_dir=root))
  return records


def _train_and_score(records, train_dir, freeze_trunk, steps, score=True):
  """Trains the tiny detector; (mAP@0.5 or None, trunk same, head same)."""
  tf_keras.utils.set_random_seed(0)
  model = faster_rcnn_c4.build_detector(TINY_STRIDE16, TINY_DET)
  trunk_before = [w.numpy() for w in model.backbone.trunk.weights]
  head_before = [w.numpy() for w in model.detection_head[0].weights]
  settings = detection_training.TrainSettings(
      steps=steps, batch_size=2, learning_rate=0.02,
      decay_steps=(steps * 3 // 4,), output_size=SIZE, scale_min=0.8,
      scale_max=1.25, freeze_batch_norm=False, freeze_trunk=freeze_trunk,
      checkpoint_every=10**6)
  train = detection_training.dataset(
      f"{records}/trainval-*",
      detection_training.make_parser(TINY_DET, SIZE, 0.8, 1.25, True), 2,
      True, deterministic=True)
  detection_training.train(model, train, settings, train_dir)
  m_ap = None
  if score:
    test = detection_training.dataset(
        f"{records}/test-*", detection_training.make_parser(TINY_DET, SIZE),
        4, False)
    result, seen = detection_training.evaluate(model, test, voc.CLASSES)
    assert seen == 40
    m_ap = result["mAP@0.5"]
  trunk_same = all(np.array_equal(a, w.numpy()) for a, w in
                   zip(trunk_before, model.backbone.trunk.weights))
  head_same = all(np.array_equal(a, w.numpy()) for a, w in
                  zip(head_before, model.detection_head[0].weights))
  return m_ap, trunk_same, head_same


@pytest.fixture(scope="module")
def tiny_run(tiny_records, tmp_path_factory):
  """The fine-tuned tiny detector, trained once for the tests below."""
  return _train_and_score(tiny_records,
                          str(tmp_path_factory.mktemp("tiny_full")), False,
                          STEPS)


@pytest.mark.slow
def test_tiny_detector_learns(tiny_run):
  """Tiny trunk (depth 14, width 8), 4 shape classes on built-in photos.

  600 steps of 2 images at 96x128, all weights trained, deterministic input
  (issue 12 item 4). Measured mAP@0.5 (2026-11-24): 0.246, 0.273 and
  0.334 for seeds 0, 1, 2. The untrained detector scored 0.0005-0.0009 (on
  the class-coloured set); the bound 0.1 is 100x that and below every
  measured run.
  """
  m_ap, trunk_same, head_same = tiny_run
  assert not trunk_same and not head_same
  assert m_ap > 0.1, m_ap


@pytest.mark.slow
def test_frozen_random_trunk_is_clearly_below(tiny_records, tiny_run,
                                              tmp_path):
  """--voc07_detection.freeze_trunk: the frozen-random-trunk baseline.

  The random trunk stays bit-identical; the RPN and the randomly initialised
  block-4 box head train for the same 600 steps on the same input. Measured
  mAP@0.5 (2026-11-24, seeds 0, 1, 2): 0.107, 0.053 and 0.117 frozen
  against 0.246, 0.273 and 0.334 fine-tuned, i.e. 43 %, 20 % and 35 % of
  the fine-tuned score. "Clearly below" is asserted as at most 60 % of it.
  """
  fine_tuned = tiny_run[0]
  frozen, trunk_same, head_same = _train_and_score(
      tiny_records, str(tmp_path / "frozen"), True, STEPS)
  assert trunk_same and not head_same
  assert frozen < 0.6 * fine_tuned, (frozen, fine_tuned)
