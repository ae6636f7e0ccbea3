"""Metrics against hand-computed golden values."""

import numpy as np
import pytest

from mtssl_tf.evaluation import metrics

# Rows: scores over 3 classes; ties resolved towards the lower class index.
LOGITS = np.array([[0.1, 0.5, 0.4],
                   [0.3, 0.3, 0.4],
                   [0.9, 0.05, 0.05]])
LABELS = np.array([1, 0, 2])


@pytest.mark.parametrize("k, expected", [(1, 1 / 3), (2, 2 / 3), (3, 1.0),
                                         (5, 1.0)])
def test_top_k_hand_table(k, expected):
  assert metrics.top_k_accuracy(LOGITS, LABELS, k) == pytest.approx(expected)


def test_top_k_shape_error():
  with pytest.raises(ValueError, match=r"\[N, C\]"):
    metrics.top_k_accuracy(LOGITS[0], LABELS, 1)


# A ranked list with a tie (0.8: the negative comes first, input order) and a
# difficult example (label 0, ignored). Non-difficult ranking: + - + + -,
# precision 1, 1/2, 2/3, 3/4, 3/5 at recall 1/3, 1/3, 2/3, 1, 1.
SCORES = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5])
CLS_LABELS = np.array([1, -1, 1, 0, 1, -1])


def test_ranked_precision_recall_hand_list():
  precision, recall = metrics.ranked_precision_recall(SCORES, CLS_LABELS)
  np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
  np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 1, 1])


def test_eleven_point_ap_hand_list():
  # t = 0, .1, .2, .3 -> max precision 1; t = .4 ... 1 -> 3/4.
  assert metrics.classification_ap(SCORES, CLS_LABELS, True) == pytest.approx(
      (4 * 1 + 7 * 0.75) / 11)


def test_all_points_ap_hand_list():
  # Envelope 1 on (0, 1/3], 3/4 on (1/3, 1].
  assert metrics.classification_ap(SCORES, CLS_LABELS, False) == pytest.approx(
      1 / 3 + 2 / 3 * 0.75)


def test_difficult_examples_change_nothing_whatever_their_score():
  for score in (-5.0, 0.85, 5.0):
    scores = np.append(SCORES, score)
    labels = np.append(CLS_LABELS, 0)
    assert metrics.classification_ap(scores, labels, True) == pytest.approx(
        (4 + 7 * 0.75) / 11)


def test_perfect_and_no_positive_rankings():
  assert metrics.classification_ap([3, 2, 1], [1, 1, -1],
                                   True) == pytest.approx(1.0)
  assert metrics.classification_ap([3, 2, 1], [1, 1, -1],
                                   False) == pytest.approx(1.0)
  assert metrics.classification_ap([3, 2, 1], [-1, -1, -1], True) == 0.0


def test_ap_against_straightforward_definition_on_random_lists():
  rng = np.random.default_rng(0)
  for _ in range(20):
    n = rng.integers(5, 40)
    scores = rng.random(n).round(1)  # many ties
    labels = rng.choice([-1, 0, 1], n)
    if not (labels == 1).any():
      labels[0] = 1
    keep = labels != 0
    ranked = labels[keep][np.argsort(-scores[keep], kind="stable")] > 0
    prec = [ranked[:i + 1].mean() for i in range(len(ranked))]
    rec = [ranked[:i + 1].sum() / ranked.sum() for i in range(len(ranked))]
    eleven = sum(max([p for p, r in zip(prec, rec) if r >= t / 10] or [0])
                 for t in range(11)) / 11
    area = sum((rec[i] - (rec[i - 1] if i else 0)) * max(prec[i:])
               for i in range(len(rec)))
    assert metrics.classification_ap(scores, labels, True) == pytest.approx(
        eleven)
    assert metrics.classification_ap(scores, labels, False) == pytest.approx(
        area)
