"""Faster R-CNN in the ResNet "C4" arrangement on our trunk (paper §5, PASCAL).

Whose parts are whose:
  Model Garden (``official.vision``, tf-models-official): the model logic
    ``modeling.maskrcnn_model.MaskRCNNModel`` (RPN -> proposals -> RoI
    sampling -> RoI features -> box head -> detections), the backbone factory
    our trunk is registered in (``modeling.backbones.factory``, see
    c4_backbone.py), the RPN head (``heads.dense_prediction_heads.RPNHead``),
    the anchor grid (``ops.anchor_generator.AnchorGeneratorv1``, explicit
    scales), proposal generation (``layers.roi_generator``), RoI sampling
    (``layers.roi_sampler.ROISampler``), RoI align
    (``layers.roi_aligner.MultilevelROIAligner`` on our single level), box
    coding (``ops.box_ops``), the detection generator (per-class NMS,
    ``layers.detection_generator.DetectionGenerator``) and the losses
    (``losses.maskrcnn_losses``).
  Ours:
    * ``c4_backbone.Block3Backbone``: the pre-trained trunk up to block 3 (or
      the lasso combination of the block-3 units, paper §3.2), built by name
      through Model Garden's backbone factory, output
      ``{"4": [B, H/16, W/16, 4 * 4 * base_width]}``.
    * ``c4_anchors``: the C4 anchor set -- ONE feature level at stride 16,
      3 sizes x 3 aspect ratios at every position (py-faster-rcnn's
      ``generate_anchors``: 128, 256, 512 px; ratios 0.5, 1, 2). Model
      Garden's multilevel ``ops.anchor.Anchor`` (used by its parser and by
      ``MaskRCNNModel`` when no anchors are given) puts one octave per level
      with intermediate scales ``2 ** (k / num_scales)``, which cannot express
      three octaves on one level; ``AnchorGeneratorv1`` with explicit
      ``scales=(1, 2, 4)`` can, so we build the dict with it and always pass
      it as ``anchor_boxes`` (``detection_training.C4Parser`` puts it in the
      labels). Anchors follow Model Garden's convention (width/height =
      ratio, side = size / sqrt(ratio)), not py-faster-rcnn's rounding to
      whole 16-px base boxes (e.g. 181x91 instead of 184x96 px for 128 px,
      ratio 0.5).
    * ``Block4BoxHead``: TF OD API's ResNet C4 second stage: 14x14 RoI crops,
      2x2/2 max-pool -> 7x7, block 4 (3 bottleneck units at stride 1, TF-Slim
      layer names so ImageNet's block 4 transfers), post-norm BN + ReLU,
      global average pool, then Model Garden-style class logits [B, R, C]
      and class-specific box deltas [B, R, 4C] (Model Garden's heads are
      FPN-style conv/FC heads, not C4).

Output stride 16: the standard C4 stride (Ren et al. 2015; He et al. 2016's
ResNet Faster R-CNN; TF OD API ``first_stage_features_stride: 16``).
Pre-training ran at stride 8 (block-3 units atrous with rate 2); the same
weights run at stride 16 with block 3's last unit strided and rate 1, as
TF-Slim's ``output_stride`` allows (layer weights do not depend on it) -- 4x
fewer block-3 positions at 600x1000.

Shapes at 600x1000 (padded to 608x1008, a multiple of the stride, by the
parser): block-3 map [B, 38, 63, 1024] (ResNet-v2-101), 38 * 63 * 9 anchors,
RoI crops [B, R, 14, 14, 1024], box-head features after block 4
[B*R, 7, 7, 2048].
"""

import dataclasses
from typing import Dict, Sequence, Tuple

import tensorflow as tf
import tf_keras
from official.vision.modeling import maskrcnn_model
from official.vision.modeling.heads import dense_prediction_heads
from official.vision.modeling.layers import detection_generator
from official.vision.modeling.layers import roi_aligner
from official.vision.modeling.layers import roi_generator
from official.vision.modeling.layers import roi_sampler
from official.vision.ops import anchor_generator

from mtssl_tf import config as config_lib
from mtssl_tf.models import c4_backbone
from mtssl_tf.models import resnet_v2

DETECTION_STRIDE = c4_backbone.DETECTION_STRIDE
FEATURE_LEVEL = c4_backbone.FEATURE_LEVEL
to_trunk_range = c4_backbone.to_trunk_range


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """Faster R-CNN C4 settings.

  Defaults follow the reference VOC07 Faster R-CNN recipe of Ren et al. 2015,
  ``rbgirshick/py-faster-rcnn`` (``lib/fast_rcnn/config.py``, end-to-end
  training): anchors 128/256/512 px x ratios 0.5/1/2 at stride 16, RPN NMS 0.7
  with 2000 proposals in training and 300 at test, 128 RoIs per image with
  25 % foreground (IoU >= 0.5; background [0, 0.5) -- py-faster-rcnn's
  [0.1, 0.5) lower bound is dropped as in later C4 recipes), final per-class
  NMS 0.3, class scores above 0.05 and 100 detections per image
  (``tools/test_net.py``).

  Attributes:
    num_classes: classes including background (VOC: 21).
    anchor_sizes: anchor sides in pixels (at aspect ratio 1), all on the one
      stride-16 level.
    aspect_ratios: anchor width/height ratios.
    rpn_filters: channels of the RPN's 3x3 conv.
    rpn_nms_iou, num_proposals, test_num_proposals: proposals.
    num_sampled_rois, foreground_fraction: RoIs per image for the box head.
    crop_size: RoI-align crop (14, max-pooled to 7x7 before block 4).
    nms_iou, score_threshold, max_detections: final per-class NMS, the
      smallest class score kept and detections per image.
  """
  num_classes: int = 21
  anchor_sizes: Tuple[float, ...] = (128.0, 256.0, 512.0)
  aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
  rpn_filters: int = 512
  rpn_nms_iou: float = 0.7
  num_proposals: int = 2000
  test_num_proposals: int = 300
  num_sampled_rois: int = 128
  foreground_fraction: float = 0.25
  crop_size: int = 14
  nms_iou: float = 0.3
  score_threshold: float = 0.05
  max_detections: int = 100

  @property
  def anchors_per_location(self) -> int:
    return len(self.anchor_sizes) * len(self.aspect_ratios)


def c4_anchors(cfg: DetectorConfig, image_size) -> Dict[str, tf.Tensor]:
  """The C4 anchors of an image of ``image_size`` (height, width).

  Returns Model Garden's anchor dict ``{"4": [ceil(H/16), ceil(W/16), A * 4]}``
  (A = sizes x ratios, size-major; boxes ymin, xmin, ymax, xmax in pixels,
  centred on the stride-16 grid), built with Model Garden's
  ``AnchorGeneratorv1`` and explicit scales (see the module docstring).
  """
  base = cfg.anchor_sizes[0]
  generator = anchor_generator.AnchorGeneratorv1(
      anchor_sizes={str(FEATURE_LEVEL): base},
      scales=[s / base for s in cfg.anchor_sizes],
      aspect_ratios=list(cfg.aspect_ratios),
      strides={str(FEATURE_LEVEL): DETECTION_STRIDE})
  height, width = (int(-(-s // DETECTION_STRIDE)) * DETECTION_STRIDE
                   for s in image_size)
  return generator((height, width))
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
    # Model Garden's DetectionHead initialisation of the two predictors,
    # float32 under a mixed policy (the detection generator's NMS and the
    # losses take float32).
    self.classifier = tf_keras.layers.Dense(
        num_classes, kernel_initializer=tf_keras.initializers.RandomNormal(
            stddev=0.01), dtype="float32", name="class_logits")
    self.box_regressor = tf_keras.layers.Dense(
        num_classes * 4, kernel_initializer=tf_keras.initializers.RandomNormal(
            stddev=0.001), dtype="float32", name="box_deltas")

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


class _Float32RPNHead(dense_prediction_heads.RPNHead):
  """Model Garden's RPN head with float32 outputs under a mixed policy (the
  proposals' CombinedNonMaxSuppression has no bfloat16 kernel)."""

  def call(self, features):
    scores, boxes = super().call(features)
    to32 = lambda d: {k: tf.cast(v, tf.float32) for k, v in d.items()}
    return to32(scores), to32(boxes)


def build_detector(trunk_config: config_lib.TrunkConfig,
                   cfg: DetectorConfig = DetectorConfig(),
                   use_lasso: bool = False):
  """Model Garden's MaskRCNNModel (boxes only) with our C4 parts.

  The backbone comes from Model Garden's factory (c4_backbone.py) with
  random weights; copy the evaluated trunk in with
  ``pretrained.copy_weights(source, model.backbone.trunk)`` and its block 4,
  if any, with ``copy_block4(model.detection_head[0].block4, source)``.

  Args:
    trunk_config: depth, widths, weight decay and batch-norm settings of the
      trunk (its output stride and block 4 are the detector's own).
    cfg: detector settings.
    use_lasso: lasso combination of block-3 units into the heads.

  Returns:
    ``official.vision.modeling.maskrcnn_model.MaskRCNNModel``; call it as
    Model Garden's Mask R-CNN task does: ``model(images, image_shape=...,
    anchor_boxes=c4_anchors(...) batched, gt_boxes=..., gt_classes=...,
    training=True)``. ``anchor_boxes`` is required (the model's own
    multilevel anchors are not C4's; they are left unset).
  """
  level = FEATURE_LEVEL
  rpn_head = _Float32RPNHead(
      min_level=level, max_level=level,
      num_anchors_per_location=cfg.anchors_per_location, num_convs=1,
      num_filters=cfg.rpn_filters, name="rpn_head")
  return maskrcnn_model.MaskRCNNModel(
      backbone=c4_backbone.build(trunk_config, use_lasso),
      decoder=None,
      rpn_head=rpn_head,
      detection_head=Block4BoxHead(trunk_config, cfg.num_classes,
                                   cfg.crop_size, name="box_head"),
      # Batched NMS (one combined_non_max_suppression op) instead of Model
      # Garden's padded while-loop NMS, several times faster on CPU; it runs
      # NMS on all anchors rather than the best pre_nms_top_k (6000 in
      # py-faster-rcnn), which only changes the low-score tail.
      roi_generator=roi_generator.MultilevelROIGenerator(
          pre_nms_top_k=6000, nms_iou_threshold=cfg.rpn_nms_iou,
          num_proposals=cfg.num_proposals, test_pre_nms_top_k=6000,
          test_nms_iou_threshold=cfg.rpn_nms_iou,
          test_num_proposals=cfg.test_num_proposals, use_batched_nms=True),
      roi_sampler=roi_sampler.ROISampler(
          mix_gt_boxes=True, num_sampled_rois=cfg.num_sampled_rois,
          foreground_fraction=cfg.foreground_fraction,
          foreground_iou_threshold=0.5, background_iou_high_threshold=0.5,
          background_iou_low_threshold=0.0),
      # One level: every RoI is cropped from the stride-16 map.
      roi_aligner=roi_aligner.MultilevelROIAligner(
          crop_size=cfg.crop_size, sample_offset=0.5),
      # "batched" is one combined_non_max_suppression op: per-class NMS,
      # then the best max_detections over all classes (py-faster-rcnn's
      # test_net: NMS 0.3 per class, score > 0.05, 100 per image). Model
      # Garden's "v2" pads every class to pre_nms_top_k and was ~100x slower
      # on CPU (2 s per 4 images at 96x128, 80 s to trace).
      detection_generator=detection_generator.DetectionGenerator(
          apply_nms=True, pre_nms_score_threshold=cfg.score_threshold,
          nms_iou_threshold=cfg.nms_iou,
          max_num_detections=cfg.max_detections, nms_version="batched",
          use_cpu_nms=True),
      min_level=level, max_level=level)


def create_weights(model, cfg: DetectorConfig, image_size) -> None:
  """Calls ``model`` once (inference, a zero image of ``image_size``) so
  every lazily built weight (RPN head, predictors) exists -- under the
  strategy scope and precision policy of the caller, before a distributed
  training step (which must not create variables) is traced."""
  height, width = (int(-(-s // DETECTION_STRIDE)) * DETECTION_STRIDE
                   for s in image_size)
  anchors = {k: v[None] for k, v in c4_anchors(cfg, (height, width)).items()}
  model(tf.zeros([1, height, width, 3]),
        image_shape=tf.constant([[height, width]], tf.float32),
        anchor_boxes=anchors, training=False)


def roi_crop_shapes(model, images: tf.Tensor) -> Sequence[tf.TensorShape]:
  """(block-3 map, RPN scores, RoI crops, block-4 output) shapes."""
  features = model.backbone(images, training=False)
  rpn_scores, _ = model.rpn_head(features)
  boxes = tf.tile(tf.constant([[[0., 0., 160., 160.]]]),
                  [images.shape[0], 5, 1])
  crops = model.roi_aligner(features, boxes)
  head = model.detection_head[0]
  block4 = head.block4(tf.reshape(crops, [-1] + crops.shape[2:].as_list()))
  level = str(FEATURE_LEVEL)
  return (features[level].shape, rpn_scores[level].shape, crops.shape,
          block4.shape)
