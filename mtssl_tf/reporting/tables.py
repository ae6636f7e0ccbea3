"""Experiments -> the paper's tables, ours beside the published numbers.

An experiment (``experiment.json`` of ``python -m mtssl_tf.experiment``) has a
``row`` (the flagfile name: "rp", "rp_col", ...), and per result the
checkpoint (k or "random_init"), the evaluation, whether the evaluation used
its own lasso, and the metrics. A table cell is our value of a paper column
(``paper_numbers.COLUMNS``: evaluation, metric, scale) for a row at one
checkpoint (the paper's tables use checkpoint 7); a measurement that does not
exist is shown as "—", never as 0.
"""

import csv
import io
import json
import os
from typing import Dict, List, Optional, Sequence

from mtssl_tf.reporting import paper_numbers

MISSING = "—"


def write_json(path: str, value) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)


def fmt(value: Optional[float], scale: float = 100.0) -> str:
  if value is None:
    return MISSING
  return f"{value:.2f}" if scale != 1.0 else f"{value:.3f}"


def our_value(experiment: dict, column: str, checkpoint,
              eval_lasso: bool = False) -> Optional[float]:
  """Our number for ``column`` at ``checkpoint`` in the paper's units."""
  evaluation, metric, scale = paper_numbers.COLUMNS[column]
  for result in experiment.get("results", []):
    if (str(result["checkpoint"]) == str(checkpoint)
        and result["evaluation"] == evaluation
        and bool(result.get("eval_lasso")) == eval_lasso
        and metric in result["metrics"]):
      return result["metrics"][metric] * scale
  return None


def _paper_value(row: str, column: str) -> Optional[float]:
  for table in paper_numbers.TABLES:
    value = paper_numbers.value(table, row, column)
    if value is not None:
      return value
  return None


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def experiment_table(experiment: dict) -> str:
  """Markdown: one line per checkpoint (and lasso variant), ours | paper."""
  evaluations = {r["evaluation"] for r in experiment.get("results", [])}
  columns = [c for c, (e, _, _) in paper_numbers.COLUMNS.items()
             if e in evaluations]
  header = ["row", "checkpoint"]
  for column in columns:
    header += [column, f"{column} (paper)"]
  keys = []
  for r in experiment.get("results", []):
    key = (str(r["checkpoint"]), bool(r.get("eval_lasso")))
    if key not in keys:
      keys.append(key)
  rows = []
  for checkpoint, lasso in keys:
    name = experiment["row"] + ("+eval_lasso" if lasso else "")
    if checkpoint == "random_init":
      name = "random_init"
    cells = [name, checkpoint]
    for column in columns:
      scale = paper_numbers.COLUMNS[column][2]
      cells += [fmt(our_value(experiment, column, checkpoint, lasso), scale),
                fmt(_paper_value(name, column), scale)]
    rows.append(cells)
  return _markdown(header, rows)


def last_checkpoint(experiment: dict) -> Optional[int]:
  """The latest numbered checkpoint ``experiment`` evaluated, if any."""
  numbered = [int(r["checkpoint"]) for r in experiment.get("results", [])
              if str(r["checkpoint"]).isdigit()]
  return max(numbered, default=None)


def _row_lookup(experiments: Sequence[dict]) -> Dict[str, tuple]:
  """paper row name -> (experiment, checkpoint, eval_lasso); checkpoint None
  means the reported compute point (``paper_numbers.BASELINE_ROWS`` and
  random_init have their own)."""
  lookup = {}
  for experiment in experiments:
    for r in experiment.get("results", []):
      lasso = bool(r.get("eval_lasso"))
      if str(r["checkpoint"]) == "random_init":
        lookup.setdefault("random_init", (experiment, "random_init", False))
        continue
      name = experiment["row"] + ("+eval_lasso" if lasso else "")
      fixed = (last_checkpoint(experiment)
               if experiment["row"] in paper_numbers.BASELINE_ROWS else None)
      lookup.setdefault(name, (experiment, fixed, lasso))
  return lookup


def paper_tables(experiments: Sequence[dict], checkpoint: int = 7
                 ) -> Dict[str, Dict[str, object]]:
  """Every paper table: {"markdown", "csv"} with ours and the paper's."""
  lookup = _row_lookup(experiments)
  out = {}
  for table, spec in paper_numbers.TABLES.items():
    header = ["row"]
    for column in spec["columns"]:
      header += [f"{column} (ours)", f"{column} (paper)"]
    rows = []
    for row in spec["rows"]:
      found = lookup.get(row)
      cells = [row]
      for column in spec["columns"]:
        scale = paper_numbers.COLUMNS[column][2]
        ours = None
        if found:
          experiment, fixed, lasso = found
          ours = our_value(experiment, column, fixed or checkpoint, lasso)
        cells += [fmt(ours, scale), fmt(paper_numbers.value(table, row,
                                                            column), scale)]
      rows.append(cells)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header] + rows)
    baselines = "".join(
        f"; {row} at its checkpoint {lookup[row][1]}"
        for row in spec["rows"] if row in paper_numbers.BASELINE_ROWS
        and row in lookup)
    caption = f"**{table}** ({spec['caption']} Ours at checkpoint " \
              f"{checkpoint}{baselines}.)\n\n"
    out[table] = {"markdown": caption + _markdown(header, rows),
                  "csv": buffer.getvalue()}
  return out


def load_experiments(runs_dir: str) -> List[dict]:
  """Every experiment.json below ``runs_dir`` (sorted by path)."""
  found = []
  for root, _, files in sorted(os.walk(runs_dir)):
    if "experiment.json" in files:
      with open(os.path.join(root, "experiment.json"), encoding="utf-8") as f:
        found.append(json.load(f))
  return found
