r"""PASCAL VOC 2007 -> TFRecords in Model Garden's detection layout.

  python -m tools.make_voc_tfrecords --voc_dir=/data/VOCdevkit \
      --output_dir=/data/voc07 --split=trainval
  python -m tools.make_voc_tfrecords --voc_dir=/data/VOCdevkit \
      --output_dir=/data/voc07 --split=test

or ``--tfds_data_dir=~/tensorflow_datasets`` instead of ``--voc_dir`` where
TFDS ``voc/2007`` is prepared. Bad files are skipped and listed in
``manifest-<split>.json`` with the reason. Layout: mtssl_tf/data/voc_records.py.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import sys

from absl import app
from absl import flags

from mtssl_tf.data import voc
from mtssl_tf.data import voc_records

_VOC_DIR = flags.DEFINE_string(
    "voc_dir", "", "VOCdevkit root (holding VOC2007/) or its VOC2007 folder.")
_TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", "", "TFDS data dir with a prepared voc/2007 (instead of "
    "--voc_dir).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where the shards and manifest go.")
_SPLIT = flags.DEFINE_enum("split", "trainval", list(voc.SPLITS),
                           "Image set to convert.")
_IMAGES_PER_SHARD = flags.DEFINE_integer("images_per_shard", 512,
                                         "Records per shard.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace existing shards of this split.")
flags.mark_flags_as_required(["output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cfg = voc_records.VocRecordsConfig(
      output_dir=_OUTPUT_DIR.value, split=_SPLIT.value, voc_dir=_VOC_DIR.value,
      tfds_data_dir=_TFDS_DATA_DIR.value,
      images_per_shard=_IMAGES_PER_SHARD.value, overwrite=_OVERWRITE.value)
  try:
    manifest = voc_records.make_records(cfg)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Wrote {manifest['images']} {cfg.split} images in "
        f"{len(manifest['shards'])} shards to {cfg.output_dir}; skipped "
        f"{len(manifest['skipped'])} (see "
        f"{voc_records.manifest_name(cfg.split)}).")
  for item in manifest["skipped"][:20]:
    print(f"  skipped {item['file']}: {item['reason']}")
  return 0


if __name__ == "__main__":
  app.run(main)
