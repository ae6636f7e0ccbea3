"""Config dataclasses as absl flags: one flag per field, declared once.

A module's options live in its frozen ``Config`` dataclass (a pretext task, an
evaluation). Entry points turn every field into a flag named
``<prefix>.<field>`` (``--rp.patch_size=64``, ``--imagenet_linear.epochs=30``)
so that options are settable on the command line or in flagfiles without
being written a second time, and read them back into the dataclass. A field
whose type is itself a config dataclass (options shared by several modules,
e.g. a labelled data set) becomes ``--<prefix>.<field>.<subfield>`` flags:

  define_flags("imagenet_linear", imagenet_linear.Config)   # at import time
  ...
  cfg = from_flags("imagenet_linear", imagenet_linear.Config)  # after parsing

The help text of each flag is the field's entry in the "Attributes:" section
of the dataclass docstring. Flag types follow the field annotations: bool
(an absl boolean flag: ``--lasso``, ``--nolasso``, ``--lasso=false``), int,
float, str (``Optional[...]`` of those accepts "none"/"" for None), a
``Dict[str, V]`` as ``key:value`` pairs (``--replicas_per_task=rp:2,col:1``),
and anything else (tuples) is parsed as a Python literal (``--profile_steps=3,5``
is the tuple ``(3, 5)``). Only flags given on the command line or in a flagfile
override the dataclass defaults, so a default changed in code is never shadowed
by a stale flag default. With an empty prefix the flags are the bare field
names (``python -m mtssl_tf.main``'s ``--max_steps`` etc. from ``TrainConfig``).
"""

import ast
import dataclasses
import re
import typing
from typing import Any, Dict, Optional, Type

from absl import flags

_NONE_WORDS = ("none", "null", "")


def _attribute_docs(cls) -> Dict[str, str]:
  """Field name -> its text in the docstring's "Attributes:" section."""
  doc = cls.__doc__ or ""
  match = re.search(r"^\s*Attributes:\s*$", doc, flags=re.MULTILINE)
  if not match:
    return {}
  docs, current = {}, None
  for line in doc[match.end():].splitlines():
    if not line.strip():
      continue
    item = re.match(r"^\s{2,6}(\w+(?:\s*,\s*\w+)*)\s*:\s*(.*)$", line)
    indent = len(line) - len(line.lstrip())
    if item and (current is None or indent <= docs_indent):
      names = [n.strip() for n in item.group(1).split(",")]
      for name in names:
        docs[name] = item.group(2).strip()
      current, docs_indent = names, indent
    elif current is not None and indent > docs_indent:
      for name in current:
        docs[name] = (docs[name] + " " + line.strip()).strip()
    else:
      break
  return docs


def _base_type(annotation):
  """(type, optional) of a field annotation, e.g. Optional[int] -> (int, True)."""
  if isinstance(annotation, str):
    annotation = eval(annotation, vars(typing))  # pylint: disable=eval-used
  origin = typing.get_origin(annotation)
  if origin is typing.Union:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1:
      return _base_type(args[0])[0], True
    return object, True
  return annotation, False


def parse_map(text: str, value_type=str) -> Dict[str, Any]:
  """Parses "rp:2,col:1" into {"rp": 2, "col": 1} ("" is {})."""
  result = {}
  for item in filter(None, (s.strip() for s in (text or "").split(","))):
    name, sep, value = item.partition(":")
    if not sep:
      raise ValueError(f"expected key:value pairs like rp:2,col:1, got "
                       f"{item!r}")
    try:
      result[name.strip()] = parse_value(value.strip(), value_type)
    except ValueError:
      raise ValueError(f"{value.strip()!r} is not a valid "
                       f"{getattr(value_type, '__name__', value_type)} (in "
                       f"{item!r})") from None
  return result


def parse_value(text: Any, annotation) -> Any:
  """Parses a flag string as a value of a field's annotated type (a value
  that is not a string, e.g. a boolean flag's, is returned as it is)."""
  if not isinstance(text, str):
    return text
  kind, optional = _base_type(annotation)
  if optional and text.strip().lower() in _NONE_WORDS:
    return None
  if kind is bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true or false, got {text!r}")
  if kind is int:
    return int(text)
  if kind is float:
    return float(text)
  if kind is str:
    return text
  if typing.get_origin(kind) is dict or kind is dict:
    args = typing.get_args(kind)
    return parse_map(text, args[1] if len(args) == 2 else str)
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"expected a Python literal, got {text!r}") from None
  if typing.get_origin(kind) is tuple or kind is tuple:
    value = tuple(value) if isinstance(value, (list, tuple)) else value
  return value


def flag_name(prefix: str, field: str) -> str:
  return f"{prefix}.{field}" if prefix else field


def _nested(cls, field):
  kind = typing.get_type_hints(cls)[field.name]
  return kind if dataclasses.is_dataclass(kind) else None


def define_flags(prefix: str, cls: Type, flag_values=flags.FLAGS) -> None:
  """Defines ``--<prefix>.<field>`` string flags for every field of ``cls``."""
  docs = _attribute_docs(cls)
  for field in dataclasses.fields(cls):
    name = flag_name(prefix, field.name)
    nested = _nested(cls, field)
    if nested is not None:
      define_flags(name, nested, flag_values=flag_values)
      continue
    if name in flag_values:
      raise ValueError(f"Flag --{name} is defined twice.")
    default = (field.default if field.default is not dataclasses.MISSING
               else field.default_factory()  # pytype: disable=missing-parameter
               if field.default_factory is not dataclasses.MISSING else None)
    help_text = f"{docs.get(field.name, '')} (default: {default!r})".strip()
    if _base_type(typing.get_type_hints(cls)[field.name])[0] is bool:
      flags.DEFINE_bool(name, None, help_text, flag_values=flag_values)
    else:
      flags.DEFINE_string(name, None, help_text, flag_values=flag_values)


def overrides_from_flags(prefix: str, cls: Type,
                         flag_values=flags.FLAGS) -> Dict[str, Any]:
  """Field -> parsed value, for the flags of ``cls`` that were set."""
  hints = typing.get_type_hints(cls)
  values = {}
  for field in dataclasses.fields(cls):
    name = flag_name(prefix, field.name)
    nested = _nested(cls, field)
    if nested is not None:
      sub = overrides_from_flags(name, nested, flag_values)
      if sub:
        values[field.name] = sub
      continue
    flag = flag_values[name]
    if flag.value is None:
      continue
    try:
      values[field.name] = parse_value(flag.value, hints[field.name])
    except ValueError as e:
      raise ValueError(f"--{name}: {e}.") from None
  return values


def from_flags(prefix: str, cls: Type, base: Optional[Any] = None,
               flag_values=flags.FLAGS):
  """``cls`` (or ``base``) with the fields whose flags were set replaced."""
  base = cls() if base is None else base
  values = overrides_from_flags(prefix, cls, flag_values)
  for field in dataclasses.fields(cls):
    if field.name in values and _nested(cls, field) is not None:
      values[field.name] = dataclasses.replace(getattr(base, field.name),
                                               **values[field.name])
  return dataclasses.replace(base, **values)


def as_dict(config) -> Dict[str, Any]:
  """A JSON-friendly dict of a config dataclass (tuples become lists)."""
  return dataclasses.asdict(config)
