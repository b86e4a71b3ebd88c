"""The package as operators install it: ``pip install ./trio-culler-notice`` put a labextension and a server
extension in the environment, both enabled, of one version, built from this tree's TypeScript; the page's
wording passes its own tests under Node; and neither this package nor the culler imports the other."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent
REPO = HERE.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
VERSION = json.loads((HERE / "package.json").read_text())["version"]


def jupyter(*args: str) -> str:
    """A ``jupyter`` command of this environment, its output without colours."""
    command = Path(sys.executable).with_name("jupyter")
    result = subprocess.run([str(command), *args], capture_output=True, text=True, timeout=120, check=True)
    return ANSI.sub("", result.stdout + result.stderr)


def test_labextension_list_shows_it_enabled() -> None:
    output = jupyter("labextension", "list")
    assert re.search(
        rf"^\s+trio-culler-notice v{re.escape(VERSION)} enabled OK \(python, trio-culler-notice\)$", output, re.M
    ), output


def test_server_extension_list_shows_it_enabled() -> None:
    output = jupyter("server", "extension", "list")
    assert re.search(r"^\s+trio_culler_notice enabled$", output, re.M), output
    assert re.search(rf"^\s+trio_culler_notice {re.escape(VERSION)} OK$", output, re.M), output


def test_one_version_everywhere() -> None:
    installed = Path(sysconfig.get_path("data")) / "share/jupyter/labextensions/trio-culler-notice"
    assert version("trio-culler-notice") == VERSION
    assert json.loads((installed / "package.json").read_text())["version"] == VERSION


def test_the_installed_labextension_is_this_trees_build() -> None:
    """What pip installed is what src/ builds to now: a TypeScript edit that did not reach the wheel (a
    skipped, stale build) fails here."""
    installed = Path(sysconfig.get_path("data")) / "share/jupyter/labextensions/trio-culler-notice/static"
    built = HERE / "trio_culler_notice/labextension/static"
    if not built.is_dir():
        pytest.fail(f"{built} is missing: pip install ./trio-culler-notice builds it in the tree")
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in built.iterdir())
    newest_source = max(p.stat().st_mtime for p in (HERE / "src").iterdir())
    assert all(p.stat().st_mtime >= newest_source for p in built.iterdir()), "src/ is newer than its build"


def test_the_pages_wording_passes_its_tests_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: the package's build needs it too")
    if not (HERE / "lib/notice.js").exists():
        pytest.fail("lib/notice.js is missing: pip install ./trio-culler-notice compiles it")
    result = subprocess.run(
        [
            node,
            "--experimental-detect-module",
            "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON",
            "--test",
            "test/notice.test.mjs",
        ],
        cwd=HERE,
        env={**os.environ, "TZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.M)
    assert passed is not None, result.stdout
    assert int(passed.group(1)) >= 10
    assert re.search(r"^# fail 0$", result.stdout, re.M)


def imported_modules(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_neither_package_imports_the_other() -> None:
    assert "trio_culler" not in imported_modules(HERE / "trio_culler_notice")
    assert "trio_culler_notice" not in imported_modules(REPO / "trio_culler")
    # The control: the scan does see imports.
    assert "tornado" in imported_modules(HERE / "trio_culler_notice")
