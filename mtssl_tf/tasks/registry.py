"""The one registry of pretext tasks: name -> task module (see tasks/base.py).

Filled in one place, below. Modules are imported on first use so that
``import mtssl_tf.tasks.registry`` stays cheap.
"""

import importlib
from typing import Dict, List, Optional

_MODULES: Dict[str, str] = {}


def register(name: str, module_path: str) -> None:
  """Registers a task module under ``name``; raises on a duplicate name."""
  if name in _MODULES:
    raise ValueError(
        f"Task {name!r} is already registered (by {_MODULES[name]}); task "
        f"names must be unique.")
  _MODULES[name] = module_path


register("rp", "mtssl_tf.tasks.relative_position")
register("col", "mtssl_tf.tasks.colorization")
register("ex", "mtssl_tf.tasks.exemplar")
register("ms", "mtssl_tf.tasks.motion_segmentation")
register("rot", "mtssl_tf.tasks.rotation")
register("jig", "mtssl_tf.tasks.jigsaw")
register("sup", "mtssl_tf.tasks.imagenet_labels")


def names() -> List[str]:
  """Registered task names, in registration order."""
  return list(_MODULES)


def get_module(name: str):
  """Returns the task module registered as ``name``."""
  if name not in _MODULES:
    raise ValueError(
        f"Unknown task {name!r}; registered tasks are {names()}.")
  return importlib.import_module(_MODULES[name])


def build(name: str, config: Optional[object] = None,
          trunk: Optional[object] = None):
  """Returns ``Task(config, trunk)`` of task ``name``.

  Args:
    name: a registered name.
    config: the task's ``Config`` (None: its defaults, the paper's).
    trunk: ``base.TrunkFacts`` of the trunk it trains (None: the paper's).
  """
  module = get_module(name)
  config = config if config is not None else module.Config()
  if hasattr(config, "validate"):
    config.validate()  # raises ValueError naming the bad field
  if trunk is None:
    from mtssl_tf.tasks import base  # pylint: disable=g-import-not-at-top
    trunk = base.PAPER_TRUNK
  return module.Task(config, trunk)
