"""PASCAL VOC 2007 on disk: a VOCdevkit directory -> per-image records.

The layout read (the official devkit's, paper §5 "PASCAL VOC 2007"):

  VOCdevkit/VOC2007/JPEGImages/<id>.jpg
  VOCdevkit/VOC2007/Annotations/<id>.xml      name, bndbox, difficult, truncated
  VOCdevkit/VOC2007/ImageSets/Main/<split>.txt  one image id per line

``root`` may be the devkit root (holding ``VOC2007/``) or the ``VOC2007``
directory itself. Boxes keep the XML's 1-based inclusive pixel coordinates
``(xmin, ymin, xmax, ymax)``, exactly as the devkit's evaluation uses them.

Bad input never crashes a run and is never dropped silently: an image whose
XML is malformed, has a box outside the image or inverted, names an unknown
class, has no objects, or whose JPEG is missing/unreadable/of another size
than the XML says, is skipped as a whole (dropping only the bad object would
turn a real object into background for the detector) and reported as a
``Problem(file, reason)``. A missing or malformed devkit fails at start-up
with ``ValueError`` naming what is expected where.
"""

import dataclasses
import os
from typing import List, Optional, Tuple
import xml.etree.ElementTree as ElementTree

# The 20 VOC classes in the devkit's order (VOCinit.m); class index = position.
CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
           "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
           "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
SPLITS = ("train", "val", "trainval", "test")
_LAYOUT = ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main"))


@dataclasses.dataclass(frozen=True)
class VocObject:
  """One annotated object. ``box``: (xmin, ymin, xmax, ymax), 1-based pixels."""
  name: str
  box: Tuple[float, float, float, float]
  difficult: bool
  truncated: bool

  @property
  def label(self) -> int:
    """Index of the class in ``CLASSES``."""
    return CLASSES.index(self.name)


@dataclasses.dataclass(frozen=True)
class VocImage:
  """One image: its id, JPEG path, size and objects (XML order)."""
  image_id: str
  jpeg_path: str
  width: int
  height: int
  objects: Tuple[VocObject, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
  """A skipped file and why."""
  file: str
  reason: str

  def __str__(self):
    return f"{self.file}: {self.reason}"


def voc2007_dir(root: str) -> str:
  """The VOC2007 directory under ``root`` (devkit root or VOC2007 itself).

  Raises:
    ValueError: naming the expected layout, if it is not there.
  """
  root = os.path.expanduser(root or "")
  for candidate in (os.path.join(root, "VOC2007"), root):
    if all(os.path.isdir(os.path.join(candidate, d)) for d in _LAYOUT):
      return candidate
  missing = [os.path.join(root, "VOC2007", d) for d in _LAYOUT
             if not os.path.isdir(os.path.join(root, "VOC2007", d))]
  raise ValueError(
      f"{root!r} is not a VOCdevkit: expected either <root>/VOC2007/ or "
      f"<root> itself to hold {', '.join(d + '/' for d in _LAYOUT)} (the "
      f"PASCAL VOC 2007 devkit layout, e.g. VOCtrainval_06-Nov-2007.tar and "
      f"VOCtest_06-Nov-2007.tar extracted into one folder); missing: "
      f"{', '.join(missing)}")


def read_image_ids(root: str, split: str) -> List[str]:
  """Image ids listed in ``ImageSets/Main/<split>.txt``, in file order.

  Raises:
    ValueError: unknown split, missing or empty list file.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown VOC split {split!r}; expected one of {SPLITS}.")
  path = os.path.join(voc2007_dir(root), "ImageSets", "Main", split + ".txt")
  if not os.path.isfile(path):
    raise ValueError(f"Missing image list {path} (one image id per line).")
  with open(path) as f:
    ids = [line.split()[0] for line in f if line.strip()]
  if not ids:
    raise ValueError(f"Image list {path} is empty.")
  return ids


def _text(node, path, what):
  child = node.find(path)
  if child is None or child.text is None or not child.text.strip():
    raise ValueError(f"missing <{what}>")
  return child.text.strip()


def _flag(node, tag):
  child = node.find(tag)  # absent in some third-party files: means 0
  return child is not None and (child.text or "0").strip() not in ("0", "")


def parse_annotation(
    xml_text, image_size: Optional[Tuple[int, int]] = None
) -> Tuple[Optional[Tuple[int, int]], List[VocObject]]:
  """Parses one Annotations/*.xml text -> ((width, height) or None, objects).

  Args:
    xml_text: the file's bytes or str.
    image_size: (width, height) to check the boxes against when the XML has
      no <size> (the returned size is then None).

  Raises:
    ValueError: malformed XML, a missing or non-numeric field, an unknown
      class, or a box outside the image / with xmin > xmax or ymin > ymax.
  """
  try:
    tree = ElementTree.fromstring(xml_text)
  except ElementTree.ParseError as e:
    raise ValueError(f"malformed XML ({e})") from None
  size = None
  if tree.find("size") is not None:
    try:
      size = (int(float(_text(tree, "size/width", "size/width"))),
              int(float(_text(tree, "size/height", "size/height"))))
    except ValueError as e:
      raise ValueError(f"bad <size>: {e}") from None
    if min(size) <= 0:
      raise ValueError(f"bad <size> {size[0]}x{size[1]}")
  objects = []
  for i, obj in enumerate(tree.findall("object")):
    name = _text(obj, "name", f"object {i} name").lower()
    if name not in CLASSES:
      raise ValueError(f"object {i}: unknown class {name!r}")
    try:
      box = tuple(float(_text(obj, "bndbox/" + k, f"object {i} bndbox/{k}"))
                  for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError as e:
      raise ValueError(f"object {i}: {e}") from None
    xmin, ymin, xmax, ymax = box
    if xmin > xmax or ymin > ymax:
      raise ValueError(f"object {i} ({name}): inverted box {box}")
    bound = size or image_size
    if bound and (xmin < 1 or ymin < 1 or xmax > bound[0] or
                  ymax > bound[1]):
      raise ValueError(f"object {i} ({name}): box {box} outside the "
                       f"{bound[0]}x{bound[1]} image")
    objects.append(VocObject(name, box, _flag(obj, "difficult"),
                             _flag(obj, "truncated")))
  return size, objects


def _jpeg_size(path):
  """(width, height) from the JPEG header; ValueError if unreadable."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise ValueError("JPEG missing")
  try:
    with Image.open(path) as image:
      if image.format != "JPEG":
        raise ValueError(f"not a JPEG ({image.format})")
      return image.size
  except (OSError, SyntaxError) as e:
    raise ValueError(f"unreadable JPEG ({e})") from None


def read_image(root: str, image_id: str) -> VocImage:
  """Reads and checks one image's annotation and JPEG header.

  Raises:
    ValueError: with the reason, if the image must be skipped.
  """
  voc = voc2007_dir(root)
  xml_path = os.path.join(voc, "Annotations", image_id + ".xml")
  jpeg_path = os.path.join(voc, "JPEGImages", image_id + ".jpg")
  if not os.path.isfile(xml_path):
    raise ValueError("annotation missing")
  with open(xml_path, "rb") as f:
    xml_text = f.read()
  jpeg_size = _jpeg_size(jpeg_path)
  size, objects = parse_annotation(xml_text, image_size=jpeg_size)
  if size is not None and jpeg_size != size:
    raise ValueError(f"JPEG is {jpeg_size[0]}x{jpeg_size[1]}, annotation "
                     f"says {size[0]}x{size[1]}")
  if not objects:
    raise ValueError("empty annotation (no objects)")
  return VocImage(image_id, jpeg_path, jpeg_size[0], jpeg_size[1],
                  tuple(objects))


def read_split(root: str, split: str) -> Tuple[List[VocImage], List[Problem]]:
  """All usable images of a split, and the problems of the skipped ones.

  Returns:
    (records in image-list order, problems). A problem's ``file`` is the
    annotation's path relative to the VOC2007 directory (or the JPEG's when
    the JPEG is at fault).

  Raises:
    ValueError: missing/malformed devkit or image list, or no usable image.
  """
  ids = read_image_ids(root, split)
  records, problems = [], []
  for image_id in ids:
    try:
      records.append(read_image(root, image_id))
    except ValueError as e:
      jpeg_fault = str(e).startswith(("JPEG", "unreadable JPEG",
                                      "not a JPEG"))
      file = (f"JPEGImages/{image_id}.jpg" if jpeg_fault
              else f"Annotations/{image_id}.xml")
      problems.append(Problem(file, str(e)))
  if not records:
    raise ValueError(
        f"No usable image in VOC split {split!r} of {voc2007_dir(root)} "
        f"({len(ids)} listed; first problems: "
        f"{'; '.join(map(str, problems[:3]))}).")
  return records, problems
