"""Image folder -> sharded TFRecords of encoded images (tools/make_tfrecords.py).

The records keep each file's original bytes (no re-encoding, no resizing) in
the image-record format of ``tfrecord_format.py``, which every image task
reads (``DataConfig(source="tfrecord", path=".../train-*")``). Optionally the
ImageNet class-folder layout (``<root>/<class>/<image>``) gives each image the
index of its class among the sorted class-folder names.

Steps: list the images (recursive; jpg, jpeg, png, bmp, gif, webp), shuffle
them with a seeded RNG (the same seed gives the same shards), check every file
in a process pool (it must be a format TensorFlow decodes, decode with
Pillow, have a non-zero size, and be within ``decode.MAX_PIXELS`` and
``decode.MAX_ASPECT``, read from the header before decoding; corrupt,
truncated, empty, oversized and other files are skipped with the reason),
write the shards under temporary names and rename each when complete, then
write ``manifest.json`` last (counts per shard, class names, skipped files and
why). Every file below the input folder ends up in a shard or in the
manifest's "skipped" list (files with other extensions as
"unsupported_format").
"""

import concurrent.futures
import dataclasses
import json
import os
import random
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mtssl_tf.data import decode

LABEL_MODES = ("none", "class_folders")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Pillow format names of the formats tf.io.decode_image reads (MPO: a JPEG
# with extra frames, as some cameras write).
TF_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP")
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class RecordsConfig:
  """What make_tfrecords does.

  Attributes:
    input_dir: folder of images (searched recursively).
    output_dir: where shards and manifest.json go.
    prefix: shard name prefix ("train" -> train-00000-of-00008.tfrecord).
    num_shards: number of shards (0: one per ``images_per_shard`` images).
    images_per_shard: shard size when num_shards is 0.
    labels: "none" (label -1) or "class_folders" (ImageNet layout).
    seed: seed of the shuffle.
    workers: processes that check the images.
    overwrite: replace existing shards with the same prefix.
  """
  input_dir: str
  output_dir: str
  prefix: str = "train"
  num_shards: int = 0
  images_per_shard: int = 1024
  labels: str = "none"
  seed: int = 0
  workers: int = 2
  overwrite: bool = False


def list_images(input_dir: str, labels: str = "none"
                ) -> Tuple[List[Tuple[str, int]], List[str]]:
  """``([(relative path, label)], class names)``, sorted by path.

  Raises:
    ValueError: missing folder, no image files, or (class_folders) images
      that are not inside a class folder only.
  """
  if labels not in LABEL_MODES:
    raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}.")
  if not os.path.isdir(input_dir):
    raise ValueError(f"Input folder {input_dir!r} does not exist.")
  paths = []
  for root, dirs, files in os.walk(input_dir):
    dirs.sort()
    for name in sorted(files):
      if name.lower().endswith(IMAGE_EXTENSIONS):
        paths.append(os.path.relpath(os.path.join(root, name), input_dir))
  if not paths:
    raise ValueError(
        f"Input folder {input_dir!r} holds no image files "
        f"({', '.join(IMAGE_EXTENSIONS)}).")
  if labels == "none":
    return [(p, -1) for p in paths], []
  classes = sorted({p.split(os.sep)[0] for p in paths if os.sep in p})
  top_level = [p for p in paths if os.sep not in p]
  if not classes or top_level:
    raise ValueError(
        f"--labels=class_folders expects <root>/<class>/<image> in "
        f"{input_dir!r}; found {len(top_level)} images directly in the root "
        f"(e.g. {top_level[:3]}).")
  index = {c: i for i, c in enumerate(classes)}
  return [(p, index[p.split(os.sep)[0]]) for p in paths], classes


def other_files(input_dir: str) -> List[str]:
  """Relative paths of the files below ``input_dir`` that are not images."""
  return sorted(
      os.path.relpath(os.path.join(root, name), input_dir)
      for root, _, files in os.walk(input_dir) for name in files
      if not name.lower().endswith(IMAGE_EXTENSIONS))


def check_image(path: str) -> Optional[str]:
  """Returns None if the file is usable, else the reason it is bad.

  The size bounds are checked from the header (``Image.open`` reads only
  the header) before the image is decoded.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    if os.path.getsize(path) == 0:
      return "empty file"
    with Image.open(path) as image:
      if image.format not in TF_FORMATS:
        return (f"unsupported_format: {image.format} (TensorFlow decodes "
                f"{', '.join(TF_FORMATS)})")
      problem = decode.size_problem(image.height, image.width)
      if problem:
        return problem
      image.load()
      if image.width == 0 or image.height == 0:
        return "zero-size image"
  except Exception as e:  # pylint: disable=broad-except
    return f"undecodable: {type(e).__name__}: {str(e)[:120]}"
  return None


def _check_chunk(paths: Sequence[str]) -> List[Optional[str]]:
  return [check_image(p) for p in paths]


def _shard_names(prefix: str, num_shards: int) -> List[str]:
  return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord"
          for i in range(num_shards)]


def _check_output_dir(cfg: RecordsConfig) -> None:
  try:
    os.makedirs(cfg.output_dir, exist_ok=True)
    probe = os.path.join(cfg.output_dir, ".write_probe")
    with open(probe, "w", encoding="utf-8"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"Output folder {cfg.output_dir!r} is not writable: "
                     f"{e}") from None
  existing = [n for n in os.listdir(cfg.output_dir)
              if n.startswith(cfg.prefix + "-") and n.endswith(".tfrecord")]
  if existing and not cfg.overwrite:
    raise ValueError(
        f"{cfg.output_dir!r} already holds {len(existing)} shards named "
        f"{cfg.prefix}-*; pass --overwrite to replace them or choose another "
        f"--output_dir/--prefix.")


def make_records(cfg: RecordsConfig,
                 progress: Callable[[str], None] = print) -> Dict:
  """Writes the shards and the manifest; returns the manifest dict."""
  _check_output_dir(cfg)
  images, classes = list_images(cfg.input_dir, cfg.labels)
  random.Random(cfg.seed).shuffle(images)

  # ---- Check every file in parallel.
  start = time.monotonic()
  full_paths = [os.path.join(cfg.input_dir, p) for p, _ in images]
  chunk = 64
  chunks = [full_paths[i:i + chunk] for i in range(0, len(full_paths), chunk)]
  problems: List[Optional[str]] = []
  with concurrent.futures.ProcessPoolExecutor(max(1, cfg.workers)) as pool:
    for i, result in enumerate(pool.map(_check_chunk, chunks)):
      problems.extend(result)
      done = len(problems)
      rate = done / max(time.monotonic() - start, 1e-9)
      if i % 10 == 0 or done == len(images):
        progress(f"checked {done}/{len(images)} images ({rate:.0f}/s, ETA "
                 f"{(len(images) - done) / max(rate, 1e-9):.0f} s)")
  good = [(p, label) for (p, label), bad in zip(images, problems) if not bad]
  skipped = [{"file": p, "reason": bad}
             for (p, _), bad in zip(images, problems) if bad]
  skipped += [{"file": p, "reason": "unsupported_format: not one of the "
               f"image extensions {', '.join(IMAGE_EXTENSIONS)}"}
              for p in other_files(cfg.input_dir)]
  if not good:
    raise ValueError(f"None of the {len(images)} image files in "
                     f"{cfg.input_dir!r} decodes; first problems: "
                     f"{skipped[:3]}")

  # ---- Write shards under temporary names; rename each when complete.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mtssl_tf.data import tfrecord_format  # pylint: disable=g-import-not-at-top
  num_shards = cfg.num_shards or max(
      1, -(-len(good) // max(1, cfg.images_per_shard)))
  num_shards = min(num_shards, len(good))
  names = _shard_names(cfg.prefix, num_shards)
  shards = []
  for s, name in enumerate(names):
    members = good[s::num_shards]
    tmp = os.path.join(cfg.output_dir, f".tmp-{name}")
    with tf.io.TFRecordWriter(tmp) as writer:
      for path, label in members:
        with open(os.path.join(cfg.input_dir, path), "rb") as f:
          encoded = f.read()
        fmt = os.path.splitext(path)[1].lower().lstrip(".")
        fmt = "jpeg" if fmt == "jpg" else fmt
        writer.write(tfrecord_format.image_example(encoded, fmt, path, label))
    os.replace(tmp, os.path.join(cfg.output_dir, name))
    shards.append({"file": name, "images": len(members)})
    progress(f"wrote shard {s + 1}/{num_shards}: {name} ({len(members)} "
             f"images)")

  # With --overwrite, shards of an earlier run with another shard count go
  # only now that the new set is complete.
  for stale in os.listdir(cfg.output_dir):
    if (stale.startswith(cfg.prefix + "-") and stale.endswith(".tfrecord")
        and stale not in names):
      os.remove(os.path.join(cfg.output_dir, stale))

  manifest = {"input_dir": os.path.abspath(cfg.input_dir),
              "seed": cfg.seed, "labels": cfg.labels, "classes": classes,
              "images": len(good), "skipped": skipped, "shards": shards}
  tmp = os.path.join(cfg.output_dir, f".tmp-{MANIFEST}")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
  os.replace(tmp, os.path.join(cfg.output_dir, MANIFEST))
  return manifest
