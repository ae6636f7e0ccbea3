"""Issue 16's optimised rp update equals the one it replaced, on a tiny trunk.

Before: rp's fully-connected units as 3x3-conv bottleneck units on a 1x1 map
and RMSProp as elementwise ops after dividing the gradients by the group size
(kept in ``benchmarks/legacy.py`` for the benchmark's before/after runs).
After: 1x1 convs and the fused ``ResourceApplyRMSProp`` kernel. With the
centre taps copied, one update must give the same weights and slots and the
next update the same loss, up to float32 rounding. (Later updates drift
apart: this tiny network's batch norms over a few rows amplify rounding
differences, e.g. the fused kernel's ``ms += (g**2 - ms) * (1 - decay)``
against ``decay * ms + (1 - decay) * g**2``, by ~10x per update.)
"""

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.benchmarks import legacy
from mtssl_tf.models import multitask
from mtssl_tf.tasks import registry
from mtssl_tf.tasks import relative_position as rp
from mtssl_tf.training import optimizers
from tests.tasks import task_fixtures

TINY = rp.Config(patch_units=task_fixtures.TINY_PATCH_UNITS, fc_width=24,
                 fc_bottleneck=8)


def test_benchmark_head_variants_belong_to_the_task_that_had_them():
  """The levers section builds tasks by variant (``legacy.task_class``),
  so ``benchmarks/workers.py`` names no task."""
  assert legacy.task_class("rp", "conv3x3") is legacy.Conv3x3RelativePosition
  assert legacy.task_class("rp", "conv1x1") is legacy.Conv1x1RelativePosition
  assert legacy.task_class("rp", "matmul") is None
  for name in registry.names():
    if name != "rp":
      assert legacy.task_class(name, "conv3x3") is None, name
  with pytest.raises(ValueError, match="Unknown head variant"):
    legacy.task_class("rp", "conv5x5")


def _centre(value, shape):
  """The centre taps of a 3x3 kernel when the new kernel is 1x1."""
  if value.shape != tuple(shape):
    return value[1:2, 1:2]
  return value


@pytest.mark.slow
def test_three_updates_match_the_replaced_implementation():
  trunk = task_fixtures.TINY_TRUNK
  old_task = legacy.Conv3x3RelativePosition(TINY)
  new_task = rp.Task(TINY)
  dataset, _ = new_task.make_dataset(config.DataConfig(), 8, seed=0)
  images, labels = next(iter(dataset))
  old_net = multitask.MultiTaskNetwork(trunk, {"rp": old_task})
  new_net = multitask.MultiTaskNetwork(trunk, {"rp": new_task})
  old_vars = {v.name: v for v in old_net.trunk.variables +
              old_net.heads["rp"].variables}
  new_vars = new_net.trunk.variables + new_net.heads["rp"].variables
  assert sorted(old_vars) == sorted(v.name for v in new_vars)
  dead = 0
  for v in new_vars:
    old = old_vars[v.name].numpy()
    v.assign(_centre(old, v.shape))
    dead += old.size - v.shape.num_elements()
  assert dead == 3 * 8 * 8 * 8  # three fc units' 3x3 taps, 8 of 9 dead

  old_opt = legacy.ElementwiseRMSProp(0.01, name="old")
  new_opt = optimizers.SlimRMSProp(0.01, name="new")
  old_opt.build(old_net.task_variables("rp"))
  new_opt.build(new_net.task_variables("rp"))

  def update(net, opt):
    grads, _, loss, _ = net.forward_backward("rp", images, labels)
    opt.apply_gradients(zip(grads, net.task_variables("rp")))
    return loss

  initial = {v.name: v.numpy().copy() for v in new_vars}
  old_update = tf.function(lambda: update(old_net, old_opt))
  new_update = tf.function(lambda: update(new_net, new_opt))
  np.testing.assert_allclose(new_update().numpy(), old_update().numpy(),
                             rtol=1e-6)
  moved = 0
  for v in new_vars:
    old = old_vars[v.name]
    np.testing.assert_allclose(v.numpy(), _centre(old.numpy(), v.shape),
                               rtol=1e-5, atol=1e-6, err_msg=v.name)
    if v.trainable:
      key = optimizers.variable_path(v)
      moved += int(not np.allclose(v.numpy(), initial[v.name]))
      for slot in ("ms", "mom"):
        np.testing.assert_allclose(
            getattr(new_opt, slot)[key].numpy(),
            _centre(getattr(old_opt, slot)[key].numpy(), v.shape),
            rtol=1e-5, atol=1e-6, err_msg=f"{slot}/{key}")
  assert moved > 20
  np.testing.assert_allclose(new_update().numpy(), old_update().numpy(),
                             rtol=1e-5)
  assert int(new_opt.iterations.numpy()) == 2


@pytest.mark.slow
def test_matmul_fc_units_restore_conv_checkpoints_and_match_them(tmp_path):
  """rp's fc units as ``heads.PointwiseConv`` (matmuls with a hand-written
  backward pass) against the 1x1 ``Conv2D`` form they replaced: a checkpoint
  of the old network (trunk, head, optimizer slots) restores into the new one
  with every value consumed, and then loss, gradients and one update agree."""
  trunk = task_fixtures.TINY_TRUNK
  old_task = legacy.Conv1x1RelativePosition(TINY)
  new_task = rp.Task(TINY)
  dataset, _ = new_task.make_dataset(config.DataConfig(), 4, seed=1)
  images, labels = next(iter(dataset))
  nets, opts = {}, {}
  for key, task in (("old", old_task), ("new", new_task)):
    nets[key] = multitask.MultiTaskNetwork(trunk, {"rp": task})
    opts[key] = optimizers.SlimRMSProp(0.01, name="rmsprop_rp")
    opts[key].build(nets[key].task_variables("rp"))

  def objects(key):
    return dict(trunk=nets[key].trunk, heads=nets[key].heads,
                optimizers={"rp": opts[key]})

  @tf.function
  def old_update():
    grads = nets["old"].forward_backward("rp", images, labels)[0]
    opts["old"].apply_gradients(zip(grads, nets["old"].task_variables("rp")))
  old_update()  # non-trivial slots and moving statistics
  prefix = tf.train.Checkpoint(**objects("old")).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(**objects("new")).read(prefix).assert_consumed()
  head_layers = {type(layer).__name__
                 for layer in nets["new"].heads["rp"].layers}
  assert "PointwiseConv" in head_layers

  results = {}
  for key, net in nets.items():
    grads, _, loss, _ = net.forward_backward("rp", images, labels)
    results[key] = (loss.numpy(), [g.numpy() for g in grads])
  np.testing.assert_allclose(results["new"][0], results["old"][0], rtol=1e-6)
  variables = nets["new"].task_variables("rp")
  # Every bias but the logits' feeds a training-mode batch norm (through the
  # residual sums), so its exact gradient is zero and what is computed is
  # rounding noise: tolerances are relative to the largest gradient.
  scale = max(float(np.abs(g).max()) for g in results["old"][1])
  for v, got, want in zip(variables, results["new"][1], results["old"][1]):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=v.name)
  for key in nets:
    opts[key].apply_gradients(zip(
        [tf.constant(g) for g in results[key][1]],
        nets[key].task_variables("rp")))
  for old_v, new_v in zip(nets["old"].task_variables("rp"), variables):
    assert old_v.name == new_v.name and old_v.shape == new_v.shape
    np.testing.assert_allclose(new_v.numpy(), old_v.numpy(), rtol=1e-5,
                               atol=1e-6, err_msg=new_v.name)
