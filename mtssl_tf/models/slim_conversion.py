"""Converts TF-Slim ``resnet_v2_{50,101,152,200}`` checkpoints to our trunk.

The paper's trunk is TF-Slim's ResNet-v2 (paper §3.1), and the public ImageNet
checkpoints of TF-Slim use its variable layout::

  resnet_v2_101/conv1/{weights,biases}
  resnet_v2_101/block3/unit_7/bottleneck_v2/preact/{gamma,beta,moving_mean,moving_variance}
  resnet_v2_101/block3/unit_7/bottleneck_v2/shortcut/{weights,biases}   (first unit of a block)
  resnet_v2_101/block3/unit_7/bottleneck_v2/conv{1,2}/weights
  resnet_v2_101/block3/unit_7/bottleneck_v2/conv{1,2}/BatchNorm/{gamma,beta,moving_mean,moving_variance}
  resnet_v2_101/block3/unit_7/bottleneck_v2/conv3/{weights,biases}
  resnet_v2_101/postnorm/{gamma,beta,moving_mean,moving_variance}
  resnet_v2_101/logits/{weights,biases}

Our layers carry the same names without the model scope (see resnet_v2.py), so
a Keras variable ``block3/unit_7/bottleneck_v2/conv1/kernel:0`` reads
``<scope>/block3/unit_7/bottleneck_v2/conv1/weights``.

The output is a ``tf.train.Checkpoint(trunk=model)`` checkpoint plus a JSON
sidecar with the trunk configuration; ``restore_trunk`` loads it. Everything is
validated before anything is written, and files are written under temporary
names and renamed at the end, so a failed conversion leaves no partial output.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.models import resnet_v2

CHECKPOINT_KEY = "trunk"
_PROBE = re.compile(r"^(?:(.*)/)?block1/unit_1/bottleneck_v2/conv1/weights$")
_UNIT = re.compile(r"/block(\d)/unit_(\d+)/bottleneck_v2/")
_KERAS_TO_SLIM = {"kernel": "weights", "bias": "biases", "gamma": "gamma",
                  "beta": "beta", "moving_mean": "moving_mean",
                  "moving_variance": "moving_variance"}


@dataclasses.dataclass(frozen=True)
class SlimCheckpointInfo:
  """What a TF-Slim resnet_v2 checkpoint holds."""
  scope: str
  depth: int
  base_width: int
  has_block4: bool
  units_per_block: Tuple[int, ...]


def _load_reader(path: str):
  try:
    return tf.train.load_checkpoint(path)
  except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
    raise ValueError(
        f"{path!r} is not a readable TensorFlow checkpoint (give the prefix, "
        f"e.g. .../resnet_v2_101.ckpt): {e}") from None


def inspect_checkpoint(path: str) -> SlimCheckpointInfo:
  """Identifies the resnet_v2 variant stored in a TF-Slim checkpoint.

  Raises:
    ValueError: the file is not a checkpoint, not a TF-Slim resnet_v2, or its
      block layout matches no depth of ``resnet_v2.RESNET_SPECS``.
  """
  shapes = _load_reader(path).get_variable_to_shape_map()
  scopes = [m.group(1) or "" for m in map(_PROBE.match, shapes) if m]
  if len(scopes) != 1:
    found = "several networks" if scopes else "no resnet_v2 variables"
    raise ValueError(
        f"{path!r} is not a TF-Slim resnet_v2 checkpoint ({found}): expected "
        f"exactly one '<scope>/block1/unit_1/bottleneck_v2/conv1/weights' "
        f"variable, as in resnet_v2_{{50,101,152,200}}.ckpt.")
  scope = scopes[0]
  units = {}
  for name in shapes:
    m = _UNIT.search("/" + name)
    if m and name.startswith(scope):
      block, unit = int(m.group(1)), int(m.group(2))
      units[block] = max(units.get(block, 0), unit)
  per_block = tuple(units.get(b, 0) for b in (1, 2, 3, 4))
  depth = next((d for d, spec in resnet_v2.RESNET_SPECS.items()
                if spec[:3] == per_block[:3]), None)
  if depth is None:
    raise ValueError(
        f"{path!r} has {per_block[:3]} units in blocks 1-3, which matches no "
        f"ResNet-v2 depth; accepted depths (units per block) are "
        f"{ {d: s[:3] for d, s in resnet_v2.RESNET_SPECS.items()} }.")
  prefix = scope + "/" if scope else ""
  bottleneck = shapes[prefix + "block1/unit_1/bottleneck_v2/conv1/weights"]
  return SlimCheckpointInfo(
      scope=scope, depth=depth, base_width=int(bottleneck[-1]),
      has_block4=per_block[3] == resnet_v2.RESNET_SPECS[depth][3],
      units_per_block=per_block)


def slim_name(keras_variable_name: str, scope: str) -> str:
  """Maps ``block1/unit_1/bottleneck_v2/conv1/kernel:0`` to the Slim name."""
  layer, _, leaf = keras_variable_name.rpartition("/")
  leaf = leaf.split(":")[0]
  if leaf not in _KERAS_TO_SLIM:
    raise ValueError(f"Unexpected trunk variable {keras_variable_name!r}.")
  prefix = scope + "/" if scope else ""
  return f"{prefix}{layer}/{_KERAS_TO_SLIM[leaf]}"


def named_weights(trunk) -> List[Tuple[str, tf.Variable]]:
  """``(layer_name/leaf, variable)`` for every trunk variable.

  Built from layer names rather than ``variable.name``, which may carry an
  outer name scope (e.g. when built under a distribution strategy).
  """
  return [(f"{layer.name}/{v.name.split('/')[-1]}", v)
          for layer in trunk.layers for v in layer.weights]


def _load_weights(path: str, trunk, scope: str) -> List[str]:
  """Assigns every trunk variable from the checkpoint; returns unused names."""
  reader = _load_reader(path)
  shapes = reader.get_variable_to_shape_map()
  values: Dict[int, np.ndarray] = {}
  missing, mismatched = [], []
  weights = named_weights(trunk)
  for i, (keras_name, variable) in enumerate(weights):
    name = slim_name(keras_name, scope)
    if name not in shapes:
      missing.append(name)
    elif tuple(shapes[name]) != tuple(variable.shape):
      mismatched.append(f"{name}: checkpoint {shapes[name]}, trunk "
                        f"{variable.shape.as_list()}")
    else:
      values[i] = reader.get_tensor(name)
  if missing or mismatched:
    raise ValueError(
        f"{path!r} does not fit a resnet_v2 trunk: "
        f"{len(missing)} missing variables {missing[:5]}, "
        f"{len(mismatched)} with other shapes {mismatched[:5]}.")
  for i, (_, variable) in enumerate(weights):
    variable.assign(values[i])
  used = {slim_name(keras_name, scope) for keras_name, _ in weights}
  return sorted(set(shapes) - used)


def _atomic_write_checkpoint(trunk, output_prefix: str, metadata: dict) -> str:
  """Writes checkpoint + sidecar under temporary names, then renames."""
  out_dir = os.path.dirname(os.path.abspath(output_prefix))
  try:
    os.makedirs(out_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".convert_tmp_", dir=out_dir)
  except OSError as e:
    raise ValueError(f"Cannot write to {out_dir!r}: {e}") from None
  try:
    tmp_prefix = os.path.join(tmp_dir, "ckpt")
    tf.train.Checkpoint(**{CHECKPOINT_KEY: trunk}).write(tmp_prefix)
    with open(tmp_prefix + ".json", "w", encoding="utf-8") as f:
      json.dump(metadata, f, indent=2)
    produced = sorted(os.listdir(tmp_dir))
    # The .index file makes a checkpoint visible to readers: move it last.
    produced.sort(key=lambda name: name.endswith(".index"))
    base = os.path.basename(output_prefix)
    for name in produced:
      os.replace(os.path.join(tmp_dir, name),
                 os.path.join(out_dir, base + name[len("ckpt"):]))
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  return output_prefix


def convert(input_path: str, output_prefix: str,
            expected_depth: Optional[int] = None,
            include_block4: bool = False) -> Tuple[str, SlimCheckpointInfo,
                                                   List[str]]:
  """Converts a TF-Slim resnet_v2 checkpoint into a trunk checkpoint.

  Args:
    input_path: TF-Slim checkpoint prefix (e.g. ``resnet_v2_101.ckpt``).
    output_prefix: prefix of the checkpoint to write.
    expected_depth: if given, the checkpoint must be of this depth.
    include_block4: also convert block 4 and postnorm (the paper's trunk stops
      after block 3; detection may want block 4).

  Returns:
    ``(output_prefix, info, ignored)``: the written prefix, what the input
    held, and the names of the input variables that were not converted
    (block 4, logits, optimizer slots, global_step, ...).

  Raises:
    ValueError: unreadable input, not a resnet_v2, wrong depth, block 4
      requested but absent, or unwritable output. Nothing is written then.
  """
  info = inspect_checkpoint(input_path)
  if expected_depth is not None and info.depth != expected_depth:
    raise ValueError(
        f"{input_path!r} is a resnet_v2_{info.depth} (units per block "
        f"{info.units_per_block}), not the requested depth {expected_depth}.")
  if include_block4 and not info.has_block4:
    raise ValueError(
        f"{input_path!r} has no complete block 4 (units per block "
        f"{info.units_per_block}); convert without include_block4.")
  cfg = config_lib.TrunkConfig(depth=info.depth, base_width=info.base_width,
                               include_block4=include_block4)
  trunk = resnet_v2.build_trunk(cfg)
  ignored = _load_weights(input_path, trunk, info.scope)
  metadata = {"trunk_config": dataclasses.asdict(cfg),
              "source": os.path.abspath(input_path),
              "source_scope": info.scope,
              "ignored_variables": len(ignored)}
  _atomic_write_checkpoint(trunk, output_prefix, metadata)
  return output_prefix, info, ignored


def read_metadata(prefix: str) -> dict:
  """Reads the JSON sidecar written next to a converted checkpoint."""
  with open(prefix + ".json", encoding="utf-8") as f:
    return json.load(f)


def restore_trunk(trunk, prefix: str) -> None:
  """Loads a converted checkpoint into ``trunk`` (every trunk variable)."""
  status = tf.train.Checkpoint(**{CHECKPOINT_KEY: trunk}).read(prefix)
  status.assert_existing_objects_matched()
