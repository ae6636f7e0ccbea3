r"""Image folder -> sharded TFRecords the image tasks read.

  python -m tools.make_tfrecords --input_dir=/data/imagenet/train \
      --output_dir=/data/records --labels=class_folders --num_shards=1024

then train with ``--image_source=tfrecord
--image_path='/data/records/train-*'``. Bad files are skipped and listed in
``manifest.json`` with the reason. See mtssl_tf/data/image_records.py.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import sys

from absl import app
from absl import flags

from mtssl_tf.data import image_records

_INPUT_DIR = flags.DEFINE_string("input_dir", None,
                                 "Folder of images (searched recursively).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where the shards and manifest.json go.")
_PREFIX = flags.DEFINE_string("prefix", "train", "Shard file name prefix.")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 0, "Number of shards (0: --images_per_shard per shard).")
_IMAGES_PER_SHARD = flags.DEFINE_integer(
    "images_per_shard", 1024, "Images per shard when --num_shards is 0.")
_LABELS = flags.DEFINE_enum(
    "labels", "none", list(image_records.LABEL_MODES),
    "none: label -1; class_folders: <root>/<class>/<image> (ImageNet layout), "
    "label = index of the class among sorted class names.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the shuffle.")
_WORKERS = flags.DEFINE_integer("workers", 2,
                                "Processes that check the images.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace existing shards with this prefix.")
flags.mark_flags_as_required(["input_dir", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cfg = image_records.RecordsConfig(
      input_dir=_INPUT_DIR.value, output_dir=_OUTPUT_DIR.value,
      prefix=_PREFIX.value, num_shards=_NUM_SHARDS.value,
      images_per_shard=_IMAGES_PER_SHARD.value, labels=_LABELS.value,
      seed=_SEED.value, workers=_WORKERS.value, overwrite=_OVERWRITE.value)
  try:
    manifest = image_records.make_records(cfg)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Wrote {manifest['images']} images in {len(manifest['shards'])} "
        f"shards to {cfg.output_dir}; skipped {len(manifest['skipped'])} "
        f"(see {image_records.MANIFEST}).")
  for item in manifest["skipped"][:10]:
    print(f"  skipped {item['file']}: {item['reason']}")
  return 0


if __name__ == "__main__":
  app.run(main)
