"""The rules as the TOML an operator writes in a ``--rules-file``: what the status page shows of them.

A small writer, for the values a rule can hold once structured (``Rule.as_dict``): strings, booleans,
numbers, lists, and tables (``user_options``, whose values come from the operator's JSON or Python and may be
anything JSON holds). tomllib reads it back to the same values (a property test holds it to that).

Why a writer rather than the operator's own text: rules also come from ``c.IdleCuller.rules`` in the Python
config file, from a JSON rules file and from embedders, and the page should show all of them one way, and show
what the culler uses (after its checks), not what a file said. JSON's ``null`` has no TOML spelling: a rule
that holds one is shown as a comment with its JSON, rather than as something it is not.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TomlUnsupported", "rules_as_toml", "toml_value"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
_INT64 = range(-(2**63), 2**63)


class TomlUnsupported(ValueError):
    """A value TOML cannot hold: JSON's null, an integer past 64 bits, a lone surrogate."""


def rules_as_toml(rules: Iterable[Mapping[str, Any]]) -> str:
    """``[[rules]]`` tables, one per rule, in order, as ``--rules-file`` takes them (empty for no rules)."""
    blocks = []
    for index, rule in enumerate(rules):
        try:
            lines = [f"{_key(key)} = {toml_value(value)}" for key, value in rule.items()]
        except TomlUnsupported as error:
            shown = json.dumps(rule, sort_keys=False, ensure_ascii=True)
            blocks.append(f"# rules[{index}], as JSON ({error}):\n# {shown}")
            continue
        blocks.append("\n".join(["[[rules]]", *lines]))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def toml_value(value: Any) -> str:
    """One value, inline: tables as ``{ key = value, ... }``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value not in _INT64:
            raise TomlUnsupported(f"the integer {value} does not fit in TOML's 64 bits")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(key)} = {toml_value(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if value is None:
        raise TomlUnsupported("TOML has no null")
    raise TomlUnsupported(f"TOML has no {type(value).__name__}")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TomlUnsupported(f"a key that is not a string ({key!r})")
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04X}")
        elif "\ud800" <= char <= "\udfff":
            raise TomlUnsupported("a lone surrogate in a string")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
