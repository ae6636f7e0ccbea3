"""Evaluation metrics shared by the evaluations (NumPy, no TensorFlow).

  top_k_accuracy        fraction of examples whose label is among the k
                        highest scores (paper §5: top-1, and "recall@5" =
                        top-5 for ImageNet frozen).
  average_precision     area under a precision/recall curve in the two
                        definitions of the PASCAL VOC devkit:
                        ``eleven_point=True`` is VOC2007's (``VOCap`` with the
                        11 recall thresholds 0, 0.1, ..., 1: the mean of the
                        maximum precision at recall >= t); ``False`` is
                        VOC2010+'s "all points" area under the monotone
                        (interpolated) precision envelope, the one
                        ``calculate_ap`` of Goyal et al.'s benchmark and
                        VISSL's SVM evaluation use.
  ranked_precision_recall
                        precision and recall down a list ranked by score,
                        with "difficult" examples ignored (neither positive
                        nor negative), as VOC07 classification and VISSL's
                        ``get_precision_recall``.
  classification_ap     ranked_precision_recall + average_precision.

Ties in score are broken by the order of the inputs (a stable sort, as
MATLAB's ``sort`` in the devkit), so results are deterministic.
"""

from typing import Tuple

import numpy as np


def top_k_accuracy(scores, labels, k: int = 1) -> float:
  """Fraction of rows of ``scores [N, C]`` whose ``labels [N]`` is in the top k.

  A label tied with the k-th score counts as in the top k only if it is
  ranked there by a stable sort on descending score (lower class index first).
  """
  scores = np.asarray(scores)
  labels = np.asarray(labels).astype(np.int64)
  if scores.ndim != 2 or labels.shape != scores.shape[:1]:
    raise ValueError(f"scores must be [N, C] and labels [N]; got "
                     f"{scores.shape} and {labels.shape}.")
  if len(labels) == 0:
    return float("nan")
  k = min(k, scores.shape[1])
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(order == labels[:, None], axis=1)))


def average_precision(recall, precision, eleven_point: bool) -> float:
  """AP of a precision/recall curve (points in ranked order), VOC devkit.

  Args:
    recall: ``[M]`` non-decreasing recall after each ranked detection.
    precision: ``[M]`` precision after each ranked detection.
    eleven_point: VOC2007's 11-point interpolated AP if True, else the
      VOC2010+ area under the interpolated curve.
  """
  recall = np.asarray(recall, np.float64)
  precision = np.asarray(precision, np.float64)
  if eleven_point:
    ap = 0.0
    # Thresholds i/10 exactly (np.arange(0, 1.1, 0.1) gives 0.30000000000000004
    # and would miss a recall of exactly 0.3).
    for t in [i / 10 for i in range(11)]:
      above = precision[recall >= t]
      ap += (above.max() if above.size else 0.0) / 11.0
    return float(ap)
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the monotone envelope
  changes = np.where(mrec[1:] != mrec[:-1])[0] + 1
  return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def ranked_precision_recall(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
  """Precision and recall down the list ranked by descending score.

  Args:
    scores: ``[N]`` classifier scores.
    labels: ``[N]`` in {1: positive, -1 (or 0 in {-1, 0, 1} lists): negative,
      0: difficult}. Following VOC07 classification, labels are read as
      1 positive, 0 difficult (ignored), anything < 0 negative.

  Returns:
    ``(precision [M], recall [M])`` over the M non-difficult examples.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  keep = labels != 0
  scores, labels = scores[keep], labels[keep]
  order = np.argsort(-scores, kind="stable")
  positive = (labels[order] > 0).astype(np.float64)
  tp = np.cumsum(positive)
  fp = np.cumsum(1.0 - positive)
  num_positive = positive.sum()
  recall = tp / num_positive if num_positive else np.zeros_like(tp)
  precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
  return precision, recall


def classification_ap(scores, labels, eleven_point: bool) -> float:
  """AP of one class over ranked images (labels: 1, -1, 0 = difficult)."""
  precision, recall = ranked_precision_recall(scores, labels)
  return average_precision(recall, precision, eleven_point)
