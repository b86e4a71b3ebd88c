"""Every structured field a log call of the culler passes reaches ``--log-format=json``.

The JSON formatter copies an allow-list, :data:`trio_culler._logging.LOG_FIELDS`, so that logging's own record
attributes (``msg``, ``args``, ``pathname``...) and whatever a library puts on its records stay out of the line.
The price of an allow-list is that a field a log call adds and the list forgets is dropped without a word: the
pass line's ``started`` was, for a while. This test reads the package's source and finds, for every
``log.<level>(..., extra=...)``, the names of the fields it passes, following the ways the code builds them:

- a dict literal, ``{**fields, "error": ...}`` included;
- a local name: its assignments, ``fields["x"] = ...`` and ``fields.update({...})`` in the same function, and the
  keys a package function it is handed to stores into it (``_stop_server`` adds ``matched_rule``);
- a function's parameter: the arguments its callers in the package pass (``log_event(event, fields, ...)``);
- a call of a package function or method: the dicts it returns (``decision_fields(...)``,
  ``report.log_fields()``).

Anything else (a key that is not a string literal, a dict from outside the package, ``**kwargs`` into a log
call) fails the test with its place in the source, rather than pass unchecked: extend the resolver, or build
the fields one of the ways above. Reading the source, not records, checks the log calls no test reaches (an
error path, a DEBUG line) as well as the others.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import trio_culler
from trio_culler._logging import LOG_FIELDS, JsonFormatter

PACKAGE = Path(trio_culler.__file__).parent
ROOT = PACKAGE.parent
#: The methods of logging.Logger (and LoggerAdapter) that take ``extra``.
LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "log"})
#: What a dict handed to one of these cannot gain keys from.
NOT_MUTATING = frozenset({"dict", "len", "sorted", "list", "repr", "str", "print", "isinstance"})

Function = ast.FunctionDef | ast.AsyncFunctionDef


class Unresolved(Exception):
    """A way of building log fields the resolver does not follow: said with its place in the source."""


@attrs.frozen
class LogCall:
    where: str
    keys: frozenset[str]


class Source:
    """The package's modules, parsed once: its functions by name, and each node's enclosing function."""

    def __init__(self, package: Path) -> None:
        self.trees: dict[str, ast.Module] = {}
        self.functions: dict[str, list[Function]] = {}
        self.enclosing: dict[ast.AST, Function | None] = {}
        self.module_of: dict[ast.AST, str] = {}
        for path in sorted(package.rglob("*.py")):
            name = str(path.relative_to(package.parent))
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=name)
            self.trees[name] = tree
            self._index(tree, None, name)

    def _index(self, node: ast.AST, function: Function | None, module: str) -> None:
        for child in ast.iter_child_nodes(node):
            self.enclosing[child] = function
            self.module_of[child] = module
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(child.name, []).append(child)
                self._index(child, child, module)
            else:
                self._index(child, function, module)

    def where(self, node: ast.AST) -> str:
        return f"{self.module_of.get(node, '?')}:{getattr(node, 'lineno', '?')}"

    def calls(self) -> Iterator[ast.Call]:
        for tree in self.trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    yield node

    def own_nodes(self, function: Function) -> Iterator[ast.AST]:
        """The nodes of ``function``'s body, not of the functions nested in it."""
        return (node for node in ast.walk(function) if self.enclosing.get(node) is function)


def _callee_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _assigned_to(node: ast.AST, name: str) -> ast.expr | None:
    """What ``node`` assigns to the local ``name``, if it is such an assignment (plain, annotated, augmented)."""
    if isinstance(node, ast.Assign) and any(
        isinstance(target, ast.Name) and target.id == name for target in node.targets
    ):
        return node.value
    if isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
        # ``fields |= {...}`` adds keys as an assignment does.
        return node.value
    return None


def _literal_key(key: ast.expr, where: str) -> str:
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return key.value
    raise Unresolved(f"{where}: a log field named by {ast.unparse(key)}")


def _parameters(function: Function) -> list[str]:
    arguments = function.args
    return [arg.arg for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]]


def _argument_for(call: ast.Call, function: Function, parameter: str) -> ast.expr | None:
    """The expression ``call`` passes to ``function``'s ``parameter`` (None: it passes none, the default)."""
    for keyword in call.keywords:
        if keyword.arg == parameter:
            return keyword.value
        if keyword.arg is None:
            raise Unresolved(f"**{ast.unparse(keyword.value)} passed to {function.name}")
    positional = [arg.arg for arg in [*function.args.posonlyargs, *function.args.args]]
    # A method called as ``obj.method(...)`` gets ``self`` (or ``cls``) implicitly.
    if isinstance(call.func, ast.Attribute) and positional[:1] in (["self"], ["cls"]):
        positional = positional[1:]
    if parameter in positional:
        index = positional.index(parameter)
        if any(isinstance(arg, ast.Starred) for arg in call.args[: index + 1]):
            raise Unresolved(f"*args passed to {function.name}")
        if index < len(call.args):
            return call.args[index]
    return None


class FieldResolver:
    def __init__(self, source: Source) -> None:
        self.source = source
        self._following: set[tuple[int, str]] = set()

    def log_calls(self) -> list[LogCall]:
        found = []
        for call in self.source.calls():
            if not (isinstance(call.func, ast.Attribute) and call.func.attr in LOG_METHODS):
                continue
            for keyword in call.keywords:
                if keyword.arg is None:
                    raise Unresolved(f"{self.source.where(call)}: **{ast.unparse(keyword.value)} into a log call")
                if keyword.arg == "extra":
                    scope = self.source.enclosing.get(call)
                    keys = self.keys_of(keyword.value, scope, call)
                    found.append(LogCall(self.source.where(call), frozenset(keys)))
        return found

    def keys_of(self, expr: ast.expr, scope: Function | None, at: ast.AST) -> set[str]:
        """The string keys of the dict ``expr`` evaluates to, in ``scope``."""
        if isinstance(expr, ast.Dict):
            keys: set[str] = set()
            for key, value in zip(expr.keys, expr.values, strict=True):
                if key is None:
                    keys |= self.keys_of(value, scope, at)
                else:
                    keys.add(_literal_key(key, self.source.where(at)))
            return keys
        if isinstance(expr, ast.Constant) and expr.value is None:
            return set()
        if isinstance(expr, ast.Name) and scope is not None:
            return self.keys_of_name(expr.id, scope, at)
        if isinstance(expr, ast.Call):
            return self.keys_returned(expr, at)
        if isinstance(expr, ast.IfExp):
            return self.keys_of(expr.body, scope, at) | self.keys_of(expr.orelse, scope, at)
        if isinstance(expr, ast.DictComp) and len(expr.generators) == 1:
            # ``{key: payload[key] for key in ("user", "server")}``: the keys are the literal names iterated.
            loop = expr.generators[0]
            if (
                isinstance(loop.target, ast.Name)
                and isinstance(expr.key, ast.Name)
                and expr.key.id == loop.target.id
                and isinstance(loop.iter, ast.Tuple | ast.List)
                and not loop.ifs
            ):
                return {_literal_key(name, self.source.where(at)) for name in loop.iter.elts}
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
            # ``fields | {"x": ...}``: a dict union has the keys of both sides.
            return self.keys_of(expr.left, scope, at) | self.keys_of(expr.right, scope, at)
        raise Unresolved(f"{self.source.where(at)}: cannot follow log fields {ast.unparse(expr)}")

    def keys_of_name(self, name: str, scope: Function, at: ast.AST) -> set[str]:
        marker = (id(scope), name)
        if marker in self._following:
            return set()
        self._following.add(marker)
        try:
            keys = self.keys_stored(name, scope)
            bound = False
            for node in self.source.own_nodes(scope):
                value = _assigned_to(node, name)
                if value is not None:
                    keys |= self.keys_of(value, scope, node)
                    bound = True
            if name in _parameters(scope):
                keys |= self.keys_from_callers(scope, name)
                bound = True
            if not bound:
                raise Unresolved(f"{self.source.where(at)}: cannot tell where log fields {name} come from")
            return keys
        finally:
            self._following.discard(marker)

    def keys_stored(self, name: str, scope: Function) -> set[str]:
        """The keys ``scope`` adds to the dict it calls ``name``: item assignments, ``update``, ``setdefault``,
        and what a package function it hands the dict to stores into it."""
        keys: set[str] = set()
        for node in self.source.own_nodes(scope):
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id == name:
                    keys.add(_literal_key(node.slice, self.source.where(node)))
            elif isinstance(node, ast.Call):
                keys |= self._keys_stored_by_call(node, name, scope)
        return keys

    def _keys_stored_by_call(self, call: ast.Call, name: str, scope: Function) -> set[str]:
        passed = [*call.args, *(keyword.value for keyword in call.keywords)]
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == name:
            if func.attr == "update":
                return set().union(*(self.keys_of(arg, scope, call) for arg in call.args)) | {
                    keyword.arg for keyword in call.keywords if keyword.arg is not None
                }
            if func.attr == "setdefault":
                return {_literal_key(call.args[0], self.source.where(call))}
            return set()
        if not any(isinstance(arg, ast.Name) and arg.id == name for arg in passed):
            return set()
        callee = _callee_name(call)
        if callee in LOG_METHODS or callee in NOT_MUTATING:
            return set()
        keys: set[str] = set()
        for function in self.source.functions.get(callee or "", []):
            for parameter in _parameters(function):
                argument = _argument_for(call, function, parameter)
                if isinstance(argument, ast.Name) and argument.id == name:
                    marker = (id(function), f"stores:{parameter}")
                    if marker not in self._following:
                        self._following.add(marker)
                        try:
                            keys |= self.keys_stored(parameter, function)
                        finally:
                            self._following.discard(marker)
        return keys

    def keys_from_callers(self, function: Function, parameter: str) -> set[str]:
        keys: set[str] = set()
        callers = [call for call in self.source.calls() if _callee_name(call) == function.name]
        if not callers:
            raise Unresolved(f"{self.source.where(function)}: {function.name}() has no caller to take {parameter} from")
        for call in callers:
            argument = _argument_for(call, function, parameter)
            if argument is not None:
                keys |= self.keys_of(argument, self.source.enclosing.get(call), call)
        return keys

    def keys_returned(self, call: ast.Call, at: ast.AST) -> set[str]:
        callee = _callee_name(call)
        if callee == "dict" and isinstance(call.func, ast.Name):
            scope = self.source.enclosing.get(call)
            keys = {keyword.arg for keyword in call.keywords if keyword.arg is not None}
            for value in [*call.args, *(keyword.value for keyword in call.keywords if keyword.arg is None)]:
                keys |= self.keys_of(value, scope, at)
            return keys
        functions = self.source.functions.get(callee or "", [])
        if not functions:
            raise Unresolved(f"{self.source.where(at)}: log fields from {ast.unparse(call)}, not a package function")
        keys = set()
        for function in functions:
            for node in self.source.own_nodes(function):
                if isinstance(node, ast.Return) and node.value is not None:
                    keys |= self.keys_of(node.value, function, node)
        return keys


@pytest.fixture(scope="module")
def log_calls() -> list[LogCall]:
    return FieldResolver(Source(PACKAGE)).log_calls()


def test_every_field_a_log_call_passes_reaches_the_json_line(log_calls: list[LogCall]) -> None:
    missing: dict[str, list[str]] = {}
    for call in log_calls:
        for name in sorted(call.keys - set(LOG_FIELDS)):
            missing.setdefault(name, []).append(call.where)
    for places in missing.values():
        places.sort(key=lambda where: (where.split(":")[0], int(where.split(":")[1])))
    assert not missing, (
        "log calls pass fields that trio_culler._logging.LOG_FIELDS lacks, so --log-format=json drops them; add "
        "each to LOG_FIELDS and to the README's JSON fields (## Logs and metrics): "
        + "; ".join(f"{name!r} (at {', '.join(places)})" for name, places in sorted(missing.items()))
    )


def test_the_resolver_follows_each_way_the_culler_builds_its_fields(log_calls: list[LogCall]) -> None:
    """Not vacuous: the log calls are found, and a field that only each way of building fields reaches is."""
    assert len(log_calls) >= 50
    found = set().union(*(call.keys for call in log_calls))
    assert "startup_error" not in found  # values are not keys
    reached_by = {
        "event": "a dict literal",
        "kept_at": "{**fields, ...} of a parameter",
        "judged_started": "an item assigned to the caller's dict (stop_server)",
        "matched_rule": "an item assigned to a parameter (_stop_server)",
        "signal": "an item assigned in the function returning the dict (decision_fields)",
        "started": "a method's returned dict literal (PassReport.log_fields)",
        "warning_id": "a parameter's caller's dict (log_event from _emit)",
        "credential_failure": "{**fields, ...} of a local",
    }
    assert {name: why for name, why in reached_by.items() if name not in found} == {}


def test_every_listed_field_is_one_the_culler_passes(log_calls: list[LogCall]) -> None:
    """The list says what the JSON lines can carry: a name no log call passes any more misleads its readers."""
    found = set().union(*(call.keys for call in log_calls))
    assert sorted(set(LOG_FIELDS) - found) == []
    assert len(set(LOG_FIELDS)) == len(LOG_FIELDS)


def _readme_json_fields() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Logs and metrics", 1)[1].split("\n## ", 1)[0]
    # From the paragraph that introduces the JSON format to the end of its list of fields.
    fields = section.split("`--log-format=json` writes", 1)[1].split("\nOne event is one line", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", fields))


def test_every_json_field_is_documented() -> None:
    assert sorted(set(LOG_FIELDS) - _readme_json_fields()) == []


def _resolve_snippet(code: str, tmp_path: Path) -> list[LogCall]:
    package = tmp_path / "snippet_package"
    package.mkdir(parents=True)
    (package / "mod.py").write_text(code, encoding="utf-8")
    return FieldResolver(Source(package)).log_calls()


def test_the_resolver_refuses_what_it_cannot_follow(tmp_path: Path) -> None:
    """A way of building fields it does not know fails the test instead of passing unchecked."""
    cases = {
        "def f(key):\n    log.info('x', extra={key: 1})\n": "named by key",
        "def f(fields):\n    fields[name] = 1\n    log.info('x', extra=fields)\n\nf({})\n": "named by name",
        "import os\ndef f():\n    log.info('x', extra=dict(os.environ))\n": "cannot follow",
        "def f():\n    log.info('x', extra=make())\n": "not a package function",
        "def f(**kw):\n    log.info('x', **kw)\n": "into a log call",
        "def f(fields):\n    log.info('x', extra=fields)\n": "no caller",
        "def f():\n    log.info('x', extra=fields)\n": "cannot tell where",
        "def f(d, names):\n    log.info('x', extra={k: d[k] for k in names})\n": "cannot follow",
        "def f(d):\n    log.info('x', extra={k: 1 for k in ('a', 'b') if d})\n": "cannot follow",
    }
    for number, (code, complaint) in enumerate(cases.items()):
        with pytest.raises(Unresolved, match=complaint):
            _resolve_snippet(code, tmp_path / str(number))


def test_the_resolver_follows_a_dict_through_helpers(tmp_path: Path) -> None:
    code = (
        "def base(user):\n"
        "    fields = {'user': user}\n"
        "    fields.update({'from_update': 1})\n"
        "    return fields\n"
        "def add(fields):\n"
        "    fields['added_by_helper'] = 1\n"
        "def emit(fields):\n"
        "    log.info('x', extra={**fields, 'literal': 1} if fields else {'either': 1})\n"
        "def caller():\n"
        "    fields = base('u')\n"
        "    fields['stored'] = 2\n"
        "    fields |= {'or_assigned': 3}\n"
        "    fields.setdefault('defaulted', 4)\n"
        "    add(fields)\n"
        "    emit(fields)\n"
        "def union(payload):\n"
        "    picked = {key: payload[key] for key in ('picked_a', 'picked_b')}\n"
        "    log.info('y', extra=picked | {'unioned': 1})\n"
    )
    call, union = _resolve_snippet(code, tmp_path)
    assert union.keys == {"picked_a", "picked_b", "unioned"}
    assert call.keys == {
        "user",
        "from_update",
        "added_by_helper",
        "stored",
        "or_assigned",
        "defaulted",
        "literal",
        "either",
    }


def test_the_json_line_carries_the_listed_fields_and_nothing_else() -> None:
    """What the list is for: each listed field reaches the line, a name it lacks (logging's own attributes, a
    library's) does not."""
    record = logging.LogRecord("trio_culler", logging.INFO, __file__, 1, "Culling server %s", ("alice",), None)
    for number, name in enumerate(LOG_FIELDS):
        setattr(record, name, number)
    record.library_field = "from a library"
    entry = json.loads(JsonFormatter().format(record))
    assert entry == {
        "time": entry["time"],
        "level": "info",
        "logger": "trio_culler",
        "message": "Culling server alice",
        **{name: number for number, name in enumerate(LOG_FIELDS)},
    }
