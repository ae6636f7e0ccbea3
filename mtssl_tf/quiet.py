"""Keeps the console to mtssl_tf's own lines; ``--tf_logging`` restores TF's.

TensorFlow's C++ library prints start-up lines (CUDA probing, CPU features,
on machines without a GPU an ``E ... failed call to cuInit`` line) when it is
first loaded, and its Python side logs INFO lines such as SavedModel
internals. ``TF_CPP_MIN_LOG_LEVEL`` only works if it is set before the first
``import tensorflow``, i.e. before absl parses any flag, so every entry point
and tool imports this module first and calls ``configure()`` at import time;
it reads ``--tf_logging`` straight from ``sys.argv``. ``define_flag()``
declares the same flag to absl (in this one place) so that absl accepts it.

A ``TF_CPP_MIN_LOG_LEVEL`` set by the user is respected.
"""

import logging
import os
import sys

FLAG = "tf_logging"
_HELP = ("Show TensorFlow's own log lines (C++ start-up messages, INFO "
         "logs); by default only mtssl_tf's lines and TF errors are shown.")


def wanted(argv=None) -> bool:
  """Whether ``--tf_logging`` (or ``--tf_logging=true``) is in ``argv``."""
  argv = sys.argv if argv is None else argv
  value = None
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg in (f"--{FLAG}", f"--{FLAG}=true", f"--{FLAG}=1"):
      value = True
    elif arg in (f"--no{FLAG}", f"--{FLAG}=false", f"--{FLAG}=0"):
      value = False
  return bool(value)


def configure(argv=None) -> None:
  """Sets TF's log levels from ``argv``; call before importing tensorflow."""
  if wanted(argv):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    return
  # 3 also hides C++ ERROR lines: the only ones at start-up are the harmless
  # CUDA probes of a GPU-less machine; real failures raise Python errors.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # A filter, not a level: TensorFlow sets its logger's level to INFO when it
  # configures it, after this runs.
  logger = logging.getLogger("tensorflow")
  if _below_error not in logger.filters:
    logger.addFilter(_below_error)


def _below_error(record) -> bool:
  """Keeps TF's Python log records at ERROR and above."""
  return record.levelno >= logging.ERROR


def define_flag() -> None:
  """Declares ``--tf_logging`` to absl (entry points call this once)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if FLAG not in flags.FLAGS:
    flags.DEFINE_bool(FLAG, False, _HELP)


def configure_if_main(module_name: str) -> None:
  """``configure()`` and ``define_flag()`` when ``module_name`` is
  "__main__", i.e. the importing module runs as a program (importing it as a
  library changes nothing)."""
  if module_name == "__main__":
    configure()
    define_flag()


def quiet_absl_logging() -> None:
  """For programs whose own lines are printed: TF modules that log through
  absl (SavedModel saving: "Found untraced functions", "Assets written to")
  are kept to errors, unless ``--tf_logging`` or ``--verbosity`` is given.
  Call after absl parsed the flags (inside the program's ``run``)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  if wanted() or flags.FLAGS["verbosity"].present:
    return
  absl_logging.set_verbosity(absl_logging.ERROR)
