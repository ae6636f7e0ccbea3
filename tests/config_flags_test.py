"""config_flags: dataclass fields <-> absl flags, parsed by annotation."""

import dataclasses
from typing import Dict, Optional, Tuple

from absl import flags
import pytest

from mtssl_tf import config_flags


@dataclasses.dataclass(frozen=True)
class _Config:
  """Options.

  Attributes:
    size: side of the input,
      continued on a second line.
    rate: the learning rate.
    name: a name.
    enabled: whether on.
    path: an optional path.
    units: a tuple of widths.
    costs: a per-task map.
  """
  size: int = 96
  rate: float = 0.1
  name: str = "x"
  enabled: bool = False
  path: Optional[str] = None
  units: Tuple[int, ...] = (1, 2)
  costs: Dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Data:
  """Shared data options.

  Attributes:
    path: where the data is.
  """
  path: str = "builtin"


@dataclasses.dataclass(frozen=True)
class _Outer:
  """An evaluation's options.

  Attributes:
    steps: steps to train.
    data: the data set.
  """
  steps: int = 5
  data: _Data = _Data()


def test_nested_dataclass_fields_become_dotted_flags():
  values = flags.FlagValues()
  config_flags.define_flags("ev", _Outer, flag_values=values)
  values(["prog", "--ev.data.path=/data/x"])
  assert values["ev.data.path"].help.startswith("where the data is.")
  cfg = config_flags.from_flags("ev", _Outer, flag_values=values)
  assert cfg == _Outer(steps=5, data=_Data(path="/data/x"))


def _flag_values(argv):
  values = flags.FlagValues()
  config_flags.define_flags("toy", _Config, flag_values=values)
  values(["prog"] + argv)
  return values


def test_help_text_from_attributes_section():
  values = _flag_values([])
  assert values["toy.size"].help.startswith(
      "side of the input, continued on a second line.")
  assert "(default: 96)" in values["toy.size"].help
  assert values["toy.units"].help.startswith("a tuple of widths.")


def test_unset_flags_keep_defaults():
  assert config_flags.from_flags("toy", _Config,
                                 flag_values=_flag_values([])) == _Config()


def test_every_type_parses():
  cfg = config_flags.from_flags(
      "toy", _Config, flag_values=_flag_values(
          ["--toy.size=64", "--toy.rate=3e-4", "--toy.name=abc",
           "--toy.enabled=true", "--toy.path=/data", "--toy.units=[4,5,6]"]))
  assert cfg == _Config(size=64, rate=3e-4, name="abc", enabled=True,
                        path="/data", units=(4, 5, 6))
  cfg = config_flags.from_flags("toy", _Config, base=cfg, flag_values=(
      _flag_values(["--toy.path=none"])))
  assert cfg.path is None and cfg.size == 64


@pytest.mark.parametrize("argv, message", [
    (["--toy.size=big"], "--toy.size"),
    (["--toy.units=(1,"], "Python literal"),
    (["--toy.costs=rp"], "--toy.costs: expected key:value pairs"),
    (["--toy.costs=rp:x"], r"--toy.costs: 'x' is not a valid float"),
])
def test_bad_values_name_the_flag(argv, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    config_flags.from_flags("toy", _Config, flag_values=_flag_values(argv))


def test_booleans_are_absl_boolean_flags():
  for argv, expected in ((["--toy.enabled"], True), (["--notoy.enabled"], False),
                         (["--toy.enabled=false"], False), ([], False)):
    cfg = config_flags.from_flags("toy", _Config, flag_values=_flag_values(argv))
    assert cfg.enabled is expected, argv
  with pytest.raises(flags.IllegalFlagValueError, match="toy.enabled"):
    _flag_values(["--toy.enabled=maybe"])


def test_maps_parse_as_key_value_pairs():
  cfg = config_flags.from_flags("toy", _Config, flag_values=_flag_values(
      ["--toy.costs=rp:1, col:2.5"]))
  assert cfg.costs == {"rp": 1.0, "col": 2.5}
  assert config_flags.parse_map("", int) == {}


def test_empty_prefix_gives_bare_field_names():
  values = flags.FlagValues()
  config_flags.define_flags("", _Config, flag_values=values)
  values(["prog", "--size=7", "--enabled", "--units=3,4"])
  assert "size" in values and "enabled" in values
  cfg = config_flags.from_flags("", _Config, flag_values=values)
  assert cfg == _Config(size=7, enabled=True, units=(3, 4))


def test_duplicate_definition_refused():
  values = flags.FlagValues()
  config_flags.define_flags("toy", _Config, flag_values=values)
  with pytest.raises(ValueError, match="defined twice"):
    config_flags.define_flags("toy", _Config, flag_values=values)
