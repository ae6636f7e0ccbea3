"""The one registry of evaluations: name -> module (see evaluation/eval_base.py).

Filled in one place, below; modules are imported on first use so that the
registry (and ``--help``) stays cheap. Adding an evaluation is one module
plus one line here.
"""

import importlib
from typing import Dict, List

_MODULES: Dict[str, str] = {}


def register(name: str, module_path: str) -> None:
  """Registers an evaluation module under ``name``; raises on a duplicate."""
  if name in _MODULES:
    raise ValueError(f"Evaluation {name!r} is already registered (by "
                     f"{_MODULES[name]}); names must be unique.")
  _MODULES[name] = module_path


register("imagenet_linear", "mtssl_tf.evaluation.imagenet_linear")
register("knn", "mtssl_tf.evaluation.knn")
register("voc07_svm", "mtssl_tf.evaluation.voc07_svm")
register("nyu_depth", "mtssl_tf.evaluation.nyu_depth")
register("voc07_detection", "mtssl_tf.evaluation.voc07_detection")


def names() -> List[str]:
  """Registered evaluation names, in registration order."""
  return list(_MODULES)


def get_module(name: str):
  """Returns the evaluation module registered as ``name``."""
  if name not in _MODULES:
    raise ValueError(f"Unknown evaluation {name!r}; registered evaluations "
                     f"are {names()}.")
  return importlib.import_module(_MODULES[name])
