"""VOC07 classification with linear SVMs on frozen features, and low-shot
(Goyal et al. 2019, "Scaling and Benchmarking Self-Supervised Visual
Representation Learning" §6; the protocol of their benchmark code and VISSL).

Features: the frozen trunk's last block-3 unit (or ``--lasso``: a uniform
LassoCombine of the block-3 units, nothing being trained before the SVMs)
max-pooled to 3x3 and flattened (9216 values at depth 101), of every image of
VOC2007 trainval and test (shorter side 256, centre crop 224), extracted once
and cached under the output directory (a killed extraction resumes).

Labels per image and class, as the devkit's ``<class>_<split>.txt``: 1 if the
image holds a non-difficult object of the class, 0 if only difficult ones,
-1 otherwise. As in Goyal et al.'s code, training treats 0 as negative and
testing ignores 0-labelled images for that class.

Full-data SVMs: per class, one scikit-learn ``LinearSVC`` (squared hinge, L2,
class weights {+1: 2, -1: 1}, dual, tol 1e-4, on L2-normalised features) for
every cost in ``costs``; each cost's 3-fold cross-validated AP on trainval
picks the class's cost; that SVM, refit on all of trainval, is scored on test.
Reported: mAP with the all-points AP of Goyal et al./VISSL (``map``, the
comparable number) and with VOC2007's 11-point AP (``map_11point``), and
each class's AP and chosen cost.

Low-shot: for k in ``low_shot_k`` (1..96 positives per class) and
``low_shot_samples`` independent samples, each class's SVM is trained, for
every cost, on k random positives of trainval and (20 - 1) * k random
negatives among the images without the class (difficult-only images and the
unsampled rest are left out), as Goyal et al.'s
``create_voc_low_shot_samples.py`` samples them; each is scored on the whole
test set (difficult images ignored). As in their
``aggregate_low_shot_svm_stats.py``, the reported number per k is the test
mAP of the cost with the best mean over samples, with its std/min/max over
samples. (With one positive there is nothing to cross-validate; this
selects the cost on test and is said so here.)

Every fit's result is a small JSON file under ``<output_dir>/svm`` (the
sweep resumes after a kill, and already-fitted cells are never refitted);
fits run in parallel threads (liblinear releases the GIL).
"""

import concurrent.futures
import dataclasses
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf.data import decode
from mtssl_tf.data import sources
from mtssl_tf.data import synthetic_voc
from mtssl_tf.data import voc
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import features as features_lib
from mtssl_tf.evaluation import metrics
from mtssl_tf.models import lasso as lasso_lib

NAME = "voc07_svm"
# Goyal et al.'s grid: the decades 1e-7..100 given on their command line, plus
# the 0.5**4 .. 0.5**19 their ``svm_helper.parse_cost_list`` always appends.
DEFAULT_COSTS = ((1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
                 + tuple(0.5 ** n for n in range(4, 20)))


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the VOC07 SVM and low-shot evaluation (Goyal et al. 2019).

  Attributes:
    devkit: VOCdevkit root (or its VOC2007 directory); None generates a small
      VOC-format set from the built-in photos under the output directory (a
      demonstration only, not VOC).
    train_split: image list the SVMs are trained on.
    test_split: image list they are scored on.
    resize: shorter side images are resized to before the centre crop.
    crop: side of the square trunk input.
    batch_size: batch size of feature extraction.
    costs: SVM costs C tried per class.
    cross_val_folds: folds of the cross-validation that picks each cost.
    max_iter: liblinear iterations per fit.
    low_shot_k: positives per class of the low-shot runs (empty: none).
    low_shot_samples: independent samples per k.
    workers: SVM fits run at once.
  """
  devkit: Optional[str] = None
  train_split: str = "trainval"
  test_split: str = "test"
  resize: int = 256
  crop: int = 224
  batch_size: int = 32
  costs: Tuple[float, ...] = DEFAULT_COSTS
  cross_val_folds: int = 3
  max_iter: int = 2000
  low_shot_k: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 96)
  low_shot_samples: int = 5
  workers: int = 2


def check(config: Config) -> None:
  for name in ("resize", "crop", "batch_size", "max_iter",
               "low_shot_samples", "workers"):
    if getattr(config, name) <= 0:
      raise ValueError(f"--{NAME}.{name} must be positive.")
  if config.cross_val_folds < 2:
    raise ValueError(f"--{NAME}.cross_val_folds must be >= 2.")
  if not config.costs or any(c <= 0 for c in config.costs):
    raise ValueError(f"--{NAME}.costs must be positive numbers, e.g. "
                     f"'(0.01, 0.1, 1.0)'.")
  if any(k <= 0 for k in config.low_shot_k):
    raise ValueError(f"--{NAME}.low_shot_k must be positive.")
  if config.crop > config.resize:
    raise ValueError(f"--{NAME}.crop cannot exceed --{NAME}.resize.")
  if config.devkit is not None:
    for split in (config.train_split, config.test_split):
      voc.read_image_ids(config.devkit, split)


def image_labels(records: Sequence[voc.VocImage]) -> np.ndarray:
  """``[N, 20]`` int8: 1 present, 0 only difficult, -1 absent (devkit)."""
  labels = -np.ones((len(records), len(voc.CLASSES)), np.int8)
  for i, record in enumerate(records):
    for obj in record.objects:
      labels[i, obj.label] = max(labels[i, obj.label],
                                 0 if obj.difficult else 1)
  return labels


def _dataset(records, labels):
  """``(name, path, labels)``: the file is read by ``decode.decode_images``."""
  paths = [r.jpeg_path for r in records]
  return tf.data.Dataset.from_tensor_slices((paths, paths, labels))


def _nonzero(counts):
  return {k: v for k, v in counts.items() if v}


def _normalise(x):
  return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def _svm(cost, max_iter):
  from sklearn import svm  # pylint: disable=g-import-not-at-top
  return svm.LinearSVC(C=cost, class_weight={1: 2, -1: 1}, penalty="l2",
                       loss="squared_hinge", dual=True, tol=1e-4,
                       max_iter=max_iter, intercept_scaling=1.0)


def _cached(path: str, compute):
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  value = compute()
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f)
  os.replace(tmp, path)
  return value


def _test_ap(clf, test_x, test_y) -> Dict[str, float]:
  scores = clf.decision_function(test_x)
  return {"ap": metrics.classification_ap(scores, test_y, eleven_point=False),
          "ap_11point": metrics.classification_ap(scores, test_y, True)}


def _full_cell(cls, cost, train_x, train_y, test_x, test_y, cfg):
  """CV AP on train and test AP of one (class, cost)."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  y = np.where(train_y[:, cls] == 1, 1, -1)  # difficult-only -> negative
  folds = min(cfg.cross_val_folds, int((y == 1).sum()), int((y == -1).sum()))
  cv_ap = float("nan")
  if folds >= 2:
    cv_ap = float(np.mean(model_selection.cross_val_score(
        _svm(cost, cfg.max_iter), train_x, y, cv=folds,
        scoring="average_precision")))
  clf = _svm(cost, cfg.max_iter).fit(train_x, y)
  return {"cv_ap": cv_ap, **_test_ap(clf, test_x, test_y[:, cls])}


def _low_shot_cell(cls, cost, sample, train_x, train_y, test_x, test_y,
                   cfg):
  keep = np.concatenate(sample)
  y = np.where(train_y[keep, cls] == 1, 1, -1)
  clf = _svm(cost, cfg.max_iter).fit(train_x[keep], y)
  return _test_ap(clf, test_x, test_y[:, cls])


def low_shot_sample(train_y, cls: int, k: int, sample: int,
                    seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Training images of class ``cls``'s SVM in one low-shot sample (seeded).

  Returns sorted indices ``(positives, negatives)``: k images with a
  non-difficult object of the class and (num_classes - 1) * k without the
  class (fewer if there are not that many); difficult-only images are never
  drawn (Goyal et al.'s low-shot sampling).
  """
  rng = np.random.default_rng([seed, sample, k, cls])
  drawn = []
  for label, count in ((1, k), (-1, (train_y.shape[1] - 1) * k)):
    pool = np.flatnonzero(train_y[:, cls] == label)
    drawn.append(np.sort(rng.choice(pool, min(count, len(pool)),
                                    replace=False)))
  return drawn[0], drawn[1]


def run(ctx: eval_base.EvalContext, config: Config) -> eval_base.EvalResult:
  """Features -> per-class SVMs (full and low-shot) -> mAP."""
  devkit = config.devkit
  if devkit is None:
    devkit = os.path.join(ctx.output_dir, "builtin_devkit")
    if not os.path.isdir(os.path.join(devkit, "VOC2007")):
      synthetic_voc.make_devkit(devkit, num_trainval=60, num_test=40,
                                seed=ctx.seed)
    ctx.log(f"{NAME}: no --{NAME}.devkit: using a generated VOC-format set "
            f"at {devkit} (a demonstration, not VOC2007).")
  splits = {"train": config.train_split, "test": config.test_split}
  records, problems = {}, []
  for key, split in splits.items():
    records[key], bad = voc.read_split(devkit, split)
    problems += [str(p) for p in bad]
  if problems:
    ctx.log(f"{NAME}: skipped {len(problems)} bad images: "
            f"{'; '.join(problems[:3])}{' ...' if len(problems) > 3 else ''}")
  labels = {k: image_labels(r) for k, r in records.items()}

  # ---- Features (cached) -----------------------------------------------------
  trunk = ctx.pretrained.build_trunk()
  counter = sources.SkipCounter(sources.IMAGE_SKIP_REASONS)

  def batched(key):
    # Corrupt, truncated, oversized and degenerate images are skipped and
    # counted per file (decode.py), with their labels.
    ds = decode.decode_images(_dataset(records[key], labels[key]), counter,
                              read_files=True, deterministic=True)
    ds = ds.map(lambda name, image, y: (image, y))
    return features_lib.batches(ds, config.batch_size, config.resize,
                                config.crop, training=False)

  # Pipelines are built only when used (a resumed run reads its caches).
  ctx.prepare_trunk(trunk, lambda: batched("train").map(lambda x, y: x))
  lasso = (lasso_lib.LassoCombine(initializer="uniform", name=f"lasso_{NAME}")
           if ctx.lasso else None)
  frozen = features_lib.FrozenFeatures(trunk, ctx.pretrained.trunk_config.depth,
                                       lasso)
  data = {}
  for key in splits:
    cached = features_lib.extract(
        frozen, lambda key=key: batched(key), os.path.join(ctx.output_dir, f"features_{key}"),
        total=len(records[key]),
        progress=ctx.progress(len(records[key]), f"{NAME} features ({key})"))
    data[key] = (_normalise(cached["features"].astype(np.float64)),
                 cached["labels"].astype(np.int8))
  (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
  present = [c for c in range(len(voc.CLASSES))
             if (train_y[:, c] == 1).any() and (test_y[:, c] == 1).any()]
  if len(present) < len(voc.CLASSES):
    ctx.log(f"{NAME}: {len(voc.CLASSES) - len(present)} classes have no "
            f"positive in {splits}; mAP is over the {len(present)} others.")

  # ---- SVM sweeps (resumable, parallel) ---------------------------------------
  svm_dir = os.path.join(ctx.output_dir, "svm")
  os.makedirs(svm_dir, exist_ok=True)
  jobs = {}
  for cls in present:
    for cost in config.costs:
      jobs[("full", cls, cost)] = (
          os.path.join(svm_dir, f"full_c{cls}_cost{cost:.10g}.json"),
          lambda cls=cls, cost=cost: _full_cell(
              cls, cost, train_x, train_y, test_x, test_y, config))
      for k in config.low_shot_k:
        for s in range(config.low_shot_samples):
          drawn = low_shot_sample(train_y, cls, k, s, ctx.seed)
          jobs[("low", cls, cost, k, s)] = (
              os.path.join(svm_dir, f"low_k{k}_s{s}_c{cls}_cost{cost:.10g}.json"),
              lambda cls=cls, cost=cost, d=drawn: _low_shot_cell(
                  cls, cost, d, train_x, train_y, test_x, test_y, config))
  progress = ctx.progress(len(jobs), f"{NAME} SVM fits", unit="fit")
  results = {}
  with concurrent.futures.ThreadPoolExecutor(config.workers) as pool:
    futures = {pool.submit(_cached, path, fn): key
               for key, (path, fn) in jobs.items()}
    for future in concurrent.futures.as_completed(futures):
      results[futures[future]] = future.result()
      progress.update(len(results))

  # ---- Aggregation ---------------------------------------------------------------
  per_class, chosen = {}, {}
  for cls in present:
    cv = [results[("full", cls, c)]["cv_ap"] for c in config.costs]
    best = config.costs[int(np.nanargmax(cv))] if not np.all(
        np.isnan(cv)) else config.costs[len(config.costs) // 2]
    chosen[voc.CLASSES[cls]] = best
    per_class[voc.CLASSES[cls]] = results[("full", cls, best)]
  result_metrics = {
      "map": float(np.mean([v["ap"] for v in per_class.values()])),
      "map_11point": float(np.mean([v["ap_11point"]
                                    for v in per_class.values()]))}
  low_shot = {}
  for k in config.low_shot_k:
    by_cost = np.array([[np.mean([results[("low", cls, cost, k, s)]["ap"]
                                  for cls in present])
                         for s in range(config.low_shot_samples)]
                        for cost in config.costs])  # [costs, samples]
    best = int(np.argmax(by_cost.mean(axis=1)))
    low_shot[str(k)] = {"mean": float(by_cost[best].mean()),
                        "std": float(by_cost[best].std()),
                        "min": float(by_cost[best].min()),
                        "max": float(by_cost[best].max()),
                        "cost": config.costs[best]}
    result_metrics[f"low_shot_k{k}"] = low_shot[str(k)]["mean"]
  with ctx.writer.as_default(step=0):
    for name, value in per_class.items():
      tf.summary.scalar(f"{NAME}/ap/{name}", value["ap"])
  return eval_base.EvalResult(
      metrics=result_metrics,
      headline=("map",) + tuple(f"low_shot_k{k}" for k in config.low_shot_k
                                if k in (1, 8, 96)),
      counts={"train_images": len(records["train"]),
              "test_images": len(records["test"]),
              "classes": len(present), "bad_images": len(problems),
              "undecodable": counter.as_dict()["undecodable"],
              "skipped_images": _nonzero(counter.as_dict()),
              "svm_fits": len(jobs)},
      details={"per_class": per_class, "chosen_cost": chosen,
               "low_shot": low_shot, "problems": problems[:100],
               "devkit": devkit})
