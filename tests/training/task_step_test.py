"""The benchmark's training step (mtssl_tf/benchmarks/task_step.py) on toy
tasks: each group updates exactly its tasks' variables, on one network."""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.benchmarks import task_step
from tests.training import toy_task

TRUNK = config.TrunkConfig(depth=14, base_width=8)


def _values(variables):
  return [v.numpy().copy() for v in variables]


@pytest.mark.slow
def test_groups_run_on_cached_batches():
  tasks = {n: toy_task.Task(name=n) for n in ("a", "b")}
  batches = task_step.cached_batches(tasks, batch_size=4)
  # The cached batch is the first batch of the task's own pipeline.
  for i, (name, task) in enumerate(tasks.items()):
    dataset, _ = task.make_dataset(config.DataConfig(), 4, seed=i)
    images, labels = next(iter(dataset))
    np.testing.assert_array_equal(batches[name][0].numpy(), images.numpy())
    np.testing.assert_array_equal(batches[name][1]["label"].numpy(),
                                  labels["label"].numpy())
  steps = task_step.build_task_steps(TRUNK, tasks, batches,
                                     [["a"], ["b"], ["a", "b"]],
                                     steps_per_call=2)
  assert set(steps) == {"a", "b", "a+b"}
  # Every call trains on the same cached batch, so each group fits it: its
  # loss falls from call to call, on one shared network.
  single = [steps["a"]() for _ in range(3)]
  joint = [steps["a+b"]() for _ in range(3)]
  assert all(np.isfinite(single + joint)) and min(single + joint) > 0
  assert single[2] < single[0] and joint[2] < joint[0]


def test_single_task_step_changes_trunk_and_own_head_only():
  tasks = {n: toy_task.Task(name=n) for n in ("a", "b")}
  batches = task_step.cached_batches(tasks, batch_size=4)
  created = []
  with tf.variable_creator_scope(
      lambda next_creator, **kw: created.append(next_creator(**kw)) or
      created[-1]):
    steps = task_step.build_task_steps(TRUNK, tasks, batches, [["a"]])
  by_name = {v.name: v for v in created}
  head_a = [v for n, v in by_name.items() if n.startswith("a_head/")]
  head_b = [v for n, v in by_name.items() if n.startswith("b_head/")]
  trunk = [v for n, v in by_name.items() if n.startswith("block1/")]
  assert head_a and head_b and trunk
  before = [_values(vs) for vs in (head_a, head_b, trunk)]
  steps["a"]()
  after = [_values(vs) for vs in (head_a, head_b, trunk)]
  changed = [any(not np.array_equal(x, y) for x, y in zip(b, a))
             for b, a in zip(before, after)]
  assert changed == [True, False, True]
