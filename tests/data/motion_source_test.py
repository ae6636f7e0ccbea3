"""Tests of the video-frame source: builtin videos, motion records, skips."""

import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import motion_source
from mtssl_tf.data import tfrecord_format
from tests.tasks import task_fixtures

H, W = tfrecord_format.FRAME_HEIGHT, tfrecord_format.FRAME_WIDTH


def test_builtin_frames_and_masks():
  frames, masks = motion_source.builtin_frames(2, 3)
  assert frames.shape == (6, H, W, 3) and masks.shape == (6, H, W, 1)
  assert set(np.unique(masks)) <= {0, 255}
  assert 0.0 < masks.mean() / 255 < 0.6
  source = motion_source.MotionSource(config_lib.DataConfig(), 2, 3)
  pairs = list(source.dataset(seed=0, repeat=False))
  assert len(pairs) == 6
  # Every pair is one of the generated (frame, mask) pairs, still aligned.
  for frame, mask in pairs:
    (index,) = [i for i in range(6) if np.array_equal(frame, frames[i])]
    np.testing.assert_array_equal(mask, masks[index])


def test_bad_records_are_skipped_and_counted(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (2, H, W, 3)).astype(np.uint8)
  masks = np.zeros((2, H, W, 1), np.uint8)
  good_frame, good_mask = task_fixtures.png(frames[0]), task_fixtures.png(masks[0, ..., 0])
  extra = [
      b"not a tf.Example",                                     # bad_record
      tf.train.Example().SerializeToString(),                  # bad_record
      tfrecord_format.image_example(good_frame, "png"),        # bad_record
      # Truncated PNG: undecodable.
      tfrecord_format.motion_example(good_frame[:200], good_mask),
      tfrecord_format.motion_example(task_fixtures.png(frames[0, :120]), good_mask),  # size
      tfrecord_format.motion_example(good_frame, task_fixtures.png(masks[0, :, :100, 0])),
  ]
  task_fixtures.motion_records(tmp_path / "m.tfrecord", frames, masks, extra)
  source = motion_source.MotionSource(
      config_lib.DataConfig(source="folder", path=str(tmp_path)))
  pairs = list(source.dataset(seed=0, repeat=False))
  assert len(pairs) == 2
  assert source.skipped.as_dict() == {"bad_record": 3, "undecodable": 1,
                                      "wrong_size": 2, "bad_shard": 0}
  # The repeated pipeline keeps going past them.
  for frame, _ in source.dataset(seed=0).take(5):
    assert any(np.array_equal(frame, f) for f in frames)


def test_damaged_shards_are_skipped_and_the_rest_is_read(tmp_path):
  """A truncated and a corrupted shard: their readable records and the good
  shard's are used; each bad shard is counted once, with its path."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (9, H, W, 3)).astype(np.uint8)
  masks = np.zeros((9, H, W, 1), np.uint8)
  for name, part in (("good", 0), ("trunc", 1), ("corrupt", 2)):
    task_fixtures.motion_records(tmp_path / f"{name}.tfrecord",
                                 frames[3 * part:][:3], masks[:3])
  data = (tmp_path / "trunc.tfrecord").read_bytes()
  record = len(data) // 3
  (tmp_path / "trunc.tfrecord").write_bytes(data[:record + record // 2])
  data = bytearray((tmp_path / "corrupt.tfrecord").read_bytes())
  data[2 * record + 100] ^= 0xFF   # inside the third record: CRC mismatch
  (tmp_path / "corrupt.tfrecord").write_bytes(bytes(data))
  source = motion_source.MotionSource(
      config_lib.DataConfig(source="folder", path=str(tmp_path)))
  pairs = list(source.dataset(seed=0, repeat=False))
  got = sorted(int(np.argmax([np.array_equal(f, p[0].numpy())
                              for f in frames])) for p in pairs)
  assert got == [0, 1, 2, 3, 6, 7]
  assert source.skipped.as_dict() == {"bad_record": 0, "undecodable": 0,
                                      "wrong_size": 0, "bad_shard": 2}
  assert sorted(os.path.basename(i["item"])
                for i in source.skipped.items()) == [
                    "corrupt.tfrecord", "trunc.tfrecord"]
  # Reading on past them, pass after pass; shards count once.
  for _ in source.dataset(seed=0).take(8):
    pass
  assert source.skipped.as_dict()["bad_shard"] == 2
  assert source.skipped.events()["bad_shard"] >= 2


def test_unusable_sources_fail_at_construction(tmp_path):
  def source(**kwargs):
    return motion_source.MotionSource(config_lib.DataConfig(**kwargs))
  with pytest.raises(ValueError, match="make_motion_masks"):
    source(source="folder", path=str(tmp_path))
  with tf.io.TFRecordWriter(str(tmp_path / "images.tfrecord")) as writer:
    writer.write(tfrecord_format.image_example(b"jpeg bytes", "jpeg"))
  with pytest.raises(ValueError, match="no motion-segmentation records"):
    source(source="folder", path=str(tmp_path))
  with pytest.raises(ValueError, match="matches no files"):
    source(source="tfrecord", path=str(tmp_path / "none-*.tfrecord"))
  with pytest.raises(ValueError, match="read sources"):
    source(source="tfds", tfds_name="x")


def _png_header(width, height):
  """A PNG signature and IHDR of ``width`` x ``height``, then garbage."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
          + struct.pack(">I", zlib.crc32(chunk)) + b"garbage, never decoded")


def test_oversized_frames_are_refused_from_the_header(tmp_path):
  """A record whose frame PNG says 1000x2 (or 20000x20000) is skipped as
  wrong_size before decoding: its garbage body is never read (it counted
  as undecodable, after an attempt to decode it, before)."""
  frames = np.full((1, H, W, 3), 7, np.uint8)
  masks = np.zeros((1, H, W, 1), np.uint8)
  good_mask = task_fixtures.png(masks[0, ..., 0])
  extra = [tfrecord_format.motion_example(_png_header(1000, 2), good_mask),
           tfrecord_format.motion_example(_png_header(20000, 20000),
                                          good_mask)]
  task_fixtures.motion_records(tmp_path / "m.tfrecord", frames, masks, extra)
  source = motion_source.MotionSource(
      config_lib.DataConfig(source="tfrecord",
                            path=str(tmp_path / "m.tfrecord")))
  assert len(list(source.dataset(seed=0, repeat=False))) == 1
  assert source.skipped.as_dict() == {"bad_record": 0, "undecodable": 0,
                                      "wrong_size": 2, "bad_shard": 0}
