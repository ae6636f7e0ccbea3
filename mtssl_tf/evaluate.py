r"""Transfer evaluation of a pre-trained trunk: ``python -m mtssl_tf.evaluate``.

Examples:

  # Frozen linear probe on the built-in sample photos (no download, minutes):
  python -m mtssl_tf.evaluate --eval=imagenet_linear \
      --model_dir=runs/quickstart --flagfile=flags/eval_builtin_linear.cfg

  # The paper's ImageNet-frozen row for a training run (paper §5):
  python -m mtssl_tf.evaluate --eval=imagenet_linear --model_dir=runs/all4 \
      --imagenet_linear.data.source=folder \
      --imagenet_linear.data.train_path=/data/imagenet/train \
      --imagenet_linear.data.val_path=/data/imagenet/val

  # "No pre-training" and "ImageNet labels" rows:
  python -m mtssl_tf.evaluate --eval=imagenet_linear --random_init ...
  python -m mtssl_tf.evaluate --eval=imagenet_linear \
      --slim_checkpoint=/data/trunk/rn101 ...

What is evaluated is given by exactly one of --model_dir, --saved_model,
--slim_checkpoint, --random_init (``evaluation/pretrained.py``). Each
registered evaluation (``evaluation/eval_registry.py``) declares its options in its
Config dataclass; they are flags ``--<eval>.<field>`` (``--helpfull`` lists
them). Every run writes, under --output_dir: results.json (metrics, the exact
configuration, what was evaluated, data counts, wall time), results.md (one
Markdown table row), TensorBoard logs, and the evaluation's own checkpoints,
from which a killed run resumes. A finished evaluation (results.json present)
is not run again unless --overwrite.
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging as absl_logging

from mtssl_tf import config as config_lib
from mtssl_tf import config_flags
from mtssl_tf.evaluation import eval_registry

RESULTS_FILE = "results.json"
ROW_FILE = "results.md"

_EVAL = flags.DEFINE_enum("eval", None, eval_registry.names(),
                          "The evaluation to run.")
# ---- What is evaluated (exactly one) -----------------------------------------
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "A training run of mtssl_tf.main (its latest "
    "checkpoint), or a checkpoint prefix inside one.")
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "A SavedModel written by mtssl_tf.export.")
_SLIM_CHECKPOINT = flags.DEFINE_string(
    "slim_checkpoint", None, "A TF-Slim resnet_v2 checkpoint converted by "
    "tools/convert_slim_checkpoint.py (the 'ImageNet labels' row).")
_RANDOM_INIT = flags.DEFINE_bool(
    "random_init", False, "Evaluate a randomly initialised trunk (the 'No "
    "pre-training' row); --depth/--base_width/--output_stride describe it.")
_DEPTH = flags.DEFINE_integer("depth", 101, "Trunk depth for --random_init.")
_BASE_WIDTH = flags.DEFINE_integer("base_width", 64,
                                   "Trunk base width for --random_init.")
_OUTPUT_STRIDE = flags.DEFINE_integer(
    "output_stride", 8, "Trunk output stride for --random_init, "
    "--slim_checkpoint and supervised runs (a task with block 4 in its head, "
    "--model_dir or --saved_model) (0: nominal); other training runs keep "
    "their own.")
# ---- How ------------------------------------------------------------------------
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where results, logs and the evaluation's checkpoints "
    "go (default runs/eval/<eval>/<evaluated>[_lasso]).")
_LASSO = flags.DEFINE_bool(
    "lasso", False, "Learn the evaluation's own LassoCombine of all block-3 "
    "units (paper §3.2, Table 4 'Eval Lasso') instead of the last unit.")
_LASSO_L1 = flags.DEFINE_float("lasso_l1", 0.01,
                               "L1 weight of the evaluation's lasso row.")
_RECOMPUTE_BN = flags.DEFINE_integer(
    "recompute_bn_stats", -1, "Re-estimate the trunk's batch-norm statistics "
    "on this many training images before freezing it. -1 (auto): 1024 for "
    "--random_init and for checkpoints whose statistics have seen too few "
    "updates (they still weigh their initial values >10%), else 0.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data order and init.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Run again even if --output_dir holds results.json.")

def _define_evaluation_flags():
  for name in eval_registry.names():
    config_flags.define_flags(name, eval_registry.get_module(name).Config)


_define_evaluation_flags()


def _spec():
  from mtssl_tf.evaluation import pretrained  # pylint: disable=g-import-not-at-top
  given = [(n, v) for n, v in (("model_dir", _MODEL_DIR.value),
                               ("saved_model", _SAVED_MODEL.value),
                               ("slim_checkpoint", _SLIM_CHECKPOINT.value))
           if v]
  if _RANDOM_INIT.value:
    given.append(("random_init", None))
  if len(given) != 1:
    raise ValueError(
        "Say what to evaluate with exactly one of --model_dir, --saved_model, "
        f"--slim_checkpoint, --random_init (got {[n for n, _ in given] or 'none'}).")
  source, path = given[0]
  trunk = config_lib.TrunkConfig(depth=_DEPTH.value,
                                 base_width=_BASE_WIDTH.value,
                                 output_stride=_OUTPUT_STRIDE.value or None)
  return pretrained.PretrainedSpec(source=source, path=path, trunk=trunk,
                                   seed=_SEED.value)


def markdown_row(name: str, evaluated: str, metrics: dict, headline,
                 percent=None) -> str:
  """A Markdown header and row: evaluated, evaluation, headline metrics
  (those in ``percent``, default all, shown as %; others as they are)."""
  percent = headline if percent is None else percent
  cells = [evaluated, name] + [
      f"{100 * metrics[k]:.2f}" if k in percent else f"{metrics[k]:.4g}"
      for k in headline]
  header = ["evaluated", "evaluation"] + list(headline)
  return ("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n| "
          + " | ".join(cells) + " |\n")


def _write_json(path: str, value: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)


def run(argv):
  """Validates flags, loads the trunk, evaluates, writes the results."""
  del argv
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  started = time.monotonic()
  try:
    if not _EVAL.value:
      raise ValueError(f"--eval is required: one of {eval_registry.names()}.")
    name = _EVAL.value
    module = eval_registry.get_module(name)
    config = config_flags.from_flags(name, module.Config)
    spec = _spec()
    module.check(config)  # before anything is loaded or written
    if hasattr(module, "configure_runtime"):  # before any TensorFlow op
      module.configure_runtime(config)
    from mtssl_tf.evaluation import eval_base  # pylint: disable=g-import-not-at-top
    from mtssl_tf.evaluation import pretrained  # pylint: disable=g-import-not-at-top
    loaded = pretrained.load(spec)
    output_dir = _OUTPUT_DIR.value or os.path.join(
        "runs", "eval", name, loaded.name + ("_lasso" if _LASSO.value else ""))
    results_path = os.path.join(output_dir, RESULTS_FILE)
    if os.path.exists(results_path) and not _OVERWRITE.value:
      print(f"{results_path} exists (use --overwrite to run again):")
      with open(os.path.join(output_dir, ROW_FILE), encoding="utf-8") as f:
        print(f.read())
      return 0
    os.makedirs(output_dir, exist_ok=True)
    bn_images = loaded.bn_images(_RECOMPUTE_BN.value)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    writer = tf.summary.create_file_writer(output_dir)
    ctx = eval_base.EvalContext(
        pretrained=loaded, output_dir=output_dir, writer=writer,
        lasso=_LASSO.value, lasso_l1=_LASSO_L1.value, seed=_SEED.value,
        recompute_bn_stats=bn_images)
    print(f"Evaluating {loaded.name} ({spec.source}) with {name} -> "
          f"{output_dir}")
    result = module.run(ctx, config)
    with writer.as_default(step=0):
      for key, value in result.metrics.items():
        tf.summary.scalar(f"{name}/result/{key}", value)
    writer.flush()
    wall = time.monotonic() - started
    _write_json(results_path, {
        "evaluation": name,
        "metrics": result.metrics,
        "headline": list(result.headline),
        "config": config_flags.as_dict(config),
        "common": {"lasso": _LASSO.value, "lasso_l1": _LASSO_L1.value,
                   "seed": _SEED.value, "recompute_bn_stats": bn_images},
        "evaluated": loaded.describe(),
        "counts": result.counts,
        "details": result.details,
        "wall_seconds": wall,
    })
    row = markdown_row(name, loaded.name + (" (lasso)" if _LASSO.value else ""),
                       result.metrics, result.headline, result.percent)
    with open(os.path.join(output_dir, ROW_FILE), "w", encoding="utf-8") as f:
      f.write(row)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  print(row, end="")
  print(f"Wrote {results_path} ({wall:.0f} s). TensorBoard: tensorboard "
        f"--logdir {output_dir}")
  return 0


def main():
  app.run(run)


if __name__ == "__main__":
  main()
