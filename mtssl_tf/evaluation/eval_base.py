"""The contract every evaluation module follows (paper §5; Goyal et al. 2019).

An evaluation module (``imagenet_linear.py``, ``voc07_svm.py``, ``knn.py``,
``voc07_detection.py``, ``nyu_depth.py``) defines:

  ``NAME``     the registry name, e.g. "imagenet_linear".
  ``Config``   a frozen dataclass of its options with their defaults (data
               paths included). ``python -m mtssl_tf.evaluate`` turns every
               field into a flag ``--<NAME>.<field>`` (``config_flags.py``).
  ``check(config) -> None``
               validates values and data paths at start-up, before anything
               is written; raises ValueError saying what is expected where.
  ``configure_runtime(config) -> None`` (optional)
               runs right after ``check``, before any TensorFlow op (e.g.
               splitting the CPU into logical devices for a strategy).
  ``run(ctx: EvalContext, config) -> EvalResult``
               trains what the evaluation trains on top of the pre-trained
               trunk (``ctx.pretrained``), measures, and returns the metrics.
               It keeps its own checkpoints and caches under
               ``ctx.output_dir`` and resumes from them after a kill.

The entry point (``mtssl_tf/evaluate.py``) does the rest the same way for all
of them: loads what is evaluated, writes ``results.json`` (metrics, the exact
configuration, what was evaluated, data counts, wall time) and ``results.md``
(one Markdown row), and logs the metrics to TensorBoard.
"""

import dataclasses
import time
from typing import Any, Callable, Dict, Optional, Sequence

import tensorflow as tf

from mtssl_tf.evaluation import bn_stats
from mtssl_tf.evaluation import pretrained as pretrained_lib
from mtssl_tf.training import summaries


@dataclasses.dataclass
class EvalResult:
  """What an evaluation measured.

  Attributes:
    metrics: metric name -> value (fractions in [0, 1] for accuracies/APs).
    headline: the metric names of the one-line Markdown row, in order.
    counts: data counts (images used, skipped by reason, classes, ...).
    details: anything else worth keeping (per-class APs, learned alpha, ...),
      JSON-serialisable.
    percent: the metrics that are fractions to show as % in the Markdown row
      (None: every headline metric; errors such as depth's abs_rel are not).
  """
  metrics: Dict[str, float]
  headline: Sequence[str]
  counts: Dict[str, Any] = dataclasses.field(default_factory=dict)
  details: Dict[str, Any] = dataclasses.field(default_factory=dict)
  percent: Optional[Sequence[str]] = None


class Progress:
  """Progress lines with rate and ETA: ``what 120/1000 (12%) 3.4 img/s ETA 4m``.

  The rate is measured from the first ``update`` on, so the time spent before
  it (tracing, the first batch) does not distort the ETA. Lines are printed at
  most every ``every_secs`` seconds, and always for the last item.
  """

  def __init__(self, total: int, what: str, unit: str = "img",
               log: Callable[[str], None] = print, every_secs: float = 10.0,
               done: int = 0):
    self.total, self.what, self.unit = int(total), what, unit
    self.log, self.every_secs = log, every_secs
    self.done = self.start_done = int(done)
    self.start = self.last_print = None

  def update(self, done: int) -> None:
    now = time.monotonic()
    if self.start is None:
      self.start, self.start_done, self.last_print = now, done, now
    self.done = done
    if done < self.total and now - self.last_print < self.every_secs:
      return
    self.last_print = now
    rate = (done - self.start_done) / max(now - self.start, 1e-9)
    eta = ((self.total - done) / rate if rate > 0 else float("nan"))
    percent = 100.0 * done / max(self.total, 1)
    eta_text = summaries.format_duration(eta) if rate > 0 else "?"
    self.log(f"{self.what} {done}/{self.total} ({percent:.0f}%) "
             f"{rate:.2f} {self.unit}/s ETA {eta_text}")


@dataclasses.dataclass
class EvalContext:
  """What the entry point gives an evaluation.

  Attributes:
    pretrained: what is evaluated (``pretrained.Pretrained``):
      ``build_trunk(...)`` returns a fresh trunk holding its weights.
    output_dir: the evaluation's own directory (checkpoints, caches).
    writer: TensorBoard summary writer of the evaluation.
    log: where progress lines go.
    lasso: learn the evaluation's own LassoCombine over the block-3 units
      instead of reading the last unit (paper §3.2, Table 4 "Eval Lasso").
    lasso_l1: L1 weight of that lasso row.
    seed: seed of data order and initialisation.
    recompute_bn_stats: images used to re-estimate the trunk's batch-norm
      statistics before freezing (0: keep the checkpoint's).
  """
  pretrained: pretrained_lib.Pretrained
  output_dir: str
  writer: Any
  log: Callable[[str], None] = print
  lasso: bool = False
  lasso_l1: float = 0.01
  seed: int = 0
  recompute_bn_stats: int = 0

  def progress(self, total: int, what: str, unit: str = "img",
               done: int = 0) -> Progress:
    return Progress(total, what, unit=unit, log=self.log, done=done)

  def prepare_trunk(self, trunk, images) -> None:
    """Re-estimates ``trunk``'s batch-norm statistics if asked to.

    ``images`` yields float32 ``[B, H, W, 3]`` trunk inputs in [-1, 1] from the
    evaluation's training data, or is a function returning such a data set
    (built only if the statistics are re-estimated now). The statistics are
    saved under ``output_dir/bn_stats`` and restored from there on resume.
    """
    if self.recompute_bn_stats <= 0:
      return
    if images is None:
      raise ValueError("This evaluation cannot re-estimate batch-norm "
                       "statistics (no training images).")
    bn_stats.recompute_cached(trunk, images, self.recompute_bn_stats,
                              f"{self.output_dir}/bn_stats", log=self.log)
