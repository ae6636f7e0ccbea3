"""Labelled image sets in their real on-disk layouts, with bad files."""

import os

import numpy as np
import pytest
import tensorflow as tf

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
  """A 3-class TFDS data set with train and validation splits, built locally
  (no download), shaped like imagenet2012 (image + ClassLabel)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["r", "g", "b"]),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(6),
            "validation": self._generate_examples(3)}

  def _generate_examples(self, n):
    for i in range(n):
      colour = [(200, 40, 40), (40, 200, 40), (40, 40, 200)][i % 3]
      yield i, {"image": eval_fixtures.textured_image(colour, i),
                "label": i % 3}


def test_prepared_tfds_data_set(tmp_path):
  data_dir = str(tmp_path / "tfds")
  MtsslTinyLabelled(data_dir=data_dir).download_and_prepare()
  cfg = Config(source="tfds", tfds_name="mtssl_tiny_labelled",
               tfds_data_dir=data_dir)
  train = labelled_images.LabelledImages(cfg, "train")
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
