"""Image folder -> TFRecords: listing, checking, sharding, manifest, errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mtssl_tf import config
from mtssl_tf.data import decode
from mtssl_tf.data import image_records
from mtssl_tf.data import sources
from mtssl_tf.data import tfrecord_format


def _folder(root, class_folders=False):
  rng = np.random.default_rng(0)
  files = {}
  for i, cls in enumerate(["zebra", "apple", "mango"]):
    for j in range(3):
      rel = os.path.join(cls, f"{j}.png") if class_folders else f"{cls}{j}.png"
      path = root / rel
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 255, (8 + i, 9, 3), np.uint8)).save(path)
      files[rel] = path.read_bytes()
  bad = root / ("apple" if class_folders else "") / "broken.jpg"
  bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
  (root / ("mango" if class_folders else "") / "empty.png").write_bytes(b"")
  (root / "readme.txt").write_text("not an image")
  return files


def _read_records(output_dir):
  pattern = os.path.join(output_dir, "train-*")
  records = []
  for serialized in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))):
    parsed = tfrecord_format.parse_image_example(serialized)
    records.append({k: v.numpy() for k, v in parsed.items()})
  return records


def test_class_folders_round_trip(tmp_path):
  files = _folder(tmp_path / "in", class_folders=True)
  out = tmp_path / "out"
  cfg = image_records.RecordsConfig(str(tmp_path / "in"), str(out),
                                    num_shards=2, labels="class_folders")
  manifest = image_records.make_records(cfg, progress=lambda s: None)
  assert manifest["classes"] == ["apple", "mango", "zebra"]
  assert manifest["images"] == 9
  assert sorted(s["reason"].split(":")[0] for s in manifest["skipped"]) == [
      "empty file", "undecodable", "unsupported_format"]
  assert [s["images"] for s in manifest["shards"]] == [5, 4]
  assert sorted(os.listdir(out)) == [
      "manifest.json", "train-00000-of-00002.tfrecord",
      "train-00001-of-00002.tfrecord"]
  assert json.load(open(out / "manifest.json"))["images"] == 9

  records = _read_records(out)
  assert len(records) == 9
  for record in records:
    rel = record["image/filename"].decode()
    assert record["image/encoded"] == files[rel]  # original bytes
    assert record["image/format"] == b"png"
    assert record["image/class/label"] == ["apple", "mango", "zebra"].index(
        rel.split(os.sep)[0])

  # The image tasks read the shards.
  source = sources.ImageSource(config.DataConfig(
      source="tfrecord", path=str(out / "train-*")))
  image = next(iter(source.dataset(seed=0)))
  assert image.dtype == tf.uint8 and image.shape[-1] == 3


def test_every_file_is_used_or_listed_with_a_reason(tmp_path):
  """Before: WebP files and files of other types were silently ignored, and
  a 2x1000 strip was written (later a 254x127000 tensor in training)."""
  root = tmp_path / "in"
  root.mkdir()
  rgb = np.random.default_rng(0).integers(0, 255, (12, 16, 3), np.uint8)
  Image.fromarray(rgb).save(root / "a.webp", lossless=True)
  Image.fromarray(rgb).save(root / "b.jpg")
  Image.fromarray(rgb).save(root / "c.tif")
  Image.fromarray(rgb).save(root / "tiff_named.jpg", format="TIFF")
  Image.fromarray(np.zeros((2, 1000, 3), np.uint8)).save(root / "strip.png")
  (root / "notes.txt").write_text("x")
  out = tmp_path / "out"
  manifest = image_records.make_records(
      image_records.RecordsConfig(str(root), str(out)),
      progress=lambda s: None)
  assert manifest["images"] == 2
  reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
  assert reasons == {
      "c.tif": "unsupported_format: not one of the image extensions .jpg, "
               ".jpeg, .png, .bmp, .gif, .webp",
      "notes.txt": "unsupported_format: not one of the image extensions "
                   ".jpg, .jpeg, .png, .bmp, .gif, .webp",
      "tiff_named.jpg": "unsupported_format: TIFF (TensorFlow decodes JPEG, "
                        "MPO, PNG, BMP, GIF, WEBP)",
      "strip.png": "degenerate_aspect: 1000x2 is more than 10 times longer "
                   "than wide"}
  records = {r["image/filename"].decode(): r for r in _read_records(out)}
  assert sorted(records) == ["a.webp", "b.jpg"]
  assert records["a.webp"]["image/format"] == b"webp"
  webp = decode.decode_rgb(records["a.webp"]["image/encoded"]).numpy()
  np.testing.assert_array_equal(webp, rgb)


def test_same_seed_same_shards_other_seed_other_order(tmp_path):
  _folder(tmp_path / "in")
  names = []
  for run, seed in (("a", 1), ("b", 1), ("c", 2)):
    cfg = image_records.RecordsConfig(str(tmp_path / "in"),
                                      str(tmp_path / run), seed=seed)
    image_records.make_records(cfg, progress=lambda s: None)
    names.append([r["image/filename"] for r in _read_records(tmp_path / run)])
  assert names[0] == names[1] and names[0] != names[2]
  assert sorted(names[0]) == sorted(names[2])


def test_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    image_records.list_images(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="holds no image files"):
    image_records.list_images(str(tmp_path / "empty"))
  _folder(tmp_path / "flat")
  with pytest.raises(ValueError, match="class_folders expects"):
    image_records.list_images(str(tmp_path / "flat"), "class_folders")

  junk = tmp_path / "junk"
  junk.mkdir()
  (junk / "a.jpg").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="None of the 1 image files"):
    image_records.make_records(image_records.RecordsConfig(
        str(junk), str(tmp_path / "o1")), progress=lambda s: None)
  assert not any(n.endswith(".tfrecord")
                 for n in os.listdir(tmp_path / "o1"))

  out = tmp_path / "o2"
  cfg = image_records.RecordsConfig(str(tmp_path / "flat"), str(out),
                                    num_shards=3)
  image_records.make_records(cfg, progress=lambda s: None)
  with pytest.raises(ValueError, match="--overwrite"):
    image_records.make_records(cfg, progress=lambda s: None)
  image_records.make_records(
      image_records.RecordsConfig(str(tmp_path / "flat"), str(out),
                                  num_shards=2, overwrite=True),
      progress=lambda s: None)
  assert sorted(n for n in os.listdir(out) if n.endswith(".tfrecord")) == [
      "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]

  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ValueError, match="not writable"):
    image_records.make_records(image_records.RecordsConfig(
        str(tmp_path / "flat"), str(blocker / "out")), progress=lambda s: None)
