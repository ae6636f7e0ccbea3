"""Tests of benchmarks/memory.py: the memory floor of a training step."""

import pytest
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.benchmarks import memory
from mtssl_tf.benchmarks import task_step
from mtssl_tf.models import multitask
from tests.training import toy_task


def test_saved_activations_of_a_two_layer_net_by_hand():
  w1 = tf.Variable(tf.ones((8, 16)))
  w2 = tf.Variable(tf.ones((16, 4)))

  @tf.function
  def grads(x):
    with tf.GradientTape() as tape:
      hidden = tf.nn.relu(tf.matmul(x, w1))
      loss = tf.reduce_sum(tf.square(tf.matmul(hidden, w2)))
    return tape.gradient(loss, [w1, w2])

  graph = grads.get_concrete_function(
      tf.TensorSpec((2, 8), tf.float32)).graph
  # Kept for the backward pass: x [2, 8] (w1's gradient), relu's output
  # [2, 16] (relu's gradient and w2's), the squared logits' input [2, 4];
  # not w1, w2 (weights). float32: 4 bytes each.
  assert memory.saved_activation_bytes(graph) == 4 * (2 * 8 + 2 * 16 + 2 * 4)


@pytest.mark.slow  # builds and traces a network: ~5 s idle
def test_floor_counts_weights_slots_per_task_and_largest_step():
  trunk = config_lib.TrunkConfig(depth=14, base_width=8)
  tasks = {n: toy_task.Task(name=n) for n in ("a", "b")}
  network = multitask.MultiTaskNetwork(trunk, tasks)
  batches = task_step.cached_batches(tasks, batch_size=2)
  images = batches["a"][0]
  result = memory.floor(network, batches)
  trunk_n = network.trunk.count_params()
  head_n = {t: network.heads[t].count_params() for t in tasks}
  trainable = {t: sum(int(v.shape.num_elements()) for v in
                      network.task_variables(t)) for t in tasks}
  assert result["weights"] == 4 * (trunk_n + sum(head_n.values()))
  assert result["slots"] == 2 * 4 * sum(trainable.values())
  for t in tasks:
    assert result["tasks"][t]["gradients"] == 4 * trainable[t]
    # At least the input image batch, which the first conv's kernel
    # gradient reads.
    assert result["tasks"][t]["activations"] >= 4 * int(
        tf.size(images))
  assert result["step"] == result["weights"] + result["slots"] + max(
      v["gradients"] + v["activations"] for v in result["tasks"].values())
