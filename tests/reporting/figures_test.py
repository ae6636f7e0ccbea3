"""Figure 3's series and Figure 5's rows, and that both render."""

import numpy as np
from PIL import Image

from mtssl_tf.reporting import figures
from tests.reporting import reporting_fixtures


def test_figure3_series_in_gpu_hours():
  series = figures.figure3_series(reporting_fixtures.experiments(),
                                  "ImageNet")
  assert series[0] == ("rp", [2400.2, 16800.5], [40.0, 50.0])
  assert series[1][0] == "all4_lasso" and series[1][2] == [61.0]
  assert figures.figure3_series(reporting_fixtures.experiments(),
                                "PASCAL") == []


def test_figure5_rows_pretraining_tasks_then_evaluations():
  labels, alpha = figures.alpha_rows(reporting_fixtures.experiments())
  assert labels == ["all4_lasso: rp", "all4_lasso: col",
                    "all4_lasso: eval imagenet_linear"]
  np.testing.assert_allclose(alpha, [[0, 0.6, 0.8], [1, 0, 0],
                                     [0.6, 0, 0.8]])


def test_figures_render(tmp_path):
  experiments = reporting_fixtures.experiments()
  assert figures.figure3(experiments, "ImageNet", str(tmp_path / "f3.png"))
  assert not figures.figure3(experiments, "PASCAL", str(tmp_path / "no.png"))
  assert figures.figure5(experiments, str(tmp_path / "f5.png"))
  image = np.asarray(Image.open(tmp_path / "f5.png").convert("L"))
  # A white cell (|alpha| = 1) and black cells (0) are drawn.
  assert image.min() < 10 and (image > 245).mean() > 0.3


def test_imagenet_labels_is_a_line_not_a_compute_curve(tmp_path):
  sup = {"row": "imagenet_labels", "tasks": ["sup"],
         "checkpoints": {"3": {"cost_gpu_hours": 7200.0}},
         "results": [reporting_fixtures.result(
             3, "imagenet_linear", {"top1": 0.6, "top5": 0.85})]}
  experiments = reporting_fixtures.experiments() + [sup]
  rows = [s[0] for s in figures.figure3_series(experiments, "ImageNet")]
  assert rows == ["rp", "all4_lasso"]
  assert figures.baseline_lines(experiments, "ImageNet") == [
      ("imagenet_labels", 85.0)]
  assert figures.figure3([sup], "ImageNet", str(tmp_path / "f3.png"))
