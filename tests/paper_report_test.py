"""python -m mtssl_tf.paper_report as a user runs it."""

import os
import subprocess
import sys

from tests.reporting import reporting_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _report(*args):
  return subprocess.run([sys.executable, "-m", "mtssl_tf.paper_report", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_report_page_tables_and_figures(tmp_path):
  runs = reporting_fixtures.write(str(tmp_path / "runs"))
  out = str(tmp_path / "report")
  done = _report(f"--runs={runs}", f"--out={out}")
  assert done.returncode == 0, done.stderr[-2000:]
  files = set(os.listdir(out))
  assert {"index.html", "tables.md", "tables.csv", "figure3_imagenet.png",
          "figure3_imagenet.svg", "figure3_nyu.png",
          "figure5.png"} <= files
  assert "figure3_pascal.png" not in files  # nothing measured
  page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
  assert page.count("<table>") == 8
  assert page.count('src="data:image/png;base64,') == 3
  assert "<td>all4_lasso+eval_lasso</td><td>62.50</td><td>69.44</td>" in page
  assert "<td>rp_col</td><td>—</td><td>66.64</td>" in page


def test_no_experiments_is_an_error(tmp_path):
  done = _report(f"--runs={tmp_path}", f"--out={tmp_path}/out")
  assert done.returncode == 2 and "No experiment.json" in done.stderr
