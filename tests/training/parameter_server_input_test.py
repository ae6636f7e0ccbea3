"""The workers' input pipelines in parameter-server mode (issue 15), without
a cluster: ``parameter_server.worker_dataset_fn`` traced the way
ClusterCoordinator traces a per-worker dataset function (variable creation
refused), on a folder with a corrupt image and a non-image file."""

import numpy as np
import tensorflow as tf

from mtssl_tf.tasks import registry
from mtssl_tf.training import parameter_server
from tests.tasks import task_fixtures


def _folder(tmp_path):
  return task_fixtures.image_folder(str(tmp_path), non_image=True)


def _refuse_variables(next_creator, **kwargs):
  del next_creator, kwargs
  raise ValueError("Creating variables in `dataset_fn` is not allowed.")


def _worker_batches(task, data, counter, worker, n=6):
  make = parameter_server.worker_dataset_fn(
      task, data, 2, seed=0, skipped=counter,
      worker_index=lambda: tf.constant(worker, tf.int64))
  # As ClusterCoordinator.create_per_worker_dataset: one trace, no variables.
  with tf.variable_creator_scope(_refuse_variables):
    dataset_fn = tf.function(make).get_concrete_function()
  return [images.numpy() for images, _ in dataset_fn().take(n)]


def test_worker_pipelines_count_into_the_chiefs_counter(tmp_path):
  task = registry.build("col", registry.get_module("col").TINY)
  data = _folder(tmp_path)
  # The chief's call checks the source and creates the counter (it counts
  # the non-image file once).
  _, counter = task.make_dataset(data, 2, seed=0)
  assert counter.events()["unsupported_format"] == 1
  assert counter.events()["undecodable"] == 0

  worker0 = _worker_batches(task, data, counter, 0)
  worker1 = _worker_batches(task, data, counter, 1)
  # 12 images read from 3 good files + 1 corrupt one: every pass over the
  # folder meets the corrupt file, counted in the chief's counter (once per
  # meeting, one distinct item); the non-image file is not counted again.
  assert counter.events()["undecodable"] >= 2
  assert counter.as_dict()["undecodable"] == 1
  assert counter.events()["unsupported_format"] == 1
  assert [i["item"] for i in counter.items()] == [
      str(tmp_path / "broken.jpg"), str(tmp_path / "notes.txt")]
  # Seeded per worker: different examples on each worker, the same on a
  # worker's rebuilt pipeline.
  assert not np.allclose(worker0[0], worker1[0])
  again = _worker_batches(task, data, counter, 0, n=1)
  np.testing.assert_array_equal(again[0], worker0[0])
