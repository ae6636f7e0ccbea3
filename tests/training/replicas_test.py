"""Tests for replica plans and task:value flag maps."""

import pytest

from mtssl_tf.training import replicas


def test_even_spread_and_groups():
  plan = replicas.plan_replicas(["rp", "col"], 4)
  assert plan.tasks_of_replica == [["rp"], ["rp"], ["col"], ["col"]]
  assert plan.group("col") == [2, 3] and plan.group_size("rp") == 2
  plan = replicas.plan_replicas(["rp", "col", "ex"], 4)
  assert [plan.group_size(t) for t in ("rp", "col", "ex")] == [2, 1, 1]


def test_fewer_replicas_than_tasks_share_replicas():
  plan = replicas.plan_replicas(["rp", "col", "ex"], 1)
  assert plan.tasks_of_replica == [["rp", "col", "ex"]]
  plan = replicas.plan_replicas(["rp", "col", "ex"], 2)
  assert plan.tasks_of_replica == [["rp", "ex"], ["col"]]
  assert plan.group_size("ex") == 1


def test_explicit_allocation():
  plan = replicas.plan_replicas(["rp", "col"], 4, {"rp": 3, "col": 1})
  assert plan.group("rp") == [0, 1, 2] and plan.group("col") == [3]
  assert "col: replicas [3]" in plan.describe()


@pytest.mark.parametrize("allocation,match", [
    ({"rp": 2, "col": 1}, r"allocates 3 replicas but the strategy has 4.*"
                          r"--replicas_per_task=rp:2,col:2"),
    ({"rp": 4}, r"missing \['col'\]"),
    ({"rp": 2, "col": 1, "ex": 1}, r"unknown \['ex'\]"),
    ({"rp": 4, "col": 0}, ">= 1 replica"),
])
def test_bad_allocations(allocation, match):
  with pytest.raises(ValueError, match=match):
    replicas.plan_replicas(["rp", "col"], 4, allocation)


def test_more_tasks_than_replicas_has_no_explicit_map():
  with pytest.raises(ValueError, match=r"2 tasks and only 1 replica\(s\), so "
                     r"no explicit map is valid\. Drop --replicas_per_task") as e:
    replicas.plan_replicas(["rp", "col"], 1, {"rp": 1, "col": 1})
  assert "--replicas_per_task=rp:1,col:1" not in str(e.value)


def test_unknown_strategy_and_missing_tf_config(monkeypatch):
  with pytest.raises(ValueError, match="Unknown strategy"):
    replicas.make_strategy("tpu")
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="TF_CONFIG"):
    replicas.make_strategy("multi_worker")
