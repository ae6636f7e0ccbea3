"""Faster R-CNN C4 on our trunk (models/faster_rcnn_c4.py): the sizes the C4
arrangement needs at VOC's test scale, block-4 transfer and the lasso input."""

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.models import faster_rcnn_c4
from mtssl_tf.models import resnet_v2

TINY = config_lib.TrunkConfig(depth=14, base_width=8, output_stride=16)


def _model(use_lasso=False, **kwargs):
  trunk = resnet_v2.build_trunk(TINY)
  det = faster_rcnn_c4.DetectorConfig(test_num_proposals=20, **kwargs)
  return faster_rcnn_c4.build_detector(trunk, TINY, det, use_lasso), det


def test_shapes_at_600x1000():
  model, _ = _model()
  block3, crops, block4 = faster_rcnn_c4.roi_crop_shapes(
      model, tf.zeros([1, 600, 1000, 3]), None)
  channels = resnet_v2.block_output_channels(8, 3)
  # Stride 16: ceil(600 / 16) x ceil(1000 / 16); the parser pads to 640x1024.
  assert block3 == (1, 38, 63, channels)
  assert crops == (1, 5, 14, 14, channels)  # RoI align 14x14 per RoI
  assert block4 == (5, 7, 7, resnet_v2.block_output_channels(8, 4))
  block3, _, _ = faster_rcnn_c4.roi_crop_shapes(
      model, tf.zeros([1, 640, 1024, 3]), None)
  assert block3 == (1, 40, 64, channels)


def test_inference_outputs_and_pyramid():
  model, det = _model()
  from official.vision.ops import anchor  # pylint: disable=g-import-not-at-top
  anchors = anchor.build_anchor_generator(
      **faster_rcnn_c4.anchor_settings(det))(image_size=(128, 192))
  anchors = {k: v[None] for k, v in anchors.items()}
  assert sorted(anchors) == ["4", "5", "6"]
  # One anchor size per level: 8 * 16, 8 * 32, 8 * 64 px (ratio 1 boxes).
  for level, size in (("4", 128), ("5", 256), ("6", 512)):
    box = anchors[level][0, 0, 0, 4:8].numpy()  # 2nd anchor: ratio 1.0
    np.testing.assert_allclose(box[2:] - box[:2], [size, size], rtol=1e-5)
  out = model(tf.random.uniform([2, 128, 192, 3]),
              image_shape=tf.constant([[128., 192.]] * 2),
              anchor_boxes=anchors, training=False)
  assert out["detection_boxes"].shape == (2, 100, 4)
  assert out["decoder_features"]["5"].shape == (2, 4, 6, 128)  # pooled


def test_block4_transfers_by_name():
  source = resnet_v2.build_trunk(
      config_lib.TrunkConfig(depth=14, base_width=8, output_stride=16,
                             include_block4=True))
  head = faster_rcnn_c4.block4_model(TINY)
  copied = faster_rcnn_c4.copy_block4(head, source)
  assert copied >= 5  # unit convs/BNs + postnorm
  for name in ("block4/unit_1/bottleneck_v2/conv2", "postnorm"):
    for a, b in zip(head.get_layer(name).weights,
                    source.get_layer(name).weights):
      np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_lasso_input_trains_its_row():
  model, _ = _model(use_lasso=True)
  features = model.backbone(tf.zeros([1, 64, 64, 3]))
  assert features["4"].shape == (1, 4, 4, 128)
  assert model.backbone.lasso.trainable_weights
  assert isinstance(model.backbone.trunk, tf_keras.Model)
