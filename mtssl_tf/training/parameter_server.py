"""Asynchronous multi-task training on a parameter-server cluster (paper §4,
Figure 2): tasks never wait for each other.

Engine: ``tf.distribute.ParameterServerStrategy`` + ``ClusterCoordinator``,
configured by ``TF_CONFIG`` (``replicas.make_strategy("parameter_server")``).
The "ps" processes hold every variable (trunk, lasso rows, heads, each task's
RMSProp slots, the run state); the "worker" processes run the steps; the
"chief" runs this module: it schedules the steps, checkpoints and writes
summaries. Each step is ``training/step.py``'s ``TaskStep``, as in the
synchronous loop.

Per task t with a group of k_t workers (``--replicas_per_task``, counting
workers; default: spread evenly), one chief thread drives t alone:

  * k_t = 1: a closure reads t's next batch on a worker, computes t's
    gradients on the current parameter-server weights and applies t's RMSProp
    to them at once (non-finite losses are not applied);
  * k_t > 1: one round schedules k_t closures that add their gradients into
    t's accumulators on the parameter servers (like TF1's
    ``SyncReplicasOptimizer``, but per task); when all k_t are in, the chief
    applies the average with t's RMSProp and clears the accumulators.

A task's next update is scheduled as soon as its own previous one is done;
other tasks' updates land on the shared trunk in between, when ready (the
paper's "without synchronizing with other tasks").

What differs from the paper's setup (TF1 between-graph PS training):
  * ClusterCoordinator sends a closure to whichever worker is idle: a task's
    group is k_t closures in flight, not k_t fixed machines. Per-task
    concurrency, and so the share of compute, is the same.
  * ParameterServerStrategy has no per-worker data sharding: every worker
    reads its own copy of each task's pipeline, seeded with
    ``--seed + 1000 x worker index + task index`` (the synchronous loop's
    formula), so workers draw different but reproducible random examples;
    a restarted worker starts its pipelines over from that seed.
  * Head batch-norm moving statistics are parameter-server variables that
    each worker's forward pass updates in turn (no group mean).
  * Checkpoints are taken by the chief while workers keep training, as TF1's
    Saver did: weights and per-task step counts are read moments apart.
  * A closure re-run after a worker failure may add its gradients to a
    group's accumulators twice (groups of k > 1 only).

Input pipelines: ClusterCoordinator traces each task's dataset function once
and runs it on every worker, and refuses variables created in it. So the
chief first builds each pipeline itself (``make_dataset``): that checks the
source and creates the task's skipped-input counter, on the chief; the
workers' pipelines count into that counter (``make_dataset(...,
skipped=counter)``), so the chief's counts and ``skipped_inputs.json`` cover
every worker.

As in the synchronous loop (``loop.train``), everything is validated before
the model dir is written; the chief holds its lock while it trains; every
update's loss, gradients and updated values are checked (``TaskStep.apply``):
a non-finite one stops the run, and no checkpoint holds a non-finite value
(checked before and after each save: NaN and Inf persist in the weights,
slots and statistics once there, so values finite after the save were finite
while it was written).

Run accounting (paper §6): tasks advance at their own rates, so per-task step
counts differ; the run's cost is the sum of steps x per-step cost, and one
"global step" is the cost of one synchronous cycle (the sum of the tasks'
``steps_per_cycle x step_cost``). Training stops when ``max_steps`` global
steps' worth of compute is spent; checkpoints are numbered by global step.

Worker failures are handled by ClusterCoordinator (a failed closure is
re-run on another worker; a restarted worker rejoins). A killed chief
restarts from the last checkpoint (the parameter servers keep running).
"""

import contextlib
import os
import threading
import time
from typing import Callable, Dict, List, Mapping

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import skipping
from mtssl_tf.models import multitask
from mtssl_tf.models import slim_conversion
from mtssl_tf.training import checkpointing
from mtssl_tf.training import loop
from mtssl_tf.training import optimizers as optimizers_lib
from mtssl_tf.training import replicas
from mtssl_tf.training import speed
from mtssl_tf.training import step as step_lib


class _Budget:
  """The run's compute budget, reserved by the task drivers update by update
  so that the run ends at exactly ``total`` (when costs allow)."""

  def __init__(self, spent: float, total: float):
    self._reserved, self.total = spent, total
    self._lock = threading.Lock()

  def reserve(self, cost: float) -> bool:
    with self._lock:
      if self._reserved + cost > self.total + 1e-9:
        return False
      self._reserved += cost
      return True


class _TaskDriver(threading.Thread):
  """Chief thread that keeps one task's updates going until ``stop`` is set
  or the budget is spent.

  ``updates`` records every applied update: ``(start, end, logs, parts)``
  with chief wall-clock times (seconds), the group-averaged logs and, for
  groups of k > 1, each closure's own logs; ``failed``, the update on which
  the NaN guard stopped the task (``TaskStep.apply``'s verdict), or None.
  """

  def __init__(self, task, group_size, cost, budget, coordinator, fns,
               iterator, stop, errors):
    super().__init__(name=f"task_{task}", daemon=True)
    self.task, self.k, self.cost, self.budget = task, group_size, cost, budget
    self.coordinator, self.iterator = coordinator, iterator
    self.run_one, self.accumulate, self.apply_accumulated = fns
    self.stop, self.errors = stop, errors
    self.updates: List[tuple] = []
    self.failed = None  # the update whose NaN guard verdict was not FINITE
    self.lock = threading.Lock()

  def _update(self):
    if self.k == 1:
      logs = self.coordinator.schedule(
          self.run_one, args=(self.iterator,)).fetch()
      return logs, []
    pending = [self.coordinator.schedule(self.accumulate,
                                         args=(self.iterator,))
               for _ in range(self.k)]
    parts = [{key: float(v) for key, v in p.fetch().items()}
             for p in pending]
    summed = {key: tf.constant(sum(p[key] for p in parts), tf.float32)
              for key in parts[0]}
    logs = self.apply_accumulated(summed)
    return logs, parts

  def run(self):
    try:
      while not self.stop.is_set() and self.budget.reserve(self.cost):
        start = time.time()
        logs, parts = self._update()
        logs = {key: float(v) for key, v in logs.items()}
        if logs["nonfinite"] != step_lib.FINITE:
          # Not booked as a step; the chief reports it and stops the run.
          self.failed = (start, time.time(), logs, parts)
          break
        with self.lock:
          self.updates.append((start, time.time(), logs, parts))
    except Exception as e:  # pylint: disable=broad-except
      self.errors.append(e)
      self.stop.set()


def worker_dataset_fn(task, data: config_lib.DataConfig, batch_size: int,
                      seed: int, skipped, worker_index=None):
  """The dataset function of ``task``'s pipeline on every worker.

  ClusterCoordinator traces it once (variables may not be created in it) and
  runs it on each worker. The pipeline is ``task.make_dataset`` seeded with
  ``seed + 1000 x worker index`` (``seed``: ``--seed`` + the task's index,
  as the synchronous loop seeds each worker), so workers draw different,
  reproducible examples; it counts skips into ``skipped``, the counter of
  the chief's own ``make_dataset`` call.

  Args:
    worker_index: () -> scalar int64 tensor; default: the worker's index,
      ``tf.distribute.coordinator.experimental_get_current_worker_index``.

  Returns:
    () -> ``tf.data.Dataset`` of ``(images, labels)`` batches.
  """
  # Not converted by AutoGraph: make_dataset is Python that builds a
  # pipeline, as when the synchronous loop calls it eagerly.
  @tf.autograph.experimental.do_not_convert
  def make():
    # TF compares (graph seed, op seed) with (0, 0) in Python when an op
    # gets a seed, which fails for a tensor op seed if the graph seed is 0
    # (--seed=0): this function's graph gets its own, nonzero one.
    tf.random.set_seed(seed % (2**31 - 2) + 1)
    worker = (worker_index or tf.distribute.coordinator
              .experimental_get_current_worker_index)()
    return task.make_dataset(data, batch_size, seed=seed + 1000 * worker,
                             skipped=skipped)[0]
  return make


def train(trunk_config: config_lib.TrunkConfig,
          tasks: Mapping[str, object],
          data: Mapping[str, config_lib.DataConfig],
          cfg: config_lib.TrainConfig,
          strategy: tf.distribute.ParameterServerStrategy,
          log: Callable[[str], None] = print) -> loop.TrainResult:
  """Trains asynchronously; resumes from ``cfg.model_dir`` if present.

  Call on the chief only (workers and parameter servers run
  ``replicas.serve_if_not_chief``). Arguments and errors as ``loop.train``
  (ValueError before anything is written; ``loop.NonFiniteLossError``).

  Returns:
    ``loop.TrainResult``; ``loss_history[t]`` holds the loss of every update
    of t, and ``updates`` the ``(start, end, logs)`` of each.
  """
  with contextlib.ExitStack() as cleanup:
    return _train(cleanup, trunk_config, tasks, data, cfg, strategy, log)


def _train(cleanup, trunk_config, tasks, data, cfg, strategy, log):
  """``train``; ``cleanup`` (an ExitStack) releases the model_dir lock."""
  # ---- Setup: validate everything before writing anything (as loop.train) -
  cfg.validate()
  tf_keras.utils.set_random_seed(cfg.seed)  # initialisation (see loop.train)
  speed.check_precision(cfg.mixed_precision)
  names = list(tasks)
  num_workers = len(tf.distribute.cluster_resolver.TFConfigClusterResolver()
                    .cluster_spec().as_dict().get("worker", []))
  plan = replicas.plan_replicas(names, num_workers, cfg.replicas_per_task)
  groups = {t: max(1, plan.group_size(t)) for t in names}
  loop.check_init_checkpoint(cfg)
  # Each source is checked here, and its skip counter created on the chief
  # (see the module docstring); an unusable source fails before any write.
  skip_counters = {t: tasks[t].make_dataset(
      data[t], cfg.batch_size_of(t), seed=cfg.seed)[1] for t in names}
  cleanup.enter_context(checkpointing.ModelDirLock(cfg.model_dir))
  resumed_run = checkpointing.prepare_model_dir(
      cfg.model_dir, checkpointing.run_info(names, trunk_config, cfg.lasso))
  coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  log(f"Parameter-server run, {num_workers} workers; concurrent closures per "
      f"task: {groups}")
  ignored = [name for name, unused in (
      ("--steps_per_call", cfg.steps_per_call > 1),
      ("--profile_steps", cfg.profile_steps),
      ("--image_summary_every_steps", cfg.image_summary_every_steps))
             if unused]
  if ignored:
    log(f"Not used with --strategy=parameter_server: {', '.join(ignored)}.")

  # ---- Model, optimizers, accumulators, state (on the parameter servers) --
  with strategy.scope():
    with speed.precision_policy(cfg.mixed_precision):
      network = multitask.MultiTaskNetwork(
          trunk_config, tasks, lasso=cfg.lasso, lasso_l1=cfg.lasso_l1,
          lasso_init=cfg.lasso_init)
    opts = {t: optimizers_lib.SlimRMSProp(
        cfg.learning_rate_of(t), cfg.rmsprop_decay, cfg.rmsprop_momentum,
        cfg.rmsprop_epsilon, name=f"rmsprop_{t}",
        # A task's schedule (tasks/base.py) counts its own updates, each
        # averaging its group's k batches (set up by the chief's
        # make_dataset above).
        **optimizers_lib.task_schedule(
            tasks[t], cfg.batch_size_of(t) * groups[t]))
            for t in names}
    for t in names:
      opts[t].build(network.task_variables(t))
    state = checkpointing.RunState(names)
    accumulators = {t: [tf.Variable(tf.zeros(v.shape, v.dtype),
                                    trainable=False, name=f"accum_{t}_{i}")
                        for i, v in enumerate(network.task_variables(t))]
                    for t in names if groups[t] > 1}
  # Step counts are booked by the chief as updates complete (``account``).
  task_step = step_lib.TaskStep(network, opts, next_batch=None,
                                jit_compile=cfg.jit_compile)

  # ---- Checkpoint: restore or initialise -----------------------------------
  # What a checkpoint holds; every value is checked finite at each save.
  model_state, saved_values = checkpointing.model_state(network, opts, state)
  ckpt = tf.train.Checkpoint(**model_state)
  manager = tf.train.CheckpointManager(ckpt, cfg.model_dir,
                                       max_to_keep=cfg.keep_checkpoints)
  latest = manager.latest_checkpoint
  if latest:
    latest = loop.restore_finite(
        latest, tf.train.Checkpoint(**model_state),
        tf.train.Checkpoint(data={}), saved_values, cfg.model_dir, log)
    log(f"Resumed from {latest} at {state.as_dict()}")
  elif resumed_run:
    log(f"{cfg.model_dir} has run.json but no checkpoint: starting at 0.")
  if not latest and cfg.init_checkpoint:
    slim_conversion.restore_trunk(network.trunk, cfg.init_checkpoint)
    log(f"Initialised the trunk from {cfg.init_checkpoint}")

  # ---- Steps (scheduled on workers) ----------------------------------------
  def make_fns(t):
    def forward_backward(iterator):
      images, labels = next(iterator)
      return strategy.run(lambda x, y: task_step.forward_backward(t, x, y),
                          args=(images, labels))

    @tf.function
    def run_one(iterator):
      grads, logs = forward_backward(iterator)
      return task_step.apply(t, grads, logs)

    @tf.function
    def accumulate(iterator):
      grads, logs = forward_backward(iterator)
      for a, g in zip(accumulators[t], grads):
        a.assign_add(g)
      return logs

    @tf.function
    def apply_accumulated(summed_logs):
      grads = [a.read_value() for a in accumulators[t]]
      with tf.control_dependencies(grads):
        logs = task_step.apply(t, grads, summed_logs, group_size=groups[t])
      with tf.control_dependencies(list(logs.values())):
        for a in accumulators[t]:
          a.assign(tf.zeros_like(a))
      return logs

    return run_one, accumulate, apply_accumulated

  def dataset_fn(t):
    return worker_dataset_fn(tasks[t], data[t], cfg.batch_size_of(t),
                             cfg.seed + names.index(t), skip_counters[t])

  # ---- Accounting, checkpoints, summaries (chief) ---------------------------
  costs = {t: cfg.step_cost_of(t) for t in names}
  cycle_cost = sum(cfg.steps_per_cycle_of(t) * costs[t] for t in names)
  budget = _Budget(float(state.cost.numpy()), cfg.max_steps * cycle_cost)
  stop, errors = threading.Event(), []
  drivers = {}
  for t in names:
    iterator = iter(coordinator.create_per_worker_dataset(dataset_fn(t)))
    drivers[t] = _TaskDriver(t, groups[t], costs[t], budget, coordinator,
                             make_fns(t), iterator, stop, errors)
  start_steps = {t: int(v.numpy()) for t, v in state.task_steps.items()}

  def task_steps() -> Dict[str, int]:
    return {t: start_steps[t] + len(drivers[t].updates) for t in names}

  def account():
    """(global step, cost, per-task steps) of the updates done so far."""
    steps = task_steps()
    cost = checkpointing.step_cost(costs, steps)
    return int(cost // cycle_cost), cost, steps

  writer = tf.summary.create_file_writer(os.path.join(cfg.model_dir, "train"))
  step, cost, _ = account()
  policy = checkpointing.SavePolicy(
      cfg.checkpoint_every_steps, cfg.checkpoint_every_secs,
      cfg.checkpoint_every_cost, start_step=step, start_cost=cost)
  saved = [latest]

  def skipped_counts():
    return {t: c.as_dict() for t, c in skip_counters.items() if c is not None}

  def save(reason):
    step, cost, steps = account()
    # Nothing non-finite is saved (module docstring: checked before and
    # after, since workers keep updating while the chief saves).
    if not bool(step_lib.all_finite(saved_values)):
      raise loop.NonFiniteLossError(
          f"The model holds non-finite values at global step {step}; not "
          f"saving. {loop.finite_checkpoint_advice_of(cfg.model_dir, step)}")
    if len(saved) == 1:  # first save of this process: room for it?
      checkpointing.check_free_disk(
          cfg.model_dir, checkpointing.variables_bytes(saved_values),
          cfg.keep_checkpoints)
    for t in names:
      state.task_steps[t].assign(steps[t])
    state.cost.assign(cost)
    state.global_step.assign(step)
    path = manager.save(checkpoint_number=step)
    if not bool(step_lib.all_finite(saved_values)):
      raise loop.NonFiniteLossError(
          f"The model became non-finite while {path} was written. "
          f"{loop.finite_checkpoint_advice_of(cfg.model_dir, step)}")
    saved[0] = path
    saved.append(path)
    policy.saved(step, cost)
    log(f"Saved {saved[0]} ({reason}) at {state.as_dict()}")
    if skipping.write_report(os.path.join(cfg.model_dir, skipping.REPORT),
                             skip_counters):
      log(f"Skipped inputs (distinct, by reason): {skipped_counts()}; listed "
          f"in {skipping.REPORT}")

  window = [step, task_steps(), time.monotonic()]

  def report(step, cost, steps):
    last_step, last_steps, last_time = window
    elapsed = max(time.monotonic() - last_time, 1e-9)
    rates = {t: (steps[t] - last_steps[t]) / elapsed for t in names}
    losses = {t: drivers[t].updates[-1][2]["loss"]
              for t in names if drivers[t].updates}
    log(f"step {step}/{cfg.max_steps} cost {cost:g} steps {steps} updates/s "
        + " ".join(f"{t}={r:.2f}" for t, r in rates.items()) + " loss "
        + " ".join(f"{t}={v:.4f}" for t, v in losses.items()))
    with writer.as_default(step=step):
      for t in names:
        tf.summary.scalar(f"{t}/updates_per_sec", rates[t])
        tf.summary.scalar(f"{t}/steps", steps[t])
        if t in losses:
          tf.summary.scalar(f"{t}/loss", losses[t])
      tf.summary.scalar("cost", cost)
    window[:] = [step, steps, time.monotonic()]

  # ---- Loop ----------------------------------------------------------------
  if step >= cfg.max_steps:
    log(f"Already at step {step} >= max_steps {cfg.max_steps}.")
  else:
    for driver in drivers.values():
      driver.start()
  try:
    while (any(d.is_alive() for d in drivers.values()) and
           not stop.is_set()):
      time.sleep(0.05)
      step, cost, steps = account()
      for t in names:
        failed = drivers[t].failed
        verdict = int(failed[2]["nonfinite"]) if failed else step_lib.FINITE
        if verdict != step_lib.FINITE:
          stop.set()
          # As in loop.train: a bad loss or gradient comes from the current
          # state, which a checkpoint of this global step may hold.
          first_bad = step + (verdict == step_lib.BAD_VALUES)
          raise loop.NonFiniteLossError(
              f"Task {t!r} had {step_lib.NONFINITE_WHAT[verdict]} in its "
              f"update {steps[t] + 1} (global step {step}, loss "
              f"{failed[2]['loss']}); the run stopped. "
              f"{loop.finite_checkpoint_advice_of(cfg.model_dir, first_bad)} "
              f"Lower the learning rate of {t} (--learning_rate, "
              f"--task_learning_rate={t}:...) or check its inputs.")
      if step - window[0] >= cfg.log_every_steps:
        report(step, cost, steps)
      reason = policy.should_save(step, cost)
      if reason:
        save(reason)
  finally:
    stop.set()
    for driver in drivers.values():
      if driver.is_alive():
        driver.join()
    writer.flush()
  if errors:
    raise RuntimeError(f"A task's updates failed: {errors[0]!r}") from \
        errors[0]
  step, cost, steps = account()
  if steps != window[1]:
    report(step, cost, steps)
  if saved[0] is None or steps != start_steps:
    save("end of training")
  history = {t: [u[2]["loss"] for u in drivers[t].updates] for t in names}
  result = loop.TrainResult(
      network=network, state=state.as_dict(), checkpoint=saved[0],
      last_logs={t: drivers[t].updates[-1][2] for t in names
                 if drivers[t].updates},
      skipped=skipped_counts(), loss_history=history)
  result.updates = {t: list(drivers[t].updates) for t in names}
  return result
