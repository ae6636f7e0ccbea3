"""Training and testing the Faster R-CNN C4 detector on VOC TFRecords (§5).

Input pipeline: Model Garden's ``TfExampleDecoder`` + Mask R-CNN ``Parser``
(resize to fit ``output_size`` keeping the aspect ratio, multi-scale jitter
``[scale_min, scale_max]`` with a random crop back to ``output_size``,
horizontal flip, RPN anchor labelling -- on the C4 anchors, ``C4Parser``;
difficult boxes arrive as ``is_crowd`` and are dropped from training by the
parser). Losses: Model
Garden's ``maskrcnn_losses`` (RPN objectness + Huber box, Fast R-CNN softmax +
Huber box), summed with weight 1 each, plus the trunk's L2 weight decay.

``train`` is one resumable loop: a checkpoint (model, optimizer, step) under
``<dir>/train`` every ``checkpoint_every`` steps and at the end; a step whose
loss or gradients are not finite is skipped (counted), so no checkpoint holds
non-finite values. ``evaluate`` runs the test set and scores it with the VOC
devkit rules (voc_detection_metrics.py).

Distribution and precision (as pre-training, issue 12 item 4): the caller
builds the model under ``strategy.scope()`` and the precision policy
(voc07_detection.run; ``faster_rcnn_c4.create_weights`` makes the lazily
built weights exist there); ``train`` splits the global batch over the
replicas (``experimental_distribute_dataset``), runs the step with
``strategy.run`` with the loss divided by the replicas, and skips a
non-finite step on every replica at once (``make_train_step``). Batch norm
is per replica when not frozen (frozen is the default).

Shapes: images [B, H, W, 3] float32 (``output_size`` padded to a multiple of
the stride 16); detections [B, max_detections, 4] (ymin, xmin, ymax, xmax) in
the resized image, mapped back to original pixel edges for scoring.
"""

import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.dataloaders import maskrcnn_input
from official.vision.dataloaders import tf_example_decoder
from official.vision.ops import anchor

from mtssl_tf.evaluation import voc_detection_metrics
from mtssl_tf.models import faster_rcnn_c4

# Steps after (re)start whose duration is logged (the first includes tracing).
FIRST_STEPS_LOGGED = 3


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """Optimisation and input settings (defaults in voc07_detection.Config).

  Attributes:
    steps: training steps.
    batch_size: images per step.
    learning_rate: base SGD learning rate (scaled by nothing: give it for
      the batch size used).
    decay_steps: steps at which the rate is multiplied by 0.1.
    momentum: SGD momentum.
    output_size: (height, width) images are resized to fit.
    scale_min, scale_max: multi-scale jitter range.
    hflip: random horizontal flips.
    freeze_batch_norm: run batch norm in inference mode with fixed
      scale/offset (the standard for fine-tuning detectors at 1-2 images per
      step); False trains it.
    freeze_trunk: train only the RPN and box head, the backbone (trunk and
      lasso row) fixed in inference mode (the issue's frozen-random-trunk
      baseline; the paper fine-tunes all weights).
    checkpoint_every: steps between checkpoints.
    seed: shuffling seed.
  """
  steps: int = 70000
  batch_size: int = 1
  learning_rate: float = 0.001
  decay_steps: Tuple[int, ...] = (50000,)
  momentum: float = 0.9
  output_size: Tuple[int, int] = (600, 1000)
  scale_min: float = 0.8
  scale_max: float = 1.44
  hflip: bool = True
  freeze_batch_norm: bool = True
  freeze_trunk: bool = False
  checkpoint_every: int = 1000
  seed: int = 0


class C4Parser(maskrcnn_input.Parser):
  """Model Garden's Mask R-CNN parser with the C4 anchors (boxes only).

  Model Garden's parser builds its multilevel octave anchors inline; it is
  run with a trivial single-level grid (one anchor per stride-16 position,
  which also pads images to a multiple of 16) and its anchors and RPN targets
  are then replaced by ``faster_rcnn_c4.c4_anchors`` and Model Garden's
  ``RpnAnchorLabeler`` on the same ground truth with the same thresholds.

  Args:
    det: the detector settings (anchor sizes and ratios).
    **kwargs: ``maskrcnn_input.Parser`` arguments other than the anchors.
  """

  def __init__(self, det: faster_rcnn_c4.DetectorConfig, **kwargs):
    level = faster_rcnn_c4.FEATURE_LEVEL
    super().__init__(min_level=level, max_level=level, num_scales=1,
                     aspect_ratios=[1.0], anchor_size=1.0, **kwargs)
    self._det = det

  def _parse_train_data(self, data):
    image, labels = super()._parse_train_data(data)
    anchors = faster_rcnn_c4.c4_anchors(self._det, image.shape[:2])
    valid = labels["gt_classes"] > 0  # padding is -1
    labeler = anchor.RpnAnchorLabeler(
        self._rpn_match_threshold, self._rpn_unmatched_threshold,
        self._rpn_batch_size_per_im, self._rpn_fg_fraction)
    scores, boxes = labeler.label_anchors(
        anchors, tf.boolean_mask(labels["gt_boxes"], valid),
        tf.cast(tf.boolean_mask(labels["gt_classes"], valid)[:, None],
                tf.float32))
    labels.update(anchor_boxes=anchors, rpn_score_targets=scores,
                  rpn_box_targets=boxes)
    return image, labels

  def _parse_eval_data(self, data):
    image, labels = super()._parse_eval_data(data)
    labels["anchor_boxes"] = faster_rcnn_c4.c4_anchors(self._det,
                                                       image.shape[:2])
    return image, labels


def make_parser(det: faster_rcnn_c4.DetectorConfig, output_size,
                scale_min=1.0, scale_max=1.0, hflip=False,
                max_instances=100) -> C4Parser:
  """The C4 parser: resize to fit ``output_size``, jitter, flip, RPN labels."""
  return C4Parser(
      det, output_size=list(output_size), aug_rand_hflip=hflip,
      aug_scale_min=scale_min, aug_scale_max=scale_max,
      skip_crowd_during_training=True, max_num_instances=max_instances,
      rpn_batch_size_per_im=256)


def dataset(pattern: str, parser, batch_size: int, training: bool,
            seed: int = 0, deterministic: bool = False) -> tf.data.Dataset:
  """Records matching ``pattern`` -> (images, labels) batches.

  Args:
    pattern: TFRecord glob.
    parser: ``make_parser(...)``.
    batch_size: images per batch (global).
    training: shuffle (by ``seed``), repeat, augment, RPN targets.
    seed: the shuffling seed.
    deterministic: the same batches on every run given ``seed`` and the
      global seed (``tf_keras.utils.set_random_seed``): Model Garden's parser
      draws its jitter, crop, flip and RPN anchor sample with stateful random
      ops, whose op seeds come from the global seed, so they are only
      reproducible when the elements are parsed one at a time, in order
      (a sequential map, slower); False parses in parallel.
  """
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ValueError(f"No TFRecords match {pattern!r}; write them with "
                     "python -m tools.make_voc_tfrecords.")
  decoder = tf_example_decoder.TfExampleDecoder()
  parse = parser.parse_fn(training)
  ds = tf.data.TFRecordDataset(files)
  if training:
    ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.map(lambda s: parse(decoder.decode(s)),
              num_parallel_calls=None if deterministic else tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=training).prefetch(2)


def freeze_batch_norm(model: tf_keras.Model) -> int:
  """Puts every BatchNormalization layer in inference mode; returns count."""
  count = 0
  for layer in model.submodules:
    if isinstance(layer, tf_keras.layers.BatchNormalization):
      layer.trainable = False
      count += 1
  return count


_LOSS_OUTPUTS = ("rpn_scores", "rpn_boxes", "class_outputs", "box_outputs",
                 "box_targets")


def compute_losses(outputs, labels) -> Dict[str, tf.Tensor]:
  """Model Garden's Faster R-CNN losses (tasks/maskrcnn.py, weights 1)."""
  from official.vision.losses import maskrcnn_losses  # pylint: disable=g-import-not-at-top
  # Under a mixed policy the heads output bfloat16/float16: losses in
  # float32, as Model Garden's Mask R-CNN task computes them.
  outputs = {k: (tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), v)
                 if k in _LOSS_OUTPUTS else v) for k, v in outputs.items()}
  rpn_score = tf.reduce_mean(maskrcnn_losses.RpnScoreLoss(256)(
      outputs["rpn_scores"], labels["rpn_score_targets"]))
  rpn_box = tf.reduce_mean(maskrcnn_losses.RpnBoxLoss(1.0 / 9.0)(
      outputs["rpn_boxes"], labels["rpn_box_targets"]))
  cls = tf.reduce_mean(maskrcnn_losses.FastrcnnClassLoss()(
      outputs["class_outputs"], outputs["class_targets"]))
  box = tf.reduce_mean(maskrcnn_losses.FastrcnnBoxLoss(1.0)(
      outputs["box_outputs"], outputs["class_targets"],
      outputs["box_targets"]))
  return {"rpn_score_loss": rpn_score, "rpn_box_loss": rpn_box,
          "frcnn_cls_loss": cls, "frcnn_box_loss": box,
          "model_loss": rpn_score + rpn_box + cls + box}


def _model_kwargs(labels, training):
  kwargs = dict(image_shape=labels["image_info"][:, 1, :],
                anchor_boxes=labels["anchor_boxes"], training=training)
  if training:
    kwargs.update(gt_boxes=labels["gt_boxes"], gt_classes=labels["gt_classes"])
  return kwargs


def _optimizer(settings: TrainSettings):
  boundaries = list(settings.decay_steps)
  rates = [settings.learning_rate * 0.1 ** i for i in range(len(boundaries) + 1)]
  schedule = (tf_keras.optimizers.schedules.PiecewiseConstantDecay(
      boundaries, rates) if boundaries else settings.learning_rate)
  return tf_keras.optimizers.SGD(schedule, momentum=settings.momentum)


def make_train_step(model, optimizer, strategy, step, skipped):
  """The distributed training step: (per-replica images, labels) -> losses.

  Each replica computes Model Garden's losses on its share of the global
  batch, scaled by ``1 / num_replicas`` so the optimizer's all-reduce (a sum)
  gives the global-batch mean gradient. Non-finite skip, replica-safe: the
  count of replicas with a non-finite loss or gradient is summed in
  cross-replica context and ``tf.cond`` chooses between a second
  ``strategy.run`` that applies the gradients (the optimizer's
  ``merge_call`` is inside that run, not across the cond) and nothing, the
  same branch on every replica.
  """
  replicas = strategy.num_replicas_in_sync

  def forward_backward(images, labels):
    with tf.GradientTape() as tape:
      outputs = model(images, **_model_kwargs(labels, True))
      losses = compute_losses(outputs, labels)
      reg = (tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
             if model.losses else tf.constant(0.0))
      total = tf.cast(losses["model_loss"], tf.float32) + reg
      scaled = total / replicas
    variables = model.trainable_variables
    grads = tape.gradient(scaled, variables)
    finite = tf.math.is_finite(total)
    for g in grads:
      if g is not None:
        finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
    logs = {k: tf.cast(v, tf.float32) for k, v in losses.items()}
    logs["total_loss"] = total
    return grads, logs, tf.cast(tf.logical_not(finite), tf.int64)

  def apply(grads):
    optimizer.apply_gradients(
        [(g, v) for g, v in zip(grads, model.trainable_variables)
         if g is not None])

  @tf.function
  def train_step(dist_images, dist_labels):
    grads, logs, bad = strategy.run(forward_backward,
                                    args=(dist_images, dist_labels))
    bad = strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None)

    def do_apply():
      strategy.run(apply, args=(grads,))
      return tf.constant(0, tf.int64)
    skipped.assign_add(tf.cond(bad == 0, do_apply,
                               lambda: tf.constant(1, tf.int64)))
    step.assign_add(1)
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in logs.items()}
  return train_step


def train(model, ds: tf.data.Dataset, settings: TrainSettings, train_dir: str,
          writer=None, log: Callable[[str], None] = print,
          progress=None, strategy: Optional[tf.distribute.Strategy] = None
          ) -> Dict[str, float]:
  """Trains (resuming from ``train_dir``) up to ``settings.steps``.

  Args:
    model: from faster_rcnn_c4.build_detector, built under
      ``strategy.scope()`` (and the mixed-precision policy, if any).
    ds: training (images, labels) batches of the GLOBAL batch size; it is
      split over the replicas.
    settings: optimisation settings.
    train_dir: checkpoint directory.
    writer: TensorBoard writer (scalars every 20 steps), or None.
    log: progress lines; also one when tracing starts and the time of each of
      the first ``FIRST_STEPS_LOGGED`` steps (the first includes tracing,
      minutes for ResNet-v2-101 at 600x1000 on CPU).
    progress: ``(total, what, done) -> object with update(done)`` or None.
    strategy: the tf.distribute strategy (default: the current one).

  Returns:
    The last step's losses (floats, mean over replicas) and
    ``skipped_steps``.
  """
  strategy = strategy or tf.distribute.get_strategy()
  if settings.freeze_batch_norm:
    freeze_batch_norm(model)
  if settings.freeze_trunk:
    model.backbone.trainable = False
  with strategy.scope():
    optimizer = _optimizer(settings)
    step = tf.Variable(0, dtype=tf.int64, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    skipped = tf.Variable(
        0, dtype=tf.int64, trainable=False,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
  ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                             skipped=skipped)
  manager = tf.train.CheckpointManager(ckpt, train_dir, max_to_keep=2)
  if manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint)
    log(f"resumed detector training from {manager.latest_checkpoint} at step "
        f"{int(step.numpy())}")
  train_step = make_train_step(model, optimizer, strategy, step, skipped)

  start = int(step.numpy())
  bar = progress(settings.steps, "detector training", start) if progress else None
  losses = {}
  it = iter(strategy.experimental_distribute_dataset(ds))
  if start < settings.steps:
    log(f"detector training: tracing the first step "
        f"({strategy.num_replicas_in_sync} replica(s), compute dtype "
        f"{model.compute_dtype})")
  while int(step.numpy()) < settings.steps:
    began = time.monotonic()
    images, labels = next(it)
    losses = train_step(images, labels)
    s = int(step.numpy())
    if s - start <= FIRST_STEPS_LOGGED:
      log(f"detector training step {s} took {time.monotonic() - began:.1f} s"
          + (" (tracing included)" if s == start + 1 else "")
          + f", loss {float(losses['total_loss']):.4g}")
    if writer is not None and (s % 20 == 0 or s == settings.steps):
      with writer.as_default(step=s):
        for k, v in losses.items():
          tf.summary.scalar(f"detection/{k}", v)
    if bar:
      bar.update(s)
    if s % settings.checkpoint_every == 0 or s == settings.steps:
      manager.save(checkpoint_number=s)
  out = {k: float(v) for k, v in losses.items()}
  out["skipped_steps"] = int(skipped.numpy())
  return out


def detections_to_voc(boxes, image_info, num: int) -> np.ndarray:
  """[N, 4] (ymin, xmin, ymax, xmax) in the resized image -> devkit boxes.

  Divides by the parser's scale (``image_info[2]``), clips to the original
  image and converts pixel edges to 1-based inclusive (xmin, ymin, xmax, ymax).
  """
  boxes = np.asarray(boxes[:num], np.float64)
  scale = np.asarray(image_info[2], np.float64)
  height, width = np.asarray(image_info[0], np.float64)
  boxes = boxes / np.tile(scale, 2)
  boxes = np.clip(boxes, 0, [height, width, height, width])
  return voc_detection_metrics.edges_to_voc(boxes[:, [1, 0, 3, 2]])


def evaluate(model, ds: tf.data.Dataset, class_names: Sequence[str],
             writer=None, num_images_drawn: int = 4, progress=None,
             total: Optional[int] = None) -> Tuple[Dict[str, object], int]:
  """Detects on every test image; returns (devkit result, images seen).

  Ground truth comes from the parser's ``groundtruths`` (boxes in original
  pixels, ``is_crowds`` = difficult); labels 1..K-1 become 0..K-2.
  """
  evaluator = voc_detection_metrics.VocDetectionEvaluator(class_names)
  predict = tf.function(lambda images, labels: model(
      images, **_model_kwargs(labels, False)))
  seen = 0
  bar = progress(total, "detector test", 0) if progress and total else None
  drawn = []
  for images, labels in ds:
    out = predict(images, labels)
    gts = labels["groundtruths"]
    for b in range(images.shape[0]):
      image_id = seen
      n = int(gts["num_detections"][b])
      gt_edges = gts["boxes"][b][:n].numpy()[:, [1, 0, 3, 2]]
      evaluator.add_ground_truth(
          image_id, voc_detection_metrics.edges_to_voc(np.round(gt_edges)),
          gts["classes"][b][:n].numpy() - 1,
          gts["is_crowds"][b][:n].numpy().astype(bool))
      k = int(out["num_detections"][b])
      boxes = detections_to_voc(out["detection_boxes"][b].numpy(),
                                labels["image_info"][b].numpy(), k)
      evaluator.add_detections(image_id, boxes,
                               out["detection_scores"][b][:k].numpy(),
                               out["detection_classes"][b][:k].numpy() - 1)
      if len(drawn) < num_images_drawn:
        drawn.append(_draw(images[b], out["detection_boxes"][b][:k],
                           out["detection_scores"][b][:k]))
      seen += 1
    if bar:
      bar.update(seen)
  if writer is not None and drawn:
    with writer.as_default(step=0):
      tf.summary.image("detection/test_images", tf.stack(drawn),
                       max_outputs=len(drawn))
  return evaluator.result(), seen


def _draw(image, boxes, scores, min_score=0.3):
  """An image in [0, 1] with its detections above ``min_score`` drawn."""
  from official.vision.ops import preprocess_ops  # pylint: disable=g-import-not-at-top
  pixels = image * preprocess_ops.STDDEV_NORM + preprocess_ops.MEAN_NORM
  pixels = tf.clip_by_value(pixels, 0.0, 1.0)
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  keep = scores >= min_score
  normalized = tf.boolean_mask(boxes, keep) / tf.tile(size, [2])
  return tf.image.draw_bounding_boxes(pixels[None], normalized[None],
                                      tf.constant([[1.0, 0.2, 0.2, 1.0]]))[0]


def record_count(pattern: str) -> int:
  """Number of records in the files matching ``pattern``."""
  return sum(1 for f in sorted(tf.io.gfile.glob(pattern))
             for _ in tf.data.TFRecordDataset(f))


def per_class_rows(result, class_names: Sequence[str]) -> List[dict]:
  """The per-class table for EvalResult.details."""
  return voc_detection_metrics.per_class_table(result, class_names)
