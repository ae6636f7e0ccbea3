"""Distribution strategy and per-task replica groups (paper §4, Figure 2).

The paper trains each task on its own group of GPU machines: a task's
gradients are averaged over its own replicas and applied by its own RMSProp.
Here one ``tf.distribute`` strategy holds all replicas and every replica is
assigned the tasks it computes:

  * more replicas than tasks: each replica computes exactly one task, and the
    task's replica group is the replicas assigned to it;
  * fewer replicas than tasks (e.g. one CPU): replicas compute several tasks
    each, round robin; with one replica it computes every task.

Strategies (``make_strategy``): "default" (one device), "mirrored" (all local
GPUs, or ``num_cpu_devices`` logical CPU devices for testing and CPU hosts),
"multi_worker" (MultiWorkerMirroredStrategy configured by ``TF_CONFIG``),
"parameter_server" (ParameterServerStrategy configured by ``TF_CONFIG`` with
"chief", "worker" and "ps" jobs; the asynchronous mode of
``training/parameter_server.py``; workers and parameter servers only run a
``tf.distribute.Server``, see ``serve_if_not_chief``).
"""

import dataclasses
import json
import os
from typing import List, Mapping, Optional, Sequence

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")


def configure_cpu_devices(num_cpu_devices: int) -> None:
  """Splits the host CPU into logical devices; must precede any TF op."""
  if num_cpu_devices <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)
  except RuntimeError as e:
    current = len(tf.config.list_logical_devices("CPU"))
    if current != num_cpu_devices:
      raise ValueError(
          f"Cannot split the CPU into {num_cpu_devices} devices after "
          f"TensorFlow started ({current} exist): {e}") from None


def _tf_config(flag: str) -> dict:
  if "TF_CONFIG" not in os.environ:
    raise ValueError(
        f"--strategy={flag} needs the TF_CONFIG environment variable "
        f"(cluster spec and this process's task); tools/launch_cluster.py "
        f"sets it for a cluster on localhost.")
  try:
    return json.loads(os.environ["TF_CONFIG"])
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None


def serve_if_not_chief() -> None:
  """Parameter-server mode: on a "worker" or "ps" task of ``TF_CONFIG``,
  runs this process's ``tf.distribute.Server`` until killed (never returns);
  on the chief returns at once. Call before any other TensorFlow op."""
  tf_config = _tf_config("parameter_server")
  task = tf_config.get("task", {})
  cluster = tf_config.get("cluster", {})
  missing = [job for job in ("chief", "worker", "ps") if not cluster.get(job)]
  if missing:
    raise ValueError(
        f"--strategy=parameter_server: TF_CONFIG's cluster lacks the jobs "
        f"{missing}; it needs one chief, >= 1 worker and >= 1 ps.")
  if task.get("type") == "chief":
    return
  if task.get("type") not in ("worker", "ps"):
    raise ValueError(f"TF_CONFIG task type must be chief, worker or ps, "
                     f"got {task.get('type')!r}.")
  # A worker's failed remote calls are reported to the coordinator, which
  # reschedules the closure (ClusterCoordinator's failure handling).
  os.environ["GRPC_FAIL_FAST"] = "use_caller"
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  server = tf.distribute.Server(
      resolver.cluster_spec(), job_name=resolver.task_type,
      task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
      start=True)
  server.join()


def make_strategy(name: str = "default", num_cpu_devices: int = 0):
  """Builds the tf.distribute strategy named ``name``."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "multi_worker":
    _tf_config(name)  # fail early on a missing or malformed TF_CONFIG
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "parameter_server":
    _tf_config(name)
    return tf.distribute.ParameterServerStrategy(
        tf.distribute.cluster_resolver.TFConfigClusterResolver())
  configure_cpu_devices(num_cpu_devices)
  gpus = tf.config.list_logical_devices("GPU")
  devices = ([d.name for d in gpus] if gpus else
             [d.name for d in tf.config.list_logical_devices("CPU")])
  return tf.distribute.MirroredStrategy(devices=devices)


@dataclasses.dataclass(frozen=True)
class ReplicaPlan:
  """Which tasks each replica computes.

  Attributes:
    tasks_of_replica: for replica i, the tasks it computes.
  """
  tasks_of_replica: List[List[str]]

  @property
  def num_replicas(self) -> int:
    return len(self.tasks_of_replica)

  def group(self, task: str) -> List[int]:
    """The replica ids of ``task``'s group."""
    return [i for i, tasks in enumerate(self.tasks_of_replica) if task in tasks]

  def group_size(self, task: str) -> int:
    return len(self.group(task))

  def describe(self) -> str:
    return ", ".join(f"{t}: replicas {self.group(t)}"
                     for t in dict.fromkeys(
                         t for ts in self.tasks_of_replica for t in ts))


def plan_replicas(tasks: Sequence[str], num_replicas: int,
                  replicas_per_task: Optional[Mapping[str, int]] = None
                  ) -> ReplicaPlan:
  """Assigns tasks to replicas.

  Args:
    tasks: task names, in order.
    num_replicas: replicas in sync of the strategy.
    replicas_per_task: explicit group sizes (must cover every task and sum to
      ``num_replicas``); empty or None spreads replicas evenly.

  Raises:
    ValueError: an allocation that names unknown tasks, misses a task, or does
      not match the replica count; the message says what would.
  """
  tasks = list(tasks)
  if replicas_per_task:
    unknown = sorted(set(replicas_per_task) - set(tasks))
    missing = [t for t in tasks if t not in replicas_per_task]
    if unknown or missing:
      raise ValueError(
          f"--replicas_per_task must name exactly the trained tasks {tasks}: "
          f"unknown {unknown}, missing {missing}.")
    if any(n < 1 for n in replicas_per_task.values()):
      raise ValueError("--replicas_per_task: every task needs >= 1 replica.")
    total = sum(replicas_per_task.values())
    if num_replicas < len(tasks):
      raise ValueError(
          f"--replicas_per_task gives every task its own replicas, but there "
          f"are {len(tasks)} tasks and only {num_replicas} replica(s), so no "
          f"explicit map is valid. Drop --replicas_per_task (then replicas "
          f"compute several tasks each, round robin), or use at least "
          f"{len(tasks)} devices (e.g. --strategy=mirrored with "
          f"--num_cpu_devices={len(tasks)} or more GPUs).")
    if total != num_replicas:
      even = plan_replicas(tasks, num_replicas)
      suggestion = ",".join(f"{t}:{even.group_size(t)}" for t in tasks)
      raise ValueError(
          f"--replicas_per_task allocates {total} replicas but the strategy "
          f"has {num_replicas}; make them sum to {num_replicas} (e.g. "
          f"--replicas_per_task={suggestion}) or change the device count.")
    plan = []
    for t in tasks:
      plan.extend([[t]] * replicas_per_task[t])
    return ReplicaPlan(plan)
  if num_replicas >= len(tasks):
    counts = {t: num_replicas // len(tasks) for t in tasks}
    for t in tasks[:num_replicas % len(tasks)]:
      counts[t] += 1
    return plan_replicas(tasks, num_replicas, counts)
  plan: List[List[str]] = [[] for _ in range(num_replicas)]
  for i, t in enumerate(tasks):
    plan[i % num_replicas].append(t)
  return ReplicaPlan(plan)
