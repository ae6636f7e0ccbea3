"""Image decoding that tolerates bad files, and error skipping inside tf.data.

Every image pipeline (training sources, tools, evaluation loaders) reads user
data (folders of photos, TFRecords, TFDS), where a few files are always odd.
``decode_rgb`` turns any supported encoding into uint8 ``[H, W, 3]`` RGB:

  JPEG (incl. CMYK, which TF's decoder converts), PNG (8/16 bit; 16 bit is
  scaled to 8), BMP, GIF (animated: first frame), WebP; grayscale is
  replicated to 3 channels and alpha is dropped (``channels=3``).

Size bounds. One extreme image must not exhaust memory: the tasks resize by
the short side (a 2x1000 strip scaled to a 254-pixel short side is 254x127000)
and convert whole images to float32. Images with more than ``MAX_PIXELS``
pixels ("too_large") or a long/short side ratio above ``MAX_ASPECT``
("degenerate_aspect") are skipped. ``header_shape`` reads the size from the
file header (JPEG via ``tf.image.extract_jpeg_shape``; PNG, GIF, BMP and WebP
parsed here by hand, TF has no op for them) so such images are never
decoded; the decoded size is checked again. ``size_problem`` is the same
check for Python code (tools/make_tfrecords.py checks with Pillow).

Truncated or corrupt data makes the decode op fail. ``map_or_skip`` runs a
function on each element and drops the elements on which it fails, counting
each drop in a ``skipping.SkipCounter`` (with the element's name when given).
The failure is caught without Python on the per-example path: each element
becomes a one-element inner dataset ``fn(x)`` with ``ignore_errors()``,
followed by a placeholder flagged "failed"; ``take(1)`` keeps the result or
the placeholder, and a filter counts and drops the placeholders.
``interleave`` runs the inner datasets in parallel (AUTOTUNE), so this is also
the pipeline's parallel map.

``decode_images(named, counter)`` is the shared decode step: ``(name,
encoded bytes or file path, *extra)`` -> ``(name, uint8 [H, W, 3], *extra)``
(extra components such as labels pass through), skipping and counting
``DECODE_SKIP_REASONS`` per named file. Every pipeline that decodes user
images uses it: the training sources, the evaluation loaders
(``labelled_images.py``, ``voc07_svm.py``) and the tools.
"""

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# 50 megapixels: a 48 MP phone photo (8064x6048) passes; at 12 bytes per
# pixel (float32 RGB, which the tasks make before resizing) that is 600 MB.
MAX_PIXELS = 50_000_000
# Long side / short side; wider panoramas and strips are skipped.
MAX_ASPECT = 10.0
DECODE_SKIP_REASONS = ("undecodable", "too_large", "degenerate_aspect",
                       "empty")
_OK, _TOO_LARGE, _DEGENERATE = 0, 1, 2
_HEADER_BYTES = 32


def decode_rgb(encoded):
  """Decodes JPEG/PNG/BMP/GIF/WebP bytes to uint8 ``[H, W, 3]`` RGB.

  Raises (as a TF op error) on corrupt, truncated or unknown data; wrap the
  call in ``map_or_skip`` to skip and count such inputs. No size bound: see
  ``decode_images`` / ``decode_rgb_bounded``.
  """
  image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def size_problem(height, width, max_pixels=MAX_PIXELS,
                 max_aspect=MAX_ASPECT):
  """Python check: None, or ``"too_large: ..."`` / ``"degenerate_aspect:
  ..."`` (reason before the colon)."""
  if height * width > max_pixels:
    return (f"too_large: {width}x{height} has more than {max_pixels} "
            f"pixels")
  if min(height, width) > 0 and (
      max(height, width) > max_aspect * min(height, width)):
    return (f"degenerate_aspect: {width}x{height} is more than {max_aspect:g} "
            f"times longer than wide")
  return None


@tf.autograph.experimental.do_not_convert
def _jpeg_shape(encoded):
  return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)


# Header fields: (kind, byte offset). le16/le24/le32 little-endian unsigned,
# be16/be32 big-endian.
_FIELDS = (
    ("be32", 0), ("be32", 8), ("be32", 12), ("be16", 0),   # magic numbers
    ("be32", 20), ("be32", 16),                            # PNG h, w
    ("le16", 8), ("le16", 6),                              # GIF h, w
    ("le32", 14), ("le16", 20), ("le16", 18),              # BMP header, h, w
    ("le32", 22), ("le32", 18),                            #   (OS/2: 16 bit)
    ("le16", 28), ("le16", 26),                            # WebP VP8 h, w
    ("le32", 21),                                          # VP8L packed
    ("le24", 27), ("le24", 24),                            # VP8X h-1, w-1
)


@tf.autograph.experimental.do_not_convert
def header_shape(encoded):
  """``[height, width]`` int64 from the header of encoded image bytes.

  JPEG, PNG, GIF, BMP and WebP (lossy, lossless, extended) are read from
  their headers without decoding; ``[-1, -1]`` for anything else (e.g.
  truncated headers). A corrupt JPEG header raises (an undecodable file).
  All fields come from one gather over the first 32 bytes and the format is
  chosen with ``argmax``: few ops, so it traces fast inside tf.data.
  """
  encoded = tf.convert_to_tensor(encoded, tf.string)
  head = tf.strings.substr(encoded, 0, _HEADER_BYTES)
  head = tf.strings.substr(
      tf.strings.join([head, tf.constant(b"\0" * _HEADER_BYTES)]), 0,
      _HEADER_BYTES)
  b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
  b.set_shape([_HEADER_BYTES])
  le16 = b[:-1] + 256 * b[1:]
  be16 = 256 * b[:-1] + b[1:]
  vectors = {"le16": le16, "be16": be16,
             "le24": le16[:-1] + 65536 * b[2:],
             "le32": le16[:-2] + 65536 * le16[2:],
             "be32": 65536 * be16[:-2] + be16[2:]}
  starts, position = {}, 0
  for kind, vector in vectors.items():
    starts[kind] = position
    position += vector.shape[0]
  fields = tf.gather(tf.concat(list(vectors.values()), 0),
                     [starts[kind] + offset for kind, offset in _FIELDS])
  (magic, webp, chunk, magic16, png_h, png_w, gif_h, gif_w, bmp_header,
   os2_h, os2_w, bmp_h, bmp_w, vp8_h, vp8_w, vp8l, vp8x_h,
   vp8x_w) = tf.unstack(fields)
  # BMP heights are signed (negative: top-down rows).
  bmp_h = tf.where(bmp_h >= 2**31, 2**32 - bmp_h, bmp_h)
  os2 = tf.equal(bmp_header, 12)
  riff = tf.equal(magic, 0x52494646) & tf.equal(webp, 0x57454250)
  candidates = [  # (is this format, [height, width])
      (tf.equal(magic, 0x89504E47), [png_h, png_w]),
      (tf.equal(magic, 0x47494638), [gif_h, gif_w]),
      (tf.equal(magic16, 0x424D), [tf.where(os2, os2_h, bmp_h),
                                   tf.where(os2, os2_w, bmp_w)]),
      (riff & tf.equal(chunk, 0x56503820), [vp8_h % 16384, vp8_w % 16384]),
      (riff & tf.equal(chunk, 0x5650384C), [(vp8l // 16384) % 16384 + 1,
                                             vp8l % 16384 + 1]),
      (riff & tf.equal(chunk, 0x56503858), [vp8x_h + 1, vp8x_w + 1]),
  ]
  long_enough = tf.strings.length(encoded) >= 30
  flags = tf.stack([f & long_enough for f, _ in candidates] + [True])
  shapes = tf.stack([tf.stack(s) for _, s in candidates] + [
      tf.constant([-1, -1], tf.int64)])
  shape = tf.gather(shapes, tf.argmax(tf.cast(flags, tf.int32)))
  return tf.cond(tf.equal(magic16, 0xFFD8), lambda: _jpeg_shape(encoded),
                 lambda: shape)


@tf.autograph.experimental.do_not_convert
def _size_status(shape, max_pixels, max_aspect):
  """0 ok (or unknown), 1 too large, 2 degenerate aspect; int32 scalar."""
  shape = tf.cast(shape, tf.float64)
  known = tf.reduce_all(shape >= 0)
  long_side, short_side = tf.reduce_max(shape), tf.reduce_min(shape)
  too_large = known & (shape[0] * shape[1] > max_pixels)
  degenerate = known & (short_side > 0) & (long_side > max_aspect * short_side)
  return tf.where(too_large, _TOO_LARGE, tf.where(degenerate, _DEGENERATE,
                                                  _OK))


@tf.autograph.experimental.do_not_convert
def decode_rgb_bounded(encoded, max_pixels=MAX_PIXELS, max_aspect=MAX_ASPECT):
  """``(image uint8 [H, W, 3], status, [h, w] int64)``; status 0 when decoded,
  else 1 (too large) or 2 (degenerate aspect) and an empty image, decided
  from the header before decoding where the format allows."""
  shape = header_shape(encoded)
  status = _size_status(shape, max_pixels, max_aspect)
  image = tf.cond(tf.equal(status, _OK), lambda: decode_rgb(encoded),
                  lambda: tf.zeros([0, 0, 3], tf.uint8))
  decoded = tf.cast(tf.shape(image)[:2], tf.int64)
  shape = tf.where(tf.equal(status, _OK), decoded, shape)
  status = tf.where(tf.equal(status, _OK),
                    _size_status(decoded, max_pixels, max_aspect), status)
  return image, status, shape


def _zeros_like_spec(spec):
  """A placeholder element of ``spec`` (unknown dimensions become 0)."""
  def zeros(s):
    if isinstance(s, tf.TensorSpec):
      shape = [0 if d is None else d for d in s.shape.as_list()]
      return tf.zeros(shape, s.dtype)
    raise TypeError(
        f"map_or_skip supports functions that return (nested) dense tensors, "
        f"got an element of type {s!r}.")
  return tf.nest.map_structure(zeros, spec)


def map_or_skip(dataset, fn, counter, reason, deterministic=False,
                name_fn=None):
  """``dataset.map(fn)`` that drops and counts the elements where ``fn`` fails.

  Args:
    dataset: a ``tf.data.Dataset``; ``fn`` is called as ``Dataset.map`` would
      (tuples are unpacked into arguments).
    fn: a TF function of one element returning (nested) dense tensors.
    counter: a ``skipping.SkipCounter`` that knows ``reason``.
    reason: the skip reason to count a failure under (e.g. "undecodable").
    deterministic: keep the input order (slower); False lets tf.data emit
      whichever element is ready first.
    name_fn: optional function of the element (called like ``fn``) giving a
      scalar string naming it; failures are recorded under that name, so
      that a bad file met every epoch counts as one file.

  Returns:
    The mapped dataset, without the failed elements; ``fn`` runs in parallel
    (AUTOTUNE).
  """
  counter.check_reason(reason)
  output_spec = dataset.map(fn).element_spec

  def attempt(*element):
    name = name_fn(*element) if name_fn else tf.constant(b"")
    element = element if len(element) > 1 else element[0]
    result = tf.data.Dataset.from_tensors(element).map(
        lambda *x: (fn(*x), tf.constant(True))).ignore_errors()
    failed = tf.data.Dataset.from_tensors(
        (_zeros_like_spec(output_spec), tf.constant(False)))
    return result.concatenate(failed).take(1).map(
        lambda output, ok: (output, ok, name))

  dataset = dataset.interleave(attempt, cycle_length=AUTOTUNE, block_length=1,
                               num_parallel_calls=AUTOTUNE,
                               deterministic=deterministic)
  dataset = dataset.filter(lambda output, ok, name: counter.keep(
      ok, reason, item=name if name_fn else None))
  return dataset.map(lambda output, ok, name: output)


def decode_images(named, counter, read_files=False, max_pixels=MAX_PIXELS,
                  max_aspect=MAX_ASPECT, deterministic=False):
  """``(name, encoded, *extra)`` -> ``(name, uint8 [H, W, 3], *extra)``,
  bad images skipped.

  Args:
    named: dataset of ``(name, encoded image bytes, *extra)``, or ``(name,
      file path, *extra)`` with ``read_files``; name and data are scalar
      strings, the ``extra`` components (e.g. labels) are passed through.
    counter: a ``SkipCounter`` accepting ``DECODE_SKIP_REASONS``; each skip
      is recorded under the element's name with a detail (the size).
    read_files: the second string is a path to read (a read error counts as
      "undecodable").
    max_pixels, max_aspect: the size bounds (module docstring).
    deterministic: keep the input order.
  """
  def decode_one(name, data, *extra):
    encoded = tf.io.read_file(data) if read_files else data
    image, status, shape = decode_rgb_bounded(encoded, max_pixels, max_aspect)
    return (name, image, status, shape) + extra

  decoded = map_or_skip(named, decode_one, counter, "undecodable",
                        deterministic=deterministic,
                        name_fn=lambda name, *_: name)

  def check(name, image, status, shape, *extra):
    del extra
    size = lambda: tf.strings.format("{}x{} (width x height)",  # pylint: disable=g-long-lambda
                                     (shape[1], shape[0]))
    too_large = counter.keep(
        tf.not_equal(status, _TOO_LARGE), "too_large", name,
        lambda: tf.strings.join([size(), f" > {max_pixels} pixels"]))
    degenerate = counter.keep(
        tf.not_equal(status, _DEGENERATE), "degenerate_aspect", name,
        lambda: tf.strings.join([size(), f": aspect ratio > {max_aspect:g}"]))
    sized = tf.equal(status, _OK)
    empty = counter.keep(tf.logical_not(sized) | (tf.size(image) > 0),
                         "empty", name, size)
    return too_large & degenerate & empty & sized

  decoded = decoded.filter(check)
  return decoded.map(
      lambda name, image, status, shape, *extra: (name, image) + extra)
