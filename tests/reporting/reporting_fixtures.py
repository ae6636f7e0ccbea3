"""experiment.json fixtures as python -m mtssl_tf.experiment writes them."""

import json
import os


def result(checkpoint, evaluation, metrics, eval_lasso=False, abs_alpha=None,
           pretrain_alpha=None):
  return {"checkpoint": checkpoint, "evaluation": evaluation,
          "eval_lasso": eval_lasso, "output_dir": "x", "metrics": metrics,
          "abs_alpha": abs_alpha, "pretrain_alpha": pretrain_alpha}


def experiments():
  rp = {"row": "rp", "tasks": ["rp"], "tick_gpu_hours": 2400.0,
        "checkpoints": {"1": {"cost_gpu_hours": 2400.2, "step": 10,
                              "prefix": "p1"},
                        "7": {"cost_gpu_hours": 16800.5, "step": 70,
                              "prefix": "p7"}},
        "results": [
            result(1, "imagenet_linear", {"top1": 0.2, "top5": 0.4}),
            result(7, "imagenet_linear", {"top1": 0.3, "top5": 0.5}),
            result(7, "nyu_depth", {"delta1": 0.7512, "delta2": 0.9,
                                    "delta3": 0.95, "mae": 0.5,
                                    "abs_rel": 0.1875}),
            result("random_init", "imagenet_linear",
                   {"top1": 0.01, "top5": 0.05})]}
  all4_lasso = {
      "row": "all4_lasso", "tasks": ["rp", "col", "ex", "ms"],
      "tick_gpu_hours": 2400.0,
      "checkpoints": {"7": {"cost_gpu_hours": 16801.0, "step": 9,
                            "prefix": "q7"}},
      "results": [
          result(7, "imagenet_linear", {"top1": 0.35, "top5": 0.61},
                 pretrain_alpha={"rp": [0.0, 0.6, 0.8], "col": [1.0, 0, 0]}),
          result(7, "imagenet_linear", {"top1": 0.36, "top5": 0.625},
                 eval_lasso=True, abs_alpha=[0.6, 0.0, 0.8])]}
  return [rp, all4_lasso]


def write(root):
  for experiment in experiments():
    folder = os.path.join(root, experiment["row"])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "experiment.json"), "w") as f:
      json.dump(experiment, f)
  return root
