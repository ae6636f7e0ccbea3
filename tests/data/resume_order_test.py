"""Exact resume of the input pipelines from a tf.data iterator checkpoint.

The training loop saves every task's iterator with the model
(``tf.train.Checkpoint(data=iterators)``), so that a killed run resumes on
the examples an uninterrupted run sees (issue 11, item 4). That holds only
if the pipelines are deterministic given their seed: a parallel step that
emits whichever element is ready first reorders examples differently after
a restore. Here: rp batches from TFRecord shards and from a folder (with a
corrupt file and a truncated shard among them), and motion-record pairs;
each resumed iterator yields exactly what the uninterrupted one yields, and
no parallel step of the pipelines may reorder.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.data import motion_source
from mtssl_tf.tasks import registry
from tests.tasks import task_fixtures

H, W = 240, 320
BEFORE, AFTER = 3, 4


def _options():
  # As the training loop: the skip counters are state outside the pipeline.
  options = tf.data.Options()
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  return options


def _nondeterministic_steps(dataset):
  """Names of the dataset's ops (including those inside its functions, e.g.
  an interleave's inner datasets) that may emit out of order."""
  graph = tf.compat.v1.GraphDef()
  graph.ParseFromString(dataset._as_serialized_graph(  # pylint: disable=protected-access
      external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE
  ).numpy())
  nodes = list(graph.node) + [n for f in graph.library.function
                              for n in f.node_def]
  return sorted(n.op for n in nodes
                if n.attr["deterministic"].s == b"false")


def _flat(element):
  return [np.asarray(x) for x in tf.nest.flatten(element)]


def _assert_resumes_exactly(make_dataset, tmp_path):
  """``make_dataset()`` read BEFORE elements, saved, AFTER more; a fresh
  pipeline restored from the save yields the same AFTER elements."""
  dataset = make_dataset()
  assert not _nondeterministic_steps(dataset)
  iterator = iter(dataset.with_options(_options()))
  for _ in range(BEFORE):
    next(iterator)
  saved = tf.train.Checkpoint(data=iterator).write(str(tmp_path / "data"))
  whole = [_flat(next(iterator)) for _ in range(AFTER)]
  resumed = iter(make_dataset().with_options(_options()))
  tf.train.Checkpoint(data=resumed).read(saved).assert_consumed()
  for step in range(AFTER):
    for a, b in zip(whole[step], _flat(next(resumed))):
      np.testing.assert_array_equal(a, b, err_msg=f"element {step}")


def _rp_task():
  return registry.build("rp", registry.get_module("rp").Config(
      patch_units=task_fixtures.TINY_PATCH_UNITS, fc_width=32,
      fc_bottleneck=8))


def _image_shards(folder, shards=3, per_shard=4):
  os.makedirs(folder, exist_ok=True)
  for s in range(shards):
    path = os.path.join(folder, f"train-{s}.tfrecord")
    task_fixtures.image_records(path, per_shard)
  # A truncated shard: its readable records are used (skipping.py).
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:len(data) * 2 // 3])
  return config.DataConfig("tfrecord", os.path.join(folder, "train-*"))


# Both cases are in the slow tier; the motion-record case below keeps the
# quick tier's coverage of the mechanism.
@pytest.mark.slow
@pytest.mark.parametrize("source", ["tfrecord", "folder"])
def test_rp_batches_resume_exactly(tmp_path, source):
  if source == "tfrecord":
    data = _image_shards(str(tmp_path / "records"))
  else:
    data = task_fixtures.image_folder(str(tmp_path / "images"), count=6)
  task = _rp_task()
  _assert_resumes_exactly(
      lambda: task.make_dataset(data, batch_size=2, seed=7)[0], tmp_path)


def test_motion_record_pairs_resume_exactly(tmp_path):
  rng = np.random.default_rng(0)
  for s in range(3):
    frames = rng.integers(0, 256, (3, H, W, 3)).astype(np.uint8)
    masks = (rng.random((3, H, W, 1)) < 0.3).astype(np.uint8) * 255
    task_fixtures.motion_records(tmp_path / f"m{s}.tfrecord", frames, masks)
  data = config.DataConfig("tfrecord", str(tmp_path / "m*.tfrecord"))
  source = motion_source.MotionSource(data, shuffle_buffer=4)
  _assert_resumes_exactly(lambda: source.dataset(seed=3), tmp_path)
