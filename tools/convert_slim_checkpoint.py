r"""Converts a TF-Slim resnet_v2 checkpoint into an mtssl_tf trunk checkpoint.

Example (the public TF-Slim ImageNet checkpoint of ResNet-v2-101):

  python -m tools.convert_slim_checkpoint \
      --input=/data/resnet_v2_101.ckpt --output=/data/trunk/resnet_v2_101

writes ``/data/trunk/resnet_v2_101.{index,data-*,json}``: a
``tf.train.Checkpoint(trunk=...)`` of the block-3 trunk (block 4 and logits are
ignored unless --include_block4) and a JSON sidecar with its configuration.
Load it with ``mtssl_tf.models.slim_conversion.restore_trunk``.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import sys

from absl import app
from absl import flags
from absl import logging

from mtssl_tf.models import slim_conversion

_INPUT = flags.DEFINE_string(
    "input", None, "TF-Slim checkpoint prefix (e.g. resnet_v2_101.ckpt).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Prefix of the trunk checkpoint to write.")
_DEPTH = flags.DEFINE_integer(
    "depth", None, "If set, fail unless the checkpoint has this depth "
    "(50, 101, 152, 200).")
_INCLUDE_BLOCK4 = flags.DEFINE_bool(
    "include_block4", False,
    "Also convert block 4 and postnorm (the paper's trunk ends after block 3).")

flags.mark_flags_as_required(["input", "output"])


def main(argv):
  del argv
  try:
    prefix, info, ignored = slim_conversion.convert(
        _INPUT.value, _OUTPUT.value, expected_depth=_DEPTH.value,
        include_block4=_INCLUDE_BLOCK4.value)
  except ValueError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Converted resnet_v2_{info.depth} (scope {info.scope!r}, units per "
        f"block {info.units_per_block}) -> {prefix}")
  if ignored:
    shown = ", ".join(ignored[:6]) + (" ..." if len(ignored) > 6 else "")
    print(f"Ignored {len(ignored)} checkpoint variables: {shown}")
  return 0


if __name__ == "__main__":
  app.run(main)
