"""NYU v2 depth evaluation end to end on rendered scenes with exact depth."""

import dataclasses
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import depth_augment
from mtssl_tf.data import nyu_depth_v2
from mtssl_tf.evaluation import depth_metrics
from mtssl_tf.evaluation import nyu_depth
from mtssl_tf.models import resnet_v2


class _Progress:

  def __init__(self, *args, **kwargs):
    pass

  def update(self, done):
    pass


def _context(output_dir, lasso=False):
  def build_trunk(include_block4=False, output_stride=8):
    return resnet_v2.build_trunk(config_lib.TrunkConfig(
        depth=14, base_width=8, output_stride=output_stride,
        include_block4=include_block4, batch_norm_decay=0.9))
  return types.SimpleNamespace(
      pretrained=types.SimpleNamespace(build_trunk=build_trunk),
      output_dir=str(output_dir), writer=tf.summary.create_noop_writer(),
      log=print, progress=_Progress, lasso=lasso, lasso_l1=0.01, seed=0)


def _tiny_config(**overrides):
  values = dict(
      source="synthetic", synthetic_train=48, synthetic_test=12,
      synthetic_size=(60, 80), decoder_filters=(32, 16, 8), batch_size=8,
      learning_rate=0.01, max_steps=4, eval_batch_size=6, eval_crop=(),
      max_depth=10.0, checkpoint_every_steps=2, log_every_steps=2,
      image_summary_every_steps=0, batch_norm_decay=0.9,
      augment=depth_augment.AugmentConfig(resize=(60, 80), crop=(48, 64)))
  values.update(overrides)
  return nyu_depth.Config(**values)


def test_check_rejects_bad_settings_naming_the_flag(tmp_path):
  with pytest.raises(ValueError, match="labeled_mat"):
    nyu_depth.check(nyu_depth.Config())
  with pytest.raises(ValueError, match="does not exist"):
    nyu_depth.check(nyu_depth.Config(labeled_mat=str(tmp_path / "a.mat"),
                                     splits_mat=str(tmp_path / "s.mat")))
  with pytest.raises(ValueError, match="output_stride"):
    nyu_depth.check(_tiny_config(output_stride=32))
  with pytest.raises(ValueError, match="crop"):
    nyu_depth.check(_tiny_config(augment=depth_augment.AugmentConfig(
        resize=(60, 80), crop=(64, 64))))
  nyu_depth.check(_tiny_config())


def test_recipe_defaults_follow_laina():
  cfg = nyu_depth.Config()
  assert (cfg.batch_size, cfg.learning_rate, cfg.momentum) == (16, 0.01, 0.9)
  assert cfg.decoder_filters == (512, 256, 128)
  assert nyu_depth.total_steps(cfg, 795) == 118750
  schedule = nyu_depth.learning_rate_schedule(cfg, 795)
  every = round(7 * 95000 / 16)
  assert float(schedule(every - 1)) == pytest.approx(0.01)
  assert float(schedule(every + 1)) == pytest.approx(0.001)
  assert cfg.augment.crop == (228, 304) and cfg.augment.resize == (240, 320)


def test_eval_mask_scales_the_eigen_crop():
  mask = nyu_depth.eval_mask((480, 640), nyu_depth.EIGEN_CROP)
  assert mask.sum() == (471 - 45) * (601 - 41)
  assert mask[45, 41] and not mask[44, 41] and not mask[45, 601]
  half = nyu_depth.eval_mask((240, 320), nyu_depth.EIGEN_CROP)
  assert half[23:236, 21:301].all() and half.sum() == 213 * 280


def test_augmentation_keeps_image_and_depth_aligned():
  # A depth map equal to a function of the image: the augmented pair must
  # keep the relation (scale divides depth by s, so compare normalised).
  cfg = depth_augment.AugmentConfig(resize=(40, 60), crop=(32, 48),
                                    color=(1.0, 1.0))
  ramp = np.tile(np.linspace(10, 240, 60, dtype=np.float32), (40, 1))
  image = np.stack([ramp] * 3, -1).astype(np.uint8)
  depth = np.where(ramp > 128, 4.0, 2.0).astype(np.float32)
  tf.random.set_seed(3)
  for _ in range(5):
    img, dep = depth_augment.train_example(image, depth, cfg)
    img, dep = img.numpy(), dep.numpy()
    assert img.shape == (32, 48, 3) and dep.shape == (32, 48)
    # Away from the frame the rotation brings in (depth 0, image blended
    # with black there).
    valid = scipy.ndimage.binary_erosion(dep > 0, iterations=2)
    bright = (img[..., 0] + 1) * 127.5 > 165
    dark = (img[..., 0] + 1) * 127.5 < 91
    # Far side (4/s) is bright, near side (2/s) dark, wherever both exist.
    if (valid & bright).any() and (valid & dark).any():
      assert dep[valid & bright].min() > dep[valid & dark].max()
    assert dep.max() <= 4.0 + 1e-5


@pytest.mark.slow
def test_mat_source_trains_resumes_and_measures(tmp_path):
  ctx = _context(tmp_path / "run")
  cfg = _tiny_config(max_steps=2, synthetic_train=16, synthetic_test=4)
  nyu_depth.check(cfg)
  metrics, counts, _ = nyu_depth.train_and_evaluate(ctx, cfg)
  assert set(metrics) == set(nyu_depth.HEADLINE)
  assert counts["train_images"] == 16 and counts["test_images_evaluated"] == 4
  assert tf.train.latest_checkpoint(str(tmp_path / "run" / "train")).endswith(
      "-2")
  # Resume to 4 steps from the checkpoint at 2.
  cfg4 = dataclasses.replace(cfg, max_steps=4)
  _, counts, _ = nyu_depth.train_and_evaluate(ctx, cfg4)
  assert counts["train_steps"] == 4
  with pytest.raises(ValueError, match="another --output_dir"):
    nyu_depth.train_and_evaluate(
        ctx, dataclasses.replace(cfg4, decoder_filters=(16, 8, 4)))


@pytest.mark.slow
def test_entry_point_runs_the_builtin_flagfile(tmp_path):
  """python -m mtssl_tf.evaluate with flags/eval_builtin_depth.cfg, shrunk."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  out = str(tmp_path / "out")
  done = subprocess.run(
      [sys.executable, "-m", "mtssl_tf.evaluate",
       "--flagfile=flags/eval_builtin_depth.cfg", "--random_init",
       "--depth=14", "--base_width=8", f"--output_dir={out}",
       "--nyu_depth.synthetic_train=4", "--nyu_depth.synthetic_test=2",
       "--nyu_depth.synthetic_size=(30, 40)",
       "--nyu_depth.augment.resize=(30, 40)",
       "--nyu_depth.augment.crop=(24, 32)", "--nyu_depth.batch_size=2",
       "--nyu_depth.max_steps=2", "--nyu_depth.decoder_filters=(8, 8, 8)"],
      cwd=root, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  results = json.load(open(os.path.join(out, "results.json")))
  assert set(results["metrics"]) == set(nyu_depth.HEADLINE)
  assert results["config"]["augment"]["crop"] == [24, 32]
  assert results["counts"]["test_images_evaluated"] == 2
  assert "delta1" in open(os.path.join(out, "results.md")).read()


def _constant_baseline(mat, splits, cfg):
  """delta1 of predicting the training set's median depth everywhere."""
  train, test = nyu_depth_v2.read_splits(splits)
  reader = nyu_depth_v2.LabeledFile(mat)
  train_depths = np.concatenate([reader.example(int(i))[1].ravel()
                                 for i in train])
  constant = np.median(train_depths[train_depths > 0])
  metrics = depth_metrics.DepthMetrics()
  for i in test:
    depth = reader.example(int(i))[1]
    metrics.update(depth_metrics.metric_sums(
        np.full_like(depth, constant), depth, cfg.min_depth, cfg.max_depth))
  return metrics.result()


@pytest.mark.slow
def test_tiny_network_beats_a_constant_depth_predictor(tmp_path):
  # 600 steps (~2 min on 2 loaded cores): 400 at lr 0.01, 200 at 0.001 (the
  # step decay also lets the batch-norm moving averages settle). Crops and
  # flips only: scale augmentation changes the apparent focal length, which
  # 256 tiny scenes cannot learn around.
  ctx = _context(tmp_path / "run")
  cfg = _tiny_config(
      max_steps=0, epochs=3, images_per_epoch=1600, lr_decay_epochs=2.0,
      output_stride=8, synthetic_train=256, synthetic_test=32,
      log_every_steps=100, checkpoint_every_steps=10000,
      augment=depth_augment.AugmentConfig(resize=(60, 80), crop=(48, 64),
                                          scale=(1.0, 1.0),
                                          rotation_degrees=0.0))
  metrics, _, _ = nyu_depth.train_and_evaluate(ctx, cfg)
  data = os.path.join(str(tmp_path / "run"), "synthetic_data")
  baseline = _constant_baseline(
      os.path.join(data, "nyu_depth_v2_labeled.mat"),
      os.path.join(data, "splits.mat"), cfg)
  print("trained", metrics, "constant", baseline)
  # Measured: delta1 0.579 vs 0.441, abs_rel 0.293 vs 0.358.
  assert metrics["delta1"] > baseline["delta1"] + 0.07
  assert metrics["abs_rel"] < baseline["abs_rel"]
