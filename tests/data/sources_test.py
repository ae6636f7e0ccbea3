"""Tests for data/sources.py: every source, every kind of bad input."""

import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.data import decode
from mtssl_tf.data import skipping
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
  # Every pass over the 9 files meets the 2 bad ones; 21 good images take
  # at least 3 passes (less the ones in flight): events repeat, files not.
  assert source.skipped.events()["undecodable"] >= 4
  skipped = source.skipped.as_dict()
  assert skipped["undecodable"] == 2 and skipped["bad_record"] == 0
  assert skipped["unsupported_format"] == 1
  assert source.skipped.total() == 3
  assert [(os.path.basename(i["item"]), i["reason"])
          for i in source.skipped.items()] == [
              ("garbage.png", "undecodable"), ("notes.txt",
                                               "unsupported_format"),
              ("truncated.jpg", "undecodable")]


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


# ---- damaged shards, size bounds, WebP, evaluation order ---------------------

def _damage(path, keep_fraction=None, flip_at=None):
  data = bytearray(open(path, "rb").read())
  if flip_at is not None:
    data[flip_at] ^= 0xFF
  if keep_fraction is not None:
    data = data[:int(len(data) * keep_fraction)]
  with open(path, "wb") as f:
    f.write(bytes(data))


def _jpeg_records(path, values):
  """One 8x8 JPEG record per value (a flat grey image of that value)."""
  _write_records(path, [tfrecord_format.image_example(
      _encode(Image.fromarray(np.full((8, 8, 3), v, np.uint8)), "JPEG"),
      "jpeg", f"{v}.jpg") for v in values])


def test_tfrecord_source_reads_past_truncated_and_corrupt_shards(tmp_path):
  """Before: a DataLossError at the first bad shard stopped training."""
  _jpeg_records(str(tmp_path / "a-good.tfrecord"), [10, 20, 30])
  _jpeg_records(str(tmp_path / "b-trunc.tfrecord"), [110, 120, 130])
  _jpeg_records(str(tmp_path / "c-corrupt.tfrecord"), [210, 220, 230])
  with open(tmp_path / "d-not-records.tfrecord", "wb") as f:
    f.write(b"\xff" * 40)
  _damage(str(tmp_path / "b-trunc.tfrecord"), keep_fraction=0.5)
  size = os.path.getsize(tmp_path / "c-corrupt.tfrecord")
  _damage(str(tmp_path / "c-corrupt.tfrecord"), flip_at=size * 2 // 3)
  source = sources.ImageSource(config.DataConfig(
      "tfrecord", str(tmp_path / "*.tfrecord")), shuffle_buffer=4)
  once = [(n.decode(), int(round(i.mean()))) for n, i in
          source.named_dataset(training=False).as_numpy_iterator()]
  names = sorted(os.path.basename(n) for n, _ in once)
  assert names == ["a-good.tfrecord#0", "a-good.tfrecord#1",
                   "a-good.tfrecord#2", "b-trunc.tfrecord#0",
                   "c-corrupt.tfrecord#0", "c-corrupt.tfrecord#1"]
  assert sorted(v for _, v in once) == [10, 20, 30, 110, 210, 220]
  bad = {os.path.basename(i["item"]): i for i in source.skipped.items()}
  assert sorted(bad) == ["b-trunc.tfrecord", "c-corrupt.tfrecord",
                         "d-not-records.tfrecord"]
  assert bad["b-trunc.tfrecord"]["reason"] == "bad_shard"
  assert bad["b-trunc.tfrecord"]["detail"].startswith("read 1 records")
  assert bad["d-not-records.tfrecord"]["detail"].startswith(
      "read 0 records (0 of 40 bytes)")
  # Training: many passes; the good records keep coming, shards count once.
  values = {int(round(i.mean())) for i in _take(source.dataset(seed=0), 60)}
  assert values == {10, 20, 30, 110, 210, 220}
  assert source.skipped.as_dict()["bad_shard"] == 3
  assert source.skipped.events()["bad_shard"] >= 6


def test_tfrecord_source_of_only_truncated_shards_works(tmp_path):
  for i in range(2):
    path = str(tmp_path / f"t{i}.tfrecord")
    _jpeg_records(path, [50 + i, 60 + i, 70 + i])
    _damage(path, keep_fraction=0.8)  # 2 of 3 records readable
  source = sources.ImageSource(config.DataConfig(
      "tfrecord", str(tmp_path / "*.tfrecord")))
  values = {int(round(i.mean())) for i in _take(source.dataset(seed=0), 40)}
  assert values == {50, 51, 60, 61}
  assert source.skipped.as_dict()["bad_shard"] == 2


def _png_header(width, height, body=b"garbage, never decoded"):
  """A PNG signature and IHDR claiming ``width x height``."""
  ihdr = (width.to_bytes(4, "big") + height.to_bytes(4, "big")
          + bytes([8, 2, 0, 0, 0]))
  return (b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr
          + b"\0" * 4 + body)


@pytest.mark.parametrize("fmt,kwargs,mode", [
    ("JPEG", {}, "RGB"), ("PNG", {}, "L"), ("GIF", {}, "RGB"),
    ("BMP", {}, "RGB"), ("WEBP", {}, "RGB"), ("WEBP", {"lossless": True},
                                              "RGBA"),
    ("WEBP", {"exif": b"Exif\0\0x"}, "RGB")])
def test_header_shape_matches_pillow(fmt, kwargs, mode):
  image = Image.fromarray(_rgb(37, 91)).convert(mode)
  data = _encode(image, fmt, **kwargs)
  assert list(decode.header_shape(data).numpy()) == [37, 91]
  assert list(tf.function(decode.header_shape)(
      tf.constant(data)).numpy()) == [37, 91]
  assert list(decode.header_shape(b"II*\0 tiff").numpy()) == [-1, -1]


def test_extreme_images_are_skipped_with_a_reason_before_decoding(tmp_path):
  """Before: a 2x1000 strip became a 254x127000 float tensor in rp."""
  files = {
      "ok.png": _encode(Image.fromarray(_rgb(20, 30)), "PNG"),
      "strip.png": _encode(Image.fromarray(_rgb(2, 1000)), "PNG"),
      "tall.webp": _encode(Image.fromarray(_rgb(300, 12)), "WEBP"),
      # Headers only: decoding them would fail ("undecodable"), so these
      # reasons show that the header was checked first.
      "huge.png": _png_header(60000, 60000),
      "banner.png": _png_header(8000, 1),
  }
  _write(str(tmp_path), files)
  source = sources.ImageSource(config.DataConfig("folder", str(tmp_path)))
  shapes = [i.shape for i in _take(source.dataset(seed=0), 4)]
  assert shapes == [(20, 30, 3)] * 4
  reasons = {os.path.basename(i["item"]): (i["reason"], i["detail"])
             for i in source.skipped.items()}
  assert reasons == {
      "strip.png": ("degenerate_aspect",
                    "1000x2 (width x height): aspect ratio > 10"),
      "tall.webp": ("degenerate_aspect",
                    "12x300 (width x height): aspect ratio > 10"),
      "huge.png": ("too_large",
                   "60000x60000 (width x height) > 50000000 pixels"),
      "banner.png": ("degenerate_aspect",
                     "8000x1 (width x height): aspect ratio > 10")}
  assert decode.size_problem(2, 1000).startswith("degenerate_aspect")
  assert decode.size_problem(8000, 8000).startswith("too_large")
  assert decode.size_problem(6000, 8000) is None


def test_folder_source_uses_webp(tmp_path):
  """Before: *.webp files were neither used nor reported."""
  _write(str(tmp_path), {
      "a.webp": _encode(Image.fromarray(_rgb(10, 14)), "WEBP",
                        lossless=True),
      "b.jpg": _encode(Image.fromarray(_rgb(20, 30)), "JPEG")})
  source = sources.ImageSource(config.DataConfig("folder", str(tmp_path)))
  named = dict(source.named_dataset(training=False).as_numpy_iterator())
  webp = named[str(tmp_path / "a.webp").encode()]
  np.testing.assert_array_equal(webp, _rgb(10, 14))
  assert len(named) == 2 and source.skipped.total() == 0


def test_named_dataset_reads_each_input_once_in_order(tmp_path):
  _jpeg_records(str(tmp_path / "a.tfrecord"), [10, 20])
  _jpeg_records(str(tmp_path / "b.tfrecord"), [30, 40, 50])
  source = sources.ImageSource(config.DataConfig(
      "tfrecord", str(tmp_path / "*.tfrecord")))
  names = [os.path.basename(n.decode()) for n, _ in
           source.named_dataset(training=False).as_numpy_iterator()]
  assert names == ["a.tfrecord#0", "b.tfrecord#0", "a.tfrecord#1",
                   "b.tfrecord#1", "b.tfrecord#2"]


@pytest.mark.slow
def test_tfds_source_reads_past_a_damaged_shard(tmp_path):
  """A TFDS shard with a corrupted record (bad CRC): TFDS's reader stopped
  the run with a DataLossError; the records before the damage are used and
  the shard is counted once as bad_shard. Sub-splits select records."""
  data_dir = str(tmp_path / "tfds")
  builder = MtsslTinyImages(data_dir=data_dir)
  builder.download_and_prepare()
  (shard,) = [str(p) for p in builder.info.splits["train"].filepaths]
  records = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
  data = bytearray(open(shard, "rb").read())
  offset = sum(len(r) + 16 for r in records[:4])   # the fifth record
  data[offset + 12 + len(records[4]) // 2] ^= 0xFF
  with open(shard, "wb") as f:
    f.write(bytes(data))
  def source(split):
    return sources.ImageSource(config.DataConfig(
        "tfds", tfds_name="mtssl_tiny_images", tfds_data_dir=data_dir,
        tfds_split=split))
  whole = source("train")
  named = list(whole.named_dataset(training=False).as_numpy_iterator())
  assert len(named) == 4
  assert whole.skipped.as_dict()["bad_shard"] == 1
  assert whole.skipped.items()[0]["detail"].startswith("read 4 records")
  assert len(_take(whole.dataset(seed=0), 12)) == 12   # training goes on
  counter = sources.SkipCounter(sources.IMAGE_SKIP_REASONS)
  names = [n for n, _ in skipping.read_tfds(builder, "train[:50%]", counter)
           .as_numpy_iterator()]
  assert names == [f"{shard}#{i}".encode() for i in range(3)]
