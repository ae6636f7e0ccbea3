r"""Experiments -> the paper's tables and figures: ``python -m mtssl_tf.paper_report``.

  python -m mtssl_tf.paper_report --runs=runs/experiments --out=report/

Reads every ``experiment.json`` below --runs (``python -m mtssl_tf.experiment``)
and writes to --out:

  tables.md, tables.csv   Tables 1-8 with our numbers beside the paper's
                          (ours at --checkpoint; "—" where not measured)
  figure3_<column>.png/.svg   metric vs pre-training compute per task mix
  figure5.png/.svg        the |alpha| heat map of the lasso runs
  index.html              one self-contained page (images embedded) to open
                          or share
"""

import base64
import html
import os
import sys

from absl import app
from absl import flags

from mtssl_tf.reporting import figures
from mtssl_tf.reporting import tables

_RUNS = flags.DEFINE_string("runs", "runs/experiments",
                            "Folder searched for experiment.json files.")
_OUT = flags.DEFINE_string("out", "report", "Output folder.")
_CHECKPOINT = flags.DEFINE_integer(
    "checkpoint", 7, "The compute point the tables report (7 = 16.8K "
    "GPU-hours, as the paper's Tables 2-4).")

FIGURE3_COLUMNS = ("ImageNet", "PASCAL", "NYU")


def _markdown_to_html(markdown: str) -> str:
  """The tables' Markdown (a caption line and a pipe table) as HTML."""
  out, rows = [], []
  for line in markdown.splitlines():
    if line.startswith("|") and not line.startswith("|---"):
      rows.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
    elif line.startswith("**"):
      out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
  if rows:
    head = "".join(f"<th>{c}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                   for row in rows[1:])
    out.append(f"<table><tr>{head}</tr>{body}</table>")
  return "\n".join(out)


def _image(path: str, alt: str) -> str:
  with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode("ascii")
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_report(runs: str, out: str, checkpoint: int) -> str:
  """Writes the report; returns the path of index.html."""
  experiments = tables.load_experiments(runs)
  if not experiments:
    raise ValueError(f"No experiment.json below {runs!r}: run python -m "
                     f"mtssl_tf.experiment first.")
  os.makedirs(out, exist_ok=True)
  made = tables.paper_tables(experiments, checkpoint)
  with open(os.path.join(out, "tables.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(t["markdown"] for t in made.values()))
  with open(os.path.join(out, "tables.csv"), "w", encoding="utf-8") as f:
    for name, t in made.items():
      f.write(f"# {name}\n{t['csv']}\n")
  sections = []
  for column in FIGURE3_COLUMNS:
    stem = os.path.join(out, "figure3_" + column.lower().replace(" ", "_"))
    if figures.figure3(experiments, column, stem + ".png"):
      figures.figure3(experiments, column, stem + ".svg")
      sections.append(f"<h2>{html.escape(column)} vs compute</h2>"
                      + _image(stem + ".png", column))
  if figures.figure5(experiments, os.path.join(out, "figure5.png")):
    figures.figure5(experiments, os.path.join(out, "figure5.svg"))
    sections.append("<h2>Lasso |alpha| (Figure 5)</h2>"
                    + _image(os.path.join(out, "figure5.png"), "alpha"))
  listed = "".join(
      f"<li>{html.escape(e['row'])}: tasks {html.escape(', '.join(e['tasks']))}"
      f", checkpoints {html.escape(', '.join(sorted(e['checkpoints'])))}</li>"
      for e in experiments)
  page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mtssl_tf report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}
th{{background:#eee}} td:first-child{{text-align:left}}</style></head><body>
<h1>Multi-task self-supervised learning: our numbers beside the paper's</h1>
<p>Doersch &amp; Zisserman, ICCV 2017. {len(experiments)} experiment(s) from
{html.escape(os.path.abspath(runs))}; ours at checkpoint {checkpoint}
({checkpoint} x the experiment's compute tick). "—": not measured.</p>
<ul>{listed}</ul>
{''.join(_markdown_to_html(t['markdown']) for t in made.values())}
{''.join(sections)}
</body></html>
"""
  path = os.path.join(out, "index.html")
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path


def run(argv):
  del argv
  try:
    path = write_report(_RUNS.value, _OUT.value, _CHECKPOINT.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"Wrote {path} (tables.md, tables.csv and figures beside it).")
  return 0


def main():
  app.run(run)


if __name__ == "__main__":
  main()
