"""The frozen linear probe end to end on a generated ImageNet-layout set."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import labelled_images
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import imagenet_linear
from mtssl_tf.evaluation import pretrained
from tests.evaluation import eval_fixtures


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
  root = eval_fixtures.write_imagenet(str(tmp_path_factory.mktemp("inet")),
                                      per_class=(8, 4))
  return labelled_images.LabelledDataConfig(
      source="folder", train_path=f"{root}/train", val_path=f"{root}/val")


def _config(data, **kwargs):
  values = dict(data=data, resize=36, crop=32, batch_size=6, steps=30,
                learning_rate=0.05, decay_every=0, eval_batch_size=8,
                checkpoint_every_steps=10, log_every_steps=5)
  values.update(kwargs)
  return imagenet_linear.Config(**values)


def _context(output_dir, lasso=False, trunk=eval_fixtures.TINY_TRUNK):
  loaded = pretrained.load(pretrained.PretrainedSpec(
      "random_init", trunk=trunk, seed=0))
  return eval_base.EvalContext(
      pretrained=loaded, output_dir=str(output_dir),
      writer=tf.summary.create_file_writer(str(output_dir)),
      log=lambda m: None, lasso=lasso, recompute_bn_stats=24)


def test_easy_colour_classes_are_learned(imagenet, tmp_path):
  result = imagenet_linear.run(_context(tmp_path), _config(imagenet))
  assert result.metrics["top1"] >= 0.9
  assert result.metrics["top5"] == 1.0  # 3 classes
  assert result.counts["val_examples"] == 12
  assert result.counts["train_examples"] == 24


@pytest.mark.slow  # three runs, each with BN re-estimation and evaluation
def test_resume_after_a_kill_gives_the_uninterrupted_result(imagenet,
                                                            tmp_path):
  whole = imagenet_linear.run(_context(tmp_path / "whole"),
                              _config(imagenet, steps=16))
  # A run killed at step 13, between its step-10 checkpoint and the next,
  # then started again with the same command.
  killed = _context(tmp_path / "killed")

  class Killed(Exception):
    pass

  class KillAt13(eval_base.Progress):
    def update(self, done):
      if done == 13:
        raise Killed()
      super().update(done)

  killed.progress = lambda total, what, unit="img", done=0: KillAt13(
      total, what, unit=unit, log=killed.log, done=done)
  with pytest.raises(Killed):
    imagenet_linear.run(killed, _config(imagenet, steps=16))
  assert sorted(os.listdir(tmp_path / "killed" / "train"))[-1] == (
      "ckpt-10.index")
  resumed = imagenet_linear.run(_context(tmp_path / "killed"),
                                _config(imagenet, steps=16))
  assert resumed.metrics == whole.metrics
  assert resumed.details["final_train_loss"] == pytest.approx(
      whole.details["final_train_loss"], rel=1e-6)


@pytest.mark.slow
def test_eval_only_lasso_trains_alpha_not_the_trunk(imagenet, tmp_path,
                                                    monkeypatch):
  ctx = _context(tmp_path, lasso=True, trunk=dataclasses.replace(
      eval_fixtures.TINY_TRUNK, depth=26))  # 2 block-3 units
  built = []
  original = ctx.pretrained.build_trunk

  def build_trunk(**kwargs):
    built.append(original(**kwargs))
    return built[-1]

  monkeypatch.setattr(ctx.pretrained, "build_trunk", build_trunk)
  result = imagenet_linear.run(ctx, _config(imagenet, steps=12))
  trunk = built[0]
  alpha = np.asarray(result.details["abs_alpha"])
  assert alpha.shape == (2,)
  assert np.linalg.norm(alpha) == pytest.approx(1.0, abs=1e-5)
  assert alpha[0] > 1e-4  # moved away from its start, the last unit alone
  # ... and drawn as a heat map: one 12-pixel square per unit, brightness
  # sqrt(|alpha|).
  image = tf.io.decode_png(tf.io.read_file(
      result.details["abs_alpha_image"])).numpy()
  assert image.shape == (14, 27, 3)
  np.testing.assert_allclose(image[1, [1, 14], 0] / 255.0, np.sqrt(alpha),
                             atol=1 / 255)
  # The trunk is frozen: every weight (kernels, biases, BN gamma/beta) is
  # bit-identical to the evaluated source's; only the BN moving statistics
  # were re-estimated before training.
  fresh = ctx.pretrained.trunk
  compared = 0
  learned = lambda l: [w for w in l.weights if "moving" not in w.name]  # noqa: E731
  for layer in fresh.layers:
    for a, b in zip(learned(layer), learned(trunk.get_layer(layer.name))):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
      compared += 1
  assert compared == len(fresh.trainable_weights) > 0


def test_check_rejects_bad_values(imagenet):
  with pytest.raises(ValueError, match="crop"):
    imagenet_linear.check(_config(imagenet, crop=64))
  with pytest.raises(ValueError, match="batch_size"):
    imagenet_linear.check(_config(imagenet, batch_size=0))
  with pytest.raises(ValueError, match="train_path"):
    imagenet_linear.check(_config(dataclasses.replace(imagenet,
                                                      train_path=None)))
