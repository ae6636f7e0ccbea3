"""tools/make_voc_tfrecords.py as a user runs it, read back with Model
Garden's detection decoder."""

import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import synthetic_voc
from mtssl_tf.data import voc
from mtssl_tf.data import voc_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
      [sys.executable, "-m", "tools.make_voc_tfrecords", *args], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_tool_writes_model_garden_records(tmp_path):
  devkit = synthetic_voc.make_devkit(str(tmp_path / "devkit"), 9, 3, seed=5)
  os.remove(os.path.join(devkit, "VOC2007", "JPEGImages", "000002.jpg"))
  out = tmp_path / "records"
  run = _run(f"--voc_dir={devkit}", f"--output_dir={out}",
             "--images_per_shard=4")
  assert run.returncode == 0, run.stderr[-2000:]
  assert "Wrote 8 trainval images in 2 shards" in run.stdout
  assert "skipped JPEGImages/000002.jpg: JPEG missing" in run.stdout
  manifest = json.loads((out / "manifest-trainval.json").read_text())
  assert manifest["shards"] == {"trainval-00000-of-00002.tfrecord": 4,
                                "trainval-00001-of-00002.tfrecord": 4}
  manifest = voc_records.make_records(voc_records.VocRecordsConfig(
      str(out), "test", voc_dir=f"{devkit}/VOC2007"))
  assert manifest["images"] == 3 and len(manifest["shards"]) == 1

  from official.vision.dataloaders import tf_example_decoder  # pylint: disable=g-import-not-at-top
  decoder = tf_example_decoder.TfExampleDecoder()
  want, _ = voc.read_split(devkit, "trainval")
  files = sorted(str(p) for p in out.glob("trainval-*.tfrecord"))
  got = list(tf.data.TFRecordDataset(files))
  assert len(got) == len(want) == 8
  for serialized, record in zip(got, want):
    mg = decoder.decode(serialized)
    ours = voc_records.parse_voc_example(serialized)
    assert mg["source_id"].numpy().decode() == record.image_id
    assert mg["image"].shape == (record.height, record.width, 3)
    w, h = record.width, record.height
    pixels = np.array([o.box for o in record.objects])  # 1-based inclusive
    edges = np.stack([(pixels[:, 1] - 1) / h, (pixels[:, 0] - 1) / w,
                      pixels[:, 3] / h, pixels[:, 2] / w], -1)
    np.testing.assert_allclose(mg["groundtruth_boxes"], edges, atol=1e-6)
    np.testing.assert_allclose(ours["boxes"], edges, atol=1e-6)
    labels = [voc.CLASSES.index(o.name) + 1 for o in record.objects]
    assert mg["groundtruth_classes"].numpy().tolist() == labels
    difficult = [o.difficult for o in record.objects]
    assert mg["groundtruth_is_crowd"].numpy().tolist() == difficult
    assert ours["difficult"].numpy().tolist() == difficult
    assert ours["truncated"].numpy().tolist() == [
        o.truncated for o in record.objects]
    with open(record.jpeg_path, "rb") as f:
      assert serialized.numpy().count(f.read()[:200]) == 1  # original bytes

  run = _run(f"--voc_dir={tmp_path / 'nothing'}", f"--output_dir={out}2")
  assert run.returncode == 1 and "JPEGImages" in run.stderr


def _claim_size(devkit, image_id, width, height):
  """Rewrites the JPEG frame header (SOF0) and the annotation's size only."""
  base = os.path.join(devkit, "VOC2007")
  jpeg = os.path.join(base, "JPEGImages", image_id + ".jpg")
  data = bytearray(open(jpeg, "rb").read())
  sof = data.index(b"\xff\xc0")
  data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
  open(jpeg, "wb").write(bytes(data))
  xml = os.path.join(base, "Annotations", image_id + ".xml")
  text = open(xml).read()
  text = re.sub(r"<width>\d+</width>", f"<width>{width}</width>", text)
  text = re.sub(r"<height>\d+</height>", f"<height>{height}</height>", text)
  open(xml, "w").write(text)


def test_images_over_the_decode_bounds_are_skipped_with_reasons(tmp_path):
  """data/decode.py's bounds (50 MP, aspect 10) on the header size: such
  JPEGs are listed in the manifest and never reach a record (Model Garden's
  decoder would decode them unbounded)."""
  devkit = synthetic_voc.make_devkit(str(tmp_path / "devkit"), 4, 0, seed=2)
  _claim_size(devkit, "000001", 8000, 8000)  # 64 MP
  _claim_size(devkit, "000003", 2000, 190)   # 10.5:1
  manifest = voc_records.make_records(voc_records.VocRecordsConfig(
      str(tmp_path / "records"), voc_dir=devkit))
  assert manifest["images"] == 2
  reasons = {p["file"]: p["reason"] for p in manifest["skipped"]}
  assert reasons["JPEGImages/000001.jpg"].startswith("too_large: 8000x8000")
  assert reasons["JPEGImages/000003.jpg"].startswith(
      "degenerate_aspect: 2000x190")
  ids = [tf.train.Example.FromString(r.numpy()).features.feature[
      "image/source_id"].bytes_list.value[0].decode() for r in
         tf.data.TFRecordDataset(
             sorted(str(p) for p in (tmp_path / "records").glob("*.tfrecord")))]
  assert ids == ["000002", "000004"]


def test_parse_voc_example_decode_is_bounded():
  """Records from elsewhere: an image over the bounds decodes empty."""
  strip = tf.io.encode_jpeg(np.full((2, 1000, 3), 90, np.uint8)).numpy()
  image = voc.VocImage("x", "", 1000, 2, (voc.VocObject(
      "cat", (1, 1, 10, 2), False, False),))
  parsed = voc_records.parse_voc_example(
      voc_records.voc_example(strip, image).SerializeToString())
  assert parsed["image"].shape == (0, 0, 3)


def test_bad_configs_fail_before_writing(tmp_path):
  devkit = synthetic_voc.make_devkit(str(tmp_path / "devkit"), 2, 0, seed=1)
  out = str(tmp_path / "records")
  config = voc_records.VocRecordsConfig
  voc_records.make_records(config(out, voc_dir=devkit))
  for cfg, message in [
      (config(out, voc_dir=devkit), "--overwrite"),
      (config(out + "2", voc_dir=devkit, split="all"), "split must be"),
      (config(out + "2"), "exactly one of"),
      (config(out + "2", tfds_data_dir=str(tmp_path / "tfds")),
       "not prepared")]:
    with pytest.raises(ValueError, match=message):
      voc_records.make_records(cfg)
  assert not os.path.exists(out + "2")
  voc_records.make_records(config(out, voc_dir=devkit, overwrite=True))
