"""Labelled image sets in their real on-disk layouts, with bad files."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import image_records
from mtssl_tf.data import labelled_images
from mtssl_tf.data import tfrecord_format
from tests.evaluation import eval_fixtures

Config = labelled_images.LabelledDataConfig


def _all(split_set):
  return [(img.shape, int(label)) for img, label in
          split_set.dataset(training=False)]


def test_imagenet_class_folders_with_corrupt_files(tmp_path):
  root = eval_fixtures.write_imagenet(str(tmp_path), corrupt=1)
  cfg = Config(source="folder", train_path=f"{root}/train",
               val_path=f"{root}/val")
  train = labelled_images.LabelledImages(cfg, "train")
  assert train.class_names == sorted(eval_fixtures.COLOURS)
  assert train.num_examples == 3 * 7
  examples = _all(train)
  assert len(examples) == 18
  assert train.skipped.as_dict()["undecodable"] == 3
  # Sorted classes, deterministic order: labels 0..2, six each.
  assert [label for _, label in examples] == [0] * 6 + [1] * 6 + [2] * 6
  assert examples[0][0] == (40, 52, 3)


def test_flat_validation_folder_with_labels_file_and_kaggle_csv(tmp_path):
  root = eval_fixtures.write_imagenet(str(tmp_path), flat_val=True, corrupt=1)
  cfg = Config(source="folder", train_path=f"{root}/train",
               val_path=f"{root}/val", val_labels=f"{root}/val_labels.txt")
  val = labelled_images.LabelledImages(cfg, "val")
  labels = [label for _, label in _all(val)]
  assert sorted(labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert val.skipped.as_dict()["undecodable"] == 1
  # The same labels as Kaggle's LOC_val_solution.csv.
  lines = open(f"{root}/val_labels.txt").read().split("\n")
  with open(f"{root}/LOC_val_solution.csv", "w") as f:
    f.write("ImageId,PredictionString\n")
    for line in filter(None, lines):
      name, wnid = line.split()
      f.write(f"{name[:-5]},{wnid} 10 20 30 40\n")
  csv_val = labelled_images.LabelledImages(
      Config(source="folder", train_path=f"{root}/train",
             val_path=f"{root}/val",
             val_labels=f"{root}/LOC_val_solution.csv"), "val")
  assert sorted(label for _, label in _all(csv_val)) == sorted(labels)


def test_tfrecords_with_labels_and_a_bad_record(tmp_path):
  path = str(tmp_path / "train-00000.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for label in (0, 1, 2, 1):
      encoded = tf.io.encode_png(eval_fixtures.textured_image(
          (label * 80, 50, 50), label)).numpy()
      writer.write(tfrecord_format.image_example(encoded, "png",
                                                 label=label))
    writer.write(b"not a tf.Example")
  cfg = Config(source="tfrecord", train_path=str(tmp_path / "train-*"),
               val_path=str(tmp_path / "train-*"))
  split = labelled_images.LabelledImages(cfg, "train")
  assert split.class_names == ["0", "1", "2"]
  assert [label for _, label in _all(split)] == [0, 1, 2, 1]
  assert split.skipped.as_dict()["bad_record"] == 1


def test_tfrecords_written_by_make_tfrecords_from_class_folders(tmp_path):
  """tools/make_tfrecords.py --labels=class_folders on ImageNet's layout
  (its library, ``image_records.make_records``), read back: the labels and
  pixels of the class-folder source, the corrupt files left out."""
  root = eval_fixtures.write_imagenet(str(tmp_path / "inet"),
                                      per_class=(3, 1), corrupt=1)
  out = str(tmp_path / "records")
  image_records.make_records(image_records.RecordsConfig(
      f"{root}/train", out, num_shards=2, labels="class_folders", workers=1),
                             progress=lambda m: None)
  from_records = labelled_images.LabelledImages(Config(
      source="tfrecord", train_path=f"{out}/train-*",
      val_path=f"{out}/train-*"), "train")
  from_folders = labelled_images.LabelledImages(Config(
      source="folder", train_path=f"{root}/train", val_path=f"{root}/val"),
                                                "train")
  assert from_records.class_names == ["0", "1", "2"]

  def contents(split_set):
    return sorted((int(label), image.numpy().tobytes())
                  for image, label in split_set.dataset(training=False))
  expected = contents(from_folders)
  assert [label for label, _ in expected] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert contents(from_records) == expected


def test_builtin_splits_do_not_overlap_and_are_deterministic():
  train = labelled_images.LabelledImages(Config(), "train")
  val = labelled_images.LabelledImages(Config(), "val")
  assert len(train.class_names) == len(val.class_names) >= 5
  assert val.num_examples == 8 * len(val.class_names)
  first = [img.numpy() for img, _ in train.dataset(training=False).take(2)]
  again = [img.numpy() for img, _ in labelled_images.LabelledImages(
      Config(), "train").dataset(training=False).take(2)]
  np.testing.assert_array_equal(first[1], again[1])


@pytest.mark.parametrize("cfg, message", [
    (Config(source="folder"), "data.train_path is required"),
    (Config(source="folder", train_path="/nonexistent"), "not a directory"),
    (Config(source="tfrecord", train_path="/nonexistent/*.tfrecord"),
     "matches no"),
    (Config(source="tfds"), "tfds_name"),
    (Config(source="nope"), "Unknown labelled data source"),
])
def test_start_up_errors_say_what_is_expected(cfg, message):
  with pytest.raises(ValueError, match=message):
    labelled_images.LabelledImages(cfg, "train")


def test_val_class_folder_unknown_to_train_is_an_error(tmp_path):
  root = eval_fixtures.write_imagenet(str(tmp_path))
  os.makedirs(f"{root}/val/n99999999")
  with pytest.raises(ValueError, match="n99999999"):
    labelled_images.LabelledImages(Config(
        source="folder", train_path=f"{root}/train", val_path=f"{root}/val"),
                                   "val")


# ---- TFDS: a prepared data set with an image and a class label ---------------

tfds = pytest.importorskip("tensorflow_datasets")


class MtsslTinyLabelled(tfds.core.GeneratorBasedBuilder):
  """A 3-class TFDS data set with train and validation splits, shaped like
  imagenet2012 (image + ClassLabel) and, like it, prepared from manually
  downloaded files: ``<manual_dir>/<split>/<label>_<i>.png``."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put <split>/<label>_<i>.png in manual_dir."

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["r", "g", "b"]),
        }))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(dl_manager.manual_dir / split)
            for split in ("train", "validation")}

  def _generate_examples(self, folder):
    for path in sorted(folder.iterdir()):
      yield path.name, {"image": str(path),
                        "label": int(path.name.split("_")[0])}


def test_tfds_data_set_prepared_from_a_manual_dir(tmp_path):
  manual = tmp_path / "manual"
  for split, count in (("train", 6), ("validation", 3)):
    os.makedirs(manual / split)
    for i in range(count):
      colour = [(200, 40, 40), (40, 200, 40), (40, 40, 200)][i % 3]
      tf.io.write_file(str(manual / split / f"{i % 3}_{i}.png"),
                       tf.io.encode_png(eval_fixtures.textured_image(
                           colour, i)))
  data_dir = str(tmp_path / "tfds")
  cfg = Config(source="tfds", tfds_name="mtssl_tiny_labelled",
               tfds_data_dir=data_dir)
  with pytest.raises(ValueError, match="not prepared"):
    labelled_images.LabelledImages(cfg, "train")
  # Prepared from the manual dir into data_dir on first use ...
  train = labelled_images.LabelledImages(
      Config(source="tfds", tfds_name="mtssl_tiny_labelled",
             tfds_data_dir=data_dir, tfds_manual_dir=str(manual)), "train")
  # ... and read from data_dir afterwards.
  val = labelled_images.LabelledImages(cfg, "val")
  assert train.class_names == ["r", "g", "b"]
  assert (train.num_examples, val.num_examples) == (6, 3)
  examples = _all(val)
  assert sorted(label for _, label in examples) == [0, 1, 2]
  assert examples[0][0] == (40, 52, 3)
  with pytest.raises(ValueError, match="no split"):
    labelled_images.LabelledImages(
        Config(source="tfds", tfds_name="mtssl_tiny_labelled",
               tfds_data_dir=data_dir, tfds_val_split="test"), "val")


def _jpeg(image):
  return tf.io.encode_jpeg(image, quality=95).numpy()


def _png_header(width, height):
  """A PNG signature and IHDR claiming ``width`` x ``height``, then garbage:
  only a decoder that reads the header first can say it is too large."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  chunk = b"IHDR" + ihdr
  return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
          + struct.pack(">I", zlib.crc32(chunk)) + b"garbage, never decoded")


def test_truncated_and_extreme_images_are_skipped_with_reasons(tmp_path):
  """Class folders holding a truncated JPEG, a 2x1000 strip (it would become
  256x128000 at the evaluation's resize) and a PNG of 10000x8000 pixels:
  each is skipped under its reason and named; the rest is used."""
  root = eval_fixtures.write_imagenet(str(tmp_path))
  folder = os.path.join(root, "train", "n00000002")
  whole = _jpeg(eval_fixtures.textured_image((90, 90, 90), 7, (120, 160)))
  bad = {"truncated.JPEG": whole[:len(whole) * 6 // 10],
         "strip.JPEG": _jpeg(np.full((2, 1000, 3), 128, np.uint8)),
         "huge.png": _png_header(10000, 8000)}
  for name, data in bad.items():
    with open(os.path.join(folder, name), "wb") as f:
      f.write(data)
  cfg = Config(source="folder", train_path=f"{root}/train",
               val_path=f"{root}/val")
  train = labelled_images.LabelledImages(cfg, "train")
  examples = _all(train)
  assert len(examples) == 18
  assert max(max(shape[:2]) for shape, _ in examples) == 52
  assert {os.path.basename(i["item"]): i["reason"]
          for i in train.skipped.items()} == {
              "truncated.JPEG": "undecodable",
              "strip.JPEG": "degenerate_aspect",
              "huge.png": "too_large"}


def test_damaged_tfrecord_shard_is_read_up_to_the_damage(tmp_path):
  """Two shards; the second has a corrupted record (bad CRC) in the middle.
  The good shard and the records before the damage are used, the shard is
  counted once as bad_shard with its path, and a 2x1000 image record is
  skipped as degenerate_aspect (it would have stopped the evaluation)."""
  images = [eval_fixtures.textured_image((80 * c, 50, 50), c) for c in range(3)]
  good = str(tmp_path / "val-00000.tfrecord")
  damaged = str(tmp_path / "val-00001.tfrecord")
  with tf.io.TFRecordWriter(good) as writer:
    for label in (0, 1, 2):
      writer.write(tfrecord_format.image_example(
          _jpeg(images[label]), "jpeg", f"good{label}", label))
    writer.write(tfrecord_format.image_example(
        _jpeg(np.zeros((1000, 2, 3), np.uint8)), "jpeg", "strip", 1))
  records = [tfrecord_format.image_example(
      _jpeg(images[label]), "jpeg", f"damaged{label}", label)
             for label in (2, 1, 0)]
  with tf.io.TFRecordWriter(damaged) as writer:
    for record in records:
      writer.write(record)
  data = bytearray(open(damaged, "rb").read())
  data[len(records[0]) + 16 + 12 + 40] ^= 0xFF   # inside record 1's data
  with open(damaged, "wb") as f:
    f.write(bytes(data))
  cfg = Config(source="tfrecord", train_path=str(tmp_path / "val-*"),
               val_path=str(tmp_path / "val-*"))
  val = labelled_images.LabelledImages(cfg, "val")
  assert val.class_names == ["0", "1", "2"]
  assert sorted(label for _, label in _all(val)) == [0, 1, 2, 2]
  skipped = val.skipped.as_dict()
  assert skipped["bad_shard"] == 1 and skipped["degenerate_aspect"] == 1
  assert sum(skipped.values()) == 2
  (shard,) = [i for i in val.skipped.items() if i["reason"] == "bad_shard"]
  assert shard["item"] == damaged
  assert shard["detail"].startswith("read 1 records")
