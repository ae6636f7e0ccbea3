"""NYU v2 readers on files in the real layouts (MATLAB v7.3 / v5)."""

import h5py
import numpy as np
import pytest
import scipy.io

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
