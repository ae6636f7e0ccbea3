"""k-NN: the vote against a straightforward loop, and end to end."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import labelled_images
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import knn
from mtssl_tf.evaluation import pretrained
from tests.evaluation import eval_fixtures


def test_scores_match_a_straightforward_loop():
  rng = np.random.default_rng(0)
  train_x, query_x = rng.normal(size=(30, 5)), rng.normal(size=(7, 5))
  train_y = rng.integers(0, 4, 30)
  scores = knn.knn_scores(train_x, train_y, query_x, 4, k=6,
                          temperature=0.1, chunk=3)
  for q, row in zip(query_x, scores):
    sims = [q @ t / np.linalg.norm(q) / np.linalg.norm(t) for t in train_x]
    expected = np.zeros(4)
    for i in np.argsort(sims)[::-1][:6]:
      expected[train_y[i]] += np.exp(sims[i] / 0.1)
    np.testing.assert_allclose(row, expected, rtol=1e-5)  # float32 sims


def test_streamed_training_parts_give_the_same_votes():
  rng = np.random.default_rng(1)
  train_x, query_x = rng.normal(size=(50, 6)), rng.normal(size=(9, 6))
  train_y = rng.integers(0, 3, 50)
  whole = knn.knn_scores(train_x, train_y, query_x, 3, k=7, temperature=0.1)
  parts = [(train_x[i:i + 8], train_y[i:i + 8]) for i in range(0, 50, 8)]
  streamed, seen = knn.knn_scores_streamed(iter(parts), query_x, 3, k=7,
                                           temperature=0.1, chunk=4)
  assert seen == 50
  np.testing.assert_allclose(streamed, whole, rtol=1e-6)
  # Fewer training examples than k: all of them vote, once.
  few, _ = knn.knn_scores_streamed([(train_x[:3], train_y[:3])], query_x[:1],
                                   3, k=20, temperature=0.1)
  sims = train_x[:3] @ query_x[0] / np.linalg.norm(train_x[:3], axis=1) / (
      np.linalg.norm(query_x[0]))
  expected = np.zeros(3)
  np.add.at(expected, train_y[:3], np.exp(sims / 0.1))
  np.testing.assert_allclose(few[0], expected, rtol=1e-5)


@pytest.mark.slow
def test_knn_end_to_end_on_colour_classes(tmp_path):
  root = eval_fixtures.write_imagenet(str(tmp_path / "inet"),
                                      per_class=(5, 3))
  data = labelled_images.LabelledDataConfig(
      source="folder", train_path=f"{root}/train", val_path=f"{root}/val")
  ctx = eval_base.EvalContext(
      pretrained=pretrained.load(pretrained.PretrainedSpec(
          "random_init", trunk=eval_fixtures.TINY_TRUNK)),
      output_dir=str(tmp_path / "out"),
      writer=tf.summary.create_file_writer(str(tmp_path / "out")),
      log=lambda m: None, recompute_bn_stats=15)
  cfg = knn.Config(data=data, k=5, resize=36, crop=32, batch_size=4)
  result = knn.run(ctx, cfg)
  assert result.metrics["top1"] >= 0.9
  assert result.counts["val_examples"] == 9
  # The cached features are reused: same result, no trunk needed.
  assert knn.run(ctx, cfg).metrics == result.metrics
