"""The config file: Python assigning ``c.IdleCuller.<option> = value`` (2.0's traitlets format), run and read back.

``c`` is a small recording object rather than traitlets' ``Config``: reading it back needs only the assignments,
and traitlets would be a runtime dependency (with its lazy container values, ``c.IdleCuller.x.append(...)``)
for what is about forty lines here. ``get_config()`` returns ``c``, as in traitlets config files, so files
written for jupyterhub-idle-culler 2.0 run unchanged. Values are checked with the option table's converters.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .._errors import ConfigError
from ._table import CONFIGURABLE, OPTIONS, Kind, Option
from ._values import INT, TEXT, parse_bool

__all__ = ["load_config_file"]


class _Section:
    """``c.IdleCuller``: records assignments; reading an unset option gives its default."""

    def __init__(self, name: str, store: dict[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_store", store)

    def __setattr__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __getattr__(self, key: str) -> Any:
        if key in self._store:
            return self._store[key]
        option = CONFIGURABLE.get(key)
        return None if option is None else option.default


class _ConfigRoot:
    def __init__(self) -> None:
        object.__setattr__(self, "_sections", {})

    def __getattr__(self, name: str) -> _Section:
        sections: dict[str, dict[str, Any]] = object.__getattribute__(self, "_sections")
        return _Section(name, sections.setdefault(name, {}))

    def __setattr__(self, key: str, value: Any) -> None:
        raise ConfigError(f"config file: assign options as c.IdleCuller.{key} = ..., not c.{key}")


def load_config_file(path: str, *, required: bool) -> dict[str, Any]:
    """Execute a config file and return ``{dest: value}``; a missing default file is not an error."""
    if not os.path.exists(path):
        if required:
            raise ConfigError(f"--config: no such file {path!r}")
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except OSError as error:
        raise ConfigError(f"--config: cannot read {path!r}: {error.strerror or error}") from None
    root = _ConfigRoot()
    namespace: dict[str, Any] = {
        "c": root,
        "get_config": lambda: root,
        "__file__": path,
        "__name__": "__config__",
    }
    try:
        exec(compile(source, path, "exec"), namespace)
    except ConfigError:
        raise
    except SyntaxError as error:
        raise ConfigError(f"--config: {path}:{error.lineno}: {error.msg}") from None
    except Exception as error:
        raise ConfigError(f"--config: {path} raised {type(error).__name__}: {error}") from None
    sections: dict[str, dict[str, Any]] = object.__getattribute__(root, "_sections")
    values: dict[str, Any] = {}
    for section, assigned in sections.items():
        for key, value in assigned.items():
            if section == "Application" and key == "log_level":
                values["log_level"] = _config_value(OPTIONS["log-level"], key, value)
            elif section != "IdleCuller":
                logging.getLogger("trio_culler").warning(
                    "Ignoring c.%s.%s in %s: not a culler option", section, key, path
                )
            elif key in ("cull_arbiter_hook", "warn_hook"):
                if value is None:
                    continue
                if not callable(value):
                    raise ConfigError(f"c.IdleCuller.{key} in {path} must be callable")
                values[key] = value
            elif key == "rules":
                # Structured (and every problem named by index and key) by Config's converter.
                values[key] = value
            elif key in ("config_file", "generate_config"):
                continue
            elif key in CONFIGURABLE:
                if value is None and CONFIGURABLE[key].default is None:
                    continue  # None is the "unset" default (e.g. url: take JUPYTERHUB_API_URL)
                values[key] = _config_value(CONFIGURABLE[key], key, value)
            else:
                raise ConfigError(f"c.IdleCuller.{key} in {path}: unknown option")
    return values


def _config_value(option: Option, key: str, value: Any) -> Any:
    """A config file holds Python values; accept them where the command line would accept their text."""
    name = f"IdleCuller.{key}"
    if option.kind is Kind.SWITCH:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_bool(value, name)
        raise ConfigError(f"c.{name} must be True or False, not {value!r}")
    if isinstance(value, bool):
        raise ConfigError(f"c.{name} must not be a boolean")
    if option.convert is TEXT:
        if not isinstance(value, str):
            raise ConfigError(f"c.{name} must be a string, not {value!r}")
        return value
    if option.convert is INT and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"c.{name} must be a whole number, not {value!r}")
    return option.convert(str(value), name)
