"""VOC07 detection (evaluation/voc07_detection.py, detection_training.py) on
a generated VOC devkit: start-up checks, the evaluation contract, resume."""

import os

import pytest
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import synthetic_voc
from mtssl_tf.data import voc
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import pretrained
from mtssl_tf.evaluation import voc07_detection

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
      decay_steps=(), output_size=(64, 96), anchor_size=2.0,
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
