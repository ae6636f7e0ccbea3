"""NYU Depth v2 in its real on-disk formats (paper §5 "NYU V2 Depth Prediction").

Two sources:

  "mat"   the official labelled file ``nyu_depth_v2_labeled.mat`` (1449 RGB-D
          frames) with the official split file ``splits.mat`` (795 train /
          654 test). The labelled file is MATLAB v7.3, i.e. HDF5, read lazily
          with h5py. MATLAB stores arrays column-major, so h5py sees the axes
          reversed: ``images`` is ``[N, 3, W, H]`` uint8 and ``depths`` is
          ``[N, W, H]`` float32 (metres, the in-painted dense depth), with
          ``W = 640, H = 480``. ``image(n) = images[n].transpose(2, 1, 0)``.
          ``splits.mat`` is a MATLAB v5 file (read with scipy.io.loadmat;
          a v7.3 copy is read with h5py) holding ``trainNdxs`` and
          ``testNdxs``, 1-based column vectors.
  "tfds"  the TFDS data set ``nyu_depth_v2`` (splits "train" = 47584 frames
          of the raw videos, "validation" = the 654 official test frames;
          features ``image`` uint8 [480, 640, 3], ``depth`` float16
          [480, 640]) where the user has it prepared.

Both yield ``(image uint8 [H, W, 3], depth float32 [H, W])`` pairs; a depth
of 0 (or NaN) marks a pixel without a measurement, which every loss and
measure excludes. A missing or malformed file raises ValueError at start-up
(``check_mat_files``, ``check_tfds``) saying what is expected where. Damage
met later is skipped and counted in a ``skipping.SkipCounter``, never fatal:
a frame of the labelled file that cannot be read (e.g. a damaged compressed
chunk: MATLAB v7.3 stores deflate-compressed chunks) as "unreadable" under
``frame <1-based index>`` (``SKIP_REASONS``); a TFDS shard whose tail cannot
be read as "bad_shard" (its readable records are used) and a record that
does not parse or decode as "bad_record" under ``<shard>#<index>``
(``TFDS_SKIP_REASONS``; ``skipping.read_tfds``; TFDS's own reader stops at
the first damaged record).
"""

import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf.data import decode
from mtssl_tf.data import skipping

NUM_LABELED = 1449
NUM_TRAIN = 795
NUM_TEST = 654
MAT_KEYS = ("images", "depths")
SPLIT_KEYS = ("trainNdxs", "testNdxs")
TFDS_NAME = "nyu_depth_v2"
TFDS_SPLITS = {"train": "train", "test": "validation"}
SKIP_REASONS = ("unreadable",)
TFDS_SKIP_REASONS = (skipping.BAD_SHARD, "bad_record")

_EXPECTED_MAT = (
    "the official labelled file nyu_depth_v2_labeled.mat (MATLAB v7.3 / "
    "HDF5 with datasets 'images' [N, 3, W, H] uint8 and 'depths' [N, W, H] "
    "float32, N = 1449, W = 640, H = 480)")
_EXPECTED_SPLITS = (
    "the official splits.mat (MATLAB file with 'trainNdxs' (795) and "
    "'testNdxs' (654), 1-based indices into the labelled file)")


def read_splits(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads ``splits.mat`` (MATLAB v5 or v7.3).

  Returns:
    ``(train, test)`` 0-based int64 index arrays, in file order.

  Raises:
    ValueError: missing file, unreadable file, missing keys or indices that
      are not positive integers.
  """
  if not os.path.isfile(path):
    raise ValueError(f"Split file {path!r} does not exist; expected "
                     f"{_EXPECTED_SPLITS}.")
  import h5py  # pylint: disable=g-import-not-at-top
  if h5py.is_hdf5(path):
    with h5py.File(path, "r") as f:
      values = {k: np.asarray(f[k]) for k in SPLIT_KEYS if k in f}
  else:
    import scipy.io  # pylint: disable=g-import-not-at-top
    try:
      values = scipy.io.loadmat(path, variable_names=SPLIT_KEYS)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"Cannot read split file {path!r} ({type(e).__name__}: "
                       f"{e}); expected {_EXPECTED_SPLITS}.") from None
  missing = [k for k in SPLIT_KEYS if k not in values]
  if missing:
    raise ValueError(f"Split file {path!r} lacks {missing}; expected "
                     f"{_EXPECTED_SPLITS}.")
  out = []
  for key in SPLIT_KEYS:
    v = np.asarray(values[key], np.float64).reshape(-1)
    if v.size == 0 or np.any(v != np.round(v)) or np.any(v < 1):
      raise ValueError(f"{key} in {path!r} must hold 1-based positive integer "
                       f"indices; expected {_EXPECTED_SPLITS}.")
    out.append(v.astype(np.int64) - 1)
  return out[0], out[1]


class LabeledFile:
  """Lazy reader of ``nyu_depth_v2_labeled.mat`` (h5py; one frame per read).

  The HDF5 file is opened on first use in each process (h5py handles do not
  survive a fork) and kept open.
  """

  def __init__(self, path: str):
    self.path = path
    self._file = None
    self._pid = None

  def _open(self):
    if self._file is None or self._pid != os.getpid():
      import h5py  # pylint: disable=g-import-not-at-top
      self._file = h5py.File(self.path, "r")
      self._pid = os.getpid()
    return self._file

  def __len__(self) -> int:
    return int(self._open()["images"].shape[0])

  def shape(self) -> Tuple[int, int]:
    """``(H, W)`` of the frames (480, 640 for the real file)."""
    _, _, w, h = self._open()["images"].shape
    return int(h), int(w)

  def example(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` (0-based): uint8 ``[H, W, 3]``, float32 ``[H, W]``."""
    f = self._open()
    image = np.asarray(f["images"][index]).transpose(2, 1, 0)
    depth = np.asarray(f["depths"][index], np.float32).T
    return np.ascontiguousarray(image), np.ascontiguousarray(depth)

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None


def check_mat_files(mat_path: str, splits_path: str
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Validates the labelled file and the split file before anything runs.

  Returns:
    ``(train, test)`` 0-based indices (see ``read_splits``).

  Raises:
    ValueError: a file is missing or not in the expected layout; the message
      names the file and what is expected.
  """
  if not mat_path or not os.path.isfile(mat_path):
    raise ValueError(f"Labelled file {mat_path!r} does not exist; expected "
                     f"{_EXPECTED_MAT}.")
  import h5py  # pylint: disable=g-import-not-at-top
  if not h5py.is_hdf5(mat_path):
    raise ValueError(f"{mat_path!r} is not an HDF5 (MATLAB v7.3) file; "
                     f"expected {_EXPECTED_MAT}.")
  with h5py.File(mat_path, "r") as f:
    missing = [k for k in MAT_KEYS if k not in f]
    if missing:
      raise ValueError(f"{mat_path!r} lacks datasets {missing}; expected "
                       f"{_EXPECTED_MAT}.")
    images, depths = f["images"], f["depths"]
    if (images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8
        or depths.ndim != 3 or depths.shape != (images.shape[0],) +
        images.shape[2:] or depths.dtype.kind != "f"):
      raise ValueError(
          f"{mat_path!r} has images {images.shape} {images.dtype} and depths "
          f"{depths.shape} {depths.dtype}; expected {_EXPECTED_MAT}.")
    n = images.shape[0]
  train, test = read_splits(splits_path)
  for name, idx in (("trainNdxs", train), ("testNdxs", test)):
    if idx.max() >= n:
      raise ValueError(f"{name} in {splits_path!r} refers to frame "
                       f"{idx.max() + 1} but {mat_path!r} has {n} frames.")
  if np.intersect1d(train, test).size:
    raise ValueError(f"trainNdxs and testNdxs in {splits_path!r} overlap.")
  return train, test


def mat_dataset(mat_path: str, indices: np.ndarray, shuffle: bool = False,
                seed: int = 0,
                counter: Optional[skipping.SkipCounter] = None
                ) -> tf.data.Dataset:
  """``(image uint8 [H, W, 3], depth float32 [H, W])`` of the given frames.

  With ``shuffle`` the order is reshuffled every pass (repeat outside).
  Frames whose read fails are skipped and counted in ``counter`` (reasons
  ``SKIP_REASONS``; a private counter if None).
  """
  reader = LabeledFile(mat_path)
  h, w = reader.shape()
  counter = counter or skipping.SkipCounter(SKIP_REASONS)

  def read(index):
    return reader.example(int(index))

  ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
  if shuffle:
    ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)

  def load(index):
    image, depth = tf.numpy_function(read, [index], (tf.uint8, tf.float32))
    image.set_shape([h, w, 3])
    depth.set_shape([h, w])
    return image, depth
  # Reads are serialised by h5py's lock anyway; the guard keeps the order.
  return decode.map_or_skip(
      ds, load, counter, "unreadable", deterministic=True,
      name_fn=lambda index: tf.strings.join(
          ["frame ", tf.strings.as_string(index + 1)]))


def check_tfds(data_dir: Optional[str], split: str):
  """Returns the prepared TFDS builder of ``nyu_depth_v2``, or raises."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  where = data_dir or "TFDS's default data_dir"
  try:
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Cannot load TFDS data set {TFDS_NAME!r} from {where}: "
                     f"{type(e).__name__}: {e}") from None
  if not builder.is_prepared():
    raise ValueError(
        f"TFDS data set {TFDS_NAME!r} is not prepared in {where}. Prepare it "
        f"first (`tfds build {TFDS_NAME} --data_dir=...`), or use "
        f"source='mat' with nyu_depth_v2_labeled.mat and splits.mat.")
  if TFDS_SPLITS[split] not in builder.info.splits:
    raise ValueError(f"TFDS {TFDS_NAME!r} in {where} has no split "
                     f"{TFDS_SPLITS[split]!r}.")
  return builder


def tfds_dataset(data_dir: Optional[str], split: str, shuffle: bool = False,
                 seed: int = 0,
                 counter: Optional[skipping.SkipCounter] = None
                 ) -> tf.data.Dataset:
  """The TFDS source as ``(image uint8, depth float32)`` pairs.

  Damaged shards and records are skipped and counted in ``counter`` (reasons
  ``TFDS_SKIP_REASONS``; a private counter if None). With ``shuffle`` the
  stream is endless: the shard order is reshuffled every pass and the
  frames pass through a 64-frame shuffle buffer. Reading is deterministic
  either way, so a checkpointed iterator resumes on the same frames; the
  buffer is part of that checkpoint (64 decoded 480x640 frames, ~100 MB;
  TFDS's split is consecutive video frames, so the shard shuffle does most
  of the mixing).
  """
  builder = check_tfds(data_dir, split)
  counter = counter or skipping.SkipCounter(TFDS_SKIP_REASONS)
  if shuffle and not list(skipping.read_tfds(
      builder, TFDS_SPLITS[split],
      skipping.SkipCounter(TFDS_SKIP_REASONS)).take(1)):
    # An endless stream over shards without one readable frame would wait
    # forever instead of failing.
    where = data_dir or "TFDS's default data_dir"
    raise ValueError(f"TFDS {TFDS_NAME!r} in {where}: no readable frame in "
                     f"split {TFDS_SPLITS[split]!r} (every shard is damaged "
                     f"from its first record); rebuild it with `tfds build "
                     f"{TFDS_NAME}`.")
  ds = skipping.read_tfds(builder, TFDS_SPLITS[split], counter,
                          shuffle_seed=seed if shuffle else None,
                          repeat=shuffle, deterministic=True)
  if shuffle:
    ds = ds.shuffle(64, seed=seed, reshuffle_each_iteration=True)
  return ds.map(lambda name, ex: (ex["image"],
                                  tf.cast(ex["depth"], tf.float32)),
                num_parallel_calls=tf.data.AUTOTUNE)


def tfds_size(data_dir: Optional[str], split: str) -> int:
  return int(check_tfds(data_dir, split).info.splits[
      TFDS_SPLITS[split]].num_examples)
