"""PASCAL VOC 2007 detection: Faster R-CNN C4 fine-tuned from the trunk (§5).

  python -m mtssl_tf.evaluate --eval=voc07_detection --model_dir=RUN \
      --voc07_detection.records_dir=/data/voc07

with ``/data/voc07`` written by ``python -m tools.make_voc_tfrecords`` for
the trainval and test splits (``records_dir=builtin`` generates a small VOC
devkit from the built-in photos instead: mtssl_tf/data/synthetic_voc.py).

The paper's set-up: block 1-3 of the evaluated trunk (at output stride 16;
see models/faster_rcnn_c4.py for why) feed the RPN and the RoI crops, block 4
is the box head -- transferred when the source has it (the ImageNet-labels
row), random otherwise; with ``--lasso`` the heads read the lasso combination
of the block-3 units. All weights are fine-tuned with multi-scale training
augmentation; train on trainval, report VOC07 11-point mAP at IoU 0.5 (and
0.75, and the VOC2010+ area AP) on test, difficult objects ignored.

Recipe defaults (``Config``): py-faster-rcnn's VOC07 end-to-end schedule
(Ren et al. 2015, rbgirshick/py-faster-rcnn ``solver.prototxt``: SGD momentum
0.9, lr 0.001 at 1 image per step, x0.1 after 50k of 70k steps; images
resized to fit 600x1000), with multi-scale jitter 0.8-1.44 (short side
~480-864 px, the range of Doersch et al. 2015's multi-scale training).

Cost measured with ResNet-v2-101 at 600x1000 on the shared 2-core CPU host
(load ~9, the run got 25 % of one core; 2026-11-24): tracing + first step
258 s, then ~95 s per training step and ~45 s per test image, peak RSS
4.3 GB. The default schedule (70k steps, 4952 test images) would take
~77 days + ~2.6 days there: paper-scale runs need accelerators
(``strategy=mirrored``).
"""

import dataclasses
import json
import os
from typing import Tuple

import tf_keras

from mtssl_tf.data import voc
from mtssl_tf.evaluation import detection_training
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import pretrained
from mtssl_tf.models import faster_rcnn_c4
from mtssl_tf.training import replicas
from mtssl_tf.training import speed

NAME = "voc07_detection"
STRATEGIES = ("default", "mirrored")
BUILTIN = "builtin"


@dataclasses.dataclass(frozen=True)
class Config:
  """VOC07 detection options.

  Attributes:
    records_dir: folder with trainval-*.tfrecord and test-*.tfrecord from
      tools/make_voc_tfrecords.py, or "builtin" (a generated devkit).
    steps: training steps.
    batch_size: images per step.
    learning_rate: SGD learning rate for batch_size.
    decay_steps: steps where the learning rate drops 10x.
    output_size: (height, width) images are resized to fit (600x1000).
    scale_min: smallest multi-scale jitter factor.
    scale_max: largest multi-scale jitter factor.
    freeze_batch_norm: keep batch norm in inference mode (standard when
      fine-tuning detectors with 1-2 images per step).
    freeze_trunk: train only the RPN and box head (a baseline; the paper
      fine-tunes everything).
    anchor_sizes: anchor sides in pixels on the stride-16 map (x 3 ratios).
    num_proposals: RPN proposals per training image.
    test_num_proposals: RPN proposals per test image.
    num_sampled_rois: RoIs per training image for the box head.
    checkpoint_every: steps between training checkpoints.
    max_test_images: score only the first N test images (0: all).
    builtin_images: trainval/test images of the "builtin" devkit.
    deterministic_input: the same training batches on every run of a
      seed (the parser's random augmentation runs in order, slower).
    strategy: "default" (one device) or "mirrored" (all local GPUs, or
      ``num_cpu_devices`` logical CPUs), as pre-training's --strategy
      (training/replicas.py); batch_size is the global batch.
    num_cpu_devices: with strategy "mirrored" and no GPU, split the CPU.
    mixed_precision: "auto", "float32", "mixed_bfloat16" or "mixed_float16",
      as pre-training's --mixed_precision (training/speed.py; float16 has no
      loss scaling there either).
  """
  records_dir: str = ""
  steps: int = 70000
  batch_size: int = 1
  learning_rate: float = 0.001
  decay_steps: Tuple[int, ...] = (50000,)
  output_size: Tuple[int, int] = (600, 1000)
  scale_min: float = 0.8
  scale_max: float = 1.44
  freeze_batch_norm: bool = True
  freeze_trunk: bool = False
  anchor_sizes: Tuple[float, ...] = (128.0, 256.0, 512.0)
  num_proposals: int = 2000
  test_num_proposals: int = 300
  num_sampled_rois: int = 128
  checkpoint_every: int = 1000
  max_test_images: int = 0
  builtin_images: Tuple[int, int] = (160, 40)
  deterministic_input: bool = False
  strategy: str = "default"
  num_cpu_devices: int = 0
  mixed_precision: str = "auto"


def _patterns(records_dir):
  return (os.path.join(records_dir, "trainval-*.tfrecord"),
          os.path.join(records_dir, "test-*.tfrecord"))


def check(config: Config) -> None:
  """Validates the options and that the records exist."""
  if config.steps < 1 or config.batch_size < 1:
    raise ValueError("voc07_detection.steps and batch_size must be >= 1.")
  if not 0 < config.scale_min <= config.scale_max:
    raise ValueError("Need 0 < voc07_detection.scale_min <= scale_max.")
  if config.strategy not in STRATEGIES:
    raise ValueError(
        f"voc07_detection.strategy must be one of {STRATEGIES} (multi-worker "
        f"detection fine-tuning is not supported), got {config.strategy!r}.")
  if config.num_cpu_devices and config.strategy != "mirrored":
    raise ValueError("voc07_detection.num_cpu_devices needs "
                     "voc07_detection.strategy=mirrored.")
  from mtssl_tf.training import speed  # pylint: disable=g-import-not-at-top
  speed.check_precision(config.mixed_precision)
  if config.records_dir == BUILTIN:
    return
  if not config.records_dir:
    raise ValueError(
        "Set --voc07_detection.records_dir to the folder written by "
        "'python -m tools.make_voc_tfrecords --voc_dir=<VOCdevkit> "
        "--output_dir=<folder> --split=trainval' (and --split=test), or to "
        "'builtin' for the generated sample devkit.")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for pattern in _patterns(config.records_dir):
    if not tf.io.gfile.glob(pattern):
      raise ValueError(f"No records match {pattern}; write them with "
                       "python -m tools.make_voc_tfrecords.")


def configure_runtime(config: Config) -> None:
  """Before any TensorFlow op (evaluate.py calls it after ``check``)."""
  if config.strategy == "mirrored":
    replicas.configure_cpu_devices(config.num_cpu_devices)


def _builtin_records(config, output_dir, log):
  """Generates the sample devkit + records once under output_dir/data."""
  from mtssl_tf.data import synthetic_voc  # pylint: disable=g-import-not-at-top
  from mtssl_tf.data import voc_records  # pylint: disable=g-import-not-at-top
  root = os.path.join(output_dir, "data")
  records = os.path.join(root, "records")
  done = os.path.join(records, voc_records.manifest_name("test"))
  if not os.path.exists(done):
    log(f"generating the built-in VOC devkit under {root}")
    synthetic_voc.make_devkit(os.path.join(root, "VOCdevkit"),
                              *config.builtin_images, seed=0)
    for split in ("trainval", "test"):
      voc_records.make_records(voc_records.VocRecordsConfig(
          records, split, voc_dir=os.path.join(root, "VOCdevkit"),
          overwrite=True))
  return records


def _skipped(records_dir):
  counts = {}
  for split in ("trainval", "test"):
    path = os.path.join(records_dir, f"manifest-{split}.json")
    if os.path.exists(path):
      with open(path) as f:
        manifest = json.load(f)
      counts[f"{split}_images"] = manifest["images"]
      counts[f"{split}_skipped"] = len(manifest["skipped"])
  return counts


def run(ctx: eval_base.EvalContext, config: Config) -> eval_base.EvalResult:
  """Fine-tunes the detector on trainval (resuming), scores test."""
  records_dir = (_builtin_records(config, ctx.output_dir, ctx.log)
                 if config.records_dir == BUILTIN else config.records_dir)
  train_pattern, test_pattern = _patterns(records_dir)
  det = faster_rcnn_c4.DetectorConfig(
      anchor_sizes=config.anchor_sizes, num_proposals=config.num_proposals,
      test_num_proposals=config.test_num_proposals,
      num_sampled_rois=config.num_sampled_rois)
  # Random heads (and block 4 unless the source has it) from the run's seed;
  # the evaluated trunk's layers are copied in by name.
  tf_keras.utils.set_random_seed(ctx.seed)
  strategy = replicas.make_strategy(config.strategy, config.num_cpu_devices)
  if config.batch_size % strategy.num_replicas_in_sync:
    raise ValueError(
        f"voc07_detection.batch_size {config.batch_size} is not a multiple "
        f"of the {strategy.num_replicas_in_sync} replicas.")
  with strategy.scope(), speed.precision_policy(config.mixed_precision):
    model = faster_rcnn_c4.build_detector(ctx.pretrained.trunk_config, det,
                                          use_lasso=ctx.lasso)
    trunk = model.backbone.trunk
    pretrained.copy_weights(ctx.pretrained.trunk, trunk)
    faster_rcnn_c4.copy_block4(model.detection_head[0].block4,
                               ctx.pretrained.trunk)
    faster_rcnn_c4.create_weights(model, det, config.output_size)
  settings = detection_training.TrainSettings(
      steps=config.steps, batch_size=config.batch_size,
      learning_rate=config.learning_rate, decay_steps=config.decay_steps,
      output_size=config.output_size, scale_min=config.scale_min,
      scale_max=config.scale_max, freeze_batch_norm=config.freeze_batch_norm,
      freeze_trunk=config.freeze_trunk,
      checkpoint_every=config.checkpoint_every, seed=ctx.seed)
  train_parser = detection_training.make_parser(
      det, config.output_size, config.scale_min, config.scale_max, True)
  train_ds = detection_training.dataset(train_pattern, train_parser,
                                        config.batch_size, True, ctx.seed,
                                        config.deterministic_input)
  # Re-estimate batch-norm statistics if asked (random / barely trained
  # trunks): the trunk reads [-1, 1] pixels, the parser's images are
  # normalised with ImageNet's mean and std.
  ctx.prepare_trunk(trunk, train_ds.map(
      lambda images, labels: faster_rcnn_c4.to_trunk_range(images)))
  losses = detection_training.train(
      model, train_ds, settings, os.path.join(ctx.output_dir, "train"),
      writer=ctx.writer, log=ctx.log,
      progress=lambda total, what, done: ctx.progress(total, what, "step",
                                                      done),
      strategy=strategy)
  test_ds = detection_training.dataset(
      test_pattern, detection_training.make_parser(det, config.output_size),
      1, False)
  total = detection_training.record_count(test_pattern)
  if config.max_test_images:
    test_ds = test_ds.take(config.max_test_images)
    total = min(total, config.max_test_images)
  result, seen = detection_training.evaluate(
      model, test_ds, voc.CLASSES, writer=ctx.writer, total=total,
      progress=lambda t, what, done: ctx.progress(t, what, "img", done))
  metrics = {k: v for k, v in result.items() if k.startswith("mAP")}
  return eval_base.EvalResult(
      metrics=metrics,
      headline=["mAP@0.5", "mAP@0.75"],
      counts=dict(_skipped(records_dir), test_images_scored=seen,
                  skipped_steps=losses.get("skipped_steps", 0)),
      details={"per_class": detection_training.per_class_rows(
                   result, voc.CLASSES),
               "final_losses": losses,
               "output_stride": faster_rcnn_c4.DETECTION_STRIDE})
