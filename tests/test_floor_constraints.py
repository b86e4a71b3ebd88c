"""scripts/floor_constraints.py: pyproject's floors as a constraints file, for the run at the lowest versions."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "floor_constraints.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("floor_constraints", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_runtime_dependency_is_pinned_to_its_floor() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True, timeout=60)
    pins = result.stdout.splitlines()
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(pins) == len(dependencies)
    assert "attrs==23.2" in pins
    assert "cattrs==24.1" in pins
    assert all("==" in pin and pin.split("==")[1][0].isdigit() for pin in pins)


def test_a_floor_is_the_lower_bound_even_beside_an_upper_one(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["httpx>=0.28,<0.29", "Trio_Util~=0.8.0", "h11==0.16"]\n')
    assert load_script().floors(pyproject) == ["httpx==0.28", "Trio_Util==0.8.0", "h11==0.16"]


@pytest.mark.parametrize("dependency", ["trio", "trio<1", "trio>=0.30,>=0.31"])
def test_a_dependency_without_exactly_one_floor_is_refused(tmp_path: Path, dependency: str) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\ndependencies = ["{dependency}"]\n')
    with pytest.raises(SystemExit, match="lower bound"):
        load_script().floors(pyproject)
