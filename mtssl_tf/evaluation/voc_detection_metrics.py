"""PASCAL VOC detection AP, exactly as the VOC devkit's ``VOCevaldet.m``.

Paper §5 "PASCAL VOC 2007 Detection" reports VOC07 mean AP at IoU 0.5 (and
0.75). Per class, over the whole test set:

  * ground truth: every box of the class; ``npos`` counts the non-difficult;
  * detections are sorted by descending score (stable: ties keep the order in
    which they were added, as MATLAB's ``sort`` in the devkit);
  * each detection takes the ground-truth box of its image with the largest
    overlap (IoU with the devkit's "+1" pixel areas on 1-based inclusive
    coordinates; a box that does not overlap is never taken). If that overlap
    is >= the threshold: a difficult box makes the detection ignored (neither
    TP nor FP); an unclaimed box makes it a TP and claims the box; a claimed
    box makes it a FP (duplicate). Otherwise it is a FP;
  * precision/recall from the cumulative TP/FP, AP by
    ``metrics.average_precision``: the 11-point VOC2007 definition, and the
    VOC2010+ area under the interpolated curve as an extra column.

A class with no non-difficult ground truth has AP NaN (the devkit divides by
zero) and is left out of the mean; a class with ground truth but no
detections has AP 0.

Boxes are ``(xmin, ymin, xmax, ymax)`` in the devkit's 1-based inclusive
pixels. A detector's continuous pixel-edge box ``(x0, y0, x1, y1)`` (0 at the
image's left edge, W at its right edge) is ``(x0 + 1, y0 + 1, x1, y1)`` there
(``edges_to_voc``); with it the devkit's IoU equals the continuous IoU.
NumPy only; written by hand because Model Garden's evaluators are COCO's.
"""

from typing import Dict, List, Sequence

import numpy as np

from mtssl_tf.evaluation import metrics


def edges_to_voc(boxes) -> np.ndarray:
  """``[N, 4]`` pixel-edge (x0, y0, x1, y1) -> devkit 1-based inclusive."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return boxes + np.array([1.0, 1.0, 0.0, 0.0])


def _overlaps(box, gt_boxes) -> np.ndarray:
  """Devkit IoU of one box [4] with gt_boxes [G, 4]; <= 0 where disjoint."""
  iw = (np.minimum(box[2], gt_boxes[:, 2]) -
        np.maximum(box[0], gt_boxes[:, 0]) + 1)
  ih = (np.minimum(box[3], gt_boxes[:, 3]) -
        np.maximum(box[1], gt_boxes[:, 1]) + 1)
  inter = iw * ih
  union = ((box[2] - box[0] + 1) * (box[3] - box[1] + 1) +
           (gt_boxes[:, 2] - gt_boxes[:, 0] + 1) *
           (gt_boxes[:, 3] - gt_boxes[:, 1] + 1) - inter)
  return np.where((iw > 0) & (ih > 0), inter / union, -np.inf)


class VocDetectionEvaluator:
  """Accumulates ground truth and detections; ``result()`` gives the APs.

  Args:
    class_names: names of the classes; labels index into it.
    iou_thresholds: overlaps at which AP is computed (VOC: 0.5; the paper also
      quotes 0.75).
  """

  def __init__(self, class_names: Sequence[str],
               iou_thresholds: Sequence[float] = (0.5, 0.75)):
    self.class_names = list(class_names)
    self.iou_thresholds = tuple(iou_thresholds)
    self._gt = {}  # image id -> (boxes [G, 4], labels [G], difficult [G])
    self._dets = []  # (image id, boxes [D, 4], scores [D], labels [D])

  def add_ground_truth(self, image_id, boxes, labels, difficult) -> None:
    """One image's ground truth: boxes [G, 4], labels [G], difficult [G]."""
    if image_id in self._gt:
      raise ValueError(f"ground truth of image {image_id!r} added twice")
    self._gt[image_id] = (np.asarray(boxes, np.float64).reshape(-1, 4),
                          np.asarray(labels, np.int64).reshape(-1),
                          np.asarray(difficult, bool).reshape(-1))

  def add_detections(self, image_id, boxes, scores, labels) -> None:
    """One image's detections: boxes [D, 4], scores [D], labels [D]."""
    if image_id not in self._gt:
      raise ValueError(f"detections for image {image_id!r} without its "
                       "ground truth (add_ground_truth first)")
    self._dets.append((image_id, np.asarray(boxes, np.float64).reshape(-1, 4),
                       np.asarray(scores, np.float64).reshape(-1),
                       np.asarray(labels, np.int64).reshape(-1)))

  def class_precision_recall(self, label: int, iou_threshold: float):
    """``(precision [M], recall [M], npos)`` of one class, devkit rules."""
    gt = {}
    npos = 0
    for image_id, (boxes, labels, difficult) in self._gt.items():
      keep = labels == label
      gt[image_id] = (boxes[keep], difficult[keep],
                      np.zeros(int(keep.sum()), bool))
      npos += int((~difficult[keep]).sum())
    ids, boxes, scores = [], [], []
    for image_id, b, s, l in self._dets:
      keep = l == label
      ids += [image_id] * int(keep.sum())
      boxes.append(b[keep])
      scores.append(s[keep])
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    scores = np.concatenate(scores) if scores else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, d in enumerate(order):
      gt_boxes, difficult, claimed = gt[ids[d]]
      if not len(gt_boxes):
        fp[rank] = 1
        continue
      overlaps = _overlaps(boxes[d], gt_boxes)
      j = int(np.argmax(overlaps))  # first of equal maxima, as the devkit
      if overlaps[j] >= iou_threshold:
        if difficult[j]:
          continue
        if claimed[j]:
          fp[rank] = 1
        else:
          tp[rank] = 1
          claimed[j] = True
      else:
        fp[rank] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos if npos else np.full(len(tp), np.nan)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
    return precision, recall, npos

  def result(self) -> Dict[str, object]:
    """APs per class and their means.

    Returns:
      ``{"AP@0.5": [C] (11-point), "AP_area@0.5": [C] (VOC2010+), ...,
      "mAP@0.5": float, "mAP_area@0.5": float, ..., "npos": [C],
      "num_detections": [C]}`` for each IoU threshold; NaN for classes
      without non-difficult ground truth (left out of the means).
    """
    out = {}
    npos_all = []
    for iou in self.iou_thresholds:
      ap11, area = [], []
      for label in range(len(self.class_names)):
        precision, recall, npos = self.class_precision_recall(label, iou)
        if iou == self.iou_thresholds[0]:
          npos_all.append(npos)
        if npos == 0:
          ap11.append(np.nan)
          area.append(np.nan)
          continue
        ap11.append(metrics.average_precision(recall, precision, True))
        area.append(metrics.average_precision(recall, precision, False))
      key = f"{iou:g}"
      out[f"AP@{key}"] = ap11
      out[f"AP_area@{key}"] = area
      out[f"mAP@{key}"] = _nanmean(ap11)
      out[f"mAP_area@{key}"] = _nanmean(area)
    out["npos"] = npos_all
    out["num_detections"] = [
        int(sum((l == c).sum() for _, _, _, l in self._dets))
        for c in range(len(self.class_names))]
    return out


def _nanmean(values: List[float]) -> float:
  values = np.asarray(values, np.float64)
  return float(np.nanmean(values)) if np.isfinite(values).any() else np.nan


def per_class_table(result: Dict[str, object],
                    class_names: Sequence[str]) -> List[Dict[str, object]]:
  """Rows ``{"class", "npos", "AP@0.5", ...}`` for results.json / Markdown."""
  keys = [k for k in result if k.startswith("AP")]
  return [dict({"class": name, "npos": result["npos"][i]},
               **{k: result[k][i] for k in keys})
          for i, name in enumerate(class_names)]
