"""Chief of a parameter-server test cluster on toy tasks (run by
tools/launch_cluster.py with --module=tests.training.ps_chief).

Argument: a JSON object with ``model_dir``, ``max_steps`` (an int, or a list:
one training run after the other in this process), ``workers`` (task ->
concurrent closures), optional ``sleep_ms`` (task -> milliseconds each of its
batches waits in its worker's input pipeline: an artificially slow task that
costs no CPU), ``random_start`` (each worker's pipeline starts at an example
index drawn from its seed, reported per closure as the ``first_index``
metric), ``nan_after`` (task -> its loss is NaN after that many evaluations,
counted over all runs) and a few TrainConfig fields. Prints a ``RESULT`` line
per run: the run state, the checkpoint and every update's (start, end, loss,
per-closure logs); a run stopped by the NaN guard prints ``NONFINITE`` and
its message instead.
"""

import json
import sys

import tensorflow as tf
# tf.data's sleep transformation (a graph op, so it runs on the remote
# worker; public TF has no other way to wait without using a core).
from tensorflow.python.data.experimental.ops import testing as tf_data_testing

from mtssl_tf import config
from mtssl_tf.training import loop
from mtssl_tf.training import parameter_server
from mtssl_tf.training import replicas
from tests.training import toy_task


def example(i, size=32):
  """Toy example i, as toy_task.Task makes it with seed 0, and its index."""
  sign = tf.where(i % 2 == 0, 1.0, -1.0)
  image = 0.5 * sign + tf.random.stateless_normal(
      [size, size, 3], tf.stack([tf.constant(0, tf.int64), i]), stddev=0.3)
  return image, {"label": tf.cast(i % 2 == 0, tf.int32), "index": i}


class SlowTask(toy_task.Task):
  """The toy task; each batch waits ``sleep_ms`` in the worker's pipeline;
  with ``random_start`` each pipeline starts at a random example."""

  def __init__(self, sleep_ms=0, random_start=False, **kwargs):
    super().__init__(**kwargs)
    self.sleep_ms = sleep_ms
    self.random_start = random_start

  def make_dataset(self, data, batch_size, seed=None, skipped=None):
    if self.random_start:
      # From the seed, which differs between workers' pipelines.
      start = tf.random.stateless_uniform(
          [], tf.stack([tf.cast(seed, tf.int64), tf.constant(7, tf.int64)]),
          0, 10**6, tf.int64)
      dataset = (tf.data.Dataset.range(start, start + 10**9).map(example)
                 .batch(batch_size, drop_remainder=True))
    else:
      dataset, _ = super().make_dataset(data, batch_size, seed, skipped)
    if self.sleep_ms:
      dataset = dataset.apply(tf_data_testing.sleep(
          int(self.sleep_ms * 1000)))
    return dataset, None  # nothing to skip

  def metrics(self, labels, outputs):
    values = super().metrics(labels, outputs)
    if self.random_start:
      values["first_index"] = tf.cast(labels["index"][0], tf.float32)
    return values


def main():
  spec = json.loads(sys.argv[1])
  strategy = replicas.make_strategy("parameter_server")
  tasks = {t: SlowTask(spec.get("sleep_ms", {}).get(t, 0),
                       spec.get("random_start", False), name=t,
                       config=toy_task.Config(
                           nan_after=spec.get("nan_after", {}).get(t, -1)))
           for t in spec["workers"]}
  runs = spec["max_steps"]
  for max_steps in (runs if isinstance(runs, list) else [runs]):
    cfg = config.TrainConfig(
        model_dir=spec["model_dir"], max_steps=max_steps,
        batch_size=spec.get("batch_size", 4),
        learning_rate=spec.get("learning_rate", 0.01),
        checkpoint_every_secs=0,
        checkpoint_every_steps=spec.get("checkpoint_every_steps", 0),
        log_every_steps=spec.get("log_every_steps", 5),
        keep_checkpoints=spec.get("keep_checkpoints", 5),
        replicas_per_task=spec["workers"])
    try:
      result = parameter_server.train(
          config.TrunkConfig(depth=14, base_width=8), tasks,
          {t: None for t in tasks}, cfg, strategy=strategy,
          log=lambda s: print(s, flush=True))
    except loop.NonFiniteLossError as e:
      print(f"NONFINITE {e}", flush=True)
      continue
    print("RESULT " + json.dumps({
        "state": result.state,
        "updates": {t: [(s, e, logs["loss"], parts)
                        for s, e, logs, parts in u]
                    for t, u in result.updates.items()},
        "checkpoint": result.checkpoint}), flush=True)


if __name__ == "__main__":
  main()
