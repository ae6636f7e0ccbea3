"""PASCAL VOC -> TFRecords in Model Garden's detection layout.

One ``tf.train.Example`` per image with the fields
``official/vision/dataloaders/tf_example_decoder.py`` (``TfExampleDecoder``)
reads, plus the VOC flags it does not:

  image/encoded, image/format ("jpeg"), image/source_id (the VOC id, e.g.
  "000005"), image/filename, image/height, image/width   original JPEG bytes
  image/object/bbox/{xmin,ymin,xmax,ymax}   float, normalised pixel *edges*:
      ((xmin - 1) / W, (ymin - 1) / H, xmax / W, ymax / H) of the devkit's
      1-based inclusive box, so a box's normalised width is its pixel count/W
  image/object/class/label    int64, VOC class index + 1 (0 is Model Garden's
                              background class), class/text the name
  image/object/is_crowd       int64 = difficult: Model Garden's Mask R-CNN
      parser drops crowd boxes from training (``skip_crowd_during_training``),
      which is what the standard VOC Faster R-CNN recipe does with difficult
      objects (py-faster-rcnn ``use_diff=False``)
  image/object/difficult, image/object/truncated   int64 0/1 (TF OD API names)

Sources: a VOCdevkit directory (mtssl_tf/data/voc.py: bad files are skipped
and listed in ``manifest-<split>.json`` with the reason), or the TFDS ``voc/2007``
data set where the user has prepared it (TFDS stores the devkit's raw
coordinates divided by the image size; they are turned back into pixels).
Shards are written under temporary names and renamed when complete, the
manifest last.
"""

import dataclasses
import json
import os
from typing import Dict, Iterator, List, Tuple

from mtssl_tf.data import decode
from mtssl_tf.data import voc



def manifest_name(split: str) -> str:
  """The manifest's file name for ``split`` (one per split, same folder)."""
  return f"manifest-{split}.json"
_TFDS_SPLITS = {"trainval": "train+validation", "train": "train",
                "val": "validation", "test": "test"}


def _feature(values, kind):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if kind == "bytes":
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
  if kind == "int":
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def voc_example(encoded_jpeg: bytes, image: voc.VocImage):
  """The tf.train.Example of one VOC image (layout in the module docstring)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  w, h = float(image.width), float(image.height)
  objects = image.objects
  feature = {
      "image/encoded": _feature([encoded_jpeg], "bytes"),
      "image/format": _feature([b"jpeg"], "bytes"),
      "image/source_id": _feature([image.image_id.encode()], "bytes"),
      "image/filename": _feature([(image.image_id + ".jpg").encode()],
                                 "bytes"),
      "image/height": _feature([image.height], "int"),
      "image/width": _feature([image.width], "int"),
      "image/object/bbox/xmin": _feature(
          [(o.box[0] - 1) / w for o in objects], "float"),
      "image/object/bbox/ymin": _feature(
          [(o.box[1] - 1) / h for o in objects], "float"),
      "image/object/bbox/xmax": _feature([o.box[2] / w for o in objects],
                                         "float"),
      "image/object/bbox/ymax": _feature([o.box[3] / h for o in objects],
                                         "float"),
      "image/object/class/label": _feature([o.label + 1 for o in objects],
                                           "int"),
      "image/object/class/text": _feature([o.name.encode() for o in objects],
                                          "bytes"),
      "image/object/is_crowd": _feature([int(o.difficult) for o in objects],
                                        "int"),
      "image/object/difficult": _feature([int(o.difficult) for o in objects],
                                         "int"),
      "image/object/truncated": _feature([int(o.truncated) for o in objects],
                                         "int"),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_voc_example(serialized) -> Dict[str, "tf.Tensor"]:
  """Our fields of one record (graph-safe) -> a dict of tensors.

  Returns:
    source_id string [], image uint8 [H, W, 3], height/width int64 [],
    boxes float32 [N, 4] normalised (ymin, xmin, ymax, xmax) edges (Model
    Garden's order), classes int64 [N] (VOC index + 1), difficult bool [N],
    truncated bool [N].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  var = lambda dtype: tf.io.VarLenFeature(dtype)
  spec = {"image/encoded": tf.io.FixedLenFeature((), tf.string),
          "image/source_id": tf.io.FixedLenFeature((), tf.string),
          "image/height": tf.io.FixedLenFeature((), tf.int64),
          "image/width": tf.io.FixedLenFeature((), tf.int64),
          "image/object/class/label": var(tf.int64),
          "image/object/difficult": var(tf.int64),
          "image/object/truncated": var(tf.int64)}
  for k in ("ymin", "xmin", "ymax", "xmax"):
    spec["image/object/bbox/" + k] = var(tf.float32)
  parsed = tf.io.parse_single_example(serialized, spec)
  dense = {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
           for k, v in parsed.items()}
  # Records hold only images within data/decode.py's bounds (checked when
  # written); the bounded decode keeps that true for records from elsewhere:
  # an image over the bounds comes back empty [0, 0, 3].
  image, _, _ = decode.decode_rgb_bounded(dense["image/encoded"])
  return {
      "source_id": dense["image/source_id"],
      "image": image,
      "height": dense["image/height"],
      "width": dense["image/width"],
      "boxes": tf.stack([dense["image/object/bbox/" + k]
                         for k in ("ymin", "xmin", "ymax", "xmax")], -1),
      "classes": dense["image/object/class/label"],
      "difficult": tf.cast(dense["image/object/difficult"], tf.bool),
      "truncated": tf.cast(dense["image/object/truncated"], tf.bool),
  }


@dataclasses.dataclass(frozen=True)
class VocRecordsConfig:
  """What tools/make_voc_tfrecords.py does.

  Attributes:
    output_dir: where ``<split>-?????-of-?????.tfrecord`` and manifest-<split>.json go.
    split: train, val, trainval or test.
    voc_dir: VOCdevkit root or its VOC2007 directory (or "" with tfds_data_dir).
    tfds_data_dir: a TFDS data dir holding a prepared ``voc/2007`` (used
      when voc_dir is empty).
    images_per_shard: records per shard.
    overwrite: replace existing shards of this split.
  """
  output_dir: str
  split: str = "trainval"
  voc_dir: str = ""
  tfds_data_dir: str = ""
  images_per_shard: int = 512
  overwrite: bool = False


def _from_devkit(cfg) -> Tuple[Iterator[Tuple[bytes, voc.VocImage]],
                               List[voc.Problem], int]:
  records, problems = voc.read_split(cfg.voc_dir, cfg.split)
  # The shared size bounds of data/decode.py (50 MP, aspect 10) on the JPEG
  # header sizes read_split checked: such images are never decoded
  # downstream (Model Garden's decoder has no bound).
  kept = []
  for record in records:
    problem = decode.size_problem(record.height, record.width)
    if problem:
      problems.append(voc.Problem(f"JPEGImages/{record.image_id}.jpg",
                                  problem))
    else:
      kept.append(record)
  records = kept

  def items():
    for record in records:
      with open(record.jpeg_path, "rb") as f:
        yield f.read(), record
  return items(), problems, len(records)


def _from_tfds(cfg):
  """Prepared TFDS voc/2007 -> (bytes, VocImage) items (no download)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder("voc/2007", data_dir=cfg.tfds_data_dir)
  try:
    ds = builder.as_dataset(split=_TFDS_SPLITS[cfg.split],
                            decoders={"image": tfds.decode.SkipDecoding()})
  except (AssertionError, OSError, ValueError) as e:
    raise ValueError(f"TFDS voc/2007 is not prepared under "
                     f"{cfg.tfds_data_dir!r} ({e}); prepare it with "
                     f"tfds.builder('voc/2007').download_and_prepare() or pass "
                     f"--voc_dir=<VOCdevkit>.") from None
  names = builder.info.features["objects"]["label"].names
  problems = []  # filled while the items are read (before the manifest)

  def items():
    from PIL import Image  # pylint: disable=g-import-not-at-top
    import io  # pylint: disable=g-import-not-at-top
    for ex in tfds.as_numpy(ds):
      encoded = ex["image"]
      w, h = Image.open(io.BytesIO(encoded)).size
      problem = decode.size_problem(h, w)
      if problem:
        problems.append(voc.Problem(ex["image/filename"].decode(), problem))
        continue
      objs = ex["objects"]
      objects = tuple(
          voc.VocObject(names[label], (round(b[1] * w), round(b[0] * h),
                                       round(b[3] * w), round(b[2] * h)),
                        bool(d), bool(t))
          for label, b, d, t in zip(objs["label"], objs["bbox"],
                                    objs["is_difficult"], objs["is_truncated"]))
      image_id = os.path.splitext(ex["image/filename"].decode())[0]
      yield encoded, voc.VocImage(image_id, "", w, h, objects)
  return items(), problems, builder.info.splits[_TFDS_SPLITS[cfg.split]].num_examples


def make_records(cfg: VocRecordsConfig) -> dict:
  """Writes the shards and the manifest; returns the manifest.

  Raises:
    ValueError: bad config, missing devkit/TFDS data, or existing shards
      without ``overwrite``; before anything is written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if cfg.split not in voc.SPLITS:
    raise ValueError(f"split must be one of {voc.SPLITS}, got {cfg.split!r}")
  if bool(cfg.voc_dir) == bool(cfg.tfds_data_dir):
    raise ValueError("Give exactly one of voc_dir (a VOCdevkit) and "
                     "tfds_data_dir (a prepared TFDS voc/2007).")
  if cfg.images_per_shard < 1:
    raise ValueError("images_per_shard must be >= 1")
  existing = (tf.io.gfile.glob(os.path.join(cfg.output_dir,
                                           cfg.split + "-*.tfrecord"))
              if os.path.isdir(cfg.output_dir) else [])
  if existing and not cfg.overwrite:
    raise ValueError(f"{cfg.output_dir} already holds {cfg.split} shards; "
                     "pass --overwrite to replace them.")
  items, problems, total = (_from_devkit(cfg) if cfg.voc_dir
                            else _from_tfds(cfg))
  os.makedirs(cfg.output_dir, exist_ok=True)
  for path in existing:
    os.remove(path)
  num_shards = max(1, -(-total // cfg.images_per_shard))
  shards, counts, writer, done = [], [], None, 0
  for encoded, image in items:
    if done % cfg.images_per_shard == 0:
      if writer:
        writer.close()
        os.replace(shards[-1] + ".tmp", shards[-1])
      shards.append(os.path.join(
          cfg.output_dir,
          f"{cfg.split}-{len(shards):05d}-of-{num_shards:05d}.tfrecord"))
      writer = tf.io.TFRecordWriter(shards[-1] + ".tmp")
      counts.append(0)
    writer.write(voc_example(encoded, image).SerializeToString())
    counts[-1] += 1
    done += 1
  if writer:
    writer.close()
    os.replace(shards[-1] + ".tmp", shards[-1])
  manifest = {
      "split": cfg.split, "source": cfg.voc_dir or f"tfds:{cfg.tfds_data_dir}",
      "images": done, "classes": list(voc.CLASSES), "label_offset": 1,
      "shards": {os.path.basename(s): c for s, c in zip(shards, counts)},
      "skipped": [{"file": p.file, "reason": p.reason} for p in problems]}
  path = os.path.join(cfg.output_dir, manifest_name(cfg.split))
  with open(path + ".tmp", "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(path + ".tmp", path)
  return manifest
