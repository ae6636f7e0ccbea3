"""Our trunk up to block 3 as a registered Model Garden backbone (paper §5).

Model Garden builds backbones by name through
``official.vision.modeling.backbones.factory``: a builder registered with
``register_backbone_builder(key)`` receives ``(input_specs, backbone_config,
norm_activation_config, l2_regularizer)``, where ``backbone_config`` is a
``hyperparams.OneOfConfig`` whose ``type`` is the key. This module registers
``BACKBONE_NAME`` (on import, as Model Garden's own backbones do) with its
config dataclasses; ``build(trunk_config, use_lasso)`` goes through
``factory.build_backbone``. Weights are random: the evaluation copies the
evaluated trunk's weights in by layer name afterwards
(``evaluation/pretrained.copy_weights``).

Model Garden conventions mapped onto ``config.TrunkConfig``:
  norm_activation_config.norm_momentum / norm_epsilon -> batch_norm_decay /
    batch_norm_epsilon;
  l2_regularizer ``L2(l2)`` -> weight_decay ``2 * l2`` (TF-Slim's
    ``weight_decay * sum(w**2) / 2``, the convention of resnet_v2.py; Model
    Garden's tasks likewise pass ``l2(weight_decay / 2)``).

Output: ``{"4": [B, ceil(H/16), ceil(W/16), 4 * 4 * base_width]}`` (block 3
at output stride 16, or the lasso combination of its units), Model Garden's
level-keyed feature dict.
"""

import dataclasses
from typing import Optional

import tf_keras
from official.modeling import hyperparams
from official.vision.configs import common
from official.vision.modeling.backbones import factory

from mtssl_tf import config as config_lib
from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.models import resnet_v2

BACKBONE_NAME = "mtssl_resnet_v2_block3"
DETECTION_STRIDE = 16
FEATURE_LEVEL = 4  # log2(DETECTION_STRIDE), Model Garden's level key
# Model Garden's preprocess_ops.normalize_image constants (pixels in [0, 1]).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class MtsslResNetV2Block3(hyperparams.Config):
  """The registered backbone's own fields (the rest: norm/L2 configs)."""
  depth: int = 101
  base_width: int = 64
  output_stride: int = DETECTION_STRIDE
  use_lasso: bool = False


@dataclasses.dataclass
class Backbone(hyperparams.OneOfConfig):
  """Model Garden's one-of backbone config, holding only ours."""
  type: Optional[str] = BACKBONE_NAME
  mtssl_resnet_v2_block3: MtsslResNetV2Block3 = dataclasses.field(
      default_factory=MtsslResNetV2Block3)


def to_trunk_range(images):
  """Model Garden-normalised images -> the trunk's [-1, 1] pixels."""
  return 2.0 * (images * _STD + _MEAN) - 1.0


class Block3Backbone(tf_keras.Model):
  """Images [B, H, W, 3] -> {"4": block-3 features [B, H/16, W/16, C]}.

  Images come normalised as Model Garden's parser does ((x - mean) / std of
  ImageNet, x in [0, 1]) and are mapped back to the trunk's [-1, 1].

  Args:
    trunk: a ResNet-v2 trunk (models/resnet_v2.py) at output stride 16,
      without block 4 (the C4 box head runs block 4 on RoI crops only).
    use_lasso: feed a fresh LassoCombine of the block-3 unit outputs (the
      paper's lasso experiments, §3.2) instead of block 3's last unit.
  """

  def __init__(self, trunk: tf_keras.Model, use_lasso: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.trunk = trunk
    self.use_lasso = use_lasso
    self._units = sorted(
        (k for k in trunk.output if k.startswith("block3/unit_")),
        key=lambda k: int(k.rsplit("_", 1)[1]))
    self.lasso = (lasso_lib.LassoCombine(name="detection_lasso")
                  if use_lasso else None)

  def call(self, images, training=None):
    # The trunk was pre-trained on [-1, 1] pixels (SPEC.md).
    endpoints = self.trunk(to_trunk_range(images), training=training)
    if self.lasso is not None:
      features = self.lasso([endpoints[u] for u in self._units])
    else:
      features = endpoints["block3"]
    return {str(FEATURE_LEVEL): features}


@factory.register_backbone_builder(BACKBONE_NAME)
def build_block3_backbone(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> tf_keras.Model:
  """Model Garden backbone builder (see the module docstring)."""
  if input_specs.shape[-1] not in (None, 3):
    raise ValueError(f"{BACKBONE_NAME} reads RGB images, got {input_specs}")
  cfg = backbone_config.get()
  trunk_config = config_lib.TrunkConfig(
      depth=cfg.depth, output_stride=cfg.output_stride, include_block4=False,
      base_width=cfg.base_width,
      weight_decay=2.0 * float(l2_regularizer.l2) if l2_regularizer else 0.0,
      batch_norm_decay=norm_activation_config.norm_momentum,
      batch_norm_epsilon=norm_activation_config.norm_epsilon)
  return Block3Backbone(resnet_v2.build_trunk(trunk_config), cfg.use_lasso,
                        name="backbone")


def build(trunk_config: config_lib.TrunkConfig,
          use_lasso: bool = False) -> Block3Backbone:
  """Builds the backbone for ``trunk_config`` through Model Garden's factory.

  ``trunk_config.output_stride`` and ``include_block4`` are ignored: the
  detection backbone is always block 1-3 at ``DETECTION_STRIDE``.
  """
  backbone_config = Backbone(mtssl_resnet_v2_block3=MtsslResNetV2Block3(
      depth=trunk_config.depth, base_width=trunk_config.base_width,
      use_lasso=use_lasso))
  norm = common.NormActivation(norm_momentum=trunk_config.batch_norm_decay,
                               norm_epsilon=trunk_config.batch_norm_epsilon)
  l2 = (tf_keras.regularizers.l2(0.5 * trunk_config.weight_decay)
        if trunk_config.weight_decay else None)
  return factory.build_backbone(
      tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
      backbone_config, norm, l2)
