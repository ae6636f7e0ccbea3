"""The paper's published numbers (Doersch & Zisserman 2017, Tables 1-8), in one
place, keyed by table, row and column, to print beside ours.

Rows are named by the flagfile of the experiment that reproduces them
(``flags/<row>.cfg``) where one exists; Table 4's evaluation-lasso rows add
``+eval_lasso``, and the ImageNet-supervised row is ``imagenet_labels``
(``flags/imagenet_labels.cfg``: the trunk trained on the labels, or a
converted TF-Slim checkpoint: ``--slim_checkpoint``), the random trunk
``random_init``. Columns name what we measure: ``(evaluation, metric)`` in
``COLUMNS``; values are the paper's, in percent (depth errors in their own
units). Transcribed from paper §6 and appendix A; a test spot-checks them.
"""

from typing import Dict, Tuple

# Rows off the self-supervised compute axis: the supervised baseline
# (``flags/imagenet_labels.cfg``, or a converted TF-Slim checkpoint) is
# reported at its experiment's last evaluated checkpoint, whatever compute
# point the self-supervised rows are reported at, and drawn as a horizontal
# line in Figure 3.
BASELINE_ROWS = ("imagenet_labels",)

# column -> (evaluation, metric key in its results.json, scale to the paper's
# units: 100 for fractions shown as %, 1 for errors).
COLUMNS: Dict[str, Tuple[str, str, float]] = {
    "ImageNet top1": ("imagenet_linear", "top1", 100.0),
    "ImageNet": ("imagenet_linear", "top5", 100.0),  # recall@5 (Tables 2-4)
    "PASCAL": ("voc07_detection", "mAP@0.5", 100.0),  # VOC07 11-point
    "NYU": ("nyu_depth", "delta1", 100.0),
    "NYU <1.25^2": ("nyu_depth", "delta2", 100.0),
    "NYU <1.25^3": ("nyu_depth", "delta3", 100.0),
    "NYU abs err": ("nyu_depth", "mae", 1.0),
    "NYU rel err": ("nyu_depth", "abs_rel", 1.0),
}

_DEPTH = ("NYU", "NYU <1.25^2", "NYU <1.25^3", "NYU abs err", "NYU rel err")


def _depth_rows(rows):
  return {row: dict(zip(_DEPTH, values)) for row, values in rows.items()}


TABLES: Dict[str, dict] = {
    "Table 1": {
        "caption": "Single tasks vs ImageNet labels (ImageNet top-1 and "
                   "recall@5, PASCAL mAP, NYU % < 1.25).",
        "columns": ("ImageNet top1", "ImageNet", "PASCAL", "NYU"),
        "rows": {
            "rp": {"ImageNet top1": 36.21, "ImageNet": 59.21,
                   "PASCAL": 66.75, "NYU": 80.54},
            "col": {"ImageNet top1": 39.62, "ImageNet": 62.48,
                    "PASCAL": 65.47, "NYU": 76.79},
            "ex": {"ImageNet top1": 31.51, "ImageNet": 53.08,
                   "PASCAL": 60.94, "NYU": 69.57},
            "ms": {"ImageNet top1": 27.62, "ImageNet": 48.29,
                   "PASCAL": 61.13, "NYU": 74.24},
            "imagenet_labels": {"ImageNet top1": 66.82, "ImageNet": 85.10,
                                "PASCAL": 74.17, "NYU": 80.06},
        },
    },
    "Table 2": {
        "caption": "Combinations of tasks at 16.8K GPU-hours (checkpoint 7).",
        "columns": ("ImageNet", "PASCAL", "NYU"),
        "rows": {
            "rp": {"ImageNet": 59.21, "PASCAL": 66.75, "NYU": 80.54},
            "rp_col": {"ImageNet": 66.64, "PASCAL": 68.75, "NYU": 79.87},
            "rp_ex": {"ImageNet": 65.24, "PASCAL": 69.44, "NYU": 78.70},
            "rp_ms": {"ImageNet": 63.73, "PASCAL": 68.81, "NYU": 78.72},
            "rp_col_ex": {"ImageNet": 68.65, "PASCAL": 69.48, "NYU": 80.17},
            "all4": {"ImageNet": 69.30, "PASCAL": 70.53, "NYU": 79.25},
            "imagenet_labels": {"ImageNet": 85.10, "PASCAL": 74.17,
                                "NYU": 80.06},
        },
    },
    "Table 3": {
        "caption": "Harmonization (H).",
        "columns": ("ImageNet", "PASCAL", "NYU"),
        "rows": {
            "rp": {"ImageNet": 59.21, "PASCAL": 66.75, "NYU": 80.23},
            "rp_harmonized": {"ImageNet": 62.33, "PASCAL": 66.15,
                              "NYU": 80.39},
            "rp_col": {"ImageNet": 66.64, "PASCAL": 68.75, "NYU": 79.87},
            "rp_col_harmonized": {"ImageNet": 68.08, "PASCAL": 68.26,
                                  "NYU": 79.69},
        },
    },
    "Table 4": {
        "caption": "Lasso, all four tasks at 16.8K GPU-hours.",
        "columns": ("ImageNet", "PASCAL", "NYU"),
        "rows": {
            "all4": {"ImageNet": 69.30, "PASCAL": 70.53, "NYU": 79.25},
            "all4+eval_lasso": {"ImageNet": 70.18, "PASCAL": 68.86,
                                "NYU": 79.41},
            "all4_lasso": {"ImageNet": 68.09, "PASCAL": 68.49, "NYU": 78.96},
            "all4_lasso+eval_lasso": {"ImageNet": 69.44, "PASCAL": 68.98,
                                      "NYU": 79.45},
        },
    },
    "Table 5": {
        "caption": "NYU depth, all measures, single tasks.",
        "columns": _DEPTH,
        "rows": _depth_rows({
            "rp": (80.55, 94.65, 98.26, 0.399, 0.146),
            "col": (76.79, 93.52, 97.74, 0.444, 0.164),
            "ex": (71.25, 90.63, 96.54, 0.513, 0.191),
            "ms": (74.24, 92.42, 97.43, 0.473, 0.177),
            "imagenet_labels": (80.06, 94.87, 98.45, 0.403, 0.146),
            "random_init": (61.00, 85.45, 94.67, 0.621, 0.227),
        }),
    },
    "Table 6": {
        "caption": "NYU depth, all measures, combinations.",
        "columns": _DEPTH,
        "rows": _depth_rows({
            "rp": (80.55, 94.65, 98.26, 0.399, 0.146),
            "rp_col": (79.88, 94.45, 98.15, 0.411, 0.148),
            "rp_ex": (78.70, 94.06, 98.13, 0.419, 0.151),
            "rp_ms": (78.72, 94.13, 98.08, 0.423, 0.153),
            "rp_col_ex": (80.17, 94.74, 98.27, 0.401, 0.149),
            "all4": (79.26, 94.19, 98.07, 0.422, 0.152),
        }),
    },
    "Table 7": {
        "caption": "NYU depth, all measures, harmonization.",
        "columns": _DEPTH,
        "rows": _depth_rows({
            "rp": (80.55, 94.65, 98.26, 0.399, 0.146),
            "rp_harmonized": (80.39, 94.67, 98.31, 0.400, 0.147),
            "rp_col": (79.88, 94.45, 98.15, 0.411, 0.148),
            "rp_col_harmonized": (79.69, 94.28, 98.09, 0.411, 0.152),
        }),
    },
    "Table 8": {
        "caption": "NYU depth, all measures, lasso.",
        "columns": _DEPTH,
        "rows": _depth_rows({
            "all4": (79.26, 94.19, 98.07, 0.422, 0.152),
            "all4+eval_lasso": (79.41, 94.18, 98.07, 0.418, 0.152),
            "all4_lasso": (78.96, 94.05, 97.83, 0.423, 0.153),
            "all4_lasso+eval_lasso": (79.45, 94.49, 98.26, 0.411, 0.151),
        }),
    },
}


def value(table: str, row: str, column: str):
  """The paper's number, or None where the paper has none."""
  return TABLES[table]["rows"].get(row, {}).get(column)
