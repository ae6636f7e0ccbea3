"""Pre-training compute in the paper's units (§6 "Implementation details").

The paper does not measure wall time: a task's compute is its step count
times a fixed per-step cost, summed over the tasks of an experiment, and a
checkpoint is taken whenever the sum crosses a multiple of ~2.4K GPU-hours
(Figures 3-4 tick every 2.4K; checkpoint 7 = 16.8K GPU-hours is Tables 2-4).
The costs it gives are per epoch: 350 GPU-hours for rp, 90 for col and 60 for
ex through ImageNet's 1,281,167 training images, and 400 for ms through its
video set. So one example of a task costs ``EPOCH_GPU_HOURS / EPOCH_EXAMPLES``
and one update of batch b costs b times that.

Assumptions, stated where they are made: the paper does not give the size of
its motion-segmentation video set, so ms's epoch is taken as ImageNet-sized
(1,281,167 frames), and tasks the paper did not train (rotation, jigsaw) are
costed per example like rp (whole-image ImageNet passes), and so is the
supervised baseline ("sup", ``flags/imagenet_labels.cfg``: the paper does
not give its cost, nor how long it trained): at 350 GPU-hours per epoch one
2.4K tick is 6.86 epochs, so checkpoint 7 is 48 epochs and checkpoint 14
about 96 (pick with ``--checkpoints``; the report shows the baseline at its
last checkpoint). All are ``EPOCH_EXAMPLES`` / ``EPOCH_GPU_HOURS`` entries a
user can change.

The mapping, for tasks T with batch sizes b_t and updates per cycle s_t:
one global step costs ``sum_t s_t b_t c_t``, and checkpoint k is the first
global step whose summed cost reaches ``k * tick``:
``steps(k) = ceil(k * tick / sum_t s_t b_t c_t)`` (each task t then made
``s_t * steps(k)`` updates). For rp+col at batch 2 each that is
``ceil(k * 2400 * 1281167 / (2 * (350 + 90)))`` = 3,494,092 global steps for
checkpoint 1 and 24,458,643 for checkpoint 7.
"""

import math
from typing import Dict, Mapping, Optional

IMAGENET_TRAIN_IMAGES = 1_281_167
TICK_GPU_HOURS = 2400.0
EPOCH_GPU_HOURS: Dict[str, float] = {"rp": 350.0, "col": 90.0, "ex": 60.0,
                                     "ms": 400.0, "rot": 350.0, "jig": 350.0,
                                     "sup": 350.0}
EPOCH_EXAMPLES: Dict[str, int] = {t: IMAGENET_TRAIN_IMAGES
                                  for t in EPOCH_GPU_HOURS}


def example_cost(task: str) -> float:
  """GPU-hours of one training example of ``task``."""
  if task not in EPOCH_GPU_HOURS:
    raise ValueError(f"No paper cost for task {task!r}; known: "
                     f"{sorted(EPOCH_GPU_HOURS)}.")
  return EPOCH_GPU_HOURS[task] / EPOCH_EXAMPLES[task]


def step_costs(batch_sizes: Mapping[str, int]) -> Dict[str, float]:
  """task -> GPU-hours of one update with that task's batch size."""
  return {t: b * example_cost(t) for t, b in batch_sizes.items()}


def steps_for_checkpoint(k: int, batch_sizes: Mapping[str, int],
                         steps_per_cycle: Optional[Mapping[str, int]] = None,
                         tick: float = TICK_GPU_HOURS) -> int:
  """Global steps at which checkpoint ``k`` (k * tick GPU-hours) is taken."""
  costs = step_costs(batch_sizes)
  per_step = sum((steps_per_cycle or {}).get(t, 1) * c
                 for t, c in costs.items())
  # The small tolerance keeps exact multiples (k * tick / per_step integral)
  # from rounding up through floating-point error.
  return max(1, math.ceil(k * tick / per_step - 1e-9))
