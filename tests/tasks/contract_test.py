"""Every registered task holds to the contract of tasks/base.py.

Parameterized over the registry: a new task is checked without editing this
file. Each task is built at its ``TINY`` config for a depth-14, width-8
trunk, reads its built-in data, and runs its head, loss, metrics and summary
images on one batch.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from absl import flags

from mtssl_tf import config
from mtssl_tf import config_flags
from mtssl_tf.data import sources
from mtssl_tf.tasks import base
from mtssl_tf.tasks import registry
from tests.tasks import task_fixtures

NAMES = registry.names()
BATCH = 2


@pytest.fixture(scope="module", params=NAMES)
def built(request):
  """(module, task, dataset, skipped, trunk, head, batch, outputs)."""
  name = request.param
  module = registry.get_module(name)
  trunk_facts = base.TrunkFacts.of(task_fixtures.TINY_TRUNK)
  task = registry.build(name, module.TINY, trunk_facts)
  dataset, skipped = task.make_dataset(config.DataConfig(), BATCH, seed=0)
  trunk, head = task_fixtures.tiny_model(task)
  images, labels = next(iter(dataset))
  outputs = head(trunk(images, training=False)["block3"], training=False)
  return dict(module=module, task=task, dataset=dataset, skipped=skipped,
              head=head, images=images, labels=labels, outputs=outputs)


def test_registry_names_are_unique_and_loud():
  assert len(set(NAMES)) == len(NAMES)
  with pytest.raises(ValueError, match="already registered"):
    registry.register(NAMES[0], "anything")
  with pytest.raises(ValueError, match="Unknown task"):
    registry.get_module("no_such_task")


@pytest.mark.parametrize("name", NAMES)
def test_module_declares_name_config_tiny(name):
  module = registry.get_module(name)
  assert module.NAME == name
  assert dataclasses.is_dataclass(module.Config)
  assert module.Config.__dataclass_params__.frozen
  assert isinstance(module.TINY, module.Config)
  assert module.Task.source_kind in base.SOURCE_KINDS


@pytest.mark.parametrize("name", NAMES)
def test_every_option_is_a_documented_flag(name):
  module = registry.get_module(name)
  values = flags.FlagValues()
  config_flags.define_flags(name, module.Config, flag_values=values)
  for field in dataclasses.fields(module.Config):
    flag = values[f"{name}.{field.name}"]
    # The help is the field's docstring entry, not only the default.
    assert not flag.help.startswith("(default"), (name, field.name)
  # No task-specific trunk fact hides among the options (tasks/base.py).
  assert "output_stride" not in {f.name for f in
                                 dataclasses.fields(module.Config)}


@pytest.mark.parametrize("name", NAMES)
def test_config_validates_and_scales_its_head(name):
  """Start-up validation and --head_width_multiplier work for every task
  (the six-task run with narrow heads needs every task's scale_head)."""
  module = registry.get_module(name)
  paper = module.Config()
  paper.validate()
  module.TINY.validate()
  assert paper.scale_head(1.0) == paper
  small = paper.scale_head(0.125)
  small.validate()
  assert type(small) is module.Config
  registry.build(name, small)  # e.g. jig: 9 tiles' widths still fit


def test_task_is_a_base_task(built):
  task, module = built["task"], built["module"]
  assert isinstance(task, base.Task)
  assert task.name == module.NAME
  assert task.trunk_inputs_per_example >= 1
  assert len(task.input_shape) == 3 and task.input_shape[-1] == 3


def test_dataset_batches_and_skip_counter(built):
  task, images = built["task"], built["images"]
  assert isinstance(built["dataset"], tf.data.Dataset)
  assert isinstance(built["skipped"], sources.SkipCounter)
  assert built["skipped"].total() == 0
  assert images.dtype == tf.float32
  assert images.shape == (BATCH * task.trunk_inputs_per_example,
                          *task.input_shape)
  assert -1.0 <= float(tf.reduce_min(images))
  assert float(tf.reduce_max(images)) <= 1.0
  assert isinstance(built["labels"], dict) and built["labels"]


def test_head_variables_are_named_after_the_task(built):
  head, name = built["head"], built["task"].name
  assert isinstance(head, tf_keras.Model)
  assert head.trainable_variables
  for variable in head.variables:
    assert variable.name.startswith(f"{name}_head/"), variable.name


def test_loss_metrics_and_summary_images(built):
  task, labels, outputs = built["task"], built["labels"], built["outputs"]
  assert isinstance(outputs, dict) and outputs
  loss = task.loss(labels, outputs)
  assert loss.shape == () and loss.dtype == tf.float32
  assert np.isfinite(loss.numpy())
  metrics = task.metrics(labels, outputs)
  assert metrics and all(v.shape == () for v in metrics.values())
  images = task.summary_images(built["images"], labels, outputs)
  assert images
  for image in images.values():
    assert image.dtype == tf.uint8 and image.shape.rank == 4
    assert image.shape[-1] == 3


def _refuse_variables(next_creator, **kwargs):
  del next_creator, kwargs
  raise ValueError("make_dataset(..., skipped=) created a variable")


def test_a_second_pipeline_counts_into_the_first_ones_counter(built):
  """``make_dataset(..., skipped=counter)`` (parameter-server workers): it
  builds inside a trace that refuses variables, as ClusterCoordinator traces
  a per-worker dataset function, from a tensor seed, and returns the counter
  it was given."""
  task, skipped = built["task"], built["skipped"]

  def make():
    tf.random.set_seed(1)  # the graph's (see parameter_server.py)
    return task.make_dataset(config.DataConfig(), BATCH,
                             seed=tf.constant(5, tf.int64) + 1,
                             skipped=skipped)[0]
  with tf.variable_creator_scope(_refuse_variables):
    traced = tf.function(make).get_concrete_function()
  images, labels = next(iter(traced()))
  assert images.shape == built["images"].shape
  assert tf.nest.map_structure(lambda x: x.shape, labels) == \
      tf.nest.map_structure(lambda x: x.shape, built["labels"])
  if skipped is not None:
    _, again = task.make_dataset(config.DataConfig(), BATCH, seed=1,
                                 skipped=skipped)
    assert again is skipped
