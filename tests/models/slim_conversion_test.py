"""Reference equivalence: TF-Slim resnet_v2 checkpoint -> our trunk.

TF-Slim's resnet_v2 is built in graph mode with random weights (including
batch-norm moving statistics), saved, converted, and the block-3 outputs of
both networks are compared in inference mode at output strides 8 and 16 and
two input sizes.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.evaluation import pretrained
from mtssl_tf.models import resnet_v2
from mtssl_tf.models import slim_conversion
from tests import slim_reference

RELATIVE_TOLERANCE = 1e-4


def _relative_error(got, want):
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _images(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return {f"{h}x{w}": rng.uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
          for h, w in sizes}


def _check_equivalence(depth, sizes, tmp_path, include_block4,
                       evaluate=False):
  images = _images(sizes)
  slim_prefix = str(tmp_path / "slim" / f"resnet_v2_{depth}.ckpt")
  want, slim_params = slim_reference.build_and_save(
      depth, slim_prefix, images, output_strides=(8, 16))
  out_prefix = str(tmp_path / "converted" / "trunk")
  _, info, ignored = slim_conversion.convert(
      slim_prefix, out_prefix, expected_depth=depth,
      include_block4=include_block4)
  assert info.depth == depth and info.scope == f"resnet_v2_{depth}"
  assert os.path.exists(out_prefix + ".index")
  metadata = slim_conversion.read_metadata(out_prefix)
  assert metadata["trunk_config"]["depth"] == depth
  if not include_block4:
    assert any("/block4/" in name for name in ignored)
    assert any("/postnorm/" in name for name in ignored)

  errors = {}
  for output_stride in (8, 16):
    cfg = config.TrunkConfig(depth=depth, output_stride=output_stride,
                             include_block4=include_block4)
    trunk = resnet_v2.build_trunk(cfg)
    slim_conversion.restore_trunk(trunk, out_prefix)
    params = sum(int(np.prod(v.shape)) for v in trunk.trainable_weights
                 if not v.name.startswith(("block4", "postnorm")))
    assert params == slim_params
    for name, batch in images.items():
      got = trunk(batch, training=False)
      reference = want[(name, output_stride)]
      errors[(name, output_stride, "block3")] = _relative_error(
          got["block3"].numpy(), reference["block3"])
      if include_block4:
        errors[(name, output_stride, "postnorm")] = _relative_error(
            got["postnorm"].numpy(), reference["net"])
      assert got["block3"].shape == reference["block3"].shape
  if evaluate:
    # What python -m mtssl_tf.evaluate --slim_checkpoint=<out_prefix> reads
    # (the "ImageNet labels" row): the same block 3 as TF-Slim's.
    loaded = pretrained.load(pretrained.PretrainedSpec(
        "slim_checkpoint", out_prefix,
        trunk=config.TrunkConfig(depth=depth, output_stride=8)))
    for name, batch in images.items():
      errors[(name, 8, "evaluated block3")] = _relative_error(
          loaded.build_trunk()(batch, training=False)["block3"].numpy(),
          want[(name, 8)]["block3"])
  worst = max(errors.values())
  assert worst <= RELATIVE_TOLERANCE, errors
  return slim_params


@pytest.mark.slow
def test_tiny_depth_equivalence_with_block4(tmp_path):
  _check_equivalence(14, [(64, 64), (75, 93)], tmp_path, include_block4=True,
                     evaluate=True)


@pytest.mark.slow
def test_depth_101_equivalence_and_parameter_count(tmp_path):
  params = _check_equivalence(101, [(96, 96), (113, 81)], tmp_path,
                              include_block4=False)
  # Golden from SPEC.md (measured with tf_slim): 27.56 M to block 3.
  assert round(params / 1e6, 2) == 27.56


def _save_variables(prefix, variables):
  with tf.Graph().as_default() as graph:
    tf_vars = [tf.compat.v1.get_variable(n, initializer=v)
               for n, v in variables.items()]
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      tf.compat.v1.train.Saver(tf_vars).save(sess, prefix)


def test_rejects_a_checkpoint_that_is_not_resnet_v2(tmp_path):
  prefix = str(tmp_path / "other.ckpt")
  _save_variables(prefix, {"vgg_16/conv1/conv1_1/weights":
                           np.zeros((3, 3, 3, 4), np.float32)})
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="not a TF-Slim resnet_v2"):
    slim_conversion.convert(prefix, str(out / "trunk"))
  assert not out.exists()


def test_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
  junk = tmp_path / "junk.ckpt"
  junk.write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="not a readable TensorFlow checkpoint"):
    slim_conversion.convert(str(junk), str(tmp_path / "out" / "trunk"))


def test_rejects_wrong_depth_and_incomplete_checkpoints(tmp_path):
  images = _images([(32, 32)])
  prefix = str(tmp_path / "slim" / "resnet_v2_14.ckpt")
  slim_reference.build_and_save(14, prefix, images, output_strides=(8,))
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="resnet_v2_14.*not the requested "
                     "depth 101"):
    slim_conversion.convert(prefix, str(out / "trunk"), expected_depth=101)
  assert not out.exists() or not os.listdir(out)

  # A checkpoint whose block-3 unit lacks a variable: missing-variable error,
  # and nothing written.
  reader = tf.train.load_checkpoint(prefix)
  variables = {n: reader.get_tensor(n)
               for n in reader.get_variable_to_shape_map()
               if "block3/unit_1/bottleneck_v2/conv2/weights" not in n}
  broken = str(tmp_path / "broken" / "resnet_v2_14.ckpt")
  _save_variables(broken, variables)
  with pytest.raises(ValueError, match="1 missing variables"):
    slim_conversion.convert(broken, str(out / "trunk"))
  assert not out.exists() or not os.listdir(out)
