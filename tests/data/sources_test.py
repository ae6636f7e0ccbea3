"""Tests for data/sources.py: every source, every kind of bad input."""

import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.data import decode
from mtssl_tf.data import sources
from mtssl_tf.data import tfrecord_format


def _encode(image, fmt, **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def _rgb(h=24, w=32, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (h, w, 3), np.uint8)


def _good_files():
  """name -> bytes of files that must decode to RGB."""
  rgb = _rgb()
  frames = [Image.fromarray(np.full((10, 12, 3), v, np.uint8))
            for v in (40, 200)]
  gif = io.BytesIO()
  frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
  gray16 = (np.linspace(0, 65535, 20 * 30).reshape(20, 30)).astype(np.uint16)
  return {
      "plain.JPG": _encode(Image.fromarray(rgb), "JPEG"),
      "sub/dir/gray.png": _encode(Image.fromarray(rgb[..., 0]), "PNG"),
      "rgba.png": _encode(Image.fromarray(
          np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1)), "PNG"),
      "cmyk.jpeg": _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
      "deep.png": _encode(Image.fromarray(gray16), "PNG"),
      "anim.gif": gif.getvalue(),
      "tiny.bmp": _encode(Image.fromarray(_rgb(2, 3)), "BMP"),
  }


def _bad_files():
  jpeg = _encode(Image.fromarray(_rgb()), "JPEG")
  return {"truncated.jpg": jpeg[:len(jpeg) // 3],
          "garbage.png": b"this is not a png"}


def _write(folder, files):
  for name, data in files.items():
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


def _take(dataset, n):
  return [x.numpy() for x in dataset.take(n)]


# ---- SkipCounter -------------------------------------------------------------

def test_skip_counter_counts_eagerly_and_inside_tf_data():
  counter = sources.SkipCounter(("a", "b"))
  counter.count("a", 2)
  ds = tf.data.Dataset.range(10).filter(
      lambda x: counter.keep(x % 3 != 0, "b"))
  assert list(ds.as_numpy_iterator()) == [1, 2, 4, 5, 7, 8]
  assert counter.as_dict() == {"a": 2, "b": 4}
  assert counter.total() == 6


def test_skip_counter_rejects_unknown_reason():
  counter = sources.SkipCounter(("a",))
  with pytest.raises(ValueError, match="accepts"):
    counter.count("nope")
  with pytest.raises(ValueError, match="distinct"):
    sources.SkipCounter(("a", "a"))


def test_map_or_skip_drops_and_counts_failures():
  counter = sources.SkipCounter(("bad",))
  ds = tf.data.Dataset.from_tensor_slices([1.0, -1.0, 4.0, -2.0, 9.0])
  def fn(x):
    tf.debugging.assert_non_negative(x)
    return {"sqrt": tf.sqrt(x), "vec": tf.fill([tf.cast(x, tf.int32)], x)}
  out = decode.map_or_skip(ds, fn, counter, "bad", deterministic=True)
  values = [e["sqrt"] for e in out.as_numpy_iterator()]
  np.testing.assert_allclose(values, [1.0, 2.0, 3.0])
  assert counter.as_dict() == {"bad": 2}


# ---- decoding ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(_good_files()))
def test_decode_rgb_converts_every_supported_kind(name):
  data = _good_files()[name]
  image = decode.decode_rgb(data)  # eager
  graph = tf.function(decode.decode_rgb)(tf.constant(data))
  assert image.dtype == tf.uint8 and image.shape[-1] == 3
  np.testing.assert_array_equal(image.numpy(), graph.numpy())


def test_decode_rgb_values():
  files = _good_files()
  gray = decode.decode_rgb(files["sub/dir/gray.png"]).numpy()
  np.testing.assert_array_equal(gray[..., 0], _rgb()[..., 0])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  rgba = decode.decode_rgb(files["rgba.png"]).numpy()
  np.testing.assert_array_equal(rgba, _rgb())  # alpha dropped, RGB kept.
  deep = decode.decode_rgb(files["deep.png"]).numpy()
  assert deep.shape == (20, 30, 3) and deep.max() == 255 and deep.min() == 0
  gif = decode.decode_rgb(files["anim.gif"]).numpy()
  assert gif.shape == (10, 12, 3) and abs(gif.mean() - 40) < 2  # 1st frame.
  cmyk = decode.decode_rgb(files["cmyk.jpeg"]).numpy().astype(float)
  assert np.abs(cmyk - _rgb()).mean() < 30  # converted, not garbage.


# ---- folder ------------------------------------------------------------------

def test_folder_source_decodes_good_and_counts_bad(tmp_path):
  _write(str(tmp_path), {**_good_files(), **_bad_files(),
                         "notes.txt": b"ignored, not an image"})
  source = sources.ImageSource(config.DataConfig("folder", str(tmp_path)))
  images = _take(source.dataset(seed=0), 7 * 3)
  assert all(i.dtype == np.uint8 and i.ndim == 3 and i.shape[-1] == 3
             for i in images)
  shapes = {i.shape for i in images}
  assert {(24, 32, 3), (20, 30, 3), (10, 12, 3), (2, 3, 3)} <= shapes
  # Every pass over the 9 files skips the 2 bad ones; 21 good images take
  # at least 3 passes (less the ones in flight).
  skipped = source.skipped.as_dict()
  assert skipped["undecodable"] >= 4 and skipped["bad_record"] == 0
  assert source.skipped.total() == skipped["undecodable"]


def test_folder_missing_empty_and_junk_fail_at_start_up(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    sources.ImageSource(config.DataConfig("folder", str(tmp_path / "no")))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=f"{empty}.*no image files"):
    sources.ImageSource(config.DataConfig("folder", str(empty)))
  junk = tmp_path / "junk"
  _write(str(junk), {"a.txt": b"x", "b.json": b"{}"})
  with pytest.raises(ValueError, match=f"{junk}.*no image files"):
    sources.ImageSource(config.DataConfig("folder", str(junk)))
  corrupt = tmp_path / "corrupt"
  _write(str(corrupt), _bad_files())
  with pytest.raises(ValueError, match=f"{corrupt}.*unusable"):
    sources.ImageSource(config.DataConfig("folder", str(corrupt)))
  with pytest.raises(ValueError, match="needs a path"):
    sources.ImageSource(config.DataConfig("folder"))
  with pytest.raises(ValueError, match="accepted sources"):
    sources.ImageSource(config.DataConfig("webcam"))


# ---- tfrecord ----------------------------------------------------------------

def _write_records(path, records):
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def _wrong_key_record(data):
  feature = {"image/jpeg": tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[data]))}
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def _wrong_type_record():
  feature = {tfrecord_format.IMAGE_ENCODED: tf.train.Feature(
      int64_list=tf.train.Int64List(value=[7]))}
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def test_tfrecord_source_counts_bad_records(tmp_path):
  good = _good_files()
  jpeg = good["plain.JPG"]
  _write_records(str(tmp_path / "a.tfrecord"), [
      tfrecord_format.image_example(jpeg, "jpeg", "plain.jpg"),
      _wrong_key_record(jpeg),
      tfrecord_format.image_example(good["cmyk.jpeg"], "jpeg"),
  ])
  _write_records(str(tmp_path / "b.tfrecord"), [
      _wrong_type_record(),
      b"not a tf.train.Example at all",
      tfrecord_format.image_example(_bad_files()["truncated.jpg"], "jpeg"),
      tfrecord_format.image_example(good["anim.gif"], "gif"),
  ])
  source = sources.ImageSource(config.DataConfig(
      "tfrecord", str(tmp_path / "*.tfrecord")), shuffle_buffer=8)
  images = _take(source.dataset(seed=1), 12)
  assert {i.shape for i in images} == {(24, 32, 3), (10, 12, 3)}
  skipped = source.skipped.as_dict()
  assert skipped["bad_record"] >= 3 and skipped["undecodable"] >= 1


def test_tfrecord_all_wrong_or_missing_fails_at_start_up(tmp_path):
  path = str(tmp_path / "wrong.tfrecord")
  _write_records(path, [_wrong_key_record(b"x")] * 3)
  with pytest.raises(ValueError, match=f"{path}.*unusable"):
    sources.ImageSource(config.DataConfig("tfrecord", path))
  with pytest.raises(ValueError, match="matches no files"):
    sources.ImageSource(config.DataConfig("tfrecord", str(tmp_path / "z*")))


# ---- builtin -----------------------------------------------------------------

def test_builtin_source_yields_the_scikit_image_photos():
  source = sources.ImageSource(config.DataConfig("builtin"))
  images = _take(source.dataset(seed=3), 20)
  shapes = {i.shape for i in images}
  assert (512, 512, 3) in shapes and (300, 451, 3) in shapes
  assert len(shapes) >= 5
  assert all(i.dtype == np.uint8 for i in images)
  assert source.skipped.total() == 0


# ---- tfds --------------------------------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")


class MtsslTinyImages(tfds.core.GeneratorBasedBuilder):
  """A 6-image TFDS data set built locally (no download)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "label": tfds.features.ClassLabel(num_classes=2),
            "image": tfds.features.Image(shape=(None, None, 3)),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(6):
      yield i, {"image": _rgb(16 + i, 20, seed=i), "label": i % 2}


def test_tfds_source_reads_a_local_dataset(tmp_path):
  data_dir = str(tmp_path / "tfds")
  MtsslTinyImages(data_dir=data_dir).download_and_prepare()
  source = sources.ImageSource(config.DataConfig(
      "tfds", tfds_name="mtssl_tiny_images", tfds_data_dir=data_dir))
  images = _take(source.dataset(seed=0), 30)
  shapes = {i.shape for i in images}
  assert shapes <= {(16 + i, 20, 3) for i in range(6)} and len(shapes) >= 4
  for image in images:
    np.testing.assert_array_equal(
        image, _rgb(image.shape[0], 20, seed=image.shape[0] - 16))
  assert source.skipped.total() == 0


def test_tfds_errors_name_the_problem(tmp_path):
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(ValueError, match="not prepared"):
    sources.ImageSource(config.DataConfig(
        "tfds", tfds_name="mtssl_tiny_images", tfds_data_dir=data_dir))
  MtsslTinyImages(data_dir=data_dir).download_and_prepare()
  with pytest.raises(ValueError, match="no split 'validation'"):
    sources.ImageSource(config.DataConfig(
        "tfds", tfds_name="mtssl_tiny_images", tfds_data_dir=data_dir,
        tfds_split="validation"))
  with pytest.raises(ValueError, match="needs tfds_name"):
    sources.ImageSource(config.DataConfig("tfds"))
