"""The package as a user meets it: silent import, README quick start, CI."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_import_is_silent_and_does_not_load_tensorflow():
  run = subprocess.run(
      [sys.executable, "-W", "default", "-c",
       "import sys, mtssl_tf, mtssl_tf.config, mtssl_tf.tasks.registry; "
       "print('tensorflow' in sys.modules)"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert run.returncode == 0
  assert run.stdout == "False\n" and run.stderr == ""


def _quick_start_commands():
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second():
  commands = _quick_start_commands()
  assert len(commands) == 2
  train, test = commands
  assert "\n" not in train and "\n" not in test
  assert train.startswith("pip install -e . && python -m mtssl_tf.main ")
  assert "--tasks=rp,col" in train and "--export_dir=" in train
  assert "pytest" in test
  ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
  assert test in ci.splitlines()
  assert "-eq 5" in ci  # pytest's "no tests collected"
