"""The paper's figures from experiments, with matplotlib (Agg, no display).

  figure3   a metric against pre-training compute (GPU-hours, the paper's
            x-axis), one line per experiment (task mix), plus a dashed
            horizontal line for a random trunk where one was evaluated
            (Figures 3-4) and a dotted one for the supervised baseline
            (``paper_numbers.BASELINE_ROWS``) at its last checkpoint.
  figure5   the |alpha| heat map (Figure 5): one row per pre-training task's
            lasso row (self-supervised tasks on top) and one per evaluation
            that learned its own lasso (below), one column per block-3 unit,
            shallowest at the left; whiter is larger, on a square-root scale
            so that small non-zero weights stay visible ("a nonlinear scale",
            paper Figure 5).
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

from mtssl_tf.reporting import paper_numbers
from mtssl_tf.reporting import tables


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def figure3_series(experiments: Sequence[dict], column: str
                   ) -> List[Tuple[str, List[float], List[float]]]:
  """(label, GPU-hours, values) per experiment that measured ``column``."""
  series = []
  for experiment in experiments:
    if experiment["row"] in paper_numbers.BASELINE_ROWS:
      continue  # not on the self-supervised compute axis: a line (figure3)
    points = []
    for k, info in sorted(experiment.get("checkpoints", {}).items(),
                          key=lambda item: int(item[0])):
      value = tables.our_value(experiment, column, k)
      if value is not None:
        points.append((info["cost_gpu_hours"], value))
    if points:
      series.append((experiment["row"], [p[0] for p in points],
                     [p[1] for p in points]))
  return series


def baseline_lines(experiments: Sequence[dict], column: str
                   ) -> List[Tuple[str, float]]:
  """(label, value) of each ``paper_numbers.BASELINE_ROWS`` experiment that
  measured ``column``, at its last checkpoint."""
  lines = []
  for experiment in experiments:
    if experiment["row"] in paper_numbers.BASELINE_ROWS:
      value = tables.our_value(experiment, column,
                               tables.last_checkpoint(experiment))
      if value is not None:
        lines.append((experiment["row"], value))
  return lines


def figure3(experiments: Sequence[dict], column: str, path: str) -> bool:
  """Writes the plot of ``column`` to ``path`` (.png/.svg); False if empty."""
  series = figure3_series(experiments, column)
  if not series and not baseline_lines(experiments, column):
    return False
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for label, x, y in series:
    ax.plot(x, y, marker="o", label=label)
  for experiment in experiments:
    random = tables.our_value(experiment, column, "random_init")
    if random is not None:
      ax.axhline(random, color="gray", linestyle="--", label="Random Init")
      break
  for label, value in baseline_lines(experiments, column):
    ax.axhline(value, color="black", linestyle=":", label=label)
  ax.set_xlabel("pre-training compute (GPU-hours, paper §6 accounting)")
  unit = "%" if paper_numbers.COLUMNS[column][2] != 1.0 else ""
  ax.set_ylabel(f"{column} {unit}".strip())
  ax.set_title(f"{column} vs pre-training compute (cf. paper Fig. 3-4)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return True


def alpha_rows(experiments: Sequence[dict]
               ) -> Tuple[List[str], Optional[np.ndarray]]:
  """Row labels and ``[rows, units]`` |alpha|: pre-training tasks, then
  evaluations (the latest checkpoint of each experiment)."""
  labels, rows = [], []
  evaluation_labels, evaluation_rows = [], []
  for experiment in experiments:
    results = experiment.get("results", [])
    if not results:
      continue
    latest = max((r for r in results if str(r["checkpoint"]).isdigit()),
                 key=lambda r: int(r["checkpoint"]), default=None)
    if latest and latest.get("pretrain_alpha"):
      order = [t for t in experiment.get("tasks", [])
               if t in latest["pretrain_alpha"]]
      for task in order or sorted(latest["pretrain_alpha"]):
        row = latest["pretrain_alpha"][task]
        labels.append(f"{experiment['row']}: {task}")
        rows.append(np.abs(np.asarray(row, np.float64)))
    for r in results:
      if r.get("abs_alpha") and (latest is None or r["checkpoint"] ==
                                 latest["checkpoint"]):
        evaluation_labels.append(f"{experiment['row']}: eval "
                                 f"{r['evaluation']}")
        evaluation_rows.append(np.asarray(r["abs_alpha"], np.float64))
  labels += evaluation_labels
  rows += evaluation_rows
  if not rows or len({len(r) for r in rows}) != 1:
    return labels, None
  return labels, np.stack(rows)


def figure5(experiments: Sequence[dict], path: str) -> bool:
  """Writes the |alpha| heat map to ``path``; False if no lasso rows."""
  labels, alpha = alpha_rows(experiments)
  if alpha is None:
    return False
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(max(7, 0.35 * alpha.shape[1] + 4),
                                  0.4 * len(labels) + 1.8), dpi=100)
  ax.imshow(np.sqrt(alpha), cmap="gray", vmin=0, vmax=1, aspect="equal")
  ax.set_yticks(range(len(labels)), labels, fontsize=8)
  ax.set_xticks(range(alpha.shape[1]),
                [str(i + 1) for i in range(alpha.shape[1])], fontsize=7)
  ax.set_xlabel("block-3 unit (shallow -> deep)")
  ax.set_title("|alpha| (sqrt scale; cf. paper Fig. 5)")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return True
