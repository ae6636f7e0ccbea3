"""Every registered task (and rp+col) trains through the real loop on a tiny
trunk with tiny heads, on the built-in data: the loss falls.

Each task's pipeline is cut to one fixed batch, repeated: that makes "the
loss falls within a few dozen steps" a statement about the loop (gradients,
per-task optimizers, heads) rather than about how fast a pretext task learns
from fresh samples, which takes far longer than a test can run.
"""

import numpy as np
import pytest

from mtssl_tf import config
from mtssl_tf.tasks import registry
from mtssl_tf.training import loop

TRUNK = config.TrunkConfig(depth=14, base_width=8)
PATCH_UNITS = ((32, 8, 2), (16, 8, 2))
TINY = {
    "rp": dict(patch_units=PATCH_UNITS, fc_width=32, fc_bottleneck=8),
    "col": dict(head_width=32, image_size=64),
    "ex": dict(patch_units=PATCH_UNITS),
    "ms": dict(head_width=32),
}


class FixedBatch:
  """Wraps a task so that its dataset repeats its first batch."""

  def __init__(self, task):
    self._task = task

  def __getattr__(self, name):
    return getattr(self._task, name)

  def make_dataset(self, data, batch_size, seed=None):
    return self._task.make_dataset(data, batch_size, seed).take(1).cache(
    ).repeat()


def _tasks(names):
  tasks = {}
  for name in names:
    module = registry.get_module(name)
    tasks[name] = FixedBatch(module.Task(module.Config(**TINY[name])))
  return tasks


@pytest.mark.slow
@pytest.mark.parametrize("names", [["rp"], ["col"], ["ex"], ["ms"],
                                   ["rp", "col"]], ids="+".join)
def test_loss_falls(names, tmp_path):
  assert set(TINY) == set(registry.names())  # a new task needs a row here
  # With TF-Slim's epsilon of 1.0, RMSProp steps are ~lr * gradient for
  # small gradients; the triplet loss has small ones and needs a larger rate.
  cfg = config.TrainConfig(model_dir=str(tmp_path), max_steps=40,
                           batch_size=8 if names == ["ex"] else 4,
                           learning_rate=1e-2,
                           task_learning_rate={"ex": 0.1},
                           log_every_steps=20, checkpoint_every_secs=0)
  result = loop.train(TRUNK, _tasks(names),
                      {n: config.DataConfig() for n in names}, cfg,
                      log=lambda s: None)
  for name in names:
    history = result.loss_history[name]
    assert len(history) == 40 and np.all(np.isfinite(history))
    first, last = np.mean(history[:10]), np.mean(history[-10:])
    assert last < 0.9 * first, (name, history)
  assert all(v == 0 for counts in result.skipped.values()
             for v in counts.values())
