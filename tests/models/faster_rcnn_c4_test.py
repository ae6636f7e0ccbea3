"""Faster R-CNN C4 on our trunk (models/faster_rcnn_c4.py, c4_backbone.py):
the registered backbone, the single-level C4 anchors, the sizes the C4
arrangement needs at VOC's test scale, block-4 transfer and the lasso input."""

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import factory

from mtssl_tf import config as config_lib
from mtssl_tf.models import c4_backbone
from mtssl_tf.models import faster_rcnn_c4
from mtssl_tf.models import resnet_v2

TINY = config_lib.TrunkConfig(depth=14, base_width=8, output_stride=16)


def _model(use_lasso=False, **kwargs):
  det = faster_rcnn_c4.DetectorConfig(test_num_proposals=20, **kwargs)
  return faster_rcnn_c4.build_detector(TINY, det, use_lasso), det


def test_backbone_is_built_by_model_garden_factory():
  cfg = c4_backbone.Backbone(
      mtssl_resnet_v2_block3=c4_backbone.MtsslResNetV2Block3(
          depth=14, base_width=8))
  assert cfg.type == c4_backbone.BACKBONE_NAME
  norm = c4_backbone.common.NormActivation(norm_momentum=0.9,
                                           norm_epsilon=1e-3)
  backbone = factory.build_backbone(
      tf_keras.layers.InputSpec(shape=[None, None, None, 3]), cfg, norm,
      tf_keras.regularizers.l2(5e-5))
  assert isinstance(backbone, c4_backbone.Block3Backbone)
  bn = backbone.trunk.get_layer("block1/unit_1/bottleneck_v2/preact")
  assert (bn.momentum, bn.epsilon) == (0.9, 1e-3)
  conv = backbone.trunk.get_layer("block1/unit_1/bottleneck_v2/conv1")
  np.testing.assert_allclose(conv.kernel_regularizer.l2, 5e-5)  # wd 1e-4 / 2
  assert not any(l.name.startswith("block4/") for l in backbone.trunk.layers)
  # build_detector goes through the same factory.
  model, _ = _model()
  assert isinstance(model.backbone, c4_backbone.Block3Backbone)


def test_c4_anchors_one_level_three_sizes_three_ratios():
  det = faster_rcnn_c4.DetectorConfig()
  anchors = faster_rcnn_c4.c4_anchors(det, (600, 1000))
  assert sorted(anchors) == ["4"]
  assert anchors["4"].shape == (38, 63, 9 * 4)
  boxes = anchors["4"].numpy().reshape(38, 63, 9, 4)
  # Centres on the stride-16 grid.
  np.testing.assert_allclose((boxes[1, 2, :, :2] + boxes[1, 2, :, 2:]) / 2,
                             np.tile([[24.0, 40.0]], (9, 1)), atol=1e-4)
  heights = boxes[0, 0, :, 2] - boxes[0, 0, :, 0]
  widths = boxes[0, 0, :, 3] - boxes[0, 0, :, 1]
  # Size-major, ratio (width/height) 0.5, 1, 2; area = size ** 2.
  for i, (size, ratio) in enumerate(
      (s, r) for s in (128, 256, 512) for r in (0.5, 1.0, 2.0)):
    np.testing.assert_allclose(widths[i] / heights[i], ratio, rtol=1e-5)
    np.testing.assert_allclose(widths[i] * heights[i], size ** 2, rtol=1e-5)


def test_shapes_at_600x1000():
  model, _ = _model()
  channels = resnet_v2.block_output_channels(8, 3)
  # The parser pads 600x1000 to 608x1008 (a multiple of the stride 16).
  block3, rpn, crops, block4 = faster_rcnn_c4.roi_crop_shapes(
      model, tf.zeros([1, 608, 1008, 3]))
  assert block3 == (1, 38, 63, channels)
  assert rpn == (1, 38, 63, 9)  # one objectness score per anchor
  assert crops == (1, 5, 14, 14, channels)  # RoI align 14x14 per RoI
  assert block4 == (5, 7, 7, resnet_v2.block_output_channels(8, 4))


def test_inference_outputs():
  model, det = _model()
  anchors = {k: v[None] for k, v in
             faster_rcnn_c4.c4_anchors(det, (128, 192)).items()}
  out = model(tf.random.uniform([2, 128, 192, 3]),
              image_shape=tf.constant([[128., 192.]] * 2),
              anchor_boxes=anchors, training=False)
  assert out["detection_boxes"].shape == (2, 100, 4)
  assert out["rpn_boxes"]["4"].shape == (2, 8, 12, 36)
  assert sorted(out["rpn_scores"]) == ["4"]


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
