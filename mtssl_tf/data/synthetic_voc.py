"""A small generated PASCAL VOC 2007 devkit with exact boxes.

Test and demonstration data for the VOC evaluations (paper §5): the on-disk
layout, XML fields and image-list files are exactly the real devkit's (see
mtssl_tf/data/voc.py), so the same readers, tools and evaluations run on it.

Each image is a random crop of a built-in scikit-image photo
(mtssl_tf/data/sample_data.py) with 1-3 flat-coloured shapes pasted on it; each
used VOC class is one (shape, colour) pair from ``SHAPES``, or, with
``colour_by_class=False``, one shape painted in ``SHAPE_ONLY_COLOUR`` whatever
its class, so that only the outline tells the classes apart (the set on which
a frozen random trunk falls clearly below a fine-tuned one: issue 12). Boxes
are the exact extent of the painted pixels in the devkit's 1-based inclusive
coordinates.
Flags, as in the real annotations:
  * ``truncated``: the shape was placed partly outside the frame (its box is
    the visible part);
  * ``difficult``: the shape is tiny (at most ``difficult_size`` pixels) and
    painted at low contrast, the kind of object VOC annotators mark difficult.
Everything is deterministic given ``seed``.
"""

import os
from typing import Sequence, Tuple

import numpy as np

from mtssl_tf.data import voc

# class -> (shape, RGB colour). The first ``num_classes`` rows are used.
SHAPES = (
    ("aeroplane", "triangle", (230, 40, 40)),
    ("bus", "square", (250, 210, 30)),
    ("cat", "disc", (40, 200, 60)),
    ("person", "cross", (40, 80, 240)),
    ("boat", "ring", (240, 60, 220)),
    ("dog", "diamond", (30, 220, 230)),
)
# The one colour of every shape when colour_by_class=False: light grey, far
# from most of the photos' pixels, so the shapes still stand out.
SHAPE_ONLY_COLOUR = (235, 235, 235)


def _shape_mask(shape: str, size: int) -> np.ndarray:
  """A bool [size, size] mask of ``shape`` filling the square."""
  import cv2  # pylint: disable=g-import-not-at-top
  mask = np.zeros((size, size), np.uint8)
  s = size - 1
  if shape == "triangle":
    cv2.fillPoly(mask, [np.array([[s // 2, 0], [0, s], [s, s]], np.int32)], 1)
  elif shape == "square":
    mask[:] = 1
  elif shape == "disc":
    cv2.circle(mask, (s // 2, s // 2), size // 2, 1, -1)
  elif shape == "cross":
    third = max(size // 3, 1)
    mask[third:size - third, :] = 1
    mask[:, third:size - third] = 1
  elif shape == "ring":
    cv2.circle(mask, (s // 2, s // 2), size // 2, 1, max(size // 5, 2))
  elif shape == "diamond":
    cv2.fillPoly(mask, [np.array([[s // 2, 0], [s, s // 2], [s // 2, s],
                                  [0, s // 2]], np.int32)], 1)
  else:
    raise ValueError(f"unknown shape {shape!r}")
  return mask.astype(bool)


def _background(photos, rng, height, width):
  import cv2  # pylint: disable=g-import-not-at-top
  photo = photos[rng.integers(len(photos))][1]
  ph, pw = photo.shape[:2]
  scale = rng.uniform(0.4, 1.0) * min(ph / height, pw / width)
  ch, cw = int(height * scale), int(width * scale)
  y, x = rng.integers(ph - ch + 1), rng.integers(pw - cw + 1)
  crop = photo[y:y + ch, x:x + cw]
  return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def _iou(a, b):
  ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
  iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
  inter = ix * iy
  area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
  return inter / (area(a) + area(b) - inter)


def render_image(photos, rng, height: int, width: int, num_classes: int,
                 difficult_size: int, truncated_rate: float,
                 difficult_rate: float, colour_by_class: bool = True):
  """One image: (uint8 [height, width, 3], [(class, box, difficult, trunc)]).

  Shapes take their class's colour, or ``SHAPE_ONLY_COLOUR`` when
  ``colour_by_class`` is False.

  Boxes are 1-based inclusive ``(xmin, ymin, xmax, ymax)`` of painted pixels.
  """
  image = _background(photos, rng, height, width).astype(np.float32)
  objects, boxes = [], []
  for _ in range(int(rng.integers(1, 4))):
    name, shape, colour = SHAPES[int(rng.integers(num_classes))]
    if not colour_by_class:
      colour = SHAPE_ONLY_COLOUR
    difficult = rng.random() < difficult_rate
    low = max(difficult_size // 2, 4)
    size = int(rng.integers(low, difficult_size + 1) if difficult else
               rng.integers(min(height, width) // 5, min(height, width) // 2))
    truncated = (not difficult) and rng.random() < truncated_rate
    # A truncated shape hangs 25-60 % over one of the four borders.
    over = int(size * rng.uniform(0.25, 0.6)) if truncated else 0
    side = int(rng.integers(4))
    for _ in range(20):  # placement avoiding heavy overlap
      x0 = int(rng.integers(0, width - size + 1))
      y0 = int(rng.integers(0, height - size + 1))
      if truncated:
        x0, y0 = [(-over, y0), (width - size + over, y0), (x0, -over),
                  (x0, height - size + over)][side]
      mask = np.zeros((height, width), bool)
      sub = _shape_mask(shape, size)
      ys, xs = slice(max(y0, 0), min(y0 + size, height)), slice(
          max(x0, 0), min(x0 + size, width))
      mask[ys, xs] = sub[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
      rows, cols = np.nonzero(mask)
      if rows.size == 0:
        continue
      box = (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1,
             int(rows.max()) + 1)
      if all(_iou(box, b) < 0.2 for b in boxes):
        break
    else:
      continue
    alpha = 0.45 if difficult else 1.0
    jitter = rng.uniform(0.85, 1.0)
    image[mask] = ((1 - alpha) * image[mask] +
                   alpha * jitter * np.asarray(colour, np.float32))
    boxes.append(box)
    objects.append((name, box, bool(difficult), bool(truncated)))
  return np.clip(image, 0, 255).astype(np.uint8), objects


def annotation_xml(image_id, width, height, objects) -> str:
  """The Annotations/<id>.xml text in the devkit's layout."""
  parts = [
      "<annotation>", "\t<folder>VOC2007</folder>",
      f"\t<filename>{image_id}.jpg</filename>",
      "\t<source>\n\t\t<database>mtssl_tf synthetic VOC2007</database>\n"
      "\t\t<annotation>PASCAL VOC2007</annotation>\n\t</source>",
      f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
      "\t\t<depth>3</depth>\n\t</size>", "\t<segmented>0</segmented>"]
  for name, box, difficult, truncated in objects:
    parts.append(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>{int(truncated)}</truncated>\n"
        f"\t\t<difficult>{int(difficult)}</difficult>\n\t\t<bndbox>\n"
        + "".join(f"\t\t\t<{k}>{v}</{k}>\n"
                  for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        + "\t\t</bndbox>\n\t</object>")
  parts.append("</annotation>\n")
  return "\n".join(parts)


def make_devkit(root: str, num_trainval: int = 40, num_test: int = 20,
                num_classes: int = 4, image_size: Tuple[int, int] = (128, 160),
                seed: int = 0, difficult_size: int = 12,
                truncated_rate: float = 0.15,
                difficult_rate: float = 0.1,
                colour_by_class: bool = True) -> str:
  """Writes ``<root>/VOC2007/`` with JPEGImages, Annotations and ImageSets.

  Args:
    root: the devkit root to create (may exist; files are overwritten).
    num_trainval: images in trainval (the first half also in train, the rest
      in val); ids 000001.. .
    num_test: images in test, numbered after trainval.
    num_classes: how many rows of ``SHAPES`` (VOC classes) to use, 1..6.
    image_size: (height, width) of the median image; each image's sides vary
      by up to +-20 %, as VOC's do.
    seed: everything is a function of it.
    difficult_size: largest side of a "difficult" object in pixels.
    truncated_rate, difficult_rate: chance per object of each flag.
    colour_by_class: paint each class in its own colour (True) or every
      shape in ``SHAPE_ONLY_COLOUR``, leaving the shape as the only cue.

  Returns:
    ``root``. Per-class lists ``<class>_<split>.txt`` ("<id> 1|-1|0", 0 when
    the image only holds difficult objects of that class) are written too.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from mtssl_tf.data import sample_data  # pylint: disable=g-import-not-at-top
  if not 1 <= num_classes <= len(SHAPES):
    raise ValueError(f"num_classes must be in 1..{len(SHAPES)}")
  photos = sample_data.load_photos()
  rng = np.random.default_rng(seed)
  base = os.path.join(root, "VOC2007")
  dirs = {d: os.path.join(base, d) for d in
          ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main"))}
  for d in dirs.values():
    os.makedirs(d, exist_ok=True)
  ids = [f"{i:06d}" for i in range(1, num_trainval + num_test + 1)]
  labels = {}  # id -> {class: 1 or 0}
  for image_id in ids:
    h, w = (int(s * rng.uniform(0.8, 1.2)) for s in image_size)
    image, objects = render_image(photos, rng, h, w, num_classes,
                                  difficult_size, truncated_rate,
                                  difficult_rate, colour_by_class)
    Image.fromarray(image).save(
        os.path.join(dirs["JPEGImages"], image_id + ".jpg"), quality=95)
    with open(os.path.join(dirs["Annotations"], image_id + ".xml"), "w") as f:
      f.write(annotation_xml(image_id, w, h, objects))
    present = labels.setdefault(image_id, {})
    for name, _, difficult, _ in objects:
      present[name] = max(present.get(name, 0), 0 if difficult else 1)
  splits = {"trainval": ids[:num_trainval], "test": ids[num_trainval:],
            "train": ids[:num_trainval // 2],
            "val": ids[num_trainval // 2:num_trainval]}
  main = dirs[os.path.join("ImageSets", "Main")]
  for split, split_ids in splits.items():
    with open(os.path.join(main, split + ".txt"), "w") as f:
      f.write("".join(i + "\n" for i in split_ids))
    for name in voc.CLASSES:
      with open(os.path.join(main, f"{name}_{split}.txt"), "w") as f:
        f.write("".join(f"{i} {labels[i].get(name, -1):2d}\n"
                        for i in split_ids))
  return root


def used_classes(num_classes: int = 4) -> Sequence[str]:
  """The VOC class names a devkit made with ``num_classes`` can contain."""
  return [name for name, _, _ in SHAPES[:num_classes]]
