"""VOC detection AP (evaluation/voc_detection_metrics.py) against hand-computed
values and an independent line-by-line port of the devkit's VOCevaldet.m."""

import numpy as np
import pytest

from mtssl_tf.evaluation import voc_detection_metrics as vdm

A = (1, 1, 10, 10)


def _evaluator(order_tp_first):
  ev = vdm.VocDetectionEvaluator(["a", "b", "c"])
  # Image 1: an "a" and a difficult "a"; image 2: an "a" and a "b". No "c".
  ev.add_ground_truth("1", [A, (21, 1, 30, 10)], [0, 0], [False, True])
  ev.add_ground_truth("2", [A, (40, 40, 49, 49)], [0, 1], [False, False])
  ev.add_detections("1", [A, A, (21, 1, 30, 10)], [0.9, 0.9, 0.8], [0, 0, 0])
  tp, fp = (A, 0.6), ((50, 50, 60, 60), 0.6)  # tied scores
  first, second = (tp, fp) if order_tp_first else (fp, tp)
  ev.add_detections("2", [first[0]], [first[1]], [0])
  ev.add_detections("2", [second[0]], [second[1]], [0])
  return ev


def test_hand_computed_ties_duplicates_difficult_missing_class():
  # Ranked "a": TP, duplicate FP, difficult (ignored), then the tie in the
  # order added. npos = 2.
  ev = _evaluator(order_tp_first=False)  # ... FP, TP
  precision, recall, npos = ev.class_precision_recall(0, 0.5)
  assert npos == 2
  np.testing.assert_allclose(recall, [.5, .5, .5, .5, 1])
  np.testing.assert_allclose(precision, [1, .5, .5, 1 / 3, .5])
  result = ev.result()
  assert result["AP@0.5"][0] == pytest.approx((6 * 1 + 5 * .5) / 11)
  assert result["AP_area@0.5"][0] == pytest.approx(.5 * 1 + .5 * .5)
  assert result["AP@0.5"][1] == 0  # ground truth, no detections
  assert np.isnan(result["AP@0.5"][2])  # no ground truth: left out
  assert result["mAP@0.5"] == pytest.approx((6 + 2.5) / 11 / 2)
  assert result["npos"] == [2, 1, 0]
  assert result["num_detections"] == [5, 0, 0]

  result = _evaluator(order_tp_first=True).result()  # ... TP, FP
  assert result["AP@0.5"][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
  assert result["AP_area@0.5"][0] == pytest.approx(.5 + .5 * 2 / 3)
  table = vdm.per_class_table(result, ["a", "b", "c"])
  assert table[0]["class"] == "a" and table[1]["AP@0.5"] == 0


def test_iou_threshold_and_plus_one_areas():
  ev = vdm.VocDetectionEvaluator(["a"], iou_thresholds=(0.5, 0.7, 0.75))
  ev.add_ground_truth("1", [A], [0], [False])
  ev.add_detections("1", [(1, 1, 10, 7)], [1.0], [0])  # IoU 70/100 = 0.7
  result = ev.result()
  assert result["mAP@0.5"] == pytest.approx(1)
  assert result["mAP@0.7"] == pytest.approx(1)
  assert result["mAP@0.75"] == 0
  # A pixel-edge box [0, 10) x [0, 7) is the same box in devkit coordinates.
  np.testing.assert_array_equal(vdm.edges_to_voc([[0, 0, 10, 7]]),
                                [[1, 1, 10, 7]])


def test_difficult_best_match_ignores_detection():
  # The detection overlaps the difficult box most: ignored, even though it
  # also overlaps the non-difficult one above 0.5 (devkit rule).
  ev = vdm.VocDetectionEvaluator(["a"])
  ev.add_ground_truth("1", [(1, 1, 10, 10), (1, 1, 10, 12)], [0, 0],
                      [False, True])
  ev.add_detections("1", [(1, 1, 10, 12)], [1.0], [0])
  precision, recall, npos = ev.class_precision_recall(0, 0.5)
  assert npos == 1 and recall.tolist() == [0] and precision.tolist() == [0]


def _devkit_reference(gts, dets, cls, minoverlap):
  """VOCevaldet.m + VOCap.m, loop by loop (independent of the module)."""
  npos, gt = 0, {}
  for image_id, (boxes, labels, diff) in gts.items():
    rows = [(list(b), bool(d)) for b, l, d in zip(boxes, labels, diff)
            if l == cls]
    gt[image_id] = {"BB": [r[0] for r in rows], "diff": [r[1] for r in rows],
                    "det": [False] * len(rows)}
    npos += sum(not r[1] for r in rows)
  ids, confidence, bbs = [], [], []
  for image_id, boxes, scores, labels in dets:
    for b, s, l in zip(boxes, scores, labels):
      if l == cls:
        ids.append(image_id)
        confidence.append(s)
        bbs.append(list(b))
  si = sorted(range(len(confidence)), key=lambda i: -confidence[i])  # stable
  nd = len(si)
  tp, fp = [0] * nd, [0] * nd
  for d in range(nd):
    g = gt[ids[si[d]]]
    bb = bbs[si[d]]
    ovmax, jmax = -float("inf"), -1
    for j, bbgt in enumerate(g["BB"]):
      bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]),
            min(bb[3], bbgt[3])]
      iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
      if iw > 0 and ih > 0:
        ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) +
              (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
        ov = iw * ih / ua
        if ov > ovmax:
          ovmax, jmax = ov, j
    if ovmax >= minoverlap:
      if not g["diff"][jmax]:
        if not g["det"][jmax]:
          tp[d] = 1
          g["det"][jmax] = True
        else:
          fp[d] = 1
    else:
      fp[d] = 1
  ctp = cfp = 0
  rec, prec = [], []
  for d in range(nd):
    ctp += tp[d]
    cfp += fp[d]
    rec.append(ctp / npos)
    prec.append(ctp / (ctp + cfp) if ctp + cfp else 0.0)
  ap11 = 0.0
  for t in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
    p = [pr for r, pr in zip(rec, prec) if r >= t]
    ap11 += (max(p) if p else 0.0) / 11
  mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
  for i in range(len(mpre) - 2, -1, -1):
    mpre[i] = max(mpre[i], mpre[i + 1])
  area = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec))
             if mrec[i] != mrec[i - 1])
  return ap11, area


@pytest.mark.parametrize("seed", range(6))
def test_matches_devkit_port_on_random_sets(seed):
  rng = np.random.default_rng(seed)
  num_classes = 3
  gts, dets = {}, []
  ev = vdm.VocDetectionEvaluator(list("abc"), iou_thresholds=(0.5, 0.75))
  for i in range(12):
    def boxes(n):
      xy = rng.integers(1, 40, size=(n, 2))
      wh = rng.integers(3, 25, size=(n, 2))
      return np.concatenate([xy, xy + wh], 1).astype(float)
    n = int(rng.integers(0, 5))
    gt = (boxes(n), rng.integers(0, num_classes, n), rng.random(n) < 0.2)
    gts[str(i)] = gt
    ev.add_ground_truth(str(i), *gt)
    m = int(rng.integers(0, 8))
    # Detections near ground truth and at random, scores with ties.
    det_boxes = boxes(m)
    if n:
      near = rng.integers(0, n, m)
      det_boxes = np.where((rng.random(m) < 0.6)[:, None],
                           gt[0][near] + rng.integers(-3, 4, (m, 4)),
                           det_boxes)
    det = (str(i), det_boxes, np.round(rng.random(m), 1),
           rng.integers(0, num_classes, m))
    dets.append(det)
    ev.add_detections(*det)
  result = ev.result()
  for iou in (0.5, 0.75):
    for c in range(num_classes):
      if not result["npos"][c]:
        continue
      ap11, area = _devkit_reference(gts, dets, c, iou)
      assert result[f"AP@{iou:g}"][c] == pytest.approx(ap11, abs=1e-12)
      assert result[f"AP_area@{iou:g}"][c] == pytest.approx(area, abs=1e-12)
