"""Tests for data/skipping.py: distinct-item counting, damaged shards, the
report the training loop writes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config
from mtssl_tf.data import skipping
from mtssl_tf.training import loop
from tests.training import toy_task


def _write_records(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


def test_counter_counts_files_once_and_events_every_time():
  counter = skipping.SkipCounter(("bad", "odd"))
  files = tf.data.Dataset.from_tensor_slices(
      ["a.jpg", "bad1.jpg", "b.jpg", "bad2.jpg"]).repeat(3)
  kept = files.filter(lambda f: counter.keep(
      tf.logical_not(tf.strings.regex_full_match(f, "bad.*")), "bad", f,
      lambda: tf.strings.join(["detail of ", f])))
  assert list(kept.as_numpy_iterator()) == [b"a.jpg", b"b.jpg"] * 3
  counter.count("odd", 2)  # without an item: each event counts
  assert counter.as_dict() == {"bad": 2, "odd": 2}
  assert counter.events() == {"bad": 6, "odd": 2}
  assert counter.total() == 4
  assert counter.items() == [
      {"item": "bad1.jpg", "reason": "bad", "detail": "detail of bad1.jpg"},
      {"item": "bad2.jpg", "reason": "bad", "detail": "detail of bad2.jpg"}]


def test_read_tfrecords_names_records_and_counts_each_damaged_shard(tmp_path):
  for name in ("good", "torn", "cuts", "flip"):  # records of equal length
    _write_records(tmp_path / name, [b"%s-%d" % (name.encode(), i) * 20
                                     for i in range(4)])
  record = 8 + 4 + len(b"good-0" * 20) + 4   # framing + data
  torn = (tmp_path / "torn").read_bytes()
  (tmp_path / "torn").write_bytes(torn[:2 * record + 50])  # mid-record
  cut = (tmp_path / "cuts").read_bytes()
  (tmp_path / "cuts").write_bytes(cut[:3 * record + 5])    # mid-header
  flipped = bytearray((tmp_path / "flip").read_bytes())
  flipped[record + 30] ^= 1                                # bad CRC
  (tmp_path / "flip").write_bytes(bytes(flipped))
  (tmp_path / "empty").write_bytes(b"")
  files = [str(tmp_path / n) for n in ("good", "torn", "cuts", "flip",
                                       "empty")]
  counter = skipping.SkipCounter((skipping.BAD_SHARD,))
  got = [(os.path.basename(n.decode()), r[:6]) for n, r in
         skipping.read_tfrecords(files, counter).as_numpy_iterator()]
  assert sorted(got) == sorted(
      [(f"good#{i}", b"good-%d" % i) for i in range(4)]
      + [(f"torn#{i}", b"torn-%d" % i) for i in range(2)]
      + [(f"cuts#{i}", b"cuts-%d" % i) for i in range(3)]
      + [("flip#0", b"flip-0")])
  details = {os.path.basename(i["item"]): i["detail"] for i in counter.items()}
  assert details == {
      "torn": f"read 2 records ({2 * record} of {2 * record + 50} bytes); "
              "the rest is truncated or corrupt",
      "cuts": f"read 3 records ({3 * record} of {3 * record + 5} bytes); "
             "the rest is truncated or corrupt",
      "flip": f"read 1 records ({record} of {4 * record} bytes); the "
                 "rest is truncated or corrupt"}
  # Repeated: every pass meets the 3 bad shards again, they count once.
  repeated = skipping.read_tfrecords(files, counter, shuffle_seed=0,
                                     repeat=True)
  assert len(list(repeated.take(50))) == 50
  assert counter.as_dict() == {skipping.BAD_SHARD: 3}
  assert counter.events()[skipping.BAD_SHARD] >= 9


def test_read_tfrecords_requires_the_bad_shard_reason():
  with pytest.raises(ValueError, match="bad_shard"):
    skipping.read_tfrecords(["x"], skipping.SkipCounter(("other",)))


class _SkippingToyTask(toy_task.Task):
  """A toy task whose data meets two bad "files" over and over."""

  def make_dataset(self, data, batch_size, seed=None):
    skipped = skipping.SkipCounter(("undecodable",))
    numbers = tf.data.Dataset.range(10**9).filter(
        lambda i: skipped.keep(i % 4 == 0, "undecodable",
                               tf.strings.format("bad{}.jpg", i % 2)))
    good, _ = super().make_dataset(data, batch_size, seed)
    return (tf.data.Dataset.zip((numbers, good)).map(lambda _, batch: batch),
            skipped)


def test_training_writes_the_list_of_bad_files_to_the_model_dir(tmp_path):
  tasks = {"toy": _SkippingToyTask(toy_task.Config(), name="toy")}
  cfg = config.TrainConfig(model_dir=str(tmp_path), batch_size=2,
                           max_steps=3, log_every_steps=1,
                           checkpoint_every_steps=1, checkpoint_every_secs=0)
  lines = []
  result = loop.train(config.TrunkConfig(depth=14, base_width=8), tasks,
                      {"toy": None}, cfg, log=lines.append)
  with open(tmp_path / skipping.REPORT) as f:
    report = json.load(f)
  events = report["toy"]["events"]["undecodable"]
  assert events >= 4   # 3 of every 4 numbers, >= 3 batches read
  assert report["toy"] == {
      "files": {"undecodable": 2}, "events": {"undecodable": events},
      "items": [{"item": "bad0.jpg", "reason": "undecodable", "detail": ""},
                {"item": "bad1.jpg", "reason": "undecodable", "detail": ""}]}
  assert result.skipped == {"toy": {"undecodable": 2}}
  assert any("listed in skipped_inputs.json" in line for line in lines)
  assert np.isfinite(result.last_logs["toy"]["loss"])
