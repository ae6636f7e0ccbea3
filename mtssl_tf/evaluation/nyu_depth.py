"""NYU v2 depth prediction: fine-tune trunk + up-projection decoder (paper §5).

The evaluation of the paper's right-hand column (Tables 1-4; all measures in
appendix A, Tables 5-8). Setup (paper §5, "NYU V2 Depth Prediction"): the
trunk up to block 3 (or, with ``--lasso``, the evaluation's own lasso
combination of the block-3 units) feeds three up-projection levels with 512,
256 and 128 filters and Laina et al.'s prediction layer
(``up_projection.py``); the loss is berHu with c = 0.2 max|residual| per
batch (``depth_metrics.py``); all weights are fine-tuned.

Resolution: block 3 runs at ``output_stride`` 16 by default, its nominal
stride ("most block 3 convolutions produce outputs at stride 16", paper
§3.4); three x2 levels then give a prediction at half the input resolution,
as Laina et al.'s four levels on ResNet-50's stride-32 block 4 do. The
prediction is resized bilinearly to the target's size for the loss and to
the full ground truth (480x640) for the measures.

Inputs (Laina et al. §4 after Eigen et al.; ``data/depth_augment.py``):
frames downsampled to 320x240, random 304x228 training crops with scale,
rotation, colour and flip augmentation; evaluation on the whole 320x240
frame, measured on the standard crop of Eigen et al. (rows 45-470, columns
41-600 of 480x640, where the Kinect depth is projected) and only where the
ground truth is valid.

Recipe (the paper is silent; Laina et al. §4): SGD with momentum 0.9, batch
16, learning rate 0.01 for all layers, lowered "every 6-8 epochs" (here x0.1
every 7 epochs), 20 epochs of ~95k pairs (Laina's augmented set), i.e.
~119k updates. With the official 795 training frames that is many passes
over each frame; every field below is a flag to change it.

The loop follows pre-training's conventions: tf.distribute (``strategy``
"default" or "mirrored" as pre-training's --strategy, ``batch_size`` the
global batch; gradients averaged over replicas and berHu's c taken over the
whole batch, all replicas), a ``tf.train.CheckpointManager`` under
``output_dir/train`` holding the weights and the input iterator's position
(a run killed with kill -9 resumes at the same step with the same data
order; augmentation is stateless per example), a non-finite loss stops the
run before anything after it is saved (its gradients are zeroed, though
SGD's momentum still moves the weights in memory), TensorBoard scalars and
colour-mapped depth images, progress lines with rate and ETA.
"""

import dataclasses
import json
import math
import os
import time
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf.data import depth_augment
from mtssl_tf.data import nyu_depth_v2
from mtssl_tf.data import skipping
from mtssl_tf.data import synthetic_depth
from mtssl_tf.evaluation import bn_stats
from mtssl_tf.evaluation import depth_metrics
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import up_projection
from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.training import replicas

NAME = "nyu_depth"
SOURCES = ("mat", "tfds", "synthetic")
STRATEGIES = ("default", "mirrored")
HEADLINE = ("delta1", "delta2", "delta3", "abs_rel", "mae", "rmse", "log10")
# Eigen et al.'s evaluation crop of a 480x640 frame: rows [45, 471), columns
# [41, 601).
EIGEN_CROP = (45, 471, 41, 601)
# Fields that define the trained network: a checkpoint made with other values
# cannot be resumed.
_MODEL_FIELDS = ("output_stride", "decoder_filters", "fast_up_projection")


class NonFiniteLossError(RuntimeError):
  """The depth loss became NaN/Inf; nothing after it was saved."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the NYU v2 depth evaluation.

  Attributes:
    source: "mat" (nyu_depth_v2_labeled.mat + splits.mat), "tfds" (the
      prepared TFDS nyu_depth_v2) or "synthetic" (rendered scenes, written
      under the output directory; a demo with built-in data).
    labeled_mat: path of nyu_depth_v2_labeled.mat (source "mat").
    splits_mat: path of the official splits.mat (source "mat").
    tfds_data_dir: TFDS data_dir holding nyu_depth_v2 ("" = TFDS default).
    synthetic_train: rendered training scenes (source "synthetic").
    synthetic_test: rendered test scenes (source "synthetic").
    synthetic_size: (height, width) of the rendered scenes.
    output_stride: stride of the block-3 features fed to the decoder (16:
      block 3's nominal stride, prediction at half resolution; 8: atrous).
    decoder_filters: filters of the up-projection levels (paper: 512, 256,
      128).
    fast_up_projection: compute up-convolutions as interleaved small convs
      (identical result to unpool + 5x5 conv, faster).
    batch_size: training images per step (Laina: 16).
    learning_rate: initial SGD learning rate for all layers (Laina: 0.01).
    momentum: SGD momentum (Laina: 0.9).
    weight_decay: L2 weight decay of the decoder (the trunk keeps its own).
    batch_norm_decay: moving-average decay of the decoder's batch norms
      (the trunk keeps its own).
    epochs: training epochs (Laina: about 20).
    images_per_epoch: images per epoch (Laina's augmented set: ~95k pairs);
      0 = the training split's size.
    lr_decay_epochs: the learning rate is multiplied by lr_decay_factor every
      this many epochs (Laina: "every 6-8 epochs").
    lr_decay_factor: factor of each learning-rate step.
    max_steps: training steps; 0 = epochs * images_per_epoch / batch_size.
    berhu_fraction: c = berhu_fraction * max |residual| of the batch.
    min_depth: ground truth below this (metres) is invalid; predictions are
      clipped to it.
    max_depth: ground truth above this is invalid; predictions clipped.
    eval_crop: evaluated region (top, bottom, left, right) in 480x640 frame
      pixels, scaled to the ground truth's size (Eigen et al.'s crop);
      () = the whole frame.
    eval_batch_size: test images per batch.
    augment: input sizes and training augmentation.
    checkpoint_every_steps: save a checkpoint every this many steps.
    log_every_steps: progress line and TensorBoard scalars interval.
    image_summary_every_steps: colour-mapped depth images interval (0: off).
    strategy: "default" (one device) or "mirrored" (all local GPUs, or
      ``num_cpu_devices`` logical CPUs), as pre-training's --strategy
      (training/replicas.py); batch_size is the global batch.
    num_cpu_devices: with strategy "mirrored" and no GPU, split the CPU.
  """
  source: str = "mat"
  labeled_mat: str = ""
  splits_mat: str = ""
  tfds_data_dir: str = ""
  synthetic_train: int = 64
  synthetic_test: int = 16
  synthetic_size: Tuple[int, int] = (240, 320)
  output_stride: int = 16
  decoder_filters: Tuple[int, ...] = up_projection.DECODER_FILTERS
  fast_up_projection: bool = True
  batch_size: int = 16
  learning_rate: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 1e-4
  batch_norm_decay: float = 0.997
  epochs: float = 20.0
  images_per_epoch: int = 95000
  lr_decay_epochs: float = 7.0
  lr_decay_factor: float = 0.1
  max_steps: int = 0
  berhu_fraction: float = 0.2
  min_depth: float = 1e-3
  max_depth: float = 10.0
  eval_crop: Tuple[int, ...] = EIGEN_CROP
  eval_batch_size: int = 4
  augment: depth_augment.AugmentConfig = depth_augment.AugmentConfig()
  checkpoint_every_steps: int = 1000
  log_every_steps: int = 50
  image_summary_every_steps: int = 1000
  strategy: str = "default"
  num_cpu_devices: int = 0


def check(config: Config) -> None:
  """Validates values and data files before anything is written."""
  if config.source not in SOURCES:
    raise ValueError(f"--nyu_depth.source must be one of {SOURCES}, got "
                     f"{config.source!r}.")
  if config.output_stride not in (8, 16):
    raise ValueError(f"--nyu_depth.output_stride must be 8 or 16 (block 3 "
                     f"atrous or nominal), got {config.output_stride}.")
  if not config.decoder_filters or min(config.decoder_filters) < 1:
    raise ValueError(f"--nyu_depth.decoder_filters must be positive counts, "
                     f"got {config.decoder_filters}.")
  for name in ("batch_size", "eval_batch_size", "checkpoint_every_steps",
               "log_every_steps"):
    if getattr(config, name) < 1:
      raise ValueError(f"--nyu_depth.{name} must be >= 1.")
  if config.learning_rate <= 0 or not 0 <= config.momentum < 1:
    raise ValueError("--nyu_depth.learning_rate must be > 0 and momentum in "
                     "[0, 1).")
  if config.max_steps < 0 or config.epochs < 0 or config.lr_decay_epochs <= 0:
    raise ValueError("--nyu_depth.max_steps and epochs must be >= 0, "
                     "lr_decay_epochs > 0.")
  if not 0 < config.berhu_fraction <= 1:
    raise ValueError("--nyu_depth.berhu_fraction must be in (0, 1].")
  if not 0 < config.min_depth < config.max_depth:
    raise ValueError("--nyu_depth: need 0 < min_depth < max_depth.")
  if config.eval_crop and (len(config.eval_crop) != 4 or
                           config.eval_crop[0] >= config.eval_crop[1] or
                           config.eval_crop[2] >= config.eval_crop[3]):
    raise ValueError(f"--nyu_depth.eval_crop must be (top, bottom, left, "
                     f"right) in 480x640 pixels or (), got "
                     f"{config.eval_crop}.")
  if config.strategy not in STRATEGIES:
    raise ValueError(f"--nyu_depth.strategy must be one of {STRATEGIES}, got "
                     f"{config.strategy!r}.")
  if config.num_cpu_devices and config.strategy != "mirrored":
    raise ValueError("--nyu_depth.num_cpu_devices needs "
                     "--nyu_depth.strategy=mirrored.")
  if config.num_cpu_devices and config.batch_size % config.num_cpu_devices:
    raise ValueError(f"--nyu_depth.batch_size ({config.batch_size}) must be "
                     f"a multiple of --nyu_depth.num_cpu_devices "
                     f"({config.num_cpu_devices}).")
  depth_augment.check(config.augment)
  if config.source == "mat":
    if not config.labeled_mat or not config.splits_mat:
      raise ValueError(
          "--nyu_depth.source=mat needs --nyu_depth.labeled_mat=.../"
          "nyu_depth_v2_labeled.mat and --nyu_depth.splits_mat=.../splits.mat "
          "(the official NYU Depth v2 files), or use --nyu_depth.source=tfds "
          "or --nyu_depth.source=synthetic.")
    nyu_depth_v2.check_mat_files(config.labeled_mat, config.splits_mat)
  elif config.source == "tfds":
    for split in ("train", "test"):
      nyu_depth_v2.check_tfds(config.tfds_data_dir or None, split)
  elif min(config.synthetic_train, config.synthetic_test) < 1:
    raise ValueError("--nyu_depth.synthetic_train/test must be >= 1.")


def configure_runtime(config: Config) -> None:
  """Before any TensorFlow op (evaluate.py calls it after ``check``)."""
  if config.strategy == "mirrored":
    replicas.configure_cpu_devices(config.num_cpu_devices)


# ---- Data -------------------------------------------------------------------

def _sources(config: Config, output_dir: str, seed: int):
  """(train pairs, test pairs, counts) as uint8/float32 datasets;
  ``counts["skipped"]`` holds a ``SkipCounter`` per split of the frames
  (labelled file) or shards/records (TFDS) that could not be read (converted
  to counts by ``train_and_evaluate``)."""
  if config.source == "tfds":
    data_dir = config.tfds_data_dir or None
    skipped = {split: skipping.SkipCounter(nyu_depth_v2.TFDS_SKIP_REASONS)
               for split in ("train", "test")}
    train = nyu_depth_v2.tfds_dataset(data_dir, "train", True, seed,
                                      counter=skipped["train"])
    test = nyu_depth_v2.tfds_dataset(data_dir, "test",
                                     counter=skipped["test"])
    counts = {"train_images": nyu_depth_v2.tfds_size(data_dir, "train"),
              "test_images": nyu_depth_v2.tfds_size(data_dir, "test"),
              "skipped": skipped}
    return train, test, counts
  if config.source == "synthetic":
    mat, splits = synthetic_depth.write_nyu_files(
        os.path.join(output_dir, "synthetic_data"), config.synthetic_train,
        config.synthetic_test, *config.synthetic_size, seed=seed)
  else:
    mat, splits = config.labeled_mat, config.splits_mat
  train_idx, test_idx = nyu_depth_v2.check_mat_files(mat, splits)
  skipped = {split: skipping.SkipCounter(nyu_depth_v2.SKIP_REASONS)
             for split in ("train", "test")}
  train = nyu_depth_v2.mat_dataset(mat, train_idx, shuffle=True, seed=seed,
                                   counter=skipped["train"])
  test = nyu_depth_v2.mat_dataset(mat, test_idx, counter=skipped["test"])
  return train, test, {"train_images": len(train_idx),
                       "test_images": len(test_idx), "skipped": skipped}


def train_dataset(pairs, config: Config, seed: int) -> tf.data.Dataset:
  """Endless augmented training batches, checkpointable for exact resume.

  Example ``n`` of the stream (over all passes) is augmented with the
  stateless seed ``(seed, n)``; the source's shuffle state and the position
  are what the iterator's checkpoint holds. The skip counters updated inside
  the source are bookkeeping outside it (not saved; a resume restarts them),
  so the external-state policy is IGNORE, as in pre-training.
  """
  aug = config.augment

  def augment(n, pair):
    return depth_augment.train_example(
        pair[0], pair[1], aug, tf.stack([tf.constant(seed, tf.int64), n]))

  options = tf.data.Options()
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  return (pairs.repeat().enumerate()
          .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(config.batch_size, drop_remainder=True)
          .prefetch(2).with_options(options))


def test_dataset(pairs, config: Config) -> tf.data.Dataset:
  aug = config.augment
  return (pairs.map(lambda i, d: depth_augment.eval_example(i, d, aug),
                    num_parallel_calls=tf.data.AUTOTUNE)
          .batch(config.eval_batch_size).prefetch(2))


# ---- Model ------------------------------------------------------------------

def build_network(trunk: tf_keras.Model, config: Config, lasso: bool = False,
                  lasso_l1: float = 0.0) -> tf_keras.Model:
  """Trunk (to block 3) + optional lasso + decoder: images -> depth.

  Returns:
    A model mapping ``[N, H, W, 3]`` images in [-1, 1] to depth
    ``[N, h, w, 1]`` at ``H / output_stride * 2**levels`` resolution.
  """
  endpoints = trunk.output
  units = sorted((k for k in endpoints if k.startswith("block3/unit_")),
                 key=lambda k: int(k.rsplit("_", 1)[1]))
  images = tf_keras.Input((None, None, 3), name="images")
  outputs = trunk(images)
  if lasso:
    features = lasso_lib.LassoCombine(l1=lasso_l1, name="nyu_depth_lasso")(
        [outputs[u] for u in units])
  else:
    features = outputs["block3"]
  decoder = up_projection.build_decoder(
      int(features.shape[-1]), config.decoder_filters,
      fast=config.fast_up_projection, weight_decay=config.weight_decay,
      batch_norm_decay=config.batch_norm_decay)
  return tf_keras.Model(images, decoder(features), name="nyu_depth_network")


def total_steps(config: Config, train_images: int) -> int:
  if config.max_steps:
    return config.max_steps
  per_epoch = config.images_per_epoch or train_images
  return max(1, math.ceil(config.epochs * per_epoch / config.batch_size))


def learning_rate_schedule(config: Config, train_images: int):
  """Step decay: x lr_decay_factor every lr_decay_epochs epochs."""
  per_epoch = config.images_per_epoch or train_images
  steps = total_steps(config, train_images)
  every = max(1, round(config.lr_decay_epochs * per_epoch / config.batch_size))
  boundaries = list(range(every, steps, every))
  values = [config.learning_rate * config.lr_decay_factor ** i
            for i in range(len(boundaries) + 1)]
  if not boundaries:
    return config.learning_rate
  return tf_keras.optimizers.schedules.PiecewiseConstantDecay(boundaries,
                                                              values)


def eval_mask(shape, crop) -> np.ndarray:
  """bool ``[H, W]``: the evaluation crop, scaled from 480x640 to shape."""
  h, w = shape
  mask = np.zeros((h, w), bool)
  if not crop:
    mask[:] = True
    return mask
  # Rounded half up (Python's round() would round 22.5 to 22).
  top, bottom = int(crop[0] * h / 480 + 0.5), int(crop[1] * h / 480 + 0.5)
  left, right = int(crop[2] * w / 640 + 0.5), int(crop[3] * w / 640 + 0.5)
  mask[top:bottom, left:right] = True
  return mask


def colour_map(depth, max_depth: float) -> tf.Tensor:
  """float ``[N, H, W]`` metres -> uint8 ``[N, H, W, 3]`` (viridis; 0 black)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  lut = tf.constant((matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))
                     [:, :3] * 255).astype(np.uint8))
  depth = tf.cast(depth, tf.float32)
  index = tf.cast(tf.clip_by_value(depth / max_depth, 0, 1) * 255, tf.int32)
  rgb = tf.gather(lut, index)
  return tf.where((depth > 0)[..., tf.newaxis], rgb, tf.zeros_like(rgb))


# ---- Training and evaluation -------------------------------------------------

def _resize_to(prediction, size):
  return tf.image.resize(prediction, size, "bilinear")[..., 0]


def evaluate(network, test: tf.data.Dataset, config: Config,
             log=print) -> Tuple[Dict[str, float], int]:
  """Measures over the test set; returns (metrics, test images)."""
  metrics = depth_metrics.DepthMetrics()
  masks = {}

  @tf.function(reduce_retracing=True)
  def predict(images, size):
    return _resize_to(network(images, training=False), size)

  count = 0
  for images, depths in test:
    size = tuple(depths.shape[1:3])
    if size not in masks:
      masks[size] = eval_mask(size, config.eval_crop)
    prediction = predict(images, tf.constant(size))
    mask = np.broadcast_to(masks[size], depths.shape)
    metrics.update(depth_metrics.metric_sums(
        prediction, depths, config.min_depth, config.max_depth, mask))
    count += int(depths.shape[0])
  result = metrics.result()
  log("nyu_depth test: " + ", ".join(f"{k} {v:.4f}"
                                     for k, v in result.items()))
  return result, count


def _reestimate_stale_batch_norm(network, train_pairs, config: Config,
                                 steps: int, num_images: int, log,
                                 seed: int) -> int:
  """Re-estimates every batch norm of ``network`` if fine-tuning was short.

  The paper's recipe (~119k steps) leaves no trace of the initial moving
  statistics (0.997**119k ~ 0). A short run (the built-in demo: 20 steps)
  leaves a random or briefly pre-trained trunk's at their initial values,
  and in inference mode its un-normalised residual stream explodes
  (``bn_stats.py``): every prediction is 0. If some layer's moving average
  still weighs its initial value > 10% (momentum**steps > 0.1) and the
  entry point's --recompute_bn_stats asks for images (auto: 1024 for
  --random_init and stale checkpoints), the statistics of all batch norms
  (trunk and decoder) are set to their mean over that many augmented
  training crops ("precise BN", ``bn_stats.recompute``) before measuring.
  They are not saved: a resumed run trains from the checkpoint's.

  Returns:
    Images used (0: not re-estimated).
  """
  layers = [m for m in network.submodules
            if isinstance(m, tf_keras.layers.BatchNormalization)]
  if num_images <= 0 or not layers or max(
      float(layer.momentum) ** steps for layer in layers) <= 0.1:
    return 0
  images = train_dataset(train_pairs, config, seed).map(lambda i, d: i)
  return bn_stats.recompute(network, images, num_images, log=log,
                            layers=layers)


def _check_resume(train_dir: str, config: Config, lasso: bool) -> None:
  info = {k: list(v) if isinstance(v, tuple) else v
          for k, v in dataclasses.asdict(config).items() if k in _MODEL_FIELDS}
  info["lasso"] = bool(lasso)
  path = os.path.join(train_dir, "network.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    if previous != info:
      raise ValueError(
          f"{train_dir} holds a depth network trained with {previous}; this "
          f"run asks for {info}. Use another --output_dir.")
  else:
    os.makedirs(train_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(info, f)


def train_and_evaluate(ctx, config: Config):
  """Fine-tunes and measures; resumes from ``ctx.output_dir/train``.

  ``ctx`` provides ``pretrained.build_trunk``, ``output_dir``, ``writer``,
  ``log``, ``progress``, ``lasso``, ``lasso_l1`` and ``seed`` (see
  ``evaluation/eval_base.py``).

  Returns:
    ``(metrics, counts, details)``.
  """
  log = ctx.log
  train_dir = os.path.join(ctx.output_dir, "train")
  _check_resume(train_dir, config, ctx.lasso)
  tf.random.set_seed(ctx.seed)

  # ---- Data
  train_pairs, test_pairs, counts = _sources(config, ctx.output_dir, ctx.seed)
  steps = total_steps(config, counts["train_images"])
  strategy = replicas.make_strategy(config.strategy, config.num_cpu_devices)
  if config.batch_size % strategy.num_replicas_in_sync:
    raise ValueError(f"--nyu_depth.batch_size ({config.batch_size}) must be "
                     f"a multiple of the {strategy.num_replicas_in_sync} "
                     f"replicas.")
  # A host iterator of global batches (checkpointable, unlike a distributed
  # iterator); each step gives replica i rows [i * n, (i + 1) * n).
  train_iter = iter(train_dataset(train_pairs, config, ctx.seed))
  test = test_dataset(test_pairs, config)

  # ---- Model, optimizer, checkpoint. Every batch norm is fine-tuned in
  # training mode; --recompute_bn_stats only matters after a short run
  # (_reestimate_stale_batch_norm).
  with strategy.scope():
    trunk = ctx.pretrained.build_trunk(include_block4=False,
                                       output_stride=config.output_stride)
    network = build_network(trunk, config, ctx.lasso,
                            getattr(ctx, "lasso_l1", 0.0))
    optimizer = tf_keras.optimizers.SGD(
        learning_rate_schedule(config, counts["train_images"]),
        momentum=config.momentum)
    optimizer.build(network.trainable_variables)
  # The input's position is saved with the weights: a resumed run sees the
  # batches an uninterrupted one would (same step, same data order).
  ckpt = tf.train.Checkpoint(network=network, optimizer=optimizer,
                             data=train_iter)
  manager = tf.train.CheckpointManager(ckpt, train_dir, max_to_keep=2)
  if manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    log(f"nyu_depth: resumed from {manager.latest_checkpoint}")

  # ---- Step
  num_replicas = strategy.num_replicas_in_sync

  def replica_step(images, depths):
    with tf.GradientTape() as tape:
      prediction = _resize_to(network(images, training=True),
                              tf.shape(depths)[1:3])
      mask = depth_metrics.valid_mask(depths, config.min_depth,
                                      config.max_depth)
      # c from the largest residual of the whole batch (Laina et al.), i.e.
      # over all replicas (tf.distribute has no MAX all-reduce: gather).
      replica_ctx = tf.distribute.get_replica_context()
      loss = depth_metrics.berhu_loss(
          prediction, depths, mask, config.berhu_fraction,
          reduce_max=lambda m: tf.reduce_max(replica_ctx.all_gather(
              tf.reshape(m, [1]), axis=0)))
      regularization = tf.add_n([tf.cast(l, tf.float32)
                                 for l in network.losses] or [0.0])
      total = loss + regularization
      per_replica = total / num_replicas  # gradients are summed over replicas
    grads = tape.gradient(per_replica, network.trainable_variables)
    finite = tf.math.is_finite(total)
    grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
    optimizer.apply_gradients(zip(grads, network.trainable_variables))
    return loss, total

  per_replica_batch = config.batch_size // num_replicas

  def shard(batch):
    def rows(value_context):
      first = value_context.replica_id_in_sync_group * per_replica_batch
      return batch[first:first + per_replica_batch]
    return strategy.experimental_distribute_values_from_function(rows)

  @tf.function
  def train_step():
    images, depths = next(train_iter)
    loss, total = strategy.run(replica_step,
                               args=(shard(images), shard(depths)))
    mean = tf.distribute.ReduceOp.MEAN
    return strategy.reduce(mean, loss, None), strategy.reduce(mean, total,
                                                              None)

  # ---- Summaries
  sample_images, sample_depths = next(iter(test.take(1)))

  def write_images(step):
    with ctx.writer.as_default(step=step):
      prediction = _resize_to(network(sample_images, training=False),
                              tf.shape(sample_depths)[1:3])
      tf.summary.image("nyu_depth/image", (sample_images + 1) / 2,
                       max_outputs=4)
      tf.summary.image("nyu_depth/ground_truth",
                       colour_map(sample_depths, config.max_depth),
                       max_outputs=4)
      tf.summary.image("nyu_depth/prediction",
                       colour_map(prediction, config.max_depth),
                       max_outputs=4)

  # ---- Loop
  step = int(optimizer.iterations.numpy())
  progress = ctx.progress(steps, "nyu_depth train", unit="step", done=step)
  window_start, window_steps = time.monotonic(), 0
  try:
    while step < steps:
      loss, total = train_step()
      if not np.isfinite(float(total)):
        raise NonFiniteLossError(
            f"nyu_depth: non-finite loss at step {step}; the run stops "
            f"without saving, so the last checkpoint "
            f"({manager.latest_checkpoint}) holds the finite weights from "
            f"before it. Lower --nyu_depth.learning_rate and run again.")
      step += 1
      window_steps += 1
      progress.update(step)
      if step % config.log_every_steps == 0 or step == steps:
        elapsed = max(time.monotonic() - window_start, 1e-9)
        lr = optimizer.learning_rate
        lr = float(tf.convert_to_tensor(lr(step) if callable(lr) else lr))
        with ctx.writer.as_default(step=step):
          tf.summary.scalar("nyu_depth/berhu", loss)
          tf.summary.scalar("nyu_depth/total_loss", total)
          tf.summary.scalar("nyu_depth/learning_rate", lr)
          tf.summary.scalar("nyu_depth/steps_per_sec", window_steps / elapsed)
        log(f"nyu_depth step {step}/{steps} berhu {float(loss):.4f} "
            f"total {float(total):.4f} lr {lr:g} "
            f"{window_steps / elapsed:.2f} steps/s")
        window_start, window_steps = time.monotonic(), 0
      if (config.image_summary_every_steps and
          step % config.image_summary_every_steps == 0):
        write_images(step)
      if step % config.checkpoint_every_steps == 0 and step < steps:
        manager.save(checkpoint_number=step)
  except KeyboardInterrupt:
    manager.save(checkpoint_number=step)
    raise
  if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(
      f"-{step}"):
    manager.save(checkpoint_number=step)
  bn_images = _reestimate_stale_batch_norm(
      network, train_pairs, config, step,
      getattr(ctx, "recompute_bn_stats", 0), log, ctx.seed)
  write_images(step)

  metrics, evaluated = evaluate(network, test, config, log)
  counts = dict(counts, test_images_evaluated=evaluated, train_steps=step)
  details = {"output_stride": config.output_stride,
             "bn_stats_reestimated_on": bn_images}
  for split, counter in counts.pop("skipped", {}).items():
    # Distinct unreadable frames, and which (results.json).
    counts[f"skipped_{split}"] = counter.as_dict()
    if counter.total():
      details[f"skipped_{split}"] = counter.items()
  if ctx.lasso:
    details["lasso_alpha"] = network.get_layer(
        "nyu_depth_lasso").normalized_alpha().numpy().tolist()
  return metrics, counts, details


def run(ctx, config: Config):
  """The evaluation contract (evaluation/eval_base.py): an EvalResult."""
  metrics, counts, details = train_and_evaluate(ctx, config)
  return eval_base.EvalResult(metrics=metrics, headline=HEADLINE,
                              counts=counts, details=details,
                              percent=("delta1", "delta2", "delta3"))
