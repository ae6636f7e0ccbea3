"""Counting skipped inputs, and reading TFRecord shards that may be damaged.

Shared by every input pipeline: the image sources (``sources.py``), the
motion-segmentation records and the evaluation loaders. Bad input never
stops a run; it is dropped, counted with a reason and listed.

``SkipCounter(reasons)`` counts, per reason, both *events* (every time a bad
input is met; a bad file met once per epoch counts once per epoch) and the
*distinct items* (file paths, or ``shard#record`` names) with a detail
string each. It is updated from inside tf.data functions without Python
(``tf.Variable`` counters and a ``MutableHashTable`` per reason keyed by a
63-bit hash of the item) and
read from Python at any time: ``as_dict()`` gives distinct items per reason,
``events()`` the events, ``items()`` the list of bad items. Create it (and
the datasets using it) outside any tf.distribute strategy scope.

``read_tfrecords(files, counter)`` yields ``(name, serialized record)`` with
name ``b"<shard path>#<record index>"`` from TFRecord shards. A shard whose
tail cannot be read (truncated, a corrupted record, not a TFRecord file)
gives its readable records and is counted once per pass under ``"bad_shard"``
with the number of records and bytes read. TensorFlow's reader raises
``DataLossError`` on a corrupted record but silently ends on some truncations,
so neither the error nor the end is a reliable signal; instead every shard's
records are followed by an end marker and the bytes consumed (each record
takes its length + 16 framing bytes) are compared with the file size. No
Python runs per record.

``write_report(path, counters)`` writes the JSON list of bad items of several
counters (the training loop writes ``REPORT`` in the model dir at every save).
"""

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from mtssl_tf.data import decode

AUTOTUNE = tf.data.AUTOTUNE
BAD_SHARD = "bad_shard"
# The list of bad inputs the training loop writes to the model dir.
REPORT = "skipped_inputs.json"
# Bytes of TFRecord framing around each record: length (8), its CRC (4) and
# the data's CRC (4).
_FRAMING_BYTES = 16
_HASH_BUCKETS = 2**63 - 1


class SkipCounter:
  """Counts skipped inputs by reason; readable from Python during training.

  Args:
    reasons: the reasons this counter accepts (e.g. ``IMAGE_SKIP_REASONS``).

  Graph side (inside ``Dataset.map``/``filter`` functions, or eagerly):
    ``count(reason, n=1, item=None, detail="")`` adds n events (and, with a
    scalar string ``item``, records the item); ``keep(ok, reason, item=None,
    detail="")`` counts one skip when the scalar bool ``ok`` is False and
    returns ``ok`` (a ``filter`` predicate).
  Python side: ``as_dict()`` -> ``{reason: distinct items}`` (events counted
  without an item count one each), ``events()`` -> ``{reason: events}``,
  ``items()`` -> ``[{"item", "reason", "detail"}]``, ``total()`` -> int.
  """

  def __init__(self, reasons: Sequence[str]):
    if not reasons or len(set(reasons)) != len(reasons):
      raise ValueError(
          f"SkipCounter needs a non-empty list of distinct reasons, got "
          f"{list(reasons)!r}.")
    self._reasons = tuple(reasons)
    with tf.init_scope(), tf.device("/cpu:0"):
      def variable(prefix, reason):
        return tf.Variable(0, dtype=tf.int64, trainable=False,
                           name=f"{prefix}_{reason}")
      self._events = {r: variable("skipped", r) for r in self._reasons}
      self._unnamed = {r: variable("skipped_unnamed", r)
                       for r in self._reasons}
      self._items = {
          r: tf.lookup.experimental.MutableHashTable(
              tf.int64, tf.string, default_value="", name=f"skipped_{r}")
          for r in self._reasons}

  @property
  def reasons(self):
    return self._reasons

  def check_reason(self, reason: str) -> None:
    if reason not in self._events:
      raise ValueError(
          f"Unknown skip reason {reason!r}; this counter accepts "
          f"{list(self._reasons)}.")

  @tf.autograph.experimental.do_not_convert
  def count(self, reason: str, n=1, item=None, detail=""):
    """Adds ``n`` (int or scalar tensor) skips of ``reason``.

    ``item`` (scalar string) names the bad input; it is recorded with
    ``detail`` when ``n > 0``. Returns a scalar bool tensor (True) that
    depends on the updates.
    """
    self.check_reason(reason)
    n = tf.cast(n, tf.int64)
    updates = [self._events[reason].assign_add(n)]
    if item is None:
      updates.append(self._unnamed[reason].assign_add(n))
    else:
      table = self._items[reason]
      item = tf.convert_to_tensor(item, tf.string)
      # TF has no string -> string hash table: the key is a 63-bit hash of
      # the item, the value "<item>\0<detail>".
      key = tf.strings.to_hash_bucket_fast(item, _HASH_BUCKETS)
      value = tf.strings.join([item, tf.convert_to_tensor(detail, tf.string)],
                              separator="\0")

      # Inserting zero keys is a no-op: no tf.cond (slow to trace).
      chosen = tf.reshape(n > 0, [1])
      updates.append(table.insert(tf.boolean_mask(tf.reshape(key, [1]), chosen),
                                  tf.boolean_mask(tf.reshape(value, [1]),
                                                  chosen)))
    with tf.control_dependencies(updates):
      return tf.constant(True)

  @tf.autograph.experimental.do_not_convert
  def keep(self, ok, reason: str, item=None, detail=""):
    """Counts one ``reason`` skip of ``item`` if ``ok`` is False; returns
    ``ok``. ``item`` and ``detail`` (a string, tensor, or a function
    returning one) are only evaluated for a skip: the usual, good element
    costs one ``tf.cond``."""
    self.check_reason(reason)
    ok = tf.convert_to_tensor(ok, tf.bool)

    def skip():
      text = detail() if callable(detail) else detail
      with tf.control_dependencies([self.count(reason, 1, item, text)]):
        return tf.constant(False)
    return tf.cond(ok, lambda: tf.constant(True), skip)

  def events(self) -> Dict[str, int]:
    return {r: int(v.numpy()) for r, v in self._events.items()}

  def as_dict(self) -> Dict[str, int]:
    """Distinct bad items per reason (+ events recorded without an item)."""
    return {r: int(self._items[r].size().numpy())
               + int(self._unnamed[r].numpy()) for r in self._reasons}

  def items(self) -> List[Dict[str, str]]:
    """The bad items, sorted: ``[{"item", "reason", "detail"}]``."""
    out = []
    for reason, table in self._items.items():
      _, values = table.export()
      for value in values.numpy():
        item, _, detail = value.decode("utf-8", "replace").partition("\0")
        out.append({"item": item, "reason": reason, "detail": detail})
    return sorted(out, key=lambda x: (x["item"], x["reason"]))

  def total(self) -> int:
    return sum(self.as_dict().values())

  def __repr__(self):
    return f"SkipCounter({self.as_dict()})"


def _file_sizes(files):
  return [tf.io.gfile.stat(f).length for f in files]


def read_tfrecords(files: Sequence[str], counter: SkipCounter,
                   shuffle_seed: Optional[int] = None, repeat: bool = False,
                   cycle_length: int = 8,
                   deterministic: Optional[bool] = None,
                   ranges: Optional[Sequence[Tuple[int, int]]] = None
                   ) -> tf.data.Dataset:
  """``(name, serialized)`` string pairs of every readable record of ``files``.

  Args:
    files: TFRecord shard paths (any ``tf.io.gfile`` path).
    counter: gets one ``"bad_shard"`` skip (item: the shard's path) per pass
      over a shard whose tail is unreadable; it must accept ``BAD_SHARD``.
    shuffle_seed: with ``repeat``, the shard order is reshuffled every pass
      with this seed; None and not ``repeat``: shards in the given order.
    repeat: pass over the shards forever.
    cycle_length: shards read at once (interleaved record by record).
    ranges: optional ``(first, end)`` record indices per file: only records
      ``first <= index < end`` are yielded (a TFDS sub-split); the whole
      shard is still read, so damage anywhere in it is counted.
    deterministic: keep the interleave order (default: with a
      ``shuffle_seed`` or without ``repeat``), so that a checkpointed
      iterator resumes on the same records.

  Returns:
    A dataset of ``(name, record)``; ``name`` is ``b"<path>#<index>"``, the
    record's index in its shard, for naming bad records in skip counts.
  """
  counter.check_reason(BAD_SHARD)
  files = list(files)
  if ranges is None:
    ranges = [(0, 2**62)] * len(files)
  shards = tf.data.Dataset.from_tensor_slices(
      (tf.constant(files, tf.string),
       tf.constant(_file_sizes(files), tf.int64),
       tf.constant([r[0] for r in ranges], tf.int64),
       tf.constant([r[1] for r in ranges], tf.int64)))
  if repeat:
    shards = shards.shuffle(len(files), seed=shuffle_seed,
                            reshuffle_each_iteration=True).repeat()
  if deterministic is None:
    deterministic = shuffle_seed is not None or not repeat

  def read_shard(path, size, first_index, end_index):
    # ignore_errors: after a DataLossError TFRecordDataset moves to its next
    # file, i.e. this shard ends; the byte count below says whether it did.
    records = tf.data.TFRecordDataset(path).ignore_errors().map(
        lambda r: (r, tf.constant(True)))
    end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(False)))

    def step(state, element):
      consumed, index = state
      record, is_record = element
      length = tf.cast(tf.strings.length(record), tf.int64) + _FRAMING_BYTES
      new_state = (consumed + tf.where(is_record, length, 0),
                   index + tf.cast(is_record, tf.int64))
      return new_state, (record, is_record, new_state[0], index)

    tagged = records.concatenate(end).scan(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)

    def keep_records(record, is_record, consumed, index):
      del record
      whole = counter.keep(
          tf.logical_or(is_record, tf.equal(consumed, size)), BAD_SHARD,
          item=path, detail=lambda: tf.strings.format(
              "read {} records ({} of {} bytes); the rest is truncated or "
              "corrupt", (index, consumed, size)))
      with tf.control_dependencies([whole]):
        return is_record & (index >= first_index) & (index < end_index)

    return tagged.filter(keep_records).map(
        lambda record, is_record, consumed, index: (
            tf.strings.join([path, "#", tf.strings.as_string(index)]),
            record))

  return shards.interleave(
      read_shard, cycle_length=max(1, min(len(files), cycle_length)),
      num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def read_tfds(builder, split: str, counter: SkipCounter, decoders=None,
              shuffle_seed: Optional[int] = None, repeat: bool = False,
              deterministic: Optional[bool] = None) -> tf.data.Dataset:
  """``(name, example dict)`` of a prepared TFDS split, damage tolerated.

  TFDS's own reader stops at the first damaged record with a
  ``DataLossError``; here the split's TFRecord shards (its file instructions,
  so sub-splits such as ``train[:10%]`` work) are read with
  ``read_tfrecords`` ("bad_shard" counted, readable records used) and each
  record is parsed with the builder's features (``decoders`` as in
  ``builder.as_dataset``); a record that does not parse is a "bad_record".
  Names are ``<shard>#<index>``. Arguments as ``read_tfrecords``; the counter
  must accept ``BAD_SHARD`` and "bad_record".

  Raises:
    ValueError: a data set not stored as TFRecords (e.g. ArrayRecord).
  """
  counter.check_reason("bad_record")
  file_format = getattr(builder.info.file_format, "value",
                        builder.info.file_format)
  if str(file_format) != "tfrecord":
    raise ValueError(
        f"TFDS data set {builder.name!r} is stored as {file_format}; the "
        f"readers here take TFRecord shards (`tfds build "
        f"--file_format=tfrecord`).")
  instructions = builder.info.splits[split].file_instructions
  files = [str(i.filename) for i in instructions]
  ranges = [(i.skip, i.skip + i.take) for i in instructions]
  records = read_tfrecords(files, counter, shuffle_seed=shuffle_seed,
                           repeat=repeat, deterministic=deterministic,
                           ranges=ranges)
  features = builder.info.features
  if deterministic is None:
    deterministic = shuffle_seed is not None or not repeat
  return decode.map_or_skip(
      records, lambda name, record: (name, features.deserialize_example(
          record, decoders=decoders)), counter, "bad_record",
      deterministic=deterministic, name_fn=lambda name, record: name)


def write_report(path: str, counters: Mapping[str, SkipCounter]) -> bool:
  """Writes ``{name: {"files", "events", "items"}}`` of the counters that
  skipped anything to ``path`` (JSON, atomically); returns whether it did.

  ``files`` are distinct items per reason (``as_dict``), ``events`` every
  encounter, ``items`` the bad inputs with reason and detail.
  """
  report = {}
  for name, counter in sorted(counters.items()):
    if counter is None or not sum(counter.events().values()):
      continue
    report[name] = {"files": counter.as_dict(), "events": counter.events(),
                    "items": counter.items()}
  if not report:
    return False
  temp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(temp, "w") as f:
    f.write(json.dumps(report, indent=1, sort_keys=True))
  tf.io.gfile.rename(temp, path, overwrite=True)
  return True
