"""Paper tables from experiments, against hand-written Markdown."""

from mtssl_tf.reporting import paper_numbers
from mtssl_tf.reporting import tables
from tests.reporting import reporting_fixtures

TABLE_2 = """**Table 2** (Combinations of tasks at 16.8K GPU-hours (checkpoint 7). Ours at checkpoint 7.)

| row | ImageNet (ours) | ImageNet (paper) | PASCAL (ours) | PASCAL (paper) | NYU (ours) | NYU (paper) |
|---|---|---|---|---|---|---|
| rp | 50.00 | 59.21 | — | 66.75 | 75.12 | 80.54 |
| rp_col | — | 66.64 | — | 68.75 | — | 79.87 |
| rp_ex | — | 65.24 | — | 69.44 | — | 78.70 |
| rp_ms | — | 63.73 | — | 68.81 | — | 78.72 |
| rp_col_ex | — | 68.65 | — | 69.48 | — | 80.17 |
| all4 | — | 69.30 | — | 70.53 | — | 79.25 |
| imagenet_labels | — | 85.10 | — | 74.17 | — | 80.06 |
"""

TABLE_4_ROWS = """| all4 | — | 69.30 | — | 70.53 | — | 79.25 |
| all4+eval_lasso | — | 70.18 | — | 68.86 | — | 79.41 |
| all4_lasso | 61.00 | 68.09 | — | 68.49 | — | 78.96 |
| all4_lasso+eval_lasso | 62.50 | 69.44 | — | 68.98 | — | 79.45 |
"""


def test_table_2_matches_the_hand_written_markdown():
  made = tables.paper_tables(reporting_fixtures.experiments(), checkpoint=7)
  assert made["Table 2"]["markdown"] == TABLE_2


def test_table_4_lasso_rows_and_missing_measurements():
  made = tables.paper_tables(reporting_fixtures.experiments(), checkpoint=7)
  assert made["Table 4"]["markdown"].endswith(TABLE_4_ROWS)


def test_depth_table_units_and_random_row():
  made = tables.paper_tables(reporting_fixtures.experiments())
  table5 = made["Table 5"]["markdown"]
  assert ("| rp | 75.12 | 80.55 | 90.00 | 94.65 | 95.00 | 98.26 | 0.500 | "
          "0.399 | 0.188 | 0.146 |") in table5
  assert "| random_init | — | 61.00 |" in table5
  csv = made["Table 5"]["csv"].splitlines()
  assert csv[0].startswith("row,NYU (ours),NYU (paper)")
  assert csv[1].startswith("rp,75.12,80.55,")


def test_other_checkpoint_and_experiment_table():
  made = tables.paper_tables(reporting_fixtures.experiments(), checkpoint=1)
  assert "| rp | 40.00 | 59.21 | — | 66.75 | — | 80.54 |" in (
      made["Table 2"]["markdown"])
  table = tables.experiment_table(reporting_fixtures.experiments()[0])
  lines = table.splitlines()
  assert lines[0] == ("| row | checkpoint | ImageNet top1 | ImageNet top1 "
                      "(paper) | ImageNet | ImageNet (paper) | NYU | NYU "
                      "(paper) | NYU <1.25^2 | NYU <1.25^2 (paper) | NYU "
                      "<1.25^3 | NYU <1.25^3 (paper) | NYU abs err | NYU abs "
                      "err (paper) | NYU rel err | NYU rel err (paper) |")
  assert lines[2].startswith("| rp | 1 | 20.00 | 36.21 | 40.00 | 59.21 | — |")
  assert lines[4].startswith("| random_init | random_init | 1.00 | — | 5.00 "
                             "| — | — | 61.00 |")


def test_paper_numbers_spot_checks():
  # Table 2, RP+Col+Ex+MS: ImageNet 69.30, PASCAL 70.53, NYU 79.25.
  assert paper_numbers.value("Table 2", "all4", "ImageNet") == 69.30
  assert paper_numbers.value("Table 2", "all4", "PASCAL") == 70.53
  assert paper_numbers.value("Table 2", "all4", "NYU") == 79.25
  assert paper_numbers.value("Table 1", "col", "ImageNet top1") == 39.62
  assert paper_numbers.value("Table 1", "imagenet_labels", "ImageNet") == 85.10
  assert paper_numbers.value("Table 3", "rp_harmonized", "ImageNet") == 62.33
  assert paper_numbers.value("Table 4", "all4+eval_lasso", "ImageNet") == 70.18
  assert paper_numbers.value("Table 5", "random_init", "NYU abs err") == 0.621
  assert paper_numbers.value("Table 7", "rp_col_harmonized",
                             "NYU rel err") == 0.152
  assert paper_numbers.value("Table 8", "all4_lasso+eval_lasso",
                             "NYU <1.25^3") == 98.26
  assert paper_numbers.value("Table 2", "rp", "ImageNet top1") is None
  # Every row of every table names only its table's columns.
  for spec in paper_numbers.TABLES.values():
    for row in spec["rows"].values():
      assert set(row) <= set(spec["columns"])


def _imagenet_labels_experiment():
  result = reporting_fixtures.result
  return {"row": "imagenet_labels", "tasks": ["sup"],
          "tick_gpu_hours": 2400.0,
          "checkpoints": {"7": {"cost_gpu_hours": 16800.0, "step": 7,
                                "prefix": "s7"},
                          "14": {"cost_gpu_hours": 33600.0, "step": 14,
                                 "prefix": "s14"}},
          "results": [result(7, "imagenet_linear", {"top1": 0.5, "top5": 0.7}),
                      result(14, "imagenet_linear",
                             {"top1": 0.6, "top5": 0.8})]}


def test_imagenet_labels_row_is_reported_at_its_last_checkpoint():
  experiments = reporting_fixtures.experiments() + [
      _imagenet_labels_experiment()]
  for checkpoint in (1, 7):  # whatever point the self-supervised rows use
    made = tables.paper_tables(experiments, checkpoint=checkpoint)
    table2 = made["Table 2"]["markdown"]
    assert "| imagenet_labels | 80.00 | 85.10 | — | 74.17 | — | 80.06 |" in (
        table2)
    assert f"Ours at checkpoint {checkpoint}; imagenet_labels at its " \
           f"checkpoint 14.)" in table2
  assert "| imagenet_labels | 60.00 | 66.82 | 80.00 | 85.10 |" in (
      made["Table 1"]["markdown"])
  # Tables without the row keep their caption.
  assert made["Table 3"]["markdown"].startswith(
      "**Table 3** (Harmonization (H). Ours at checkpoint 7.)")
