"""VOCdevkit reading (data/voc.py) on generated devkits (data/synthetic_voc.py),
including the bad files a real download can contain."""

import os

import numpy as np
import pytest

from mtssl_tf.data import synthetic_voc
from mtssl_tf.data import voc


@pytest.fixture(scope="module")
def devkit(tmp_path_factory):
  return synthetic_voc.make_devkit(str(tmp_path_factory.mktemp("voc")),
                                   num_trainval=12, num_test=6, seed=3)


def _xml(objects, size=(100, 80)):
  return synthetic_voc.annotation_xml("x", size[0], size[1], objects)


def test_parse_annotation_fields():
  size, objects = voc.parse_annotation(_xml(
      [("cat", (1, 2, 100, 80), False, True), ("person", (5, 6, 7, 8), True,
                                                False)]))
  assert size == (100, 80)
  assert objects == [voc.VocObject("cat", (1., 2., 100., 80.), False, True),
                     voc.VocObject("person", (5., 6., 7., 8.), True, False)]
  assert objects[0].label == 7 and objects[1].label == 14
  assert len(voc.CLASSES) == 20 and voc.CLASSES[-1] == "tvmonitor"


@pytest.mark.parametrize("xml,reason", [
    ("<annotation><object>", "malformed XML"),
    (_xml([("cat", (0, 2, 50, 50), False, False)]), "outside"),
    (_xml([("cat", (2, 2, 101, 50), False, False)]), "outside"),
    (_xml([("cat", (2, 2, 50, 81), False, False)]), "outside"),
    (_xml([("cat", (30, 2, 20, 50), False, False)]), "inverted"),
    (_xml([("unicorn", (1, 1, 5, 5), False, False)]), "unknown class"),
    (_xml([("cat", (1, 1, 5, 5), False, False)]).replace(
        "<ymax>5</ymax>", "<ymax>five</ymax>"), "object 0"),
    (_xml([("cat", (1, 1, 5, 5), False, False)]).replace(
        "<xmin>1</xmin>", ""), "bndbox/xmin"),
    (_xml([]).replace("<width>100</width>", "<width>-3</width>"), "size"),
])
def test_parse_annotation_rejects(xml, reason):
  with pytest.raises(ValueError, match=reason):
    voc.parse_annotation(xml)


def test_boxes_checked_against_image_size_without_size_field():
  xml = _xml([("cat", (1, 1, 90, 50), False, False)])
  xml = xml[:xml.index("\t<size>")] + xml[xml.index("</size>") + 8:]
  assert voc.parse_annotation(xml)[0] is None
  voc.parse_annotation(xml, image_size=(90, 50))
  with pytest.raises(ValueError, match="outside the 80x50"):
    voc.parse_annotation(xml, image_size=(80, 50))


def test_read_split_accepts_root_or_voc2007_dir(devkit):
  records, problems = voc.read_split(devkit, "trainval")
  same, _ = voc.read_split(os.path.join(devkit, "VOC2007"), "trainval")
  assert records == same and not problems
  assert [r.image_id for r in records] == [f"{i:06d}" for i in range(1, 13)]
  assert len(voc.read_split(devkit, "train")[0]) == 6
  test, _ = voc.read_split(devkit, "test")
  assert [r.image_id for r in test][0] == "000013" and len(test) == 6
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for r in records:
    with Image.open(r.jpeg_path) as image:
      assert image.size == (r.width, r.height)


def test_missing_devkit_and_split_fail_clearly(tmp_path, devkit):
  with pytest.raises(ValueError, match="VOC2007.*JPEGImages"):
    voc.read_split(str(tmp_path), "trainval")
  with pytest.raises(ValueError, match="Unknown VOC split"):
    voc.read_split(devkit, "training")
  os.remove(os.path.join(devkit, "VOC2007", "ImageSets", "Main", "val.txt"))
  with pytest.raises(ValueError, match="Missing image list .*val.txt"):
    voc.read_split(devkit, "val")


def test_generated_devkit_has_flags_lists_and_is_deterministic(tmp_path):
  a = synthetic_voc.make_devkit(str(tmp_path / "a"), 30, 0, seed=1)
  b = synthetic_voc.make_devkit(str(tmp_path / "b"), 30, 0, seed=1)
  c = synthetic_voc.make_devkit(str(tmp_path / "c"), 30, 0, seed=2)
  read = lambda d, f: open(os.path.join(d, "VOC2007", f), "rb").read()
  name = "Annotations/000007.xml"
  assert read(a, name) == read(b, name) != read(c, name)
  records, _ = voc.read_split(a, "trainval")
  objects = [o for r in records for o in r.objects]
  assert {o.name for o in objects} == set(synthetic_voc.used_classes())
  assert any(o.difficult for o in objects) and any(o.truncated for o in objects)
  for o in objects:
    side = max(o.box[2] - o.box[0], o.box[3] - o.box[1]) + 1
    assert side <= 12 if o.difficult else side >= 10
  # Per-class image lists: 1 = a non-difficult instance, 0 = difficult only.
  lines = read(a, "ImageSets/Main/cat_trainval.txt").decode().splitlines()
  for record, line in zip(records, lines):
    image_id, flag = line.split()
    cats = [o for o in record.objects if o.name == "cat"]
    want = (-1 if not cats else 1 if any(not o.difficult for o in cats) else 0)
    assert image_id == record.image_id and int(flag) == want


@pytest.mark.parametrize("colour_by_class", [True, False])
def test_rendered_boxes_are_exact(colour_by_class):
  from mtssl_tf.data import sample_data  # pylint: disable=g-import-not-at-top
  photos = sample_data.load_photos()
  rng = np.random.default_rng(0)
  checked = 0
  for _ in range(30):
    image, objects = synthetic_voc.render_image(photos, rng, 100, 120, 4, 12,
                                                0.3, 0.0, colour_by_class)
    if len(objects) != 1:  # overlaps could hide a border pixel
      continue
    name, (x0, y0, x1, y1), _, truncated = objects[0]
    colour = (dict((n, c) for n, _, c in synthetic_voc.SHAPES)[name]
              if colour_by_class else synthetic_voc.SHAPE_ONLY_COLOUR)
    close = np.abs(image.astype(int) - colour).max(-1) <= 40  # jitter 0.85
    box = close[y0 - 1:y1, x0 - 1:x1]
    assert box[0].any() and box[-1].any() and box[:, 0].any()
    assert box[:, -1].any()
    if truncated:
      assert x0 == 1 or y0 == 1 or x1 == 120 or y1 == 100
    checked += 1
  assert checked >= 3


def test_shape_only_devkit_differs_only_in_colour(tmp_path):
  """colour_by_class=False: same boxes and classes, every shape one colour."""
  a = synthetic_voc.make_devkit(str(tmp_path / "a"), 12, 0, seed=4)
  b = synthetic_voc.make_devkit(str(tmp_path / "b"), 12, 0, seed=4,
                                colour_by_class=False)
  read = lambda d, f: open(os.path.join(d, "VOC2007", f), "rb").read()
  for i in range(1, 13):
    assert read(a, f"Annotations/{i:06d}.xml") == read(
        b, f"Annotations/{i:06d}.xml")
  records, problems = voc.read_split(b, "trainval")
  assert not problems
  from PIL import Image  # pylint: disable=g-import-not-at-top
  greys, colours = 0, set()
  for record in records:
    image = np.asarray(Image.open(record.jpeg_path), int)
    for o in record.objects:
      if o.difficult:
        continue
      x0, y0, x1, y1 = (int(v) for v in o.box)
      patch = image[y0 - 1:y1, x0 - 1:x1].reshape(-1, 3)
      # The painted pixels: near-grey (jitter 0.85-1.0 keeps R = G = B).
      near = np.abs(patch - synthetic_voc.SHAPE_ONLY_COLOUR * np.ones(3)
                    ).max(-1) <= 45
      grey = np.abs(patch - patch.mean(-1, keepdims=True)).max(-1) <= 12
      greys += int((near & grey).mean() > 0.3)
      colours.add(o.name)
  assert greys >= 10 and len(colours) >= 3


def _corrupt(devkit, image_id, what):
  base = os.path.join(devkit, "VOC2007")
  xml_path = os.path.join(base, "Annotations", image_id + ".xml")
  jpeg_path = os.path.join(base, "JPEGImages", image_id + ".jpg")
  text = open(xml_path).read()
  if what == "xml":
    open(xml_path, "w").write(text[:len(text) // 2])
  elif what == "outside":
    start = text.index("<xmax>") + 6
    open(xml_path, "w").write(text[:start] + "9999" +
                              text[text.index("</xmax>"):])
  elif what == "empty":
    open(xml_path, "w").write(text[:text.index("\t<object>")] +
                              "</annotation>\n")
  elif what == "no_jpeg":
    os.remove(jpeg_path)
  elif what == "bad_jpeg":
    open(jpeg_path, "wb").write(b"\xff\xd8 not really a jpeg")
  elif what == "no_xml":
    os.remove(xml_path)
  elif what == "size":
    open(xml_path, "w").write(text.replace("<depth>3", "<depth>3").replace(
        "<width>", "<width>1", 1))


def test_bad_files_are_reported_and_skipped(tmp_path):
  devkit = synthetic_voc.make_devkit(str(tmp_path), 10, 0, seed=4)
  cases = {"000001": ("xml", "Annotations", "malformed XML"),
           "000002": ("outside", "Annotations", "outside the"),
           "000003": ("empty", "Annotations", "empty annotation"),
           "000004": ("no_jpeg", "JPEGImages", "JPEG missing"),
           "000005": ("bad_jpeg", "JPEGImages", "unreadable JPEG"),
           "000006": ("no_xml", "Annotations", "annotation missing"),
           "000007": ("size", "JPEGImages", "annotation says 1")}
  for image_id, (what, _, _) in cases.items():
    _corrupt(devkit, image_id, what)
  records, problems = voc.read_split(devkit, "trainval")
  assert [r.image_id for r in records] == ["000008", "000009", "000010"]
  assert len(problems) == len(cases)
  for problem, (image_id, (_, folder, reason)) in zip(problems, cases.items()):
    assert problem.file.startswith(f"{folder}/{image_id}."), problem
    assert reason in problem.reason, problem
  for image_id in ("000008", "000009", "000010"):
    _corrupt(devkit, image_id, "empty")
  with pytest.raises(ValueError, match="No usable image.*empty annotation"):
    voc.read_split(devkit, "trainval")
