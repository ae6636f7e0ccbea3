"""Entry points keep TF's start-up chatter off the console unless asked."""

import ast
import os
import subprocess
import sys

import pytest

from mtssl_tf import quiet

ROOT = os.path.dirname(os.path.dirname(__file__))
# Every program: the entry points and every tool.
ENTRY_POINTS = [m for m in ("mtssl_tf.main", "mtssl_tf.export",
                            "mtssl_tf.evaluate")
                if os.path.exists(os.path.join(ROOT, *m.split(".")) + ".py")
               ] + sorted(
                   f"tools.{name[:-3]}" for name in os.listdir(
                       os.path.join(ROOT, "tools"))
                   if name.endswith(".py") and name != "__init__.py")
# Lines TensorFlow's C++ side prints when it loads (any machine prints some).
TF_LINES = ("cuda", "cpu_feature_guard", "oneDNN", "cuInit")


def _run(*args):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_wanted_reads_the_flag_from_argv():
  assert not quiet.wanted(["prog"])
  assert quiet.wanted(["prog", "--tf_logging"])
  assert quiet.wanted(["prog", "--tf_logging=true"])
  assert not quiet.wanted(["prog", "--tf_logging", "--notf_logging"])
  assert not quiet.wanted(["prog", "--", "--tf_logging"])


def test_every_entry_point_configures_quiet_before_anything_else():
  for module in ENTRY_POINTS:
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    body = ast.parse(open(path, encoding="utf-8").read()).body
    assert isinstance(body[0], ast.Expr), module  # the docstring
    assert ast.unparse(body[1]) == "from mtssl_tf import quiet", module
    assert ast.unparse(body[2]) == "quiet.configure_if_main(__name__)", module


# One program in the quick tier; each costs a process start (~10 s).
@pytest.mark.parametrize("module", [
    pytest.param(m, marks=() if m == "mtssl_tf.main" else pytest.mark.slow)
    for m in ENTRY_POINTS])
def test_entry_points_accept_tf_logging(module):
  run = _run(module, "--tf_logging", "--helpshort")
  assert "Unknown command line flag" not in run.stderr + run.stdout, module


@pytest.mark.slow
def test_console_has_only_the_projects_lines_unless_tf_logging():
  args = ["mtssl_tf.main", "--tasks=rp", "--depth=14", "--learning_rate=-1"]
  run = _run(*args)  # fails at start-up, after TensorFlow was loaded
  assert run.returncode == 2
  assert run.stderr == "error: --learning_rate must be > 0, got -1.0.\n"
  assert run.stdout == ""
  verbose = _run(*args, "--tf_logging")
  assert verbose.returncode == 2
  assert any(word in verbose.stderr for word in TF_LINES), verbose.stderr
