"""Image sources shared by the image tasks (rp, col, ex) and the evaluations.

``ImageSource(data_config).dataset(seed)`` yields decoded uint8 ``[H, W, 3]``
RGB images of any size, shuffled and repeated forever. Tasks crop, resize and
augment them. ``DataConfig.source`` selects where they come from:

  "builtin"   the colour photos shipped in scikit-image (``sample_data.py``),
              loaded once at start-up; no download.
  "folder"    every *.jpg/*.jpeg/*.png/*.bmp/*.gif/*.webp (any letter case)
              below ``path``, recursively. Other files are listed once as
              "unsupported_format" skips (so every file is used or listed).
  "tfrecord"  image records (``tfrecord_format.IMAGE_FEATURES``) in the files
              matching the glob ``path``.
  "tfds"      the TFDS data set ``tfds_name`` (split ``tfds_split``) in
              ``tfds_data_dir``; with ``tfds_manual_dir`` set, an unprepared
              data set is prepared from the manually downloaded files (e.g.
              ImageNet). Its first ``tfds.features.Image`` feature is used.
              Its TFRecord shards are read like "tfrecord" ones
              (``skipping.read_tfds``), so damaged shards are skipped too.

Bad inputs never stop training; they are dropped and counted per distinct
file in ``ImageSource.skipped`` (a ``skipping.SkipCounter``; the training
loop writes the list to ``skipped_inputs.json`` in the model dir), with the
reasons ``IMAGE_SKIP_REASONS``: corrupt or truncated files ("undecodable"),
records without an ``image/encoded`` bytes feature ("bad_record"), images
with no pixels ("empty"), images over ``decode.MAX_PIXELS`` ("too_large") or
``decode.MAX_ASPECT`` ("degenerate_aspect"), TFRecord shards with an
unreadable tail ("bad_shard": their readable records are used), and folder
files of other formats ("unsupported_format"). Grayscale, RGBA, CMYK, 16-bit
and animated images are converted (see ``decode.py``). A source that is
unusable as a whole fails at construction with a ValueError naming the path:
a missing path, no candidate files, or none of the first
``PROBE_CANDIDATES`` candidates decodes.

Shuffling happens before decoding (file names, or encoded records in a buffer
of ``shuffle_buffer``) so that the buffer holds small encoded bytes, not
decoded images. The whole per-example path is TF graph ops with AUTOTUNE
parallelism. With a seed the order is deterministic (shards read in a fixed
interleave, parallel steps emit in input order), so a checkpointed iterator
(``tf.train.Checkpoint(data=iterator)``, as the training loop saves) resumes
on exactly the examples an uninterrupted run sees; ``seed=None`` lets tf.data
emit whichever element is ready first.

Evaluation loaders: ``ImageSource.named_dataset(training=False)`` reads
every input once, in a fixed order (files sorted; records in shard order),
as ``(name, image)`` pairs, with the same skipping. Loaders that need other
record fields use the two building blocks directly:
``skipping.read_tfrecords(files, counter)`` (``(name, record)`` of every
readable record, bad shards counted) and ``decode.decode_images(named,
counter)`` (bounded decoding with skip counting).
"""

import collections
import glob
import os
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import decode
from mtssl_tf.data import sample_data
from mtssl_tf.data import skipping
from mtssl_tf.data import tfrecord_format

AUTOTUNE = tf.data.AUTOTUNE
SOURCES = ("builtin", "folder", "tfrecord", "tfds")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
IMAGE_SKIP_REASONS = ("bad_record", "bad_shard", "unsupported_format"
                      ) + decode.DECODE_SKIP_REASONS
# How many candidate files/records the start-up check tries before declaring a
# source unusable.
PROBE_CANDIDATES = 64
# Re-exported: the counter and the shard reader are shared by all pipelines.
SkipCounter = skipping.SkipCounter
read_tfrecords_skipping = skipping.read_tfrecords


def find_images(folder: str):
  """``(image paths, other paths)`` below ``folder``, both sorted."""
  paths, others = [], []
  for root, _, files in os.walk(folder, followlinks=True):
    for name in files:
      path = os.path.join(root, name)
      (paths if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(
          path)
  return sorted(paths), sorted(others)


def _unsupported_summary(others):
  by_extension = collections.Counter(
      os.path.splitext(p)[1].lower() or "(none)" for p in others)
  return ", ".join(f"{n} {e}" for e, n in by_extension.most_common())


def _lenient_image_record(serialized):
  """Parses an image record; a missing ``image/encoded`` gives b""."""
  features = {tfrecord_format.IMAGE_ENCODED: tf.io.FixedLenFeature(
      [], tf.string, default_value="")}
  parsed = tf.io.parse_single_example(serialized, features)
  return parsed[tfrecord_format.IMAGE_ENCODED]


def _tfds_image_key(builder):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for key, feature in builder.info.features.items():
    if isinstance(feature, tfds.features.Image):
      return key
  raise ValueError(
      f"TFDS data set {builder.name!r} has no image feature (features: "
      f"{list(builder.info.features)}); use an image data set.")


class ImageSource:
  """Decoded RGB images from one ``DataConfig`` (see module docstring).

  Args:
    data: where the images come from.
    shuffle_buffer: encoded records held for shuffling ("tfrecord", "tfds").
    max_pixels, max_aspect: larger or more elongated images are skipped
      ("too_large", "degenerate_aspect"; see ``decode.py``).
    skipped: the ``skipped`` counter of an earlier ``ImageSource`` of the
      same ``data``, to count into instead of a new one (None: a new one).
      That source was checked and counted the folder's other files, so this
      one does neither: it creates no variables and runs nothing at
      construction, so it can be built inside a ``tf.function`` (a
      parameter-server worker's dataset function, where the counter lives
      on the chief and every worker counts into it).

  Attributes:
    skipped: the ``SkipCounter`` of this source's dropped inputs
      (reasons ``IMAGE_SKIP_REASONS``).

  Raises:
    ValueError: unknown source, missing path / TFDS name, no candidate files,
      or a source none of whose first candidates is usable.
  """

  def __init__(self, data: config_lib.DataConfig, shuffle_buffer: int = 1024,
               max_pixels: int = decode.MAX_PIXELS,
               max_aspect: float = decode.MAX_ASPECT,
               skipped: Optional[skipping.SkipCounter] = None):
    if data.source not in SOURCES:
      raise ValueError(
          f"Unknown data source {data.source!r}; accepted sources are "
          f"{list(SOURCES)}.")
    self.data = data
    self.shuffle_buffer = shuffle_buffer
    self.max_pixels = max_pixels
    self.max_aspect = max_aspect
    self._checked = skipped is not None
    self.skipped = skipped or SkipCounter(IMAGE_SKIP_REASONS)
    self._photos = None
    self._files = None
    self._tfds_builder = None
    getattr(self, f"_init_{data.source}")()
    if data.source != "builtin" and not self._checked:
      self._check_usable()

  # ---- start-up validation --------------------------------------------------

  def _init_builtin(self):
    self._photos = [image for _, image in sample_data.load_photos()]

  def _require_path(self):
    if not self.data.path:
      raise ValueError(
          f"DataConfig(source={self.data.source!r}) needs a path: a folder of "
          f"images for 'folder', a file glob for 'tfrecord'.")
    return self.data.path

  def _init_folder(self):
    path = self._require_path()
    if not os.path.isdir(path):
      raise ValueError(
          f"Image folder {path!r} does not exist or is not a directory.")
    self._files, others = find_images(path)
    if not self._files:
      raise ValueError(
          f"Image folder {path!r} contains no image files (searched "
          f"recursively for extensions {list(IMAGE_EXTENSIONS)}, any case).")
    if self._checked:
      return  # the first source of this counter counted and logged them
    for other in others:
      self.skipped.count(
          "unsupported_format", 1, other,
          f"not one of the image extensions {', '.join(IMAGE_EXTENSIONS)}")
    if others:
      logging.warning(
          "Image folder %r: %d image files; %d other files are not used "
          "(%s), listed as unsupported_format skips.", path,
          len(self._files), len(others), _unsupported_summary(others))

  def _init_tfrecord(self):
    path = self._require_path()
    self._files = sorted(f for f in glob.glob(path) if os.path.isfile(f))
    if not self._files:
      raise ValueError(
          f"TFRecord glob {path!r} matches no files; give a glob such as "
          f"'/data/train-*.tfrecord' (tools/make_tfrecords.py writes them).")

  def _init_tfds(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    data = self.data
    if not data.tfds_name:
      raise ValueError("DataConfig(source='tfds') needs tfds_name, e.g. "
                       "'imagenet2012'.")
    where = data.tfds_data_dir or "TFDS's default data_dir"
    try:
      builder = tfds.builder(data.tfds_name, data_dir=data.tfds_data_dir)
    except Exception as e:  # TFDS raises several types for unknown names.
      raise ValueError(
          f"Cannot load TFDS data set {data.tfds_name!r} from {where}: "
          f"{e}") from e
    if not builder.is_prepared():
      if not data.tfds_manual_dir:
        raise ValueError(
            f"TFDS data set {data.tfds_name!r} is not prepared in {where}. "
            f"Prepare it first (`tfds build {data.tfds_name} --data_dir=...`) "
            f"or set tfds_manual_dir to its manually downloaded files.")
      if not os.path.isdir(data.tfds_manual_dir):
        raise ValueError(
            f"tfds_manual_dir {data.tfds_manual_dir!r} does not exist.")
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=data.tfds_manual_dir))
    if data.tfds_split not in builder.info.splits:
      raise ValueError(
          f"TFDS data set {data.tfds_name!r} in {where} has no split "
          f"{data.tfds_split!r}; it has {list(builder.info.splits)}.")
    self._tfds_image_key = _tfds_image_key(builder)
    self._tfds_builder = builder

  def _describe(self):
    if self.data.source == "tfds":
      return (f"TFDS data set {self.data.tfds_name!r} "
              f"(data_dir {self.data.tfds_data_dir!r})")
    return f"{self.data.source} source {self.data.path!r}"

  def _check_usable(self):
    """Raises unless one of the first PROBE_CANDIDATES inputs decodes."""
    probe = SkipCounter(IMAGE_SKIP_REASONS)
    encoded = self._encoded(probe, seed=None, training=False)
    images = self._decoded(encoded.take(PROBE_CANDIDATES), probe, True)
    for _ in images.take(1):
      return
    raise ValueError(
        f"The {self._describe()} is unusable: none of its first "
        f"{PROBE_CANDIDATES} inputs is a usable image (skipped: "
        f"{_nonzero(probe.as_dict())}; e.g. {probe.items()[:3]}). Supported: "
        f"JPEG, PNG, BMP, GIF, WebP up to {decode.MAX_PIXELS} pixels and "
        f"aspect ratio {decode.MAX_ASPECT:g}"
        + (f" in records with a bytes feature "
           f"{tfrecord_format.IMAGE_ENCODED!r}."
           if self.data.source == "tfrecord" else "."))

  # ---- the pipeline ---------------------------------------------------------

  def _encoded(self, counter, seed, training):
    """``(name, encoded image bytes)`` (file paths for "folder"); shuffled and
    repeated when ``training``, else one pass in a fixed order. The order is
    deterministic unless training without a seed."""
    source = self.data.source
    deterministic = _deterministic(seed, training)
    if source == "folder":
      files = tf.data.Dataset.from_tensor_slices(self._files)
      if training:
        files = files.shuffle(len(self._files), seed=seed,
                              reshuffle_each_iteration=True).repeat()
      # File names: _decoded reads them inside the skip guard.
      return files.map(lambda path: (path, path))
    if source == "tfrecord":
      records = skipping.read_tfrecords(
          self._files, counter, shuffle_seed=seed, repeat=training,
          deterministic=deterministic)
      if training:
        records = records.shuffle(self.shuffle_buffer, seed=seed)
      encoded = decode.map_or_skip(
          records, lambda name, record: (name, _lenient_image_record(record)),
          counter, "bad_record", deterministic=deterministic,
          name_fn=lambda name, record: name)
      return encoded.filter(lambda name, e: counter.keep(
          tf.strings.length(e) > 0, "bad_record", name,
          f"no {tfrecord_format.IMAGE_ENCODED!r} bytes feature"))
    if source == "tfds":
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      key = self._tfds_image_key
      # Its TFRecord shards read as those of "tfrecord" (damage tolerated).
      examples = skipping.read_tfds(
          self._tfds_builder, self.data.tfds_split, counter,
          decoders={key: tfds.decode.SkipDecoding()}, shuffle_seed=seed,
          repeat=training, deterministic=deterministic)
      encoded = examples.map(lambda name, ex: (name, ex[key]))
      if training:
        encoded = encoded.shuffle(self.shuffle_buffer, seed=seed)
      return encoded
    raise ValueError(f"Source {source!r} has no encoded form.")

  def _decoded(self, encoded, counter, deterministic=False):
    return decode.decode_images(
        encoded, counter, read_files=self.data.source == "folder",
        max_pixels=self.max_pixels, max_aspect=self.max_aspect,
        deterministic=deterministic)

  def _builtin_dataset(self, seed):
    flat = tf.RaggedTensor.from_row_lengths(
        np.concatenate([p.reshape(-1) for p in self._photos]),
        [p.size for p in self._photos])
    shapes = tf.constant([p.shape for p in self._photos], tf.int32)
    photos = tf.data.Dataset.from_tensor_slices((flat, shapes))
    photos = photos.shuffle(len(self._photos), seed=seed,
                            reshuffle_each_iteration=True).repeat()
    return photos.map(lambda pixels, shape: tf.reshape(pixels, shape),
                      num_parallel_calls=AUTOTUNE)

  def dataset(self, seed: Optional[int] = None) -> tf.data.Dataset:
    """Decoded uint8 ``[H, W, 3]`` RGB images, shuffled, repeated forever."""
    if self.data.source == "builtin":
      return self._builtin_dataset(seed)
    return self.named_dataset(seed).map(lambda name, image: image)

  def named_dataset(self, seed: Optional[int] = None,
                    training: bool = True) -> tf.data.Dataset:
    """``(name, uint8 [H, W, 3])``: the input's name (file path,
    ``shard#record`` or TFDS id) and its image.

    ``training``: shuffled and repeated forever; else every input once in a
    fixed order (evaluation). Skips are counted in ``self.skipped``. The
    order is deterministic unless ``training`` with ``seed=None``.
    """
    if self.data.source == "builtin":
      raise ValueError("The builtin source has no named inputs; use "
                       "dataset().")
    encoded = self._encoded(self.skipped, seed, training=training)
    return self._decoded(encoded, self.skipped,
                         deterministic=_deterministic(seed, training))


def _deterministic(seed, training):
  """Whether the pipeline keeps a fixed order: always for one evaluation
  pass; in training given a seed (exact resume from an iterator
  checkpoint)."""
  return not training or seed is not None


def _nonzero(counts):
  return {k: v for k, v in counts.items() if v}
