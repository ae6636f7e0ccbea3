"""Console progress lines and TensorBoard images for training.

``alpha_heatmap`` draws the lasso matrix like the paper's Figure 5: one row per
task, one square per block-3 unit (shallowest on the left), brighter for larger
|alpha|, on a nonlinear (square-root) scale so small non-zero values show.
"""

import datetime
from typing import Dict, Mapping, Optional, Sequence

import numpy as np


def alpha_heatmap(alpha, cell: int = 12, gap: int = 1) -> np.ndarray:
  """Renders ``|alpha|`` ``[N, M]`` as a uint8 image ``[1, H, W, 3]``.

  Brightness is ``sqrt(|alpha|)`` (|alpha| <= 1 since rows have unit L2
  norm), drawn as ``cell``-pixel squares separated by ``gap`` dark pixels.
  """
  alpha = np.abs(np.asarray(alpha, np.float32))
  if alpha.ndim != 2:
    raise ValueError(f"alpha must be [tasks, units], got {alpha.shape}.")
  n, m = alpha.shape
  values = np.sqrt(np.clip(alpha, 0.0, 1.0))
  image = np.zeros((n * (cell + gap) + gap, m * (cell + gap) + gap),
                   np.float32)
  for i in range(n):
    for j in range(m):
      top, left = gap + i * (cell + gap), gap + j * (cell + gap)
      image[top:top + cell, left:left + cell] = values[i, j]
  rgb = np.stack([image] * 3, axis=-1)
  return (rgb[None] * 255.0 + 0.5).astype(np.uint8)


def format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def progress_line(step: int, max_steps: int, losses: Mapping[str, float],
                  examples_per_sec: Mapping[str, float], steps_per_sec: float,
                  cost: float, skipped: int = 0,
                  eta_steps_per_sec: Optional[float] = None) -> str:
  """One console line: step, per-task loss and rate, cost, ETA.

  The ETA divides the remaining steps by ``eta_steps_per_sec``, the rate of
  the steps after the first (tracing) call; None means no estimate yet ("?").
  ``steps_per_sec`` is the rate of the last logging window.
  """
  parts = [f"step {step}/{max_steps}"]
  for task in losses:
    parts.append(f"{task} loss {losses[task]:.4f} "
                 f"{examples_per_sec.get(task, 0.0):.2f} img/s")
  parts.append(f"{steps_per_sec:.3f} steps/s")
  parts.append(f"cost {cost:g}")
  if skipped:
    parts.append(f"skipped inputs {skipped}")
  rate = eta_steps_per_sec
  if step >= max_steps:
    eta = 0.0
  else:
    eta = (max_steps - step) / rate if rate and rate > 0 else np.inf
  parts.append(f"ETA {format_duration(eta)}")
  return " | ".join(parts)


def mean_dicts(dicts: Sequence[Mapping[str, float]]) -> Dict[str, float]:
  """Averages a list of {name: value} dicts key by key."""
  keys = dict.fromkeys(k for d in dicts for k in d)
  return {k: float(np.mean([d[k] for d in dicts if k in d])) for k in keys}
