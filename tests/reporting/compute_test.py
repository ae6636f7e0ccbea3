"""The §6 compute mapping, against hand-computed step counts."""

import math

import pytest

from mtssl_tf.reporting import compute


def test_rp_col_checkpoints_at_paper_costs():
  # One rp or col example costs 350 / 1281167 or 90 / 1281167 GPU-hours; at
  # batch 2 each a global step costs 2 * 440 / 1281167 GPU-hours.
  batches = {"rp": 2, "col": 2}
  assert compute.step_costs(batches)["rp"] == pytest.approx(
      2 * 350 / 1281167)
  assert compute.steps_for_checkpoint(1, batches) == 3494092
  assert compute.steps_for_checkpoint(7, batches) == 24458643
  # Checkpoint 7 is 16.8K GPU-hours: 48 epochs of rp alone (16800 / 350).
  assert compute.steps_for_checkpoint(7, {"rp": 1}) == 48 * 1281167


def test_steps_per_cycle_and_batch_sizes_enter_the_cost():
  batches = {"rp": 4, "col": 1}
  per_step = (4 * 350 * 2 + 1 * 90) / 1281167  # rp twice per cycle
  assert compute.steps_for_checkpoint(
      3, batches, {"rp": 2}) == math.ceil(3 * 2400 / per_step)


def test_small_ticks_and_unknown_tasks():
  assert compute.steps_for_checkpoint(1, {"rp": 2}, tick=1e-9) == 1
  with pytest.raises(ValueError, match="No paper cost"):
    compute.step_costs({"unknown": 2})
