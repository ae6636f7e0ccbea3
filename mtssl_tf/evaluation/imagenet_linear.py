"""ImageNet with frozen weights: a linear softmax on block-3 features (paper §5).

The trunk is frozen with inference-mode batch norm. Its last block-3 unit (or,
with ``--lasso``, the evaluation's own LassoCombine of all block-3 units:
Table 4's "Eval Only Lasso" / "Pre-train & Eval Lasso") is max-pooled to
3x3x1024, flattened and fed to one linear softmax layer (paper §5). Training
images are augmented in translation (random 224 crop of the image resized to
shorter side 256) and colour (brightness, contrast, saturation, hue); the
validation images get one centre crop, no multi-crop or mirroring. Reported:
top-1 and top-5 ("recall@5", the paper's Tables 2-4) on the validation split.

Recipe (the paper gives none): Goyal et al. 2019's linear classifiers on
frozen ResNet features: SGD with momentum 0.9, batch 256, learning rate 0.01
divided by 10 every 40k iterations, 140k iterations, weight decay 5e-4 on the
linear layer. The linear layer starts from N(0, 0.01²) weights, zero biases;
the lasso row starts at the last unit (so the evaluation starts from the
no-lasso representation) with L1 weight ``--lasso_l1`` on its normalised row.
The learned |alpha| goes to results.json (``details.abs_alpha``), to
``<output_dir>/abs_alpha.png`` and to TensorBoard as a heat map (Figure 5).
Every value is a flag (``--imagenet_linear.<field>``).

Resumable: the classifier, lasso row, optimizer slots, step and the input
iterator's position are checkpointed under ``<output_dir>/train``; a killed
run resumes at the same step with the same data order (inputs and their
augmentation are a function of the seed and the example's position).
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras

from mtssl_tf.data import labelled_images
from mtssl_tf.evaluation import eval_base
from mtssl_tf.evaluation import features as features_lib
from mtssl_tf.evaluation import metrics
from mtssl_tf.models import lasso as lasso_lib
from mtssl_tf.training import summaries

NAME = "imagenet_linear"
ALPHA_IMAGE = "abs_alpha.png"  # with --lasso: the learned |alpha| row


@dataclasses.dataclass(frozen=True)
class Config:
  """Options of the frozen linear evaluation (defaults: Goyal et al. 2019).

  Attributes:
    data: the labelled image set (ImageNet class folders, TFRecords, TFDS, or
      the built-in photos).
    resize: shorter side images are resized to before cropping.
    crop: side of the square trunk input.
    batch_size: training batch size.
    steps: training steps (iterations).
    learning_rate: initial SGD learning rate.
    momentum: SGD momentum.
    decay_every: steps between learning-rate divisions (0: constant).
    decay_factor: learning-rate multiplier at each division.
    weight_decay: L2 weight decay of the linear layer (loss += wd/2 ||W||^2).
    eval_batch_size: batch size of feature extraction on the validation split.
    checkpoint_every_steps: save the classifier every N steps.
    log_every_steps: progress line and TensorBoard scalars every N steps.
  """
  data: labelled_images.LabelledDataConfig = (
      labelled_images.LabelledDataConfig())
  resize: int = 256
  crop: int = 224
  batch_size: int = 256
  steps: int = 140_000
  learning_rate: float = 0.01
  momentum: float = 0.9
  decay_every: int = 40_000
  decay_factor: float = 0.1
  weight_decay: float = 5e-4
  eval_batch_size: int = 64
  checkpoint_every_steps: int = 1000
  log_every_steps: int = 100


def check(config: Config) -> None:
  """Start-up validation (values, and the data set's presence and layout)."""
  positive = ("resize", "crop", "batch_size", "learning_rate",
              "eval_batch_size", "checkpoint_every_steps", "log_every_steps")
  for name in positive:
    if getattr(config, name) <= 0:
      raise ValueError(f"--{NAME}.{name} must be positive, got "
                       f"{getattr(config, name)}.")
  if config.steps < 0 or config.decay_every < 0 or config.weight_decay < 0:
    raise ValueError(f"--{NAME}.steps, .decay_every and .weight_decay must be "
                     f">= 0.")
  if config.crop > config.resize:
    raise ValueError(f"--{NAME}.crop ({config.crop}) cannot exceed "
                     f"--{NAME}.resize ({config.resize}).")
  for split in labelled_images.SPLITS:
    labelled_images.LabelledImages(config.data, split)


def learning_rate_schedule(config: Config):
  if not config.decay_every:
    return config.learning_rate
  boundaries = list(range(config.decay_every, max(config.steps, 1),
                          config.decay_every))
  values = [config.learning_rate * config.decay_factor ** i
            for i in range(len(boundaries) + 1)]
  if not boundaries:
    return config.learning_rate
  return tf_keras.optimizers.schedules.PiecewiseConstantDecay(boundaries,
                                                              values)


def _with_ignored_state(dataset):
  # The skip counters are variables updated inside tf.data; they are not part
  # of the iterator's checkpoint (the position is).
  options = tf.data.Options()
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  return dataset.with_options(options)


def run(ctx: eval_base.EvalContext, config: Config) -> eval_base.EvalResult:
  """Trains the linear layer (and lasso row) on frozen features; top-1/5."""
  started = time.monotonic()
  train_set = labelled_images.LabelledImages(config.data, "train")
  val_set = labelled_images.LabelledImages(config.data, "val")
  num_classes = len(train_set.class_names)
  ctx.log(f"{NAME}: {train_set.num_examples} training and "
          f"{val_set.num_examples} validation images, {num_classes} classes.")

  # ---- Model: frozen trunk, optional lasso row, linear layer ---------------
  trunk = ctx.pretrained.build_trunk()
  ctx.prepare_trunk(trunk, features_lib.batches(
      train_set.dataset(training=False), config.eval_batch_size,
      config.resize, config.crop, training=False).map(lambda x, y: x))
  lasso = None
  if ctx.lasso:
    lasso = lasso_lib.LassoCombine(l1=ctx.lasso_l1, initializer="last",
                                   name=f"lasso_{NAME}")
  frozen = features_lib.FrozenFeatures(trunk, ctx.pretrained.trunk_config.depth,
                                       lasso)
  classifier = tf_keras.layers.Dense(
      num_classes, name="linear",
      kernel_initializer=tf_keras.initializers.RandomNormal(
          stddev=0.01, seed=ctx.seed))
  probe = tf.zeros([1, config.crop, config.crop, 3])
  classifier(frozen(probe))
  variables = list(classifier.trainable_variables)
  if lasso is not None:
    variables += list(lasso.trainable_variables)
  optimizer = tf_keras.optimizers.SGD(learning_rate_schedule(config),
                                      momentum=config.momentum)
  optimizer.build(variables)

  # ---- Data and checkpoint ---------------------------------------------------
  train_batches = _with_ignored_state(features_lib.batches(
      train_set.dataset(training=True, seed=ctx.seed), config.batch_size,
      config.resize, config.crop, training=True, seed=ctx.seed))
  iterator = iter(train_batches)
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  objects = dict(classifier=classifier, optimizer=optimizer, step=step,
                 iterator=iterator)
  if lasso is not None:
    objects["lasso"] = lasso
  ckpt = tf.train.Checkpoint(**objects)
  manager = tf.train.CheckpointManager(
      ckpt, os.path.join(ctx.output_dir, "train"), max_to_keep=2)
  if manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_consumed()
    ctx.log(f"Resumed {NAME} from {manager.latest_checkpoint} at step "
            f"{int(step.numpy())}.")

  # ---- Step ------------------------------------------------------------------
  @tf.function
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      logits = classifier(frozen(images))
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
      total = loss + 0.5 * config.weight_decay * tf.reduce_sum(
          tf.square(classifier.kernel))
      if lasso is not None:
        total += tf.add_n(lasso.losses)
    grads = tape.gradient(total, variables)
    optimizer.apply_gradients(zip(grads, variables))
    step.assign_add(1)
    accuracy = tf.reduce_mean(tf.cast(
        tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
        tf.float32))
    return loss, accuracy

  # ---- Loop ------------------------------------------------------------------
  progress = ctx.progress(config.steps, f"{NAME} train", unit="step",
                          done=int(step.numpy()))
  losses = []
  while int(step.numpy()) < config.steps:
    images, labels = next(iterator)
    loss, accuracy = train_step(images, labels)
    current = int(step.numpy())
    losses.append(float(loss))
    if not np.isfinite(losses[-1]):
      raise RuntimeError(f"{NAME}: non-finite loss at step {current}; the "
                         f"last checkpoint ({manager.latest_checkpoint}) is "
                         f"kept. Lower --{NAME}.learning_rate.")
    progress.update(current)
    if current % config.log_every_steps == 0 or current == config.steps:
      with ctx.writer.as_default(step=current):
        tf.summary.scalar(f"{NAME}/loss", loss)
        tf.summary.scalar(f"{NAME}/train_top1", accuracy)
        tf.summary.scalar(f"{NAME}/learning_rate", optimizer.learning_rate)
        tf.summary.scalar(f"{NAME}/skipped_train_inputs",
                          train_set.skipped.total())
        if lasso is not None:
          tf.summary.image(f"{NAME}/abs_alpha", summaries.alpha_heatmap(
              lasso_lib.alpha_matrix([lasso])))
    if current % config.checkpoint_every_steps == 0 or current == config.steps:
      manager.save(checkpoint_number=current)

  # ---- Evaluation --------------------------------------------------------------
  val_batches = features_lib.batches(val_set.dataset(training=False),
                                     config.eval_batch_size, config.resize,
                                     config.crop, training=False)
  logits_fn = tf.function(lambda x: classifier(frozen(x)))
  progress = ctx.progress(val_set.num_examples, f"{NAME} validation")
  all_logits, all_labels = [], []
  for images, labels in val_batches:
    all_logits.append(logits_fn(images).numpy())
    all_labels.append(labels.numpy())
    progress.update(sum(len(y) for y in all_labels))
  logits = np.concatenate(all_logits)
  labels = np.concatenate(all_labels)
  result_metrics = {"top1": metrics.top_k_accuracy(logits, labels, 1),
                    "top5": metrics.top_k_accuracy(logits, labels, 5)}
  details = {"final_train_loss": losses[-1] if losses else None}
  if lasso is not None:
    details["abs_alpha"] = np.abs(
        np.asarray(lasso.normalized_alpha())).tolist()
    # Figure 5's evaluation row as an image (reporting/figures.py draws the
    # whole figure from results.json's abs_alpha).
    heatmap = summaries.alpha_heatmap(lasso_lib.alpha_matrix([lasso]))[0]
    path = os.path.join(ctx.output_dir, ALPHA_IMAGE)
    tf.io.write_file(path, tf.io.encode_png(heatmap))
    details["abs_alpha_image"] = path
  return eval_base.EvalResult(
      metrics=result_metrics, headline=("top1", "top5"),
      counts={"classes": num_classes,
              "train_examples": train_set.num_examples,
              "val_examples": int(len(labels)),
              "skipped_train": train_set.skipped.as_dict(),
              "skipped_val": val_set.skipped.as_dict(),
              "seconds": time.monotonic() - started},
      details=details)
