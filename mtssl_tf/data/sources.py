"""Image sources shared by the image tasks (rp, col, ex), and skip counting.

``ImageSource(data_config).dataset(seed)`` yields decoded uint8 ``[H, W, 3]``
RGB images of any size, shuffled and repeated forever. Tasks crop, resize and
augment them. ``DataConfig.source`` selects where they come from:

  "builtin"   the colour photos shipped in scikit-image (``sample_data.py``),
              loaded once at start-up; no download.
  "folder"    every *.jpg/*.jpeg/*.png/*.bmp/*.gif (any letter case) below
              ``path``, recursively.
  "tfrecord"  image records (``tfrecord_format.IMAGE_FEATURES``) in the files
              matching the glob ``path``.
  "tfds"      the TFDS data set ``tfds_name`` (split ``tfds_split``) in
              ``tfds_data_dir``; with ``tfds_manual_dir`` set, an unprepared
              data set is prepared from the manually downloaded files (e.g.
              ImageNet). Its first ``tfds.features.Image`` feature is used.

Bad inputs never stop training: corrupt or truncated files ("undecodable"),
records without an ``image/encoded`` bytes feature ("bad_record") and images
with no pixels ("empty") are dropped and counted in ``ImageSource.skipped``.
Grayscale, RGBA, CMYK, 16-bit and animated images are converted (see
``decode.py``). A source that is unusable as a whole fails at construction
with a ValueError naming the path: a missing path, no candidate files, or none
of the first ``PROBE_CANDIDATES`` candidates decodes.

Shuffling happens before decoding (file names, or encoded records in a buffer
of ``shuffle_buffer``) so that the buffer holds small encoded bytes, not
decoded images. The whole per-example path is TF graph ops with AUTOTUNE
parallelism.

``SkipCounter`` is a set of int64 ``tf.Variable`` counters, one per reason,
incremented from inside tf.data functions and readable from Python at any
time. Other pipelines (e.g. motion segmentation) make their own with their own
reasons and use ``decode.map_or_skip`` / ``SkipCounter.keep``. Create it (and
the datasets using it) outside any tf.distribute strategy scope.
"""

import glob
import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import decode
from mtssl_tf.data import sample_data
from mtssl_tf.data import tfrecord_format

AUTOTUNE = tf.data.AUTOTUNE
SOURCES = ("builtin", "folder", "tfrecord", "tfds")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
IMAGE_SKIP_REASONS = ("undecodable", "bad_record", "empty")
# How many candidate files/records the start-up check tries before declaring a
# source unusable.
PROBE_CANDIDATES = 64


class SkipCounter:
  """Counts skipped inputs by reason; readable from Python during training.

  Args:
    reasons: the reasons this counter accepts (e.g. ``IMAGE_SKIP_REASONS``).

  Graph side (inside ``Dataset.map``/``filter`` functions, or eagerly):
    ``count(reason, n=1)`` adds n; ``keep(ok, reason)`` counts one skip when
    the scalar bool ``ok`` is False and returns ``ok`` (a ``filter``
    predicate).
  Python side: ``as_dict()`` -> ``{reason: int}``, ``total()`` -> int.
  """

  def __init__(self, reasons: Sequence[str] = IMAGE_SKIP_REASONS):
    if not reasons or len(set(reasons)) != len(reasons):
      raise ValueError(
          f"SkipCounter needs a non-empty list of distinct reasons, got "
          f"{list(reasons)!r}.")
    self._reasons = tuple(reasons)
    with tf.init_scope(), tf.device("/cpu:0"):
      self._counts = {
          reason: tf.Variable(0, dtype=tf.int64, trainable=False,
                              name=f"skipped_{reason}")
          for reason in self._reasons}

  @property
  def reasons(self):
    return self._reasons

  def check_reason(self, reason: str) -> None:
    if reason not in self._counts:
      raise ValueError(
          f"Unknown skip reason {reason!r}; this counter accepts "
          f"{list(self._reasons)}.")

  def count(self, reason: str, n=1):
    """Adds ``n`` (int or scalar tensor) skips of ``reason``; returns the op."""
    self.check_reason(reason)
    return self._counts[reason].assign_add(tf.cast(n, tf.int64))

  def keep(self, ok, reason: str):
    """Counts one ``reason`` skip if ``ok`` is False; returns ``ok``."""
    ok = tf.convert_to_tensor(ok, tf.bool)
    update = self.count(reason, tf.cast(tf.logical_not(ok), tf.int64))
    with tf.control_dependencies([update]):
      return tf.identity(ok)

  def as_dict(self) -> Dict[str, int]:
    return {reason: int(v.numpy()) for reason, v in self._counts.items()}

  def total(self) -> int:
    return sum(self.as_dict().values())

  def __repr__(self):
    return f"SkipCounter({self.as_dict()})"


def _find_images(folder: str):
  paths = []
  for root, _, files in os.walk(folder, followlinks=True):
    for name in files:
      if name.lower().endswith(IMAGE_EXTENSIONS):
        paths.append(os.path.join(root, name))
  return sorted(paths)


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

  Attributes:
    skipped: the ``SkipCounter`` of this source's dropped inputs
      (reasons ``IMAGE_SKIP_REASONS``).

  Raises:
    ValueError: unknown source, missing path / TFDS name, no candidate files,
      or a source none of whose first candidates is usable.
  """

  def __init__(self, data: config_lib.DataConfig, shuffle_buffer: int = 1024):
    if data.source not in SOURCES:
      raise ValueError(
          f"Unknown data source {data.source!r}; accepted sources are "
          f"{list(SOURCES)}.")
    self.data = data
    self.shuffle_buffer = shuffle_buffer
    self.skipped = SkipCounter(IMAGE_SKIP_REASONS)
    self._photos = None
    self._files = None
    self._tfds_builder = None
    getattr(self, f"_init_{data.source}")()
    if data.source != "builtin":
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
    self._files = _find_images(path)
    if not self._files:
      raise ValueError(
          f"Image folder {path!r} contains no image files (searched "
          f"recursively for extensions {list(IMAGE_EXTENSIONS)}, any case).")

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
    images = self._decoded(encoded.take(PROBE_CANDIDATES), probe)
    for _ in images.take(1):
      return
    raise ValueError(
        f"The {self._describe()} is unusable: none of its first "
        f"{PROBE_CANDIDATES} inputs is a decodable image (skipped: "
        f"{probe.as_dict()}). Supported: JPEG, PNG, BMP, GIF"
        + (f" in records with a bytes feature "
           f"{tfrecord_format.IMAGE_ENCODED!r}."
           if self.data.source == "tfrecord" else "."))

  # ---- the pipeline ---------------------------------------------------------

  def _encoded(self, counter, seed, training):
    """Encoded image bytes (file names for "folder"); shuffled and repeated
    when ``training``."""
    source = self.data.source
    if source == "folder":
      files = tf.data.Dataset.from_tensor_slices(self._files)
      if training:
        files = files.shuffle(len(self._files), seed=seed,
                              reshuffle_each_iteration=True).repeat()
      return files  # file names: _decoded reads them inside the skip guard.
    if source == "tfrecord":
      files = tf.data.Dataset.from_tensor_slices(self._files)
      if training:
        files = files.shuffle(len(self._files), seed=seed,
                              reshuffle_each_iteration=True).repeat()
      records = files.interleave(
          tf.data.TFRecordDataset, cycle_length=min(len(self._files), 8),
          num_parallel_calls=AUTOTUNE, deterministic=not training)
      if training:
        records = records.shuffle(self.shuffle_buffer, seed=seed)
      encoded = decode.map_or_skip(records, _lenient_image_record, counter,
                                   "bad_record")
      return encoded.filter(
          lambda e: counter.keep(tf.strings.length(e) > 0, "bad_record"))
    if source == "tfds":
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      key = self._tfds_image_key
      examples = self._tfds_builder.as_dataset(
          split=self.data.tfds_split, shuffle_files=training,
          decoders={key: tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(shuffle_seed=seed))
      encoded = examples.map(lambda ex: ex[key])
      if training:
        encoded = encoded.repeat().shuffle(self.shuffle_buffer, seed=seed)
      return encoded
    raise ValueError(f"Source {source!r} has no encoded form.")

  def _decoded(self, encoded, counter):
    decode_fn = decode.decode_rgb
    if self.data.source == "folder":
      decode_fn = lambda path: decode.decode_rgb(tf.io.read_file(path))
    images = decode.map_or_skip(encoded, decode_fn, counter, "undecodable")
    return images.filter(
        lambda image: counter.keep(tf.size(image) > 0, "empty"))

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
    encoded = self._encoded(self.skipped, seed, training=True)
    return self._decoded(encoded, self.skipped)
