"""The option table's own rules, which the lexer, the config file and the renderers rely on."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from trio_culler import Config
from trio_culler._errors import ConfigError
from trio_culler._options import OPTIONS, Kind, load_config_file, parse_args, render_default_config, render_help
from trio_culler.cli import Settings


def test_every_option_has_a_kind_and_actions_stay_on_the_command_line() -> None:
    for name, option in OPTIONS.items():
        assert isinstance(option.kind, Kind), name
        if option.kind is Kind.ACTION:
            assert not option.configurable, f"--{name} is an action: it has no place in a config file"
            assert option.default is None, name


def test_every_dest_lands_somewhere() -> None:
    # read_settings() hands Config fields to Config and everything else to Settings: a dest in neither is lost.
    # read_settings() itself consumes config_file, debug and rules_file (read into Config.rules).
    consumed = {"config_file", "debug", "rules_file"}
    homes = {f.name for f in attrs.fields(Config)} | {f.name for f in attrs.fields(Settings)} | consumed
    for name, option in OPTIONS.items():
        assert option.dest in homes, f"--{name}: nothing reads {option.dest!r}"


def test_help_and_generated_config_come_from_the_table() -> None:
    help_text = render_help("trio-culler")
    config_text = render_default_config()
    for name, option in OPTIONS.items():
        assert (f"  --{name} " in help_text) == option.listed, name
        in_file = f"# c.IdleCuller.{option.dest} = " in config_text
        # Aliases share a dest with a listed option: the dest is in the file when any of its options belongs there.
        belongs = any(o.listed and o.configurable for o in OPTIONS.values() if o.dest == option.dest)
        assert in_file == belongs, name


@pytest.mark.parametrize("name", [n for n, o in OPTIONS.items() if o.kind is Kind.SWITCH])
def test_every_switch_takes_each_spelling(name: str) -> None:
    dest = OPTIONS[name].dest
    assert parse_args([f"--{name}"]).values == {dest: True}
    assert parse_args([f"--{name}=off"]).values == {dest: False}
    assert parse_args([f"--{name}", "no"]).values == {dest: False}
    assert parse_args([f"--no-{name}"]).values == {dest: False}
    assert parse_args([f"--{name.replace('-', '_')}=yes"]).values == {dest: True}


@pytest.mark.parametrize("name", [n for n, o in OPTIONS.items() if o.kind is not Kind.SWITCH])
def test_only_switches_have_a_no_form(name: str) -> None:
    with pytest.raises(ConfigError, match=f"--no-{name}"):
        parse_args([f"--no-{name}"])


def test_actions_are_refused_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "culler.py"
    path.write_text("c.IdleCuller.once = True\n")
    with pytest.raises(ConfigError, match="once"):
        load_config_file(str(path), required=True)
