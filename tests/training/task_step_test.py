"""The benchmark's training step (mtssl_tf/benchmarks/task_step.py) on toy
tasks: each group updates exactly its tasks' variables, on one network."""

import numpy as np
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.benchmarks import task_step
from tests.training import toy_task

TRUNK = config.TrunkConfig(depth=14, base_width=8)


def _values(variables):
  return [v.numpy().copy() for v in variables]


def test_groups_run_on_cached_batches():
  tasks = {n: toy_task.Task(name=n) for n in ("a", "b")}
  batches = task_step.cached_batches(tasks, batch_size=4)
  assert batches["a"][0].shape == (4, 32, 32, 3)
  steps = task_step.build_task_steps(TRUNK, tasks, batches,
                                     [["a"], ["b"], ["a", "b"]],
                                     steps_per_call=2)
  assert set(steps) == {"a", "b", "a+b"}
  single = steps["a"]()
  joint = steps["a+b"]()
  assert np.isfinite(single) and single > 0
  assert np.isfinite(joint) and joint > 0


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
