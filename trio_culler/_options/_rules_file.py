"""``--rules-file``: the rules table as a TOML or JSON file, read and handed to the rules' own converter."""

from __future__ import annotations

import json
import tomllib

from .._errors import ConfigError
from .._rules import Rule, structure_rules
from ._text_file import read_text_file

__all__ = ["load_rules_file"]


def load_rules_file(path: str) -> tuple[Rule, ...]:
    """Read ``--rules-file``: TOML (``[[rules]]`` tables) or JSON (``{"rules": [...]}`` or a bare list), by the
    file's suffix; anything but ``.json`` is read as TOML."""
    label = f"--rules-file {path}"
    text = read_text_file(path, label)
    try:
        document = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{label}: {error}") from None
    if isinstance(document, list):
        return structure_rules(document, source=label)
    if not isinstance(document, dict):
        raise ConfigError(f"{label}: expected a table with a 'rules' array")
    extra = sorted(set(document) - {"rules"})
    if extra:
        raise ConfigError(f"{label}: unknown top-level key {', '.join(extra)} (only [[rules]] tables belong here)")
    return structure_rules(document.get("rules", []), source=label)
