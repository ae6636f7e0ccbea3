"""Labelled image sets for the classification evaluations (ImageNet and kin).

``LabelledImages(config, split)`` yields ``(uint8 [H, W, 3] image, int32
label)`` pairs of one split ("train" or "val"), with the class list, example
count and a ``SkipCounter`` of dropped files. ``LabelledDataConfig.source``:

  "folder"    ImageNet's on-disk layout: ``<train_path>/<class>/*.JPEG`` (one
              folder per class, e.g. ``n01440764``; classes are the sorted
              folder names). The validation split is either class folders in
              the same layout (``val_path``), or a flat folder of images with
              ``val_labels``, a text file of ``<file name> <class>`` lines
              (class = a folder name of the train split or its index) or
              Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``
              whose first token is the class).
  "tfrecord"  records of ``tools/make_tfrecords.py`` written from class folders
              (``image/class/label`` >= 0), globs ``train_path`` /
              ``val_path``; classes are label indices.
  "tfds"      a prepared TFDS data set with an image and a class-label feature
              (``imagenet2012``: splits "train" / "validation").
  "builtin"   no download: each built-in sample photo is a class; training
              crops come from the left two thirds of a photo and validation
              crops from the right third, so the two never overlap. Tiny, for
              trying the whole pipeline.

Bad inputs are skipped and counted per distinct file or record with the
reasons and the shared mechanism of training (``sources.IMAGE_SKIP_REASONS``,
``decode.decode_images``, ``skipping.read_tfrecords``): corrupt or truncated
images ("undecodable"), images over ``decode.MAX_PIXELS`` ("too_large") or
``decode.MAX_ASPECT`` ("degenerate_aspect"; both read from the header before
decoding), records without image bytes or class label ("bad_record") and
TFRecord shards, of "tfrecord" and of "tfds" data sets, with an unreadable
tail ("bad_shard": their readable records are used). A missing or
malformed data set fails at construction with a ValueError saying what is
expected where. The order is deterministic: sorted files (shuffled by seed
when ``training``), so feature caches and resumed runs see the same
examples.
"""

import csv
import dataclasses
import glob
import os
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import decode
from mtssl_tf.data import sample_data
from mtssl_tf.data import skipping
from mtssl_tf.data import sources
from mtssl_tf.data import tfrecord_format

AUTOTUNE = tf.data.AUTOTUNE
SOURCES = ("builtin", "folder", "tfrecord", "tfds")
SPLITS = ("train", "val")
BUILTIN_CROP = 128  # side of the built-in crops
BUILTIN_CROPS = {"train": 24, "val": 8}  # per class


@dataclasses.dataclass(frozen=True)
class LabelledDataConfig:
  """A labelled image set with a train and a validation split.

  Attributes:
    source: builtin, folder (ImageNet class folders), tfrecord or tfds.
    train_path: class-folder root, or TFRecord glob, of the training split.
    val_path: class-folder root (or flat folder with val_labels), or TFRecord
      glob, of the validation split.
    val_labels: for a flat validation folder: a "<file> <class>" text file or
      Kaggle's LOC_val_solution.csv.
    tfds_name: TFDS data set name (e.g. imagenet2012).
    tfds_train_split: TFDS split used for training.
    tfds_val_split: TFDS split used for validation.
    tfds_data_dir: TFDS data directory (None: TFDS's default).
    tfds_manual_dir: manually downloaded files to prepare the TFDS set from.
  """
  source: str = "builtin"
  train_path: Optional[str] = None
  val_path: Optional[str] = None
  val_labels: Optional[str] = None
  tfds_name: Optional[str] = None
  tfds_train_split: str = "train"
  tfds_val_split: str = "validation"
  tfds_data_dir: Optional[str] = None
  tfds_manual_dir: Optional[str] = None


def _class_folders(root: str) -> List[str]:
  return sorted(d for d in os.listdir(root)
                if os.path.isdir(os.path.join(root, d)))


def _images_in(folder: str) -> List[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith(sources.IMAGE_EXTENSIONS))


def _read_val_labels(path: str, classes: List[str]):
  """file name -> class index, from a labels text file or Kaggle CSV."""
  index = {c: i for i, c in enumerate(classes)}
  labels = {}
  with open(path, encoding="utf-8") as f:
    if path.lower().endswith(".csv"):
      rows = [(r[0], (r[1].split() or [""])[0]) for r in csv.reader(f)
              if len(r) >= 2 and r[0] != "ImageId"]
    else:
      rows = [tuple(line.split()[:2]) for line in f if line.strip()]
  for row in rows:
    if len(row) != 2:
      raise ValueError(f"{path}: expected '<file name> <class>' lines, got "
                       f"{' '.join(row)!r}.")
    name, label = row
    if label in index:
      value = index[label]
    elif label.isdigit() and int(label) < len(classes):
      value = int(label)
    else:
      raise ValueError(f"{path}: class {label!r} of {name!r} is not a class "
                       f"folder of the training split (nor an index below "
                       f"{len(classes)}).")
    labels[os.path.splitext(os.path.basename(name))[0]] = value
  return labels


class LabelledImages:
  """One split of a labelled image set (see the module docstring).

  Attributes:
    class_names: the classes, index = label.
    num_examples: candidate examples in the split (before skipping).
    skipped: a ``sources.SkipCounter`` of the inputs dropped so far: the
      ``skipped`` argument (an earlier reader's counter, to count into) or a
      new one.
  """

  def __init__(self, config: LabelledDataConfig, split: str,
               skipped: Optional[sources.SkipCounter] = None):
    if config.source not in SOURCES:
      raise ValueError(f"Unknown labelled data source {config.source!r}; use "
                       f"one of {list(SOURCES)}.")
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    self.config, self.split = config, split
    self.skipped = skipped or sources.SkipCounter(sources.IMAGE_SKIP_REASONS)
    self._files: List[str] = []
    self._labels: List[int] = []
    getattr(self, f"_init_{config.source}")()

  # ---- start-up validation --------------------------------------------------

  def _path(self) -> str:
    name = f"{self.split}_path"
    path = getattr(self.config, name)
    if not path:
      raise ValueError(f"data.{name} is required with data.source="
                       f"{self.config.source!r}.")
    return path

  def _init_builtin(self):
    photos = sample_data.load_photos()
    self.class_names = [name for name, _ in photos]
    rng = np.random.default_rng(1 if self.split == "train" else 2)
    images, labels = [], []
    for label, (_, photo) in enumerate(photos):
      h, w = photo.shape[:2]
      lo, hi = (0, 2 * w // 3) if self.split == "train" else (2 * w // 3, w)
      for _ in range(BUILTIN_CROPS[self.split]):
        side = int(min(h, hi - lo) * rng.uniform(0.4, 0.9))
        y = rng.integers(0, h - side + 1)
        x = rng.integers(lo, hi - side + 1)
        crop = tf.image.resize(photo[y:y + side, x:x + side],
                               (BUILTIN_CROP, BUILTIN_CROP), antialias=True)
        images.append(np.asarray(crop).round().astype(np.uint8))
        labels.append(label)
    self._builtin = (np.stack(images), np.asarray(labels, np.int32))
    self.num_examples = len(labels)

  def _init_folder(self):
    root = self._path()
    if not os.path.isdir(root):
      raise ValueError(f"data.{self.split}_path {root!r} is not a directory: "
                       f"expected ImageNet-style class folders "
                       f"(<root>/n01440764/*.JPEG, ...).")
    train_root = self.config.train_path
    if not train_root or not os.path.isdir(train_root):
      raise ValueError("data.train_path must be the class-folder root of the "
                       "training split (it defines the classes).")
    self.class_names = _class_folders(train_root)
    if not self.class_names:
      raise ValueError(f"data.train_path {train_root!r} has no class "
                       f"folders (expected <root>/<class>/*.JPEG).")
    if self.split == "val" and self.config.val_labels:
      if not os.path.isfile(self.config.val_labels):
        raise ValueError(f"data.val_labels {self.config.val_labels!r} does "
                         f"not exist.")
      labels = _read_val_labels(self.config.val_labels, self.class_names)
      for path in _images_in(root):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in labels:
          self._files.append(path)
          self._labels.append(labels[stem])
      if not self._files:
        raise ValueError(f"No image of {root!r} is listed in "
                         f"{self.config.val_labels!r}.")
    else:
      folders = _class_folders(root)
      unknown = sorted(set(folders) - set(self.class_names))
      if unknown:
        raise ValueError(f"{root!r} has class folders the training split "
                         f"lacks: {unknown[:5]}. A flat validation folder "
                         f"needs data.val_labels.")
      for label, name in enumerate(self.class_names):
        folder = os.path.join(root, name)
        if os.path.isdir(folder):
          files = _images_in(folder)
          self._files += files
          self._labels += [label] * len(files)
      if not self._files:
        raise ValueError(f"{root!r} holds no images in class folders "
                         f"(extensions {list(sources.IMAGE_EXTENSIONS)}); a "
                         f"flat validation folder needs data.val_labels.")
    self.num_examples = len(self._files)

  def _init_tfrecord(self):
    pattern = self._path()
    self._files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
    if not self._files:
      raise ValueError(f"data.{self.split}_path {pattern!r} matches no "
                       f"TFRecord files (tools/make_tfrecords.py writes "
                       f"them from class folders).")
    # Damaged shards are read up to the damage here too (counted when the
    # data set is read, in dataset()).
    records = skipping.read_tfrecords(
        self._files, skipping.SkipCounter((skipping.BAD_SHARD,)))
    labels = set()
    count = 0
    for label in records.map(lambda name, record: _label_of_record(record)
                             ).ignore_errors():
      labels.add(int(label))
      count += 1
    labels.discard(-1)
    if not labels:
      raise ValueError(f"The records of {pattern!r} carry no class labels "
                       f"({tfrecord_format.IMAGE_LABEL} is -1 or missing): "
                       f"write them from class folders.")
    self.class_names = [str(i) for i in range(max(labels) + 1)]
    self.num_examples = count

  def _init_tfds(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    cfg = self.config
    if not cfg.tfds_name:
      raise ValueError("data.source=tfds needs data.tfds_name (e.g. "
                       "imagenet2012).")
    split = cfg.tfds_train_split if self.split == "train" else (
        cfg.tfds_val_split)
    probe = sources.ImageSource(dataclasses.replace(
        _image_data_config(cfg), tfds_split=split))
    builder = probe._tfds_builder  # pylint: disable=protected-access
    self._tfds = (builder, probe._tfds_image_key, _tfds_label_key(builder),  # pylint: disable=protected-access
                  split)
    label_feature = builder.info.features[self._tfds[2]]
    self.class_names = list(label_feature.names)
    self.num_examples = int(builder.info.splits[split].num_examples)

  # ---- the pipeline ---------------------------------------------------------

  def dataset(self, training: bool, seed: int = 0) -> tf.data.Dataset:
    """``(uint8 [H, W, 3], int32 label)`` pairs; shuffled and repeated when
    ``training``, else each example once in a fixed order."""
    source = self.config.source
    counter = self.skipped
    if source == "builtin":
      ds = tf.data.Dataset.from_tensor_slices(self._builtin)
    elif source == "folder":
      # (name, path, label): decode_images reads the file.
      ds = tf.data.Dataset.from_tensor_slices(
          (self._files, self._files, np.asarray(self._labels, np.int32)))
    elif source == "tfrecord":
      ds = skipping.read_tfrecords(self._files, counter)
    else:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      builder, image_key, label_key, split = self._tfds
      ds = skipping.read_tfds(
          builder, split, counter,
          decoders={image_key: tfds.decode.SkipDecoding()}).map(
              lambda name, ex: (name, ex[image_key],
                                tf.cast(ex[label_key], tf.int32)))
    if training:
      ds = ds.shuffle(min(self.num_examples, 100_000), seed=seed,
                      reshuffle_each_iteration=True).repeat()
    if source == "builtin":
      return ds
    if source == "tfrecord":
      ds = decode.map_or_skip(
          ds, lambda name, record: (name,) + _parse_labelled(record), counter,
          "bad_record", deterministic=True, name_fn=lambda name, _: name)
      ds = ds.filter(lambda name, encoded, label: counter.keep(
          label >= 0, "bad_record", name,
          f"no class label {tfrecord_format.IMAGE_LABEL!r}"))
    ds = decode.decode_images(ds, counter, read_files=source == "folder",
                              deterministic=True)
    return ds.map(lambda name, image, label: (image, label))


def _label_of_record(serialized):
  parsed = tf.io.parse_single_example(serialized, {
      tfrecord_format.IMAGE_LABEL: tf.io.FixedLenFeature([], tf.int64, -1)})
  return parsed[tfrecord_format.IMAGE_LABEL]


def _parse_labelled(serialized) -> Tuple[tf.Tensor, tf.Tensor]:
  parsed = tf.io.parse_single_example(serialized, {
      tfrecord_format.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
      tfrecord_format.IMAGE_LABEL: tf.io.FixedLenFeature([], tf.int64, -1)})
  return (parsed[tfrecord_format.IMAGE_ENCODED],
          tf.cast(parsed[tfrecord_format.IMAGE_LABEL], tf.int32))


def _image_data_config(cfg: LabelledDataConfig):
  return config_lib.DataConfig(
      source="tfds", tfds_name=cfg.tfds_name, tfds_data_dir=cfg.tfds_data_dir,
      tfds_manual_dir=cfg.tfds_manual_dir)


def _tfds_label_key(builder) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for key, feature in builder.info.features.items():
    if isinstance(feature, tfds.features.ClassLabel):
      return key
  raise ValueError(f"TFDS data set {builder.name!r} has no class-label "
                   f"feature (features: {list(builder.info.features)}).")
