"""docs/security.md names the test that shows each of its claims; these tests keep the names true.

Every ``tests/<file>.py::<name>`` (and ``trio-culler-notice/tests/...``) the document names must be a test
function of that file that asserts something, so that a renamed or deleted test fails here instead of leaving
a claim without its evidence; and every regression test of the security review must be named in the document,
so that none of them is an attack the document forgot.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
#: A named test: the file (from the repository's root) and the function, in backquotes.
REFERENCE = re.compile(r"`((?:tests|trio-culler-notice/tests)/[\w/.-]+\.py)::(\w+)`")
#: Test files made for the document: each of their tests must be named in it.
SECURITY_TESTS = ("tests/test_attacks.py", "tests/test_threat_model.py", "tests/integration/test_token_powers.py")


def references() -> list[tuple[str, str]]:
    return sorted(set(REFERENCE.findall(DOC.read_text(encoding="utf-8"))))


@cache
def functions_of(path: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The test functions of a file, at module level or in a class, by name."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    in_classes = [item for top in tree.body if isinstance(top, ast.ClassDef) for item in top.body]
    for node in [*tree.body, *in_classes]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
            found[node.name] = node
    return found


def asserts(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a test checks anything itself: an ``assert``, ``pytest.raises``, or a helper named ``assert_*``."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "raises" or name.startswith("assert"):
                return True
    return False


def test_the_document_names_its_evidence() -> None:
    named = references()
    assert len(named) >= 100, f"only {len(named)} tests named: has the reference syntax changed?"
    files = {path for path, _name in named}
    for expected in (
        "tests/test_token_scope.py",
        "tests/test_status_web.py",
        "tests/integration/test_inspect_kernels.py",
        "tests/test_notices.py",
        "tests/test_warnings_state.py",
    ):
        assert expected in files


@pytest.mark.parametrize(("path", "name"), references(), ids=[f"{p}::{n}" for p, n in references()])
def test_every_named_test_exists_and_asserts(path: str, name: str) -> None:
    assert (ROOT / path).is_file(), f"docs/security.md names {path}, which does not exist"
    functions = functions_of(path)
    assert name in functions, f"docs/security.md names {path}::{name}, which {path} does not define"
    assert asserts(functions[name]), f"{path}::{name} asserts nothing"


@pytest.mark.parametrize("path", SECURITY_TESTS)
def test_every_test_of_the_review_is_in_the_document(path: str) -> None:
    named = {name for file, name in references() if file == path}
    missing = sorted(set(functions_of(path)) - named)
    assert not missing, f"docs/security.md does not name {path}::{missing}"


def test_nothing_is_left_to_be_checked() -> None:
    """What no test can show is listed, with why; nothing is left pending (a gap found, a feature to re-check):
    each point is in its party's or attack's section, with its test, or fixed."""
    text = DOC.read_text(encoding="utf-8")
    assert "## Not shown by a test" in text
    for pending in ("## Gaps found", "## To be checked", "to be checked when", "left to their owners"):
        assert pending.lower() not in text.lower(), pending


def test_the_readme_points_to_the_document() -> None:
    assert "(docs/security.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
