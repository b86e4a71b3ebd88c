"""The command line: argv tokens, in 1.x (tornado) and 2.0 (traitlets) spellings, read against the option table.

A small lexer rather than ``argparse``, because the two generations disagree in ways argparse cannot express
at once: ``--cull_every`` and ``--IdleCuller.cull_every`` name the same option, a switch alone means true (1.x)
but may also be followed by ``true``/``false`` as a separate word (2.0), and ``--no-x`` negates any switch.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import attrs

from .._errors import ConfigError
from ._table import OPTIONS, Kind
from ._values import FALSE_WORDS, TRUE_WORDS, parse_bool

__all__ = ["ParsedArgs", "parse_args"]


@attrs.frozen
class ParsedArgs:
    #: dest -> value, only for what the command line set.
    values: dict[str, Any]


def _normalise(name: str) -> str:
    for prefix in ("IdleCuller.", "Application."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace("_", "-")


def _unknown(name: str) -> ConfigError:
    close = difflib.get_close_matches(name, [n for n, o in OPTIONS.items() if o.listed], n=1)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    return ConfigError(f"unknown option --{name}{hint}; see --help")


def _looks_like_bool(token: str) -> bool:
    return token.strip().lower() in TRUE_WORDS | FALSE_WORDS


def parse_args(argv: Sequence[str]) -> ParsedArgs:
    """Read ``argv`` (without the program name) into values; raises ConfigError naming the option."""
    values: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-") or token in ("-", "--"):
            raise ConfigError(f"unexpected argument {token!r}: options look like --timeout=600")
        raw_name, has_value, value = token.lstrip("-").partition("=")
        name = _normalise(raw_name)
        negated = False
        if name not in OPTIONS and name.startswith("no-") and OPTIONS.get(name[3:]) is not None:
            name, negated = name[3:], True
        option = OPTIONS.get(name)
        if option is None:
            raise _unknown(name)
        if negated:
            if option.kind is not Kind.SWITCH or has_value:
                raise ConfigError(f"--no-{name} takes no value and only applies to true/false options")
            values[option.dest] = False
        elif option.kind is not Kind.VALUE:
            if has_value:
                values[option.dest] = parse_bool(value, name)
            elif index < len(argv) and _looks_like_bool(argv[index]):
                # `--cull-users true`: the traitlets form with a space.
                values[option.dest] = parse_bool(argv[index], name)
                index += 1
            else:
                values[option.dest] = True
        else:
            if not has_value:
                if index >= len(argv) or argv[index].startswith("--"):
                    raise ConfigError(f"--{name} needs a value, e.g. --{name}=VALUE")
                value = argv[index]
                index += 1
            values[option.dest] = option.convert(value, name)
    return ParsedArgs(values)
