"""The rules as TOML on the status page: a writer that tomllib reads back to the same values."""

from __future__ import annotations

import math
import tomllib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trio_culler._rules import structure_rules
from trio_culler._toml import TomlUnsupported, rules_as_toml, toml_value

# What a rule holds once structured: names, numbers of seconds, booleans, and user_options, whose values are
# whatever the operator's JSON or Python held (but null: see test_a_null_is_shown_as_json_not_as_toml).
names = st.text(min_size=1, max_size=12).filter(lambda text: not any("\ud800" <= c <= "\udfff" for c in text))
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    names,
    st.just(""),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3), max_leaves=8
)
rules = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "users": st.lists(names, min_size=1, max_size=3),
            "groups": st.lists(names, min_size=1, max_size=3),
            "servers": st.lists(names | st.just(""), min_size=1, max_size=3),
            "admin": st.booleans(),
            "user_options": st.dictionaries(names, values, min_size=1, max_size=3),
            "timeout": st.integers(min_value=0, max_value=10**9) | st.floats(min_value=0, max_value=1e9),
            "cull": st.booleans(),
        },
    ),
    max_size=4,
)


@given(rules)
def test_tomllib_reads_back_what_was_written(table: list[dict[str, Any]]) -> None:
    text = rules_as_toml(table)
    assert tomllib.loads(text) == ({"rules": table} if table else {})


@given(st.floats(allow_nan=True))
def test_every_float_reads_back(number: float) -> None:
    read = tomllib.loads(f"x = {toml_value(number)}")["x"]
    assert read == number or (math.isnan(read) and math.isnan(number))


def test_the_rules_of_a_config_as_the_operator_writes_them() -> None:
    structured = structure_rules(
        [
            {"groups": ["overnight"], "timeout": 86400},
            {"users": ["vip-*", "svc backup"], "cull": False},
            {"user_options": {"profile": 'gpu "large"', "gpus": 2}, "timeout": 900.5, "max_age": 14400},
            {"servers": ["", "scratch-*"], "remove": True},
        ]
    )
    assert rules_as_toml(rule.as_dict() for rule in structured) == (
        "[[rules]]\n"
        'groups = ["overnight"]\n'
        "timeout = 86400\n"
        "\n"
        "[[rules]]\n"
        'users = ["vip-*", "svc backup"]\n'
        "cull = false\n"
        "\n"
        "[[rules]]\n"
        'user_options = { profile = "gpu \\"large\\"", gpus = 2 }\n'
        "timeout = 900.5\n"
        "max_age = 14400\n"
        "\n"
        "[[rules]]\n"
        'servers = ["", "scratch-*"]\n'
        "remove = true\n"
    )


def test_control_characters_and_odd_keys_are_escaped() -> None:
    assert toml_value({"a b": "line\nbreak\x00\x7f\u2028"}) == '{ "a b" = "line\\nbreak\\u0000\\u007F\u2028" }'
    odd = {"a b": "line\nbreak\x00\x7f\u2028"}
    assert tomllib.loads("x = " + toml_value(odd))["x"] == odd


def test_a_null_is_shown_as_json_not_as_toml() -> None:
    text = rules_as_toml([{"users": ["a"], "cull": False}, {"user_options": {"profile": None}, "timeout": 60}])
    assert text == (
        '[[rules]]\nusers = ["a"]\ncull = false\n\n'
        '# rules[1], as JSON (TOML has no null):\n# {"user_options": {"profile": null}, "timeout": 60}\n'
    )
    assert tomllib.loads(text) == {"rules": [{"users": ["a"], "cull": False}]}
    for unsupported in (None, 2**64, "\ud800", object()):
        try:
            toml_value(unsupported)
        except TomlUnsupported:
            continue
        raise AssertionError(f"{unsupported!r} was written")
