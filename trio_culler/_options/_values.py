"""Converters from an option's text to its value; each raises ConfigError naming the option.

A converter is ``(text, option_name) -> value``. The config file reuses them on ``str(value)`` (see
``_config_file``), so one converter serves both the command line and the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._errors import ConfigError

__all__ = [
    "FALSE_WORDS",
    "FLOAT",
    "INT",
    "PORT",
    "TEXT",
    "TRUE_WORDS",
    "Converter",
    "log_format",
    "log_level",
    "parse_bool",
]

Converter = Callable[[str, str], Any]

TRUE_WORDS = frozenset({"true", "1", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", "n", "f"})


def parse_bool(text: str, option: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(f"--{option}: expected true or false, not {text!r}")


def _number(kind: type[int] | type[float]) -> Callable[[str, str], float]:
    def convert(text: str, option: str) -> float:
        try:
            value = kind(text.strip())
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise ConfigError(f"--{option}: expected {noun}, not {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{option}: must not be negative, not {text!r}")
        return value

    return convert


def _text(text: str, _option: str) -> str:
    return text


#: The text as given (a config file must then give a ``str``).
TEXT: Converter = _text
#: A whole number >= 0 (a config file may give an ``int`` or an integral ``float``).
INT: Converter = _number(int)
#: A finite number >= 0.
FLOAT: Converter = _number(float)


def _port(text: str, option: str) -> int:
    port = int(INT(text, option))
    if port > 65535:
        # Found before a socket is opened: the socket call would end in an OverflowError traceback.
        raise ConfigError(f"--{option}: expected a port number from 0 to 65535, not {text!r}")
    return port


#: A TCP port, 0 to 65535 (0: off).
PORT: Converter = _port


def log_level(text: str, option: str) -> int:
    names = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "critical": 50}
    lowered = text.strip().lower()
    if lowered in names:
        return names[lowered]
    if lowered.isdigit():
        return int(lowered)
    raise ConfigError(f"--{option}: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {text!r}")


#: What ``log_format`` returns for a 2.0 logging format string (``'[%(name)s]%(highlevel)s %(message)s'``):
#: 2.0's ``--generate-config`` writes one, so a file made from it must load; the culler keeps its own lines.
LEGACY_LOG_FORMAT = "legacy"


def log_format(text: str, option: str) -> str:
    lowered = text.strip().lower()
    if lowered in ("text", "json"):
        return lowered
    if "%(" in text:
        return LEGACY_LOG_FORMAT
    raise ConfigError(f"--{option}: expected text or json, not {text!r}")
