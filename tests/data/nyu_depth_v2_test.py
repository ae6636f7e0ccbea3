"""NYU v2 readers on files in the real layouts (MATLAB v7.3 / v5)."""

import h5py
import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from mtssl_tf.data import nyu_depth_v2
from mtssl_tf.data import skipping
from mtssl_tf.data import synthetic_depth


def _write_real_layout(path, images, depths):
  """Writes [N, H, W, 3] / [N, H, W] the way MATLAB v7.3 stores them.

  Independent of the library: MATLAB's column-major 480x640x3xN array is
  seen by HDF5 as [N, 3, 640, 480], i.e. every axis reversed.
  """
  with h5py.File(path, "w") as f:
    f["images"] = np.ascontiguousarray(np.transpose(images, (0, 3, 2, 1)))
    f["depths"] = np.ascontiguousarray(np.transpose(depths, (0, 2, 1)))
    f["labels"] = np.zeros((len(images), depths.shape[2], depths.shape[1]),
                           np.uint16)


@pytest.fixture(name="files")
def _files(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 6, 8, 3), dtype=np.uint8)
  depths = rng.uniform(0.5, 9.0, (5, 6, 8)).astype(np.float32)
  mat = str(tmp_path / "nyu_depth_v2_labeled.mat")
  _write_real_layout(mat, images, depths)
  splits = str(tmp_path / "splits.mat")
  scipy.io.savemat(splits, {"trainNdxs": np.array([[1], [3], [4]], np.uint16),
                            "testNdxs": np.array([[2], [5]], np.uint16)})
  return mat, splits, images, depths


def test_reader_undoes_the_matlab_axis_order(files):
  mat, splits, images, depths = files
  reader = nyu_depth_v2.LabeledFile(mat)
  assert len(reader) == 5 and reader.shape() == (6, 8)
  for n in range(5):
    image, depth = reader.example(n)
    np.testing.assert_array_equal(image, images[n])
    np.testing.assert_array_equal(depth, depths[n])


def test_split_file_is_one_based_v5(files):
  _, splits, _, _ = files
  assert scipy.io.matlab.matfile_version(splits)[0] == 1  # MATLAB v5
  train, test = nyu_depth_v2.read_splits(splits)
  np.testing.assert_array_equal(train, [0, 2, 3])
  np.testing.assert_array_equal(test, [1, 4])


def test_full_size_layout_and_official_split_sizes(tmp_path):
  """The real file's shapes (1449 frames of 640x480, MATLAB axis order) and
  the official split's 795 / 654 1-based indices as MATLAB saves them
  (double column vectors). The datasets are allocated but never written,
  so the file stays small; an unwritten chunk reads as zeros."""
  mat = str(tmp_path / "nyu_depth_v2_labeled.mat")
  with h5py.File(mat, "w") as f:
    f.create_dataset("images", (1449, 3, 640, 480), np.uint8,
                     chunks=(1, 3, 640, 480))
    depths = f.create_dataset("depths", (1449, 640, 480), np.float32,
                              chunks=(1, 640, 480))
    depths[700] = np.tile(np.arange(480, dtype=np.float32), (640, 1))
  order = np.random.default_rng(0).permutation(1449) + 1
  splits = str(tmp_path / "splits.mat")
  scipy.io.savemat(splits, {"trainNdxs": order[:795, None].astype(float),
                            "testNdxs": order[795:, None].astype(float)})
  train, test = nyu_depth_v2.check_mat_files(mat, splits)
  assert (len(train), len(test)) == (nyu_depth_v2.NUM_TRAIN,
                                     nyu_depth_v2.NUM_TEST) == (795, 654)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])),
                                np.arange(1449))
  reader = nyu_depth_v2.LabeledFile(mat)
  assert len(reader) == 1449 and reader.shape() == (480, 640)
  image, depth = reader.example(700)
  assert image.shape == (480, 640, 3) and image.dtype == np.uint8
  # MATLAB's depths(row, col, n) is stored at [n, col, row]: row r of the
  # frame holds the value r.
  assert depth.shape == (480, 640)
  np.testing.assert_array_equal(depth[:, 0], np.arange(480))
  np.testing.assert_array_equal(depth[5], np.full(640, 5.0))


def test_split_file_v73(tmp_path):
  path = str(tmp_path / "splits73.mat")
  with h5py.File(path, "w") as f:
    f["trainNdxs"] = np.array([[1.0, 2.0]])
    f["testNdxs"] = np.array([[3.0]])
  train, test = nyu_depth_v2.read_splits(path)
  np.testing.assert_array_equal(train, [0, 1])
  np.testing.assert_array_equal(test, [2])


def test_dataset_yields_the_split_frames(files):
  mat, splits, images, depths = files
  train, _ = nyu_depth_v2.check_mat_files(mat, splits)
  got = list(nyu_depth_v2.mat_dataset(mat, train).as_numpy_iterator())
  assert len(got) == 3
  for (image, depth), n in zip(got, [0, 2, 3]):
    np.testing.assert_array_equal(image, images[n])
    np.testing.assert_array_equal(depth, depths[n])


def test_bad_files_fail_naming_what_is_expected(files, tmp_path):
  mat, splits, _, _ = files
  with pytest.raises(ValueError, match="does not exist.*nyu_depth_v2_labeled"):
    nyu_depth_v2.check_mat_files(str(tmp_path / "nope.mat"), splits)
  not_hdf5 = tmp_path / "v5.mat"
  scipy.io.savemat(str(not_hdf5), {"images": np.zeros(3)})
  with pytest.raises(ValueError, match="not an HDF5"):
    nyu_depth_v2.check_mat_files(str(not_hdf5), splits)
  wrong = str(tmp_path / "wrong.mat")
  with h5py.File(wrong, "w") as f:
    f["images"] = np.zeros((2, 6, 8, 3), np.uint8)  # not transposed
    f["depths"] = np.zeros((2, 6, 8), np.float32)
  with pytest.raises(ValueError, match=r"\[N, 3, W, H\]"):
    nyu_depth_v2.check_mat_files(wrong, splits)
  bad_splits = str(tmp_path / "bad_splits.mat")
  scipy.io.savemat(bad_splits, {"trainNdxs": np.array([[1], [9]])})
  with pytest.raises(ValueError, match="testNdxs"):
    nyu_depth_v2.check_mat_files(mat, bad_splits)
  scipy.io.savemat(bad_splits, {"trainNdxs": np.array([[1], [9]]),
                                "testNdxs": np.array([[2]])})
  with pytest.raises(ValueError, match="frame 9"):
    nyu_depth_v2.check_mat_files(mat, bad_splits)
  scipy.io.savemat(bad_splits, {"trainNdxs": np.array([[0], [1]]),
                                "testNdxs": np.array([[2]])})
  with pytest.raises(ValueError, match="1-based"):
    nyu_depth_v2.read_splits(bad_splits)


def test_synthetic_files_round_trip(tmp_path):
  images, depths = synthetic_depth.render_scenes(3, 24, 32, seed=3)
  assert images.dtype == np.uint8 and depths.dtype == np.float32
  valid = depths > 0
  assert 0.5 < valid.mean() < 1.0  # the Kinect-like hole is invalid
  assert depths[valid].min() > 0.05 and depths.max() < 20
  mat, splits = synthetic_depth.write_nyu_files(str(tmp_path), 2, 1, 24, 32,
                                                seed=3)
  with open(mat, "rb") as f:
    assert f.read(19) == b"MATLAB 7.3 MAT-file"
  assert h5py.File(mat, "r")["images"].shape == (3, 3, 32, 24)
  train, test = nyu_depth_v2.check_mat_files(mat, splits)
  assert sorted(np.concatenate([train, test]).tolist()) == [0, 1, 2]
  reader = nyu_depth_v2.LabeledFile(mat)
  for n in range(3):
    image, depth = reader.example(n)
    np.testing.assert_array_equal(image, images[n])
    np.testing.assert_array_equal(depth, depths[n])


def test_a_damaged_frame_is_skipped_and_counted(files, tmp_path):
  """MATLAB v7.3 writes deflate-compressed chunks; a damaged chunk fails to
  inflate when its frame is read. That frame is skipped under its 1-based
  name, the others are read (the whole evaluation stopped before)."""
  _, splits, images, depths = files
  mat = str(tmp_path / "chunked.mat")
  with h5py.File(mat, "w") as f:
    f.create_dataset("images", data=np.transpose(images, (0, 3, 2, 1)),
                     chunks=(1, 3, 8, 6), compression="gzip")
    f.create_dataset("depths", data=np.transpose(depths, (0, 2, 1)),
                     chunks=(1, 8, 6), compression="gzip")
  with h5py.File(mat, "r") as f:
    chunk = f["images"].id.get_chunk_info_by_coord((2, 0, 0, 0))
  data = bytearray(open(mat, "rb").read())
  data[chunk.byte_offset:chunk.byte_offset + chunk.size] = bytes(chunk.size)
  with open(mat, "wb") as f:
    f.write(bytes(data))
  train, _ = nyu_depth_v2.check_mat_files(mat, splits)  # frames 1, 3, 4
  counter = skipping.SkipCounter(nyu_depth_v2.SKIP_REASONS)
  got = list(nyu_depth_v2.mat_dataset(mat, train, counter=counter)
             .as_numpy_iterator())
  assert len(got) == 2
  for (image, depth), n in zip(got, [0, 3]):
    np.testing.assert_array_equal(image, images[n])
    np.testing.assert_array_equal(depth, depths[n])
  assert [(i["item"], i["reason"]) for i in counter.items()] == [
      ("frame 3", "unreadable")]


# ---- TFDS nyu_depth_v2 -------------------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")
from tensorflow_datasets.datasets.nyu_depth_v2 import nyu_depth_v2_dataset_builder  # noqa: E402,E501  pylint: disable=g-import-not-at-top


def _tfds_frame(n):
  """Frame ``n`` of the local set: the real features' shapes and dtypes."""
  rows, cols = np.mgrid[0:480, 0:640]
  image = np.stack([(rows + 20 * n) % 256, (cols + 7 * n) % 256,
                    np.full_like(rows, 40 * n)], -1).astype(np.uint8)
  depth = (1.0 + 0.25 * n + cols / 640.0).astype(np.float16)
  depth[:10] = 0  # a strip without measurement, as near the Kinect's border
  return image, depth


class _LocalNyuDepthV2(nyu_depth_v2_dataset_builder.Builder,
                       skip_registration=True):
  """TFDS's own nyu_depth_v2 builder (features, version, split names), with
  a few generated frames instead of the 32 GB download."""

  name = "nyu_depth_v2"

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(range(3)),
            "validation": self._generate_examples(range(3, 5))}

  def _generate_examples(self, frames):  # pylint: disable=arguments-renamed
    for n in frames:
      image, depth = _tfds_frame(n)
      yield f"frame_{n}", {"image": image, "depth": depth}


def test_tfds_source_reads_the_prepared_set_and_skips_damage(tmp_path):
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(ValueError, match="not prepared.*tfds build"):
    nyu_depth_v2.check_tfds(data_dir, "train")
  builder = _LocalNyuDepthV2(data_dir=data_dir)
  builder.download_and_prepare()
  # Found by name by TFDS's registered builder, as a user's prepared set is.
  assert nyu_depth_v2.tfds_size(data_dir, "train") == 3
  assert nyu_depth_v2.tfds_size(data_dir, "test") == 2
  got = list(nyu_depth_v2.tfds_dataset(data_dir, "test").as_numpy_iterator())
  # TFDS stores the frames in an order of its own: the blue channel is 40 n.
  assert sorted(int(image[0, 0, 2]) // 40 for image, _ in got) == [3, 4]
  for image, depth in got:
    want_image, want_depth = _tfds_frame(int(image[0, 0, 2]) // 40)
    assert image.dtype == np.uint8 and depth.dtype == np.float32
    np.testing.assert_array_equal(image, want_image)
    np.testing.assert_array_equal(depth, want_depth.astype(np.float32))
  # A bit flipped inside the last training record (bad CRC): TFDS's reader
  # raised DataLossError here; now the shard's first two records are used
  # and the shard is counted once with what was read.
  (shard,) = [str(p) for p in builder.info.splits["train"].filepaths]
  records = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
  data = bytearray(open(shard, "rb").read())
  data[sum(len(r) + 16 for r in records[:2]) + 12 + len(records[2]) // 2] ^= 1
  with open(shard, "wb") as f:
    f.write(bytes(data))
  counter = skipping.SkipCounter(nyu_depth_v2.TFDS_SKIP_REASONS)
  got = list(nyu_depth_v2.tfds_dataset(data_dir, "train", counter=counter)
             .as_numpy_iterator())
  assert len(got) == 2
  assert counter.as_dict() == {"bad_shard": 1, "bad_record": 0}
  assert counter.items()[0]["detail"].startswith("read 2 records")
  # Training reads on (shuffled, endless) past the damage.
  train = nyu_depth_v2.tfds_dataset(data_dir, "train", shuffle=True, seed=1,
                                    counter=counter).take(6)
  assert len(list(train.as_numpy_iterator())) == 6
  # Damaged from its first record: the endless training stream would never
  # yield, so it is refused when it is built.
  data[12 + len(records[0]) // 2] ^= 1
  with open(shard, "wb") as f:
    f.write(bytes(data))
  assert not list(nyu_depth_v2.tfds_dataset(data_dir, "train"))
  with pytest.raises(ValueError, match="no readable frame.*tfds build"):
    nyu_depth_v2.tfds_dataset(data_dir, "train", shuffle=True, seed=1)
