"""Image decoding that tolerates bad files, and error skipping inside tf.data.

Every image task reads user data (folders of photos, TFRecords, TFDS), where a
few files are always odd. ``decode_rgb`` turns any supported encoding into
uint8 ``[H, W, 3]`` RGB:

  JPEG (incl. CMYK, which TF's decoder converts), PNG (8/16 bit; 16 bit is
  scaled to 8), BMP, GIF (animated: first frame); grayscale is replicated to
  3 channels and alpha is dropped (``channels=3``).

Truncated or corrupt data makes the decode op fail. ``map_or_skip`` runs a
function on each element and drops the elements on which it fails, counting
each drop in a ``SkipCounter`` (``data/sources.py``). The failure is caught
without Python on the per-example path: each element becomes a one-element
inner dataset ``fn(x)`` with ``ignore_errors()``, followed by a placeholder
flagged "failed"; ``take(1)`` keeps the result or the placeholder, and a
filter counts and drops the placeholders. ``interleave`` runs the inner
datasets in parallel (AUTOTUNE), so this is also the pipeline's parallel map.
"""

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def decode_rgb(encoded):
  """Decodes JPEG/PNG/BMP/GIF bytes to uint8 ``[H, W, 3]`` RGB.

  Raises (as a TF op error) on corrupt, truncated or unknown data; wrap the
  call in ``map_or_skip`` to skip and count such inputs.
  """
  image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image


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


def map_or_skip(dataset, fn, counter, reason, deterministic=False):
  """``dataset.map(fn)`` that drops and counts the elements where ``fn`` fails.

  Args:
    dataset: a ``tf.data.Dataset``; ``fn`` is called as ``Dataset.map`` would
      (tuples are unpacked into arguments).
    fn: a TF function of one element returning (nested) dense tensors.
    counter: a ``sources.SkipCounter`` that knows ``reason``.
    reason: the skip reason to count a failure under (e.g. "undecodable").
    deterministic: keep the input order (slower); False lets tf.data emit
      whichever element is ready first.

  Returns:
    The mapped dataset, without the failed elements; ``fn`` runs in parallel
    (AUTOTUNE).
  """
  counter.check_reason(reason)
  output_spec = dataset.map(fn).element_spec

  def attempt(*element):
    element = element if len(element) > 1 else element[0]
    result = tf.data.Dataset.from_tensors(element).map(
        lambda *x: (fn(*x), tf.constant(True))).ignore_errors()
    failed = tf.data.Dataset.from_tensors(
        (_zeros_like_spec(output_spec), tf.constant(False)))
    return result.concatenate(failed).take(1)

  dataset = dataset.interleave(attempt, cycle_length=AUTOTUNE, block_length=1,
                               num_parallel_calls=AUTOTUNE,
                               deterministic=deterministic)
  dataset = dataset.filter(lambda output, ok: counter.keep(ok, reason))
  return dataset.map(lambda output, ok: output)
