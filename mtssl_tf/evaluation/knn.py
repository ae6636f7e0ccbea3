"""k-nearest-neighbour classification on frozen features: a check that needs
no training.

Features are those of the linear probe (``features.FrozenFeatures``: last
block-3 unit, or with ``--lasso`` a uniform combination of the block-3 units
since nothing is trained here, max-pooled to 3x3 and flattened), extracted
once per split with centre crops and cached (``features.extract``: a killed
extraction resumes; the training features are then read shard by shard, so a
training set larger than memory works). Each validation feature votes with
its k nearest training features by cosine similarity, weighted by
``exp(sim / T)``, as Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance
discrimination") and later self-supervised work (DINO's ``eval_knn.py``):
k = 20, T = 0.07. Reported: top-1 (and top-5 of the class votes).

Written by hand (a few lines of NumPy): scikit-learn's KNeighborsClassifier
has no exponential similarity weighting.
"""

import dataclasses
import os
from typing import Iterable, Tuple

import numpy as np

from mtssl_tf.data import labelled_images
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import features as features_lib
from mtssl_tf.evaluation import metrics
from mtssl_tf.models import lasso as lasso_lib

NAME = "knn"


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the k-NN evaluation.

  Attributes:
    data: the labelled image set (as for imagenet_linear).
    k: neighbours that vote.
    temperature: T of the exp(similarity / T) vote weights.
    resize: shorter side images are resized to before the centre crop.
    crop: side of the square trunk input.
    batch_size: batch size of feature extraction.
    chunk: validation features compared with the training set at once.
  """
  data: labelled_images.LabelledDataConfig = (
      labelled_images.LabelledDataConfig())
  k: int = 20
  temperature: float = 0.07
  resize: int = 256
  crop: int = 224
  batch_size: int = 64
  chunk: int = 256


def check(config: Config) -> None:
  for name in ("k", "temperature", "resize", "crop", "batch_size", "chunk"):
    if getattr(config, name) <= 0:
      raise ValueError(f"--{NAME}.{name} must be positive.")
  if config.crop > config.resize:
    raise ValueError(f"--{NAME}.crop cannot exceed --{NAME}.resize.")
  for split in labelled_images.SPLITS:
    labelled_images.LabelledImages(config.data, split)


def _normalise(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores_streamed(train_parts: Iterable[Tuple[np.ndarray, np.ndarray]],
                        query_x, num_classes: int, k: int, temperature: float,
                        chunk: int = 256) -> Tuple[np.ndarray, int]:
  """Class votes ``[Q, num_classes]`` of the weighted cosine k-NN, reading the
  training features part by part (``(features [n, D], labels [n])``; the
  whole set need not fit in memory), and the number of training examples.

  Each query keeps its k most similar training examples so far; their
  ``exp(similarity / T)`` weights vote at the end. With fewer than k training
  examples, all of them vote.
  """
  query_x = _normalise(query_x)
  best_sims = np.full((len(query_x), k), -np.inf, np.float32)
  best_labels = np.zeros((len(query_x), k), np.int64)
  seen = 0
  for part_x, part_y in train_parts:
    part_x, part_y = _normalise(part_x), np.asarray(part_y, np.int64)
    seen += len(part_x)
    for start in range(0, len(query_x), chunk):
      rows = slice(start, start + chunk)
      sims = np.concatenate([best_sims[rows], query_x[rows] @ part_x.T], 1)
      labels = np.concatenate(
          [best_labels[rows],
           np.broadcast_to(part_y, (len(sims), len(part_y)))], 1)
      top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
      best_sims[rows] = np.take_along_axis(sims, top, axis=1)
      best_labels[rows] = np.take_along_axis(labels, top, axis=1)
  weights = np.exp(best_sims.astype(np.float64) / temperature)  # -inf -> 0
  scores = np.zeros((len(query_x), num_classes), np.float64)
  rows = np.repeat(np.arange(len(query_x))[:, None], k, 1)
  np.add.at(scores, (rows, best_labels), weights)
  return scores, seen


def knn_scores(train_x, train_y, query_x, num_classes: int, k: int,
               temperature: float, chunk: int = 256) -> np.ndarray:
  """Class votes ``[Q, num_classes]`` of the weighted cosine k-NN."""
  return knn_scores_streamed([(train_x, train_y)], query_x, num_classes, k,
                             temperature, chunk)[0]


def run(ctx: eval_base.EvalContext, config: Config) -> eval_base.EvalResult:
  """Extracts (or reads cached) features of both splits; k-NN top-1/top-5."""
  sets = {s: labelled_images.LabelledImages(config.data, s)
          for s in labelled_images.SPLITS}
  trunk = ctx.pretrained.build_trunk()
  # Pipelines are built only when used (a resumed run reads its caches).
  batched = {s: lambda s=s: features_lib.batches(
      sets[s].dataset(training=False), config.batch_size, config.resize,
      config.crop, training=False) for s in sets}
  ctx.prepare_trunk(trunk, lambda: batched["train"]().map(lambda x, y: x))
  lasso = None
  if ctx.lasso:
    lasso = lasso_lib.LassoCombine(initializer="uniform",
                                   name=f"lasso_{NAME}")
  frozen = features_lib.FrozenFeatures(trunk, ctx.pretrained.trunk_config.depth,
                                       lasso)
  directories = {split: os.path.join(ctx.output_dir, f"features_{split}")
                 for split in batched}
  # The training features are only streamed (ImageNet's would not fit in
  # memory); the validation features are held.
  cached = {}
  for split, data in batched.items():
    cached[split] = features_lib.extract(
        frozen, data, directories[split], total=sets[split].num_examples,
        progress=ctx.progress(sets[split].num_examples,
                              f"{NAME} features ({split})"),
        load=split == "val")
  num_classes = len(sets["train"].class_names)
  scores, num_train = knn_scores_streamed(
      features_lib.shards(directories["train"]), cached["val"]["features"],
      num_classes, config.k, config.temperature, config.chunk)
  labels = cached["val"]["labels"]
  return eval_base.EvalResult(
      metrics={"top1": metrics.top_k_accuracy(scores, labels, 1),
               "top5": metrics.top_k_accuracy(scores, labels, 5)},
      headline=("top1",),
      counts={"classes": num_classes,
              "train_examples": int(num_train),
              "val_examples": int(len(labels)),
              "skipped_train": sets["train"].skipped.as_dict(),
              "skipped_val": sets["val"].skipped.as_dict()},
      details={"feature_dim": int(cached["val"]["features"].shape[1])})
