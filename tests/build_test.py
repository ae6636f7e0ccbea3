"""Keeps BUILD true: every module, test and tool is a target, every target's
files exist, and every mtssl_tf/tests/tools import is a direct dependency."""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("mtssl_tf", "tools", "tests")


def _parse_build():
  targets = {}

  def rule(kind):
    def add(name, srcs=(), deps=(), **kwargs):
      assert name not in targets, f"duplicate target {name!r} in BUILD"
      targets[name] = dict(kind=kind, srcs=list(srcs), deps=list(deps),
                           **kwargs)
    return add

  namespace = {k: rule(k) for k in ("py_library", "py_test", "py_binary")}
  namespace["package"] = lambda **kwargs: None
  namespace["glob"] = lambda patterns: sorted(
      p.relative_to(ROOT).as_posix() for pattern in patterns
      for p in ROOT.glob(pattern))
  exec(compile((ROOT / "BUILD").read_text(), "BUILD", "exec"), namespace)  # pylint: disable=exec-used
  return targets


TARGETS = _parse_build()
OWNER = {src: name for name, t in TARGETS.items() for src in t["srcs"]}


def _python_files():
  files = []
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      files.append(path.relative_to(ROOT).as_posix())
  return files


def _module_file(module):
  """mtssl_tf.models.resnet_v2 -> its file, or None if not in the tree."""
  parts = module.split(".")
  if parts[0] not in PACKAGES:
    return None
  as_module = "/".join(parts) + ".py"
  if (ROOT / as_module).exists():
    return as_module
  as_package = "/".join(parts) + "/__init__.py"
  return as_package if (ROOT / as_package).exists() else None


def _imported_files(path, include_strings=True):
  tree = ast.parse((ROOT / path).read_text(), filename=path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # "from pkg import name": name is a module if such a file exists.
      modules = [f"{node.module}.{alias.name}" for alias in node.names]
      modules = [m if _module_file(m) else node.module for m in modules]
    elif (include_strings and isinstance(node, ast.Constant) and
          isinstance(node.value, str)
          and node.value.startswith("mtssl_tf.")):
      modules = [node.value]  # a lazily imported module (tasks/registry.py)
    else:
      continue
    for module in modules:
      file = _module_file(module)
      if file and not file.endswith("__init__.py"):
        found.add(file)
  return found


def test_every_python_file_is_in_exactly_one_target():
  listed = [src for t in TARGETS.values() for src in t["srcs"]]
  assert len(listed) == len(set(listed)), "a file is listed twice"
  missing = sorted(set(_python_files()) - set(listed))
  assert not missing, f"add these files to BUILD: {missing}"


def test_every_listed_file_exists():
  absent = sorted(s for s in OWNER if not (ROOT / s).is_file())
  assert not absent, f"BUILD lists files that do not exist: {absent}"


@pytest.mark.parametrize("path", _python_files())
def test_target_kind_and_name(path):
  assert path in OWNER, f"add {path} to BUILD"
  target = TARGETS[OWNER[path]]
  name = OWNER[path]
  stem = pathlib.PurePosixPath(path).stem
  if path.endswith("__init__.py"):
    assert target["kind"] == "py_library"
    return
  assert name == stem, f"{path} should be target {stem!r}, is {name!r}"
  if path.startswith("tests/") and stem.endswith("_test"):
    assert target["kind"] == "py_test", f"{path} must be a py_test"
    assert target.get("size", "medium") in ("small", "medium", "large",
                                            "enormous")
  elif path.startswith("tests/"):
    assert target["kind"] == "py_library" and target.get("testonly"), (
        f"{path} is a test helper: a py_library with testonly = True")
  elif path.startswith("tools/") or '__name__ == "__main__"' in (
      ROOT / path).read_text():
    assert target["kind"] == "py_binary", f"{path} must be a py_binary"
    assert target.get("main") == path
  else:
    assert target["kind"] == "py_library", f"{path} must be a py_library"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_deps_exist_and_cover_imports(name):
  target = TARGETS[name]
  deps = set()
  for dep in target["deps"]:
    assert dep.startswith(":"), f"{name}: dep {dep!r} should be ':target'"
    assert dep[1:] in TARGETS, f"{name}: unknown dep {dep!r}"
    deps.add(dep[1:])
  needed = set()
  for src in target["srcs"]:
    needed |= {OWNER[f] for f in _imported_files(src) if f in OWNER}
  needed.discard(name)
  missing = sorted(needed - deps)
  assert not missing, f"target {name!r} imports {missing}: add them to deps"


def test_build_parser_sees_the_known_targets():
  # Guards the test itself: if parsing silently dropped rules, the checks
  # above would pass vacuously.
  assert TARGETS["resnet_v2"]["srcs"] == ["mtssl_tf/models/resnet_v2.py"]
  assert "build_test" in TARGETS
  assert len(_python_files()) >= 10
  assert os.path.basename(__file__) == "build_test.py"


@pytest.mark.parametrize("path", [p for p in _python_files()
                                  if p.startswith("tests/")])
def test_tests_run_entry_points_in_a_subprocess(path):
  """Tools define absl flags; a tool and mtssl_tf.main (or two tools)
  imported into the one pytest process collide (DuplicateFlagError)."""
  imported = _imported_files(path, include_strings=False)
  tools = sorted(f for f in imported if f.startswith("tools/"))
  assert not tools, f"{path} imports {tools}: run them with subprocess"
