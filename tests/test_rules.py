"""The rule table: structuring (one line naming the rule's index and key), matching (first match wins, pure),
and the properties the decisions keep under rules."""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trio_culler import Action, Config, ConfigError, Policy, Server, User, decide_server, decide_user
from trio_culler._decide import server_idle_time
from trio_culler._forecast import cull_time
from trio_culler._models import structure_user
from trio_culler._options import load_config_file, load_rules_file
from trio_culler._rules import MissingFieldError, Rule, RuleTable, effective_policy, structure_rules

from .support.decisions import BASE_POLICY, README_EXAMPLE, H, ready
from .support.strategies import NOW, durations, policies, rule_users, rules, servers, users

# --- Structuring ---------------------------------------------------------------------------------------------


def test_the_readme_example_structures() -> None:
    table = structure_rules(README_EXAMPLE)
    assert [rule.as_dict() for rule in table] == README_EXAMPLE
    assert table[0].users == ("vip-*", "svc-backup")
    assert table[2].user_options == {"profile": "gpu"}


@pytest.mark.parametrize(
    ("rules_value", "message"),
    [
        ([{"users": ["a"], "timeout": "600"}], "rules[0].timeout: expected a number of seconds, got str"),
        ([{"users": ["a"]}, {"users": ["b"], "timout": 5}], "rules[1]: unknown key timout"),
        ([{"users": "vip-*"}], "rules[0].users: expected a list, got str"),
        ([{"users": []}], "rules[0].users: an empty list matches nothing"),
        ([{"users": ["ok"]}, {"users": ["x", "[z-a]"]}], "rules[1].users[1]: user-name glob '[z-a]' cannot match"),
        ([{"users": [""]}], "rules[0].users[0]: an empty user-name glob matches nothing"),
        ([{"timeout": 5}], "rules[0]: a rule needs at least one match key"),
        ([{"users": ["a"], "cull": "false"}], "rules[0].cull: expected true or false, got str"),
        ([{"users": ["a"], "cull": 0}], "rules[0].cull: expected true or false, got int"),
        ([{"users": ["a"], "max_age": -1}], "rules[0].max_age: expected a number of seconds >= 0, not -1"),
        ([{"users": ["a"], "timeout": True}], "rules[0].timeout: expected a number of seconds, got bool"),
        ([{"user_options": {}}], "rules[0].user_options: an empty table matches nothing"),
        ([{"user_options": ["profile"]}], "rules[0].user_options: expected a table"),
        ([{"groups": ["x", 3]}], "rules[0].groups[1]: expected a group name (string), got int"),
        ([{"admin": "yes"}], "rules[0].admin: expected true or false, got str"),
        (["users=a"], "rules[0]: expected a table of keys, got str"),
        ({"users": ["a"]}, "expected a list of rules, got dict"),
    ],
)
def test_a_bad_rule_is_one_line_naming_its_index_and_key(rules_value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        structure_rules(rules_value, source="c.IdleCuller.rules")
    text = str(caught.value)
    assert text.startswith("c.IdleCuller.rules: ")
    assert message in text
    assert "\n" not in text


def test_every_problem_is_named_on_the_same_line() -> None:
    with pytest.raises(ConfigError) as caught:
        structure_rules([{"users": ["a"], "timeout": "x"}, {"groups": [], "remove": 1}])
    text = str(caught.value)
    assert "rules[0].timeout" in text
    assert "rules[1].groups" in text
    assert "rules[1].remove" in text
    assert "\n" not in text


def test_config_structures_rules_and_refuses_bad_ones() -> None:
    config = Config(api_token="t", rules=README_EXAMPLE)
    assert len(config.rules) == 4
    assert config.public_dict()["rules"] == README_EXAMPLE
    with pytest.raises(ConfigError, match=r"c\.IdleCuller\.rules: rules\[0\]\.servers"):
        Config(api_token="t", rules=[{"servers": "scratch-*"}])


def test_the_readme_examples_are_the_same_rules(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Rules per user, group, server and profile", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S)
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert python is not None
    assert toml is not None
    config = tmp_path / "culler_config.py"
    config.write_text(python.group(1), encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text(toml.group(1), encoding="utf-8")
    from_python = load_config_file(str(config), required=True)["rules"]
    assert structure_rules(from_python) == load_rules_file(str(rules)) == structure_rules(README_EXAMPLE)


def test_toml_and_json_files(tmp_path: Path) -> None:
    toml = tmp_path / "rules.toml"
    toml.write_text(
        """
[[rules]]
users = ["vip-*", "svc-backup"]
cull = false

[[rules]]
groups = ["overnight"]
timeout = 86400

[[rules]]
user_options = { profile = "gpu" }
timeout = 900
max_age = 14400

[[rules]]
servers = ["scratch-*"]
timeout = 600
remove = true
""",
        encoding="utf-8",
    )
    assert [rule.as_dict() for rule in load_rules_file(str(toml))] == README_EXAMPLE
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps({"rules": README_EXAMPLE}), encoding="utf-8")
    assert load_rules_file(str(as_json)) == load_rules_file(str(toml))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(README_EXAMPLE), encoding="utf-8")
    assert load_rules_file(str(bare)) == load_rules_file(str(toml))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("r.toml", '[[rules]]\nusers = ["a"]\ntimeout = "x"\n', "rules[0].timeout: expected a number of seconds"),
        ("r.toml", '[[rule]]\nusers = ["a"]\n', "unknown top-level key rule"),
        ("r.toml", "[[rules]\n", "--rules-file"),
        ("r.json", '{"rules": [{"users": ["a"], "extra": 1}]}', "rules[0]: unknown key extra"),
        ("r.json", "{", "--rules-file"),
        ("r.json", '"rules"', "expected a table with a 'rules' array"),
    ],
)
def test_bad_rules_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules_file(str(path))
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_rules_file(str(tmp_path / "nope.toml"))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_rules_file(str(binary))


def _write_both(tmp_path: Path, rules: bytes, config: bytes) -> tuple[str, str]:
    (tmp_path / "rules.toml").write_bytes(rules)
    (tmp_path / "culler_config.py").write_bytes(config)
    return str(tmp_path / "rules.toml"), str(tmp_path / "culler_config.py")


def test_the_config_file_and_the_rules_file_are_read_the_same_way(tmp_path: Path) -> None:
    # One reader for both files the operator writes: the same wording for each failure, the file named first.
    bom = b"\xef\xbb\xbf"
    rules, config = _write_both(
        tmp_path, bom + b'[[rules]]\nusers = ["a"]\ntimeout = 60\n', bom + b"c.IdleCuller.timeout = 60\n"
    )
    # A leading byte-order mark (Windows editors write one) is not part of the text.
    assert load_rules_file(rules) == (Rule(users=("a",), timeout=60),)
    assert load_config_file(config, required=True) == {"timeout": 60}
    # A byte that is not UTF-8, named by its offset in the file, BOM counted.
    rules, config = _write_both(tmp_path, bom + b"# caf\xe9\n", bom + b"# caf\xe9\n")
    assert _errors_reading(rules, config) == [
        f"--rules-file {rules}: not UTF-8 text (byte 8: invalid continuation byte)",
        f"{config}: not UTF-8 text (byte 8: invalid continuation byte)",
    ]
    # A file that cannot be read (a directory here).
    assert _errors_reading(str(tmp_path), str(tmp_path)) == [
        f"--rules-file {tmp_path}: cannot read it: Is a directory",
        f"{tmp_path}: cannot read it: Is a directory",
    ]


def _errors_reading(rules: str, config: str) -> list[str]:
    errors = []
    for load in (lambda: load_rules_file(rules), lambda: load_config_file(config, required=True)):
        with pytest.raises(ConfigError) as caught:
            load()
        errors.append(str(caught.value))
    return errors


# --- Matching ------------------------------------------------------------------------------------------------


def _oracle_matches(rule: Rule, user: User, server: Server | None) -> bool:
    """An independent reading of the rules' semantics as the README states them, rule by rule."""
    if rule.users is not None and not any(fnmatch.fnmatchcase(user.name, glob) for glob in rule.users):
        return False
    if rule.groups is not None and not set(rule.groups) & set(user.groups or ()):
        return False
    if rule.admin is not None and user.admin != rule.admin:
        return False
    if server is None:
        return rule.servers is None and rule.user_options is None
    if rule.servers is not None and not any(fnmatch.fnmatchcase(server.name, glob) for glob in rule.servers):
        return False
    if rule.user_options is not None:
        options = server.user_options or {}
        return all(key in options and options[key] == value for key, value in rule.user_options.items())
    return True


@given(st.lists(rules(), max_size=6), rule_users(), policies())
def test_the_first_matching_rule_decides(table: list[Rule], user: User, base: Policy) -> None:
    compiled = RuleTable(table, base)
    for server in user.servers.values():
        expected = next((i for i, rule in enumerate(table) if _oracle_matches(rule, user, server)), None)
        matched = compiled.for_server(user, server)
        assert matched.index == expected
        if expected is None:
            assert matched.policy == base
            assert matched.label == "global options"
        else:
            assert matched.rule == table[expected]
            assert matched.policy == effective_policy(base, table[expected])
            assert matched.label.startswith(f"rules[{expected}] (")
    expected_user = next((i for i, rule in enumerate(table) if _oracle_matches(rule, user, None)), None)
    assert compiled.for_user(user).index == expected_user


@given(st.lists(rules(), max_size=3), rules(), st.lists(rules(), max_size=3), rule_users(), policies(), durations)
def test_an_exempting_rule_is_never_overridden(
    before: list[Rule], exempting: Rule, after: list[Rule], user: User, base: Policy, later: timedelta
) -> None:
    # Earlier rules that cannot match this user, then an exempting rule that matches it (whatever else it
    # says), then anything: no later rule, no time, no arbiter verdict, no kind toggle culls or deletes.
    before = [attrs.evolve(rule, users=("nobody-*",)) for rule in before]
    exempting = attrs.evolve(exempting, users=(user.name,), groups=None, admin=None, cull=False)
    if exempting.is_server_rule:
        exempting = attrs.evolve(exempting, servers=None, user_options=None)
    long_idle = Server(
        name="x-idle", ready=True, url="/u/x/", started=NOW - 1000 * H, last_activity=NOW - 999 * H, user_options={}
    )
    user = attrs.evolve(user, servers={**user.servers, "x-idle": long_idle}, created=NOW - 2000 * H)
    table = RuleTable([*before, exempting, *after], base)
    for server in user.servers.values():
        matched = table.for_server(user, server)
        assert matched.index == len(before)
        for now in (NOW, NOW + later, NOW + 1000 * H):
            for verdict in (None, True):
                decision = decide_server(server, policy=matched.policy, now=now, arbiter_says_cull=verdict)
                assert decision.action is Action.KEEP
        assert cull_time(server, policy=matched.policy) is None
    matched_user = table.for_user(user)
    assert matched_user.index == len(before)
    for now in (NOW, NOW + 1000 * H):
        assert decide_user(user, policy=matched_user.policy, now=now, servers_left=0).action is Action.KEEP
    # The long-idle server (which the global options may well cull) is under the exemption too.
    assert table.for_server(user, long_idle).policy.exempt


@given(users(), policies(), st.none() | st.booleans())
def test_with_no_rules_every_decision_is_todays(user: User, base: Policy, verdict: bool | None) -> None:
    table = RuleTable([], base)
    assert not table
    for server in user.servers.values():
        assert table.for_server(user, server).policy is base
        assert decide_server(
            server, policy=table.for_server(user, server).policy, now=NOW, arbiter_says_cull=verdict
        ) == (decide_server(server, policy=base, now=NOW, arbiter_says_cull=verdict))
    assert table.for_user(user).policy is base
    assert table.may_cull_users is base.cull_users


@given(st.lists(rules(), min_size=1, max_size=6), rule_users(), policies())
def test_a_rule_never_culls_a_server_more_recently_active_than_its_timeout(
    table: list[Rule], user: User, base: Policy
) -> None:
    compiled = RuleTable(table, base)
    for server in user.servers.values():
        matched = compiled.for_server(user, server)
        policy = matched.policy
        decision = decide_server(server, policy=policy, now=NOW)
        inactive, age = server_idle_time(server, NOW)
        if decision.acts and decision.code == "idle":
            assert inactive is not None
            assert inactive >= policy.timeout
            if matched.rule is not None and matched.rule.timeout is not None:
                assert inactive.total_seconds() >= matched.rule.timeout
        if inactive is not None and inactive < policy.timeout:
            # Only a hard lifetime may stop a server that was active within its timeout.
            assert not decision.acts or (policy.max_age is not None and age is not None and age >= policy.max_age)


@given(servers(), policies(), durations)
def test_cull_time_is_when_decide_server_starts_culling(server: Server, policy: Policy, step: timedelta) -> None:
    # A timestamp in the future (clocks out of step) counts as "now" when deciding; cull_time has no now.
    assume(all(t is None or t <= NOW for t in (server.started, server.last_activity)))
    due = cull_time(server, policy=policy)
    acts_now = decide_server(server, policy=policy, now=NOW).acts
    if due is None:
        assert not decide_server(server, policy=policy, now=NOW + 10_000 * H).acts
        return
    at, rule = due.at, due.code
    if at > NOW:
        assert not acts_now
    else:
        assert acts_now
    later = max(at, NOW) + step
    decision = decide_server(server, policy=policy, now=later)
    assert decision.acts
    assert decision.code in ("idle", "max_age")
    if rule == "max_age":
        assert policy.max_age is not None


def test_rules_on_the_readme_example() -> None:
    table = RuleTable(structure_rules(README_EXAMPLE), BASE_POLICY)

    def user(name: str, *servers: Server, groups: tuple[str, ...] = (), admin: bool = False) -> User:
        return User(name=name, admin=admin, groups=groups, servers={s.name: s for s in servers})

    def server(name: str = "", **options: str) -> Server:
        return Server(name=name, ready=True, url="/u/", user_options=options, started=NOW, last_activity=NOW)

    vip = user("vip-7", server(profile="gpu"), groups=("overnight",))
    assert table.for_server(vip, vip.servers[""]).index == 0
    assert table.for_server(vip, vip.servers[""]).policy.exempt
    night = user("nora", server(profile="gpu"), groups=("overnight",))
    assert table.for_server(night, night.servers[""]).policy.timeout == timedelta(seconds=86400)
    gpu = user("gus", server(profile="gpu"))
    assert table.for_server(gpu, gpu.servers[""]).policy.timeout == timedelta(seconds=900)
    assert table.for_server(gpu, gpu.servers[""]).policy.max_age == timedelta(seconds=14400)
    scratch = user("sam", server("scratch-1"), server("lab"))
    assert table.for_server(scratch, scratch.servers["scratch-1"]).policy.remove_named_servers
    assert table.for_server(scratch, scratch.servers["lab"]).index is None
    # A user decision never takes a server rule.
    assert table.for_user(gpu).index is None


def test_a_rule_with_max_age_0_means_no_limit() -> None:
    # As the README says: 0 is "none", even under a global --max-age; never "culled at once".
    table = RuleTable(structure_rules([{"users": ["kept"], "max_age": 0}]), attrs.evolve(BASE_POLICY, max_age=H))
    old_but_active = ready(idle=timedelta(minutes=5), age=10 * H)
    for name, action in (("kept", Action.KEEP), ("other", Action.STOP)):
        user = User(name=name, servers={"": old_but_active})
        matched = table.for_server(user, old_but_active)
        assert (matched.policy.max_age is None) is (name == "kept")
        assert decide_server(old_but_active, policy=matched.policy, now=NOW).action is action, name


def test_user_globs_match_whole_names_and_a_group_rule_any_of_its_groups() -> None:
    table = RuleTable(
        structure_rules(
            [
                {"users": ["[ab]*"], "timeout": 1},
                {"users": ["vip-*"], "timeout": 2},
                {"groups": ["a", "b"], "timeout": 3},
            ]
        ),
        BASE_POLICY,
    )

    def index(name: str, *groups: str) -> int | None:
        return table.for_user(User(name=name, groups=groups)).index

    assert [index("alice"), index("bob"), index("carol")] == [0, 0, None]
    assert [index("vip-1"), index("xvip-1"), index("vip")] == [1, None, None]
    assert [index("zed", "b"), index("zed", "a"), index("zed", "c"), index("zed")] == [2, 2, None, None]


def test_user_options_compare_as_json() -> None:
    table = RuleTable(structure_rules([{"user_options": {"gpu": True}, "timeout": 5}]), BASE_POLICY)
    one = Server(name="", user_options={"gpu": 1})
    yes = Server(name="", user_options={"gpu": True, "other": "x"})
    user = User(name="u", servers={"": one})
    assert table.for_server(user, one).index is None
    assert table.for_server(user, yes).index == 0


def test_cull_true_culls_a_kind_the_global_options_spare() -> None:
    base = attrs.evolve(BASE_POLICY, cull_named_servers=False)
    policy = (
        RuleTable(structure_rules([{"servers": ["scratch-*"], "cull": True}]), base)
        .for_server(User(name="u"), Server(name="scratch-1"))
        .policy
    )
    assert policy.cull_named_servers
    idle = Server(name="scratch-1", ready=True, url="/u/", last_activity=NOW - 2 * H, started=NOW - 3 * H)
    assert decide_server(idle, policy=policy, now=NOW).action is Action.STOP
    assert decide_server(idle, policy=base, now=NOW).action is Action.KEEP


# --- Fields a token may not see ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "model", "scope"),
    [
        ({"groups": ["overnight"]}, {"name": "u", "admin": False, "servers": {}}, "read:users:groups"),
        ({"admin": True}, {"name": "u", "groups": [], "servers": {}}, "read:users:name"),
        (
            {"user_options": {"profile": "gpu"}},
            {"name": "u", "servers": {"": {"name": "", "ready": True, "url": "/u/"}}},
            "read:servers",
        ),
    ],
)
def test_a_hidden_field_a_rule_needs_is_a_missing_scope(
    rule: dict[str, Any], model: dict[str, Any], scope: str
) -> None:
    table = RuleTable(structure_rules([rule]), BASE_POLICY)
    user = structure_user(model)
    with pytest.raises(MissingFieldError) as caught:
        table.check_visible(user)
    assert caught.value.scope == scope
    assert scope in str(caught.value)


def test_visible_fields_pass_the_check() -> None:
    table = RuleTable(structure_rules([{"groups": ["g"]}, {"admin": True}, {"user_options": {"p": 1}}]), BASE_POLICY)
    user = structure_user(
        {"name": "u", "admin": False, "groups": [], "servers": {"": {"name": "", "user_options": None}}}
    )
    assert user.groups == ()
    assert user.servers[""].user_options == {}
    table.check_visible(user)
    assert RuleTable(structure_rules([{"users": ["*"]}]), BASE_POLICY).needed_fields == frozenset()
