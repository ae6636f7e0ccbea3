r"""Computes the colour prior of a data set for colorization class rebalancing.

Zhang et al. (2016) §2.2 rebalance the colorization loss with the empirical
distribution of ab colours of the training set, smoothed with a Gaussian
(σ = 5). This tool reads images from any ``DataConfig`` source, counts the
nearest of the 313 ab bins of every colorization target (256x256 centre crop,
8x8 area-averaged ab, grayscale images left out; see
``tasks/colorization.empirical_prior``), smooths the counts and writes the
prior as a ``.npy`` float64 ``[313]`` (atomically) for
``colorization.Config(prior_path=...)``.

The shipped default ``mtssl_tf/data/assets/color_prior.npy`` was made with

  python -m tools.compute_color_prior --source=builtin --num_images=9 \
      --output=mtssl_tf/data/assets/color_prior.npy

i.e. from the nine built-in scikit-image photos (one epoch). For real
training, compute the prior of your own data, e.g.

  python -m tools.compute_color_prior --source=folder --path=/data/imagenet \
      --num_images=20000 --output=/data/imagenet_color_prior.npy
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import sys

from absl import app
from absl import flags
from absl import logging

from mtssl_tf import config as config_lib
from mtssl_tf.data import ab_bins
from mtssl_tf.tasks import colorization

_SOURCE = flags.DEFINE_enum(
    "source", "builtin", ["builtin", "folder", "tfrecord", "tfds"],
    "Where the images come from (config.DataConfig.source).")
_PATH = flags.DEFINE_string(
    "path", None, "Image folder ('folder') or TFRecord glob ('tfrecord').")
_TFDS_NAME = flags.DEFINE_string("tfds_name", None, "TFDS data set name.")
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "TFDS split.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None,
                                     "TFDS data directory.")
_TFDS_MANUAL_DIR = flags.DEFINE_string(
    "tfds_manual_dir", None, "Manually downloaded files of a TFDS data set.")
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", 10000,
    "Images to read (a source with fewer images is cycled).", lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 256, "Colorization input size the targets are made at.")
_OUTPUT = flags.DEFINE_string("output", None, "Output .npy path.",
                              required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  data = config_lib.DataConfig(
      source=_SOURCE.value, path=_PATH.value, tfds_name=_TFDS_NAME.value,
      tfds_split=_TFDS_SPLIT.value, tfds_data_dir=_TFDS_DATA_DIR.value,
      tfds_manual_dir=_TFDS_MANUAL_DIR.value)
  config = colorization.Config(image_size=_IMAGE_SIZE.value)
  try:
    prior, stats = colorization.empirical_prior(data, _NUM_IMAGES.value,
                                                config)
    ab_bins.save_prior(prior, _OUTPUT.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  message = (f"Wrote the colour prior of {stats['colour_images']} colour "
             f"images ({stats['images']} read, {stats['pixels']} target "
             f"pixels; skipped {stats['skipped']}) to {_OUTPUT.value}.")
  logging.info(message)
  print(message)
  return 0


if __name__ == "__main__":
  app.run(main)
