"""Faster R-CNN in the ResNet "C4" arrangement on our trunk (paper §5, PASCAL).

Whose parts are whose:
  Model Garden (``official.vision``, tf-models-official): the model logic
    ``modeling.maskrcnn_model.MaskRCNNModel`` (RPN -> proposals -> RoI
    sampling -> RoI features -> box head -> detections), the RPN head
    (``heads.dense_prediction_heads.RPNHead``), anchors (``ops.anchor``),
    proposal generation (``layers.roi_generator.MultilevelROIGenerator``),
    RoI sampling (``layers.roi_sampler.ROISampler``), RoI align
    (``layers.roi_aligner.MultilevelROIAligner``), box coding
    (``ops.box_ops``), the detection generator (per-class NMS,
    ``layers.detection_generator.DetectionGenerator``) and the losses
    (``losses.maskrcnn_losses``).
  Ours (Model Garden's heads are FPN-style conv/FC heads, not C4):
    * ``Block3Backbone``: the pre-trained trunk up to block 3 (or the lasso
      combination of the block-3 units, paper §3.2) as Model Garden's
      backbone, output ``{"4": [B, H/16, W/16, 4 * 4 * base_width]}``.
    * ``AnchorPyramid``: Model Garden anchors span one octave per level
      (``2 ** (k / num_scales)``), so the C4 anchor set of several octaves at
      stride 16 (py-faster-rcnn: 128, 256, 512 px) is laid out as levels 4..max_level of
      average-pooled block-3 maps: the RPN sees the stride-16 map for the
      smallest anchors and 2x, 4x, ... pooled copies for the larger ones (its
      3x3 conv is shared by all levels). A deviation from one RPN
      location for all scales, forced by Model Garden's anchor layout.
    * ``C4RoIAligner``: RoI align from the stride-16 block-3 map only
      (Model Garden's level assignment is FPN's).
    * ``Block4BoxHead``: TF OD API's ResNet C4 second stage: 14x14 RoI crops,
      2x2/2 max-pool -> 7x7, block 4 (3 bottleneck units at stride 1, TF-Slim
      layer names so ImageNet's block 4 transfers), post-norm BN + ReLU,
      global average pool, then Model Garden-style class logits [B, R, C]
      and class-specific box deltas [B, R, 4C].

Output stride 16: the standard C4 stride (Ren et al. 2015; He et al. 2016's
ResNet Faster R-CNN; TF OD API ``first_stage_features_stride: 16``). Pre-training ran at stride 8 (block-3
units atrous with rate 2); the same weights run at stride 16 with block 3's
last unit strided and rate 1, as TF-Slim's ``output_stride`` allows (layer
weights do not depend on it) -- 4x fewer block-3 positions at 600x1000.

Shapes at 600x1000 (padded to 640x1024 by the parser): block-3 map
[B, 40, 64, 1024] (ResNet-v2-101), RoI crops [B, R, 14, 14, 1024], box-head
features after block 4 [B*R, 7, 7, 2048].
"""

import dataclasses
from typing import Dict, Sequence, Tuple

import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.models import resnet_v2

# Model Garden's preprocess_ops.normalize_image constants (pixels in [0, 1]).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
DETECTION_STRIDE = 16
FEATURE_LEVEL = 4  # log2(DETECTION_STRIDE), Model Garden's level key


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """Faster R-CNN C4 settings.

  Defaults follow the reference VOC07 Faster R-CNN recipe of Ren et al. 2015,
  ``rbgirshick/py-faster-rcnn`` (``lib/fast_rcnn/config.py``, end-to-end
  training): anchors 128/256/512 px x ratios 0.5/1/2 at stride 16, RPN NMS 0.7
  with 2000 proposals in training and 300 at test, 128 RoIs per image with
  25 % foreground (IoU >= 0.5; background [0, 0.5) -- py-faster-rcnn's
  [0.1, 0.5) lower bound is dropped as in later C4 recipes), final per-class
  NMS 0.3 and 100 detections per image.

  Attributes:
    num_classes: classes including background (VOC: 21).
    max_level: top anchor level; one anchor size per level, anchor_size *
      2**level for levels 4..max_level (default 4..6: 128, 256, 512 px).
    anchor_size: anchor side in units of the level's stride.
    aspect_ratios: anchor width/height ratios.
    rpn_filters: channels of the RPN's 3x3 conv.
    rpn_nms_iou, num_proposals, test_num_proposals: proposals.
    num_sampled_rois, foreground_fraction: RoIs per image for the box head.
    crop_size: RoI-align crop (14, max-pooled to 7x7 before block 4).
    nms_iou, max_detections: final per-class NMS and detections per image.
  """
  num_classes: int = 21
  max_level: int = 6
  anchor_size: float = 8.0
  aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
  rpn_filters: int = 512
  rpn_nms_iou: float = 0.7
  num_proposals: int = 2000
  test_num_proposals: int = 300
  num_sampled_rois: int = 128
  foreground_fraction: float = 0.25
  crop_size: int = 14
  nms_iou: float = 0.3
  max_detections: int = 100


def to_trunk_range(images):
  """Model Garden-normalised images -> the trunk's [-1, 1] pixels."""
  return 2.0 * (images * _STD + _MEAN) - 1.0


class Block3Backbone(tf_keras.Model):
  """Images [B, H, W, 3] -> {"4": block-3 features [B, H/16, W/16, C]}.

  Images come normalised as Model Garden's parser does ((x - mean) / std of
  ImageNet, x in [0, 1]) and are mapped back to the trunk's [-1, 1].

  Args:
    trunk: a ResNet-v2 trunk (models/resnet_v2.py) built at output stride 16.
    use_lasso: feed a fresh LassoCombine of the block-3 unit outputs (the
      paper's lasso experiments) instead of block 3's last unit.
  """

  def __init__(self, trunk: tf_keras.Model, use_lasso: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.trunk = trunk
    self.use_lasso = use_lasso
    units = sorted((k for k in trunk.output if k.startswith("block3/unit_")),
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    self._units = units
    self.lasso = (lasso_lib.LassoCombine(name="detection_lasso")
                  if use_lasso else None)

  def call(self, images, training=None):
    # Model Garden's parser normalises with ImageNet mean/std; the trunk was
    # pre-trained on [-1, 1] pixels (SPEC.md), so undo it.
    images = to_trunk_range(images)
    endpoints = self.trunk(images, training=training)
    if self.lasso is not None:
      features = self.lasso([endpoints[u] for u in self._units])
    else:
      features = endpoints["block3"]
    return {str(FEATURE_LEVEL): features}


class AnchorPyramid(tf_keras.layers.Layer):
  """{"4": x} -> {"4": x, "5": avgpool2(x), ..., max_level} (see module doc).

  Args:
    max_level: highest level produced.
  """

  def __init__(self, max_level: int, **kwargs):
    super().__init__(**kwargs)
    self.max_level = max_level

  def call(self, features):
    out = {str(FEATURE_LEVEL): features[str(FEATURE_LEVEL)]}
    x = out[str(FEATURE_LEVEL)]
    for level in range(FEATURE_LEVEL + 1, self.max_level + 1):
      x = tf.nn.avg_pool2d(x, 2, 2, "SAME")
      out[str(level)] = x
    return out

  def get_config(self):
    return dict(super().get_config(), max_level=self.max_level)


class C4RoIAligner(tf_keras.layers.Layer):
  """RoI align of boxes [B, R, 4] from the stride-16 map -> [B, R, s, s, C].

  Wraps Model Garden's MultilevelROIAligner with the single level 4.

  Args:
    crop_size: output side s.
  """

  def __init__(self, crop_size: int = 14, **kwargs):
    super().__init__(**kwargs)
    from official.vision.modeling.layers import roi_aligner  # pylint: disable=g-import-not-at-top
    self.crop_size = crop_size
    self._aligner = roi_aligner.MultilevelROIAligner(crop_size=crop_size,
                                                     sample_offset=0.5)

  def call(self, features, boxes, training=None):
    level = str(FEATURE_LEVEL)
    return self._aligner({level: features[level]}, boxes, training=training)

  def get_config(self):
    return dict(super().get_config(), crop_size=self.crop_size)


def block4_model(trunk_config: config_lib.TrunkConfig, crop_size: int = 14
                 ) -> tf_keras.Model:
  """Block 4 + post-norm on RoI crops: [N, s, s, C3] -> [N, s/2, s/2, C4].

  Layer names are TF-Slim's (``block4/unit_u/bottleneck_v2/...``,
  ``postnorm``), the same as in a trunk built with ``include_block4``, so
  ``copy_block4`` can transfer ImageNet's block 4 by name.
  """
  width = trunk_config.base_width * resnet_v2.BLOCK_WIDTH_MULTIPLIERS[3]
  c3 = resnet_v2.block_output_channels(trunk_config.base_width, 3)
  inputs = tf_keras.Input((crop_size, crop_size, c3), name="roi_crops")
  net = tf_keras.layers.MaxPool2D(2, 2, name="roi_pool")(inputs)
  kwargs = dict(weight_decay=trunk_config.weight_decay,
                batch_norm_decay=trunk_config.batch_norm_decay,
                batch_norm_epsilon=trunk_config.batch_norm_epsilon)
  for u in range(resnet_v2.RESNET_SPECS[trunk_config.depth][3]):
    net = resnet_v2.bottleneck_unit(
        net, 4 * width, width, 1, 1,
        name=f"block4/unit_{u + 1}/bottleneck_v2", **kwargs)
  net = tf_keras.layers.BatchNormalization(
      momentum=trunk_config.batch_norm_decay,
      epsilon=trunk_config.batch_norm_epsilon, name="postnorm")(net)
  net = tf_keras.layers.ReLU(name="postnorm_relu")(net)
  return tf_keras.Model(inputs, net, name="block4")


def copy_block4(block4: tf_keras.Model, trunk: tf_keras.Model) -> int:
  """Copies block-4/postnorm weights from a trunk with block 4; returns count."""
  source = {l.name: l for l in trunk.layers}
  copied = 0
  for layer in block4.layers:
    if layer.weights and layer.name in source:
      layer.set_weights(source[layer.name].get_weights())
      copied += 1
  return copied


class Block4BoxHead(tf_keras.layers.Layer):
  """C4 box head: RoI crops [B, R, s, s, C3] -> (logits [B, R, K], [B, R, 4K]).

  Args:
    trunk_config: the trunk's depth and widths (block 4 follows them).
    num_classes: K, including background.
    crop_size: s.
  """

  def __init__(self, trunk_config: config_lib.TrunkConfig, num_classes: int,
               crop_size: int = 14, **kwargs):
    super().__init__(**kwargs)
    self.trunk_config = trunk_config
    self.num_classes = num_classes
    self.crop_size = crop_size
    self.block4 = block4_model(trunk_config, crop_size)
    # Model Garden's DetectionHead initialisation of the two predictors.
    self.classifier = tf_keras.layers.Dense(
        num_classes, kernel_initializer=tf_keras.initializers.RandomNormal(
            stddev=0.01), name="class_logits")
    self.box_regressor = tf_keras.layers.Dense(
        num_classes * 4, kernel_initializer=tf_keras.initializers.RandomNormal(
            stddev=0.001), name="box_deltas")

  def call(self, roi_features, training=None):
    shape = tf.shape(roi_features)
    batch, rois = shape[0], shape[1]
    x = tf.reshape(roi_features, tf.concat([[-1], shape[2:]], 0))
    x = self.block4(x, training=training)
    x = tf.reduce_mean(x, axis=[1, 2])
    logits = tf.reshape(self.classifier(x), [batch, rois, self.num_classes])
    deltas = tf.reshape(self.box_regressor(x),
                        [batch, rois, self.num_classes * 4])
    return logits, deltas


def build_detector(trunk: tf_keras.Model,
                   trunk_config: config_lib.TrunkConfig,
                   cfg: DetectorConfig = DetectorConfig(),
                   use_lasso: bool = False):
  """Model Garden's MaskRCNNModel (boxes only) with our C4 parts.

  Args:
    trunk: ResNet-v2 trunk at output stride 16 (block 4 not used from it;
      copy it with ``copy_block4(model.detection_head[0].block4, trunk)``).
    trunk_config: its configuration.
    cfg: detector settings.
    use_lasso: lasso combination of block-3 units into the heads.

  Returns:
    ``official.vision.modeling.maskrcnn_model.MaskRCNNModel``; call it as
    Model Garden's Mask R-CNN task does: ``model(images, image_shape=...,
    anchor_boxes=..., gt_boxes=..., gt_classes=..., training=True)``.
  """
  # pylint: disable=g-import-not-at-top
  from official.vision.modeling import maskrcnn_model
  from official.vision.modeling.heads import dense_prediction_heads
  from official.vision.modeling.layers import detection_generator
  from official.vision.modeling.layers import roi_generator
  from official.vision.modeling.layers import roi_sampler
  # pylint: enable=g-import-not-at-top
  rpn_head = dense_prediction_heads.RPNHead(
      min_level=FEATURE_LEVEL, max_level=cfg.max_level,
      num_anchors_per_location=len(cfg.aspect_ratios), num_convs=1,
      num_filters=cfg.rpn_filters, name="rpn_head")
  return maskrcnn_model.MaskRCNNModel(
      backbone=Block3Backbone(trunk, use_lasso, name="backbone"),
      decoder=AnchorPyramid(cfg.max_level, name="anchor_pyramid"),
      rpn_head=rpn_head,
      detection_head=Block4BoxHead(trunk_config, cfg.num_classes,
                                   cfg.crop_size, name="box_head"),
      roi_generator=roi_generator.MultilevelROIGenerator(
          pre_nms_top_k=6000, nms_iou_threshold=cfg.rpn_nms_iou,
          num_proposals=cfg.num_proposals, test_pre_nms_top_k=6000,
          test_nms_iou_threshold=cfg.rpn_nms_iou,
          test_num_proposals=cfg.test_num_proposals),
      roi_sampler=roi_sampler.ROISampler(
          mix_gt_boxes=True, num_sampled_rois=cfg.num_sampled_rois,
          foreground_fraction=cfg.foreground_fraction,
          foreground_iou_threshold=0.5, background_iou_high_threshold=0.5,
          background_iou_low_threshold=0.0),
      roi_aligner=C4RoIAligner(cfg.crop_size, name="roi_aligner"),
      detection_generator=detection_generator.DetectionGenerator(
          apply_nms=True, pre_nms_top_k=1000, pre_nms_score_threshold=0.0,
          nms_iou_threshold=cfg.nms_iou,
          max_num_detections=cfg.max_detections, nms_version="v2",
          use_cpu_nms=True),
      min_level=FEATURE_LEVEL, max_level=cfg.max_level, num_scales=1,
      aspect_ratios=list(cfg.aspect_ratios), anchor_size=cfg.anchor_size)


def anchor_settings(cfg: DetectorConfig) -> Dict[str, object]:
  """Keyword arguments of Model Garden's anchor users (parser, Anchor)."""
  return dict(min_level=FEATURE_LEVEL, max_level=cfg.max_level, num_scales=1,
              aspect_ratios=list(cfg.aspect_ratios),
              anchor_size=cfg.anchor_size)


def roi_crop_shapes(model, images: tf.Tensor,
                    image_shape: tf.Tensor) -> Sequence[tf.TensorShape]:
  """(block-3 map, RoI crops, block-4 output) shapes, for tests/benchmarks."""
  features = model.backbone(images, training=False)
  pyramid = model.decoder(features)
  rpn_scores, rpn_boxes = model.rpn_head(pyramid)
  del rpn_scores
  boxes = tf.tile(tf.constant([[[0., 0., 160., 160.]]]),
                  [images.shape[0], 5, 1])
  crops = model.roi_aligner(pyramid, boxes)
  head = model.detection_head[0]
  block4 = head.block4(tf.reshape(crops, [-1] + crops.shape[2:].as_list()))
  del rpn_boxes, image_shape
  return features[str(FEATURE_LEVEL)].shape, crops.shape, block4.shape
