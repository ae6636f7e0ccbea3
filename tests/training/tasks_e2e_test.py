"""Every registered task (alone, and all of them jointly with the lasso)
trains through the real loop on a tiny trunk with its ``TINY`` config, on the
built-in data: the loss falls.

Parameterized over the registry, so a new task is covered without editing
this file. Each task's pipeline is cut to one fixed batch, repeated: that
makes "the loss falls within a few dozen steps" a statement about the loop
(gradients, per-task optimizers, heads) rather than about how fast a pretext
task learns from fresh samples, which takes far longer than a test can run.
"""

import numpy as np
import pytest

from mtssl_tf import config
from mtssl_tf.models import resnet_v2
from mtssl_tf.tasks import base
from mtssl_tf.tasks import registry
from mtssl_tf.training import loop

TRUNK = config.TrunkConfig(depth=14, base_width=8)


class FixedBatch:
  """Wraps a task so that its dataset repeats its first batch."""

  def __init__(self, task):
    self._task = task

  def __getattr__(self, name):
    return getattr(self._task, name)

  def make_dataset(self, data, batch_size, seed=None):
    dataset, skipped = self._task.make_dataset(data, batch_size, seed)
    return dataset.take(1).cache().repeat(), skipped


def _tasks(names):
  trunk = base.TrunkFacts.of(TRUNK)
  return {n: FixedBatch(registry.build(n, registry.get_module(n).TINY, trunk))
          for n in names}


def _train(names, tmp_path, steps, **kwargs):
  # With TF-Slim's epsilon of 1.0, RMSProp steps are ~lr * gradient for
  # small gradients; the triplet loss has small ones and needs a larger rate.
  cfg = config.TrainConfig(model_dir=str(tmp_path), max_steps=steps,
                           batch_size=8 if names == ["ex"] else 4,
                           learning_rate=1e-2,
                           task_learning_rate={"ex": 0.1} if "ex" in names
                           else {},
                           log_every_steps=20, checkpoint_every_secs=0,
                           **kwargs)
  return loop.train(TRUNK, _tasks(names),
                    {n: config.DataConfig() for n in names}, cfg,
                    log=lambda s: None)


def _assert_loss_falls(result, names, steps):
  for name in names:
    history = result.loss_history[name]
    assert len(history) == steps and np.all(np.isfinite(history))
    first, last = np.mean(history[:10]), np.mean(history[-10:])
    assert last < 0.9 * first, (name, history)
  assert all(v == 0 for counts in result.skipped.values()
             for v in counts.values())
  assert set(result.skipped) == set(names)


@pytest.mark.slow
@pytest.mark.parametrize("names", [[n] for n in registry.names()] +
                         [["rp", "col"]], ids="+".join)
def test_loss_falls(names, tmp_path):
  result = _train(names, tmp_path, 40)
  _assert_loss_falls(result, names, 40)


@pytest.mark.slow
def test_all_tasks_jointly_with_lasso(tmp_path):
  names = registry.names()
  result = _train(names, tmp_path, 30, lasso=True, lasso_l1=0.01)
  _assert_loss_falls(result, names, 30)
  alpha = result.network.alpha_matrix().numpy()
  assert alpha.shape == (len(names), len(resnet_v2.unit_names(TRUNK.depth)))
