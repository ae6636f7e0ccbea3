"""The multi-task training loop (paper §4, Figure 2): a tf.distribute custom loop.

One global step is one cycle: every task makes ``steps_per_cycle`` updates.
Within an update, each replica computes only the tasks the replica plan gives
it (``replicas.py``): it reads its own batch of that task, runs trunk + head,
and takes the gradient of that task's loss with respect to the variables of
that task (trunk, its lasso row, its head). Each task's gradients are averaged
over the task's own group and applied by the task's own RMSProp. So the trunk
carries one set of RMSProp slots per task and a head is only ever touched by
its task. The update itself is written once in ``training/step.py``
(``TaskStep``), shared with the benchmark and the parameter-server mode; on
one host (or under MultiWorkerMirroredStrategy) the tasks advance in lockstep.

Speed options (``training/speed.py``, all off by default): the network is
built under ``cfg.mixed_precision``; ``cfg.jit_compile`` XLA-compiles each
task's forward + backward (the batch is read outside the compiled function);
``cfg.steps_per_call`` global steps run inside one ``tf.function`` call, and
checkpoints are only taken between calls (the model then matches the step).
Thread counts are applied first (``speed.configure_threads``).

Sections below: setup, data, model, step, checkpoint, summaries, loop.
"""

import contextlib
import dataclasses
import os
import shutil
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.data import skipping
from mtssl_tf.models import multitask
from mtssl_tf.models import slim_conversion
from mtssl_tf.training import checkpointing
from mtssl_tf.training import optimizers as optimizers_lib
from mtssl_tf.training import replicas
from mtssl_tf.training import speed
from mtssl_tf.training import step as step_lib
from mtssl_tf.training import summaries


class NonFiniteLossError(RuntimeError):
  """A task's loss, gradients or updated values became NaN or Inf.

  The run stopped without saving: every checkpoint in model_dir is finite.
  """



@dataclasses.dataclass
class TrainResult:
  """What ``train`` returns."""
  network: multitask.MultiTaskNetwork
  state: Dict[str, float]
  checkpoint: Optional[str]
  last_logs: Dict[str, Dict[str, float]]
  skipped: Dict[str, Dict[str, int]]
  loss_history: Dict[str, list]  # task -> loss of every global step run


def _num_workers(strategy) -> int:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(resolver, "task_type", None):
    return 1
  cluster = resolver.cluster_spec().as_dict()
  return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _worker_role(strategy) -> Tuple[int, bool]:
  """(index of this worker among all workers, whether it is the chief)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  task_type = getattr(resolver, "task_type", None) if resolver else None
  if not task_type:
    return 0, True
  task_id = int(resolver.task_id or 0)
  if "chief" in resolver.cluster_spec().as_dict():
    return (0, True) if task_type == "chief" else (task_id + 1, False)
  return task_id, task_type == "worker" and task_id == 0


def restore_finite(latest, model_ckpt, data_ckpt, saved_values, model_dir, log):
  """Restores the newest checkpoint of ``model_dir`` whose values are finite.

  Older versions could save non-finite checkpoints; those are passed over
  (and said so). The input pipelines' state is restored when the checkpoint
  has it and the pipelines fit it; otherwise the data order restarts from the
  seed (said so).

  Returns:
    The prefix restored.
  """
  state = tf.train.get_checkpoint_state(model_dir)
  candidates = [latest] + [p for p in reversed(
      list(state.all_model_checkpoint_paths if state else [])) if p != latest]
  for prefix in candidates:
    try:
      model_ckpt.read(prefix).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      raise ValueError(
          f"Checkpoint {prefix} does not fit this model "
          f"({type(e).__name__}: {str(e)[:300]}). Use a new --model_dir; the "
          f"checkpoint was left untouched.") from None
    if bool(step_lib.all_finite(saved_values)):
      break
    log(f"Checkpoint {prefix} holds non-finite values (NaN/Inf); passing "
        f"over it to an older one.")
  else:
    raise ValueError(
        f"No checkpoint in {model_dir!r} holds finite values; start a new "
        f"--model_dir (nothing was changed).")
  names = [n for n, _ in tf.train.list_variables(prefix)]
  if not data_ckpt.data or not any(n.startswith("data/") for n in names):
    if data_ckpt.data:
      log(f"{prefix} has no input pipeline state: the data order restarts "
          f"from the seed.")
    return prefix
  try:
    data_ckpt.read(prefix).expect_partial()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    log(f"The input pipelines changed since {prefix} (batch size or data?; "
        f"{type(e).__name__}): the data order restarts from the seed.")
  return prefix


def finite_checkpoint_advice_of(model_dir: str, first_bad_step: int,
                                chief: bool = True) -> str:
  """Says which checkpoint a rerun resumes from after a non-finite update
  (the chief sets aside the ones not trusted: from ``first_bad_step`` on, or
  non-finite)."""
  if chief:
    good, aside = checkpointing.set_aside_from(model_dir, first_bad_step)
  else:
    good, aside = tf.train.latest_checkpoint(model_dir), []
  where = (f"the newest checkpoint, {good}, is finite and a rerun resumes "
           f"from it" if good else "there is no usable checkpoint, a rerun "
           "starts from step 0")
  if aside:
    where += (f" ({', '.join(os.path.basename(p) for p in aside)} set "
              f"aside: their values or their next step were not finite; "
              f"the files stay but are no longer resumed from)")
  return f"Nothing non-finite was saved: {where}."


def check_init_checkpoint(cfg: config_lib.TrainConfig) -> None:
  """Raises ValueError if ``cfg.init_checkpoint`` will be read (no checkpoint
  in model_dir yet) but is not a checkpoint."""
  if cfg.init_checkpoint and not tf.train.latest_checkpoint(cfg.model_dir):
    if not tf.io.gfile.exists(cfg.init_checkpoint + ".index"):
      raise ValueError(
          f"init_checkpoint {cfg.init_checkpoint!r} is not a checkpoint (no "
          f"{cfg.init_checkpoint}.index); give the prefix written by "
          f"tools/convert_slim_checkpoint.py.")


def train(trunk_config: config_lib.TrunkConfig,
          tasks: Mapping[str, object],
          data: Mapping[str, config_lib.DataConfig],
          cfg: config_lib.TrainConfig,
          strategy: Optional[tf.distribute.Strategy] = None,
          log: Callable[[str], None] = print) -> TrainResult:
  """Trains the multi-task network; resumes from ``cfg.model_dir`` if present.

  Args:
    trunk_config: the trunk (``config.TrunkConfig``).
    tasks: task name -> task object (tasks/base.py contract), in order.
    data: task name -> its data source.
    cfg: the run.
    strategy: a tf.distribute strategy (default: the current/default one).
    log: where progress lines go.

  Raises:
    ValueError: an invalid combination (replica plan, model dir, data).
    NonFiniteLossError: a loss, gradient or updated value became NaN/Inf at
      a global step the message names; that update's values are never saved
      and every checkpoint in model_dir is finite.

  Everything is validated (config, replica plan, data sources, init
  checkpoint) before anything is written to ``cfg.model_dir``; the chief holds
  an exclusive lock on it while it trains (``checkpointing.ModelDirLock``).
  """
  with contextlib.ExitStack() as cleanup:
    return _train(cleanup, trunk_config, tasks, data, cfg, strategy, log)


def _train(cleanup, trunk_config, tasks, data, cfg, strategy, log):
  """``train``; ``cleanup`` (an ExitStack) releases the model_dir lock."""
  # ---- Setup: validate everything before writing anything ------------------
  cfg.validate()
  # cfg.seed fixes initialisation (tf_keras draws unseeded initializers'
  # seeds from Python's random) and every unseeded TF random op, whatever ran
  # before in this process.
  tf_keras.utils.set_random_seed(cfg.seed)
  speed.configure_threads(cfg.intra_op_threads, cfg.inter_op_threads)
  speed.check_precision(cfg.mixed_precision)
  names = list(tasks)
  strategy = strategy or tf.distribute.get_strategy()
  plan = replicas.plan_replicas(names, strategy.num_replicas_in_sync,
                                cfg.replicas_per_task)
  worker, chief = _worker_role(strategy)
  check_init_checkpoint(cfg)

  # ---- Data: one iterator per task, outside the strategy scope (the skip
  # counters of the sources are host variables updated inside tf.data). An
  # unusable source fails here, before the model dir is touched.
  datasets, skip_counters = {}, {}
  for i, t in enumerate(names):
    datasets[t], skip_counters[t] = tasks[t].make_dataset(
        data[t], cfg.batch_size_of(t), seed=cfg.seed + 1000 * worker + i)
  # The skip counters are state outside the pipeline that its checkpoint
  # does not hold (they are bookkeeping; resuming restarts them).
  options = tf.data.Options()
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  iterators = {t: iter(ds.with_options(options))
               for t, ds in datasets.items()}

  # Multi-worker: only the chief writes model_dir (run.json, checkpoints,
  # summaries). The other workers take part in every (collective) save but
  # write to a scratch directory, removed at the end, and log nothing.
  if chief:
    write_dir = cfg.model_dir
    cleanup.enter_context(checkpointing.ModelDirLock(cfg.model_dir))
    resumed_run = checkpointing.prepare_model_dir(
        cfg.model_dir, checkpointing.run_info(names, trunk_config, cfg.lasso))
  else:
    write_dir = os.path.join(cfg.model_dir, f".worker_{worker}")
    os.makedirs(write_dir, exist_ok=True)
    resumed_run, log = False, lambda message: None
  log(f"Replica plan ({strategy.num_replicas_in_sync} replicas): "
      f"{plan.describe()}")

  # ---- Model, optimizers, state -------------------------------------------
  with strategy.scope():
    with speed.precision_policy(cfg.mixed_precision):
      network = multitask.MultiTaskNetwork(
          trunk_config, tasks, lasso=cfg.lasso, lasso_l1=cfg.lasso_l1,
          lasso_init=cfg.lasso_init)
    opts = {t: optimizers_lib.SlimRMSProp(
        cfg.learning_rate_of(t), cfg.rmsprop_decay, cfg.rmsprop_momentum,
        cfg.rmsprop_epsilon, name=f"rmsprop_{t}",
        **optimizers_lib.task_schedule(
            tasks[t], cfg.batch_size_of(t) * plan.group_size(t)))
            for t in names}
    for t in names:
      opts[t].build(network.task_variables(t))
    state = checkpointing.RunState(names)

  # ---- Checkpoint: restore or initialise -----------------------------------
  # What a checkpoint holds; every value is checked finite before each save.
  model_state, saved_values = checkpointing.model_state(network, opts, state)
  # The input pipelines' positions make resume exact (the same examples as
  # an uninterrupted run). One worker only: only the chief's checkpoint is
  # restored, and every worker has its own pipeline.
  data_state = iterators if _num_workers(strategy) == 1 else {}
  ckpt = tf.train.Checkpoint(data=data_state, **model_state)
  manager = tf.train.CheckpointManager(ckpt, write_dir,
                                       max_to_keep=cfg.keep_checkpoints)
  latest = tf.train.latest_checkpoint(cfg.model_dir)  # the chief's
  if latest:
    latest = restore_finite(latest, tf.train.Checkpoint(**model_state),
                            tf.train.Checkpoint(data=data_state),
                            saved_values, cfg.model_dir, log)
    log(f"Resumed from {latest} at {state.as_dict()}")
  elif resumed_run:
    log(f"{cfg.model_dir} has run.json but no checkpoint: starting at 0.")
  if not latest and cfg.init_checkpoint:
    slim_conversion.restore_trunk(network.trunk, cfg.init_checkpoint)
    log(f"Initialised the trunk from {cfg.init_checkpoint}")

  # ---- Step (training/step.py) ---------------------------------------------
  task_step = step_lib.TaskStep(
      network, opts, lambda t: next(iterators[t]), task_steps=state.task_steps,
      jit_compile=cfg.jit_compile,
      label_specs={t: datasets[t].element_spec[1] for t in names})
  cycle_length = max(cfg.steps_per_cycle_of(t) for t in names)
  cycle = [tuple(t for t in names if cfg.steps_per_cycle_of(t) > i)
           for i in range(cycle_length)]
  call_fns = {}  # n -> tf.function running n global steps (cycles)

  def run_steps(n):
    if n not in call_fns:
      call_fns[n] = tf.function(lambda: step_lib.run_cycles(
          lambda active: task_step.cycle(active, strategy, plan), cycle, n))
    return call_fns[n]()
  costs = {t: cfg.step_cost_of(t) for t in names}

  # ---- Summaries -----------------------------------------------------------
  writer = (tf.summary.create_file_writer(os.path.join(cfg.model_dir, "train"))
            if chief else tf.summary.create_noop_writer())
  # Saves are collective across workers (sync-on-read variables are
  # all-reduced when read), so every worker must save at the same step: the
  # wall-clock trigger, which differs between hosts, is single-host only.
  multi_worker = _num_workers(strategy) > 1
  if multi_worker and cfg.checkpoint_every_secs:
    log("Multi-worker run: --checkpoint_every_secs is ignored; saving by "
        "steps and cost only.")
  policy = checkpointing.SavePolicy(
      cfg.checkpoint_every_steps,
      0.0 if multi_worker else cfg.checkpoint_every_secs,
      cfg.checkpoint_every_cost, start_step=int(state.global_step.numpy()),
      start_cost=float(state.cost.numpy()))

  def skipped_counts():
    return {t: c.as_dict() for t, c in skip_counters.items() if c is not None}

  def write_scalars(step, logs, rates, steps_per_sec):
    with writer.as_default(step=step):
      for t, values in logs.items():
        for k, v in values.items():
          if k != "examples":
            tf.summary.scalar(f"{t}/{k}", v)
        tf.summary.scalar(f"{t}/trunk_images_per_sec", rates[t])
        tf.summary.scalar(f"{t}/learning_rate",
                          opts[t].current_learning_rate())
        tf.summary.scalar(f"{t}/steps", state.task_steps[t])
      tf.summary.scalar("cost", state.cost)
      tf.summary.scalar("global_steps_per_sec", steps_per_sec)
      for t, counts in skipped_counts().items():
        for reason, n in counts.items():
          tf.summary.scalar(f"skipped_inputs/{t}/{reason}", n)
      if cfg.lasso:
        tf.summary.image("lasso/abs_alpha",
                         summaries.alpha_heatmap(network.alpha_matrix()))

  def write_images(step):
    with writer.as_default(step=step):
      for t in names:
        images, labels = next(iterators[t])
        outputs = network(t, images, training=False)
        for name, image in tasks[t].summary_images(
            images, labels, outputs).items():
          tf.summary.image(f"{t}/{name}", image, max_outputs=4)

  saved_step = [None]

  def finite_checkpoint_advice(first_bad_step):
    return finite_checkpoint_advice_of(cfg.model_dir, first_bad_step, chief)

  def save(reason):
    # The last line of defence of the NaN guard: nothing non-finite is saved.
    if not bool(step_lib.all_finite(saved_values)):
      raise NonFiniteLossError(
          f"The model holds non-finite values at global step "
          f"{int(state.global_step.numpy())}; not saving. "
          f"{finite_checkpoint_advice(int(state.global_step.numpy()))}")
    if saved_step[0] is None:  # first save of this process: room for it?
      checkpointing.check_free_disk(
          write_dir, checkpointing.variables_bytes(saved_values),
          cfg.keep_checkpoints)
    path = manager.save(checkpoint_number=state.global_step)
    saved_step[0] = int(state.global_step.numpy())
    policy.saved(saved_step[0], float(state.cost.numpy()))
    log(f"Saved {path} ({reason})")
    if chief and skipping.write_report(  # the bad inputs, one list per run
        os.path.join(cfg.model_dir, skipping.REPORT),
        skip_counters):
      log(f"Skipped inputs (distinct, by reason): {skipped_counts()}; listed "
          f"in {skipping.REPORT}")
    return path

  # ---- Loop ----------------------------------------------------------------
  step = int(state.global_step.numpy())
  start_step, last_logs = step, {}
  loss_history = {t: [] for t in names}
  window_start, window_examples = time.monotonic(), {t: 0.0 for t in names}
  window_steps = 0
  # The ETA is estimated from the steps after the first call, which traces
  # (and compiles) the step function and takes many times longer.
  eta_origin = None  # (time, step) when the first call returned
  profiling = False
  pending = []  # cycle logs of steps run by the last call, not yet booked
  path = latest
  if step >= cfg.max_steps:
    log(f"Already at step {step} >= max_steps {cfg.max_steps}.")
  try:
    while step < cfg.max_steps:
      if cfg.profile_steps and step == cfg.profile_steps[0]:
        tf.profiler.experimental.start(os.path.join(cfg.model_dir, "profile"))
        profiling = True
      if not pending:
        pending = list(run_steps(min(cfg.steps_per_call,
                                     cfg.max_steps - step)))
        if eta_origin is None:
          eta_origin = (time.monotonic(), step + len(pending))
      cycle_logs = pending.pop(0)
      merged = {}
      for logs in cycle_logs:
        for t, values in logs.items():
          values = {k: float(v.numpy()) for k, v in values.items()}
          verdict = int(values.pop("nonfinite"))
          if verdict != step_lib.FINITE:
            # A non-finite loss or gradient comes from the state saved after
            # the previous step: that checkpoint is not trusted either.
            first_bad = step + (verdict == step_lib.BAD_VALUES)
            raise NonFiniteLossError(
                f"Task {t!r} had {step_lib.NONFINITE_WHAT[verdict]} at global "
                f"step {step + 1} (loss {values['loss']}, total "
                f"{values['total_loss']}); the run stopped. "
                f"{finite_checkpoint_advice(first_bad)} Lower the learning "
                f"rate of "
                f"{t} (--learning_rate, --task_learning_rate={t}:...) or "
                f"check its inputs.")
          merged.setdefault(t, []).append(values)
      last_logs = {t: summaries.mean_dicts(v) for t, v in merged.items()}
      for t, values in last_logs.items():
        window_examples[t] += sum(v["examples"] for v in merged[t])
        loss_history[t].append(values["loss"])
      state.global_step.assign_add(1)
      state.cost.assign(checkpointing.step_cost(
          costs, {t: int(v.numpy()) for t, v in state.task_steps.items()}))
      step += 1
      window_steps += 1
      if profiling and step > cfg.profile_steps[1]:
        tf.profiler.experimental.stop()
        profiling = False

      if step % cfg.log_every_steps == 0 or step == cfg.max_steps:
        elapsed = max(time.monotonic() - window_start, 1e-9)
        rates = {t: window_examples[t] / elapsed for t in names}
        steps_per_sec = window_steps / elapsed
        write_scalars(step, last_logs, rates, steps_per_sec)
        skipped_total = sum(sum(c.values())
                            for c in skipped_counts().values())
        eta_steps = step - eta_origin[1]
        eta_rate = (eta_steps / max(time.monotonic() - eta_origin[0], 1e-9)
                    if eta_steps > 0 else None)
        log(summaries.progress_line(
            step, cfg.max_steps, {t: v["loss"] for t, v in last_logs.items()},
            rates, steps_per_sec, float(state.cost.numpy()), skipped_total,
            eta_steps_per_sec=eta_rate))
        window_start, window_steps = time.monotonic(), 0
        window_examples = {t: 0.0 for t in names}
      if (cfg.image_summary_every_steps and
          step % cfg.image_summary_every_steps == 0):
        write_images(step)
      reason = (None if pending else
                policy.should_save(step, float(state.cost.numpy())))
      if reason:
        path = save(reason)
    if saved_step[0] != step and (step > start_step or path is None):
      path = save("end of training")
  except KeyboardInterrupt:
    if pending:  # steps the last call already applied count as done
      state.global_step.assign_add(len(pending))
      state.cost.assign(checkpointing.step_cost(
          costs, {t: int(v.numpy()) for t, v in state.task_steps.items()}))
    path = save("interrupted")
    raise
  finally:
    if profiling:
      tf.profiler.experimental.stop()
    writer.flush()
  if not chief:
    shutil.rmtree(write_dir, ignore_errors=True)
    path = tf.train.latest_checkpoint(cfg.model_dir)
  return TrainResult(network=network, state=state.as_dict(), checkpoint=path,
                     last_logs=last_logs, skipped=skipped_counts(),
                     loss_history=loss_history)
