"""The two TFRecord formats of mtssl_tf, written by tools/ and read by tasks/.

Image records (``tools/make_tfrecords.py`` writes them; rp, col and ex read
them). The keys are the usual ImageNet/Model Garden ones, so records made by
other tools (e.g. Model Garden's ``create_imagenet_tf_record``) are readable:

  image/encoded        bytes   the encoded file as it was (JPEG, PNG, ...)
  image/format         bytes   "jpeg", "png", "bmp", "gif", "webp"
  image/filename       bytes   path relative to the source folder
  image/class/label    int64   class index, -1 when the source has no labels

Motion-segmentation records (``tools/make_motion_masks.py`` writes them; ms
reads them). One record per sampled video frame:

  image/encoded        bytes   PNG of the RGB frame, ``FRAME_HEIGHT x FRAME_WIDTH``
  image/format         bytes   "png"
  mask/encoded         bytes   PNG, one channel, same size as the frame,
                               0 = background, 255 = will move (foreground)
  video/id             bytes   the video's path or name
  frame/index          int64   index of the frame in the video

The mask is stored at frame resolution; the ms task downsamples it to the
trunk's output stride (8 -> 30x40), so the same records serve any stride.
"""

import tensorflow as tf

# Paper §2 / SPEC.md: motion segmentation frames are 240x320.
FRAME_HEIGHT = 240
FRAME_WIDTH = 320

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_FILENAME = "image/filename"
IMAGE_LABEL = "image/class/label"
MASK_ENCODED = "mask/encoded"
VIDEO_ID = "video/id"
FRAME_INDEX = "frame/index"

IMAGE_FEATURES = {
    IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
    IMAGE_LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}

MOTION_FEATURES = {
    IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="png"),
    MASK_ENCODED: tf.io.FixedLenFeature([], tf.string),
    VIDEO_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    FRAME_INDEX: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def image_example(encoded, image_format, filename="", label=-1):
  """Returns a serialized image record (bytes)."""
  if isinstance(filename, str):
    filename = filename.encode("utf-8")
  if isinstance(image_format, str):
    image_format = image_format.encode("utf-8")
  features = {
      IMAGE_ENCODED: _bytes(encoded),
      IMAGE_FORMAT: _bytes(image_format),
      IMAGE_FILENAME: _bytes(filename),
      IMAGE_LABEL: _int64(label),
  }
  example = tf.train.Example(features=tf.train.Features(feature=features))
  return example.SerializeToString()


def motion_example(frame_png, mask_png, video_id="", frame_index=-1):
  """Returns a serialized motion-segmentation record (bytes).

  Args:
    frame_png: PNG bytes of the ``[FRAME_HEIGHT, FRAME_WIDTH, 3]`` frame.
    mask_png: PNG bytes of the ``[FRAME_HEIGHT, FRAME_WIDTH]`` 0/255 mask.
    video_id: name of the source video.
    frame_index: index of the frame in the source video.
  """
  if isinstance(video_id, str):
    video_id = video_id.encode("utf-8")
  features = {
      IMAGE_ENCODED: _bytes(frame_png),
      IMAGE_FORMAT: _bytes(b"png"),
      MASK_ENCODED: _bytes(mask_png),
      VIDEO_ID: _bytes(video_id),
      FRAME_INDEX: _int64(frame_index),
  }
  example = tf.train.Example(features=tf.train.Features(feature=features))
  return example.SerializeToString()


def parse_image_example(serialized):
  """Parses one image record into a dict of tensors (``IMAGE_FEATURES``)."""
  return tf.io.parse_single_example(serialized, IMAGE_FEATURES)


def parse_motion_example(serialized):
  """Parses one motion record into a dict of tensors (``MOTION_FEATURES``)."""
  return tf.io.parse_single_example(serialized, MOTION_FEATURES)
