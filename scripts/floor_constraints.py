#!/usr/bin/env python3
"""Print a pip constraints file pinning every runtime dependency of pyproject.toml to its floor.

    python scripts/floor_constraints.py > floors.txt
    pip install -c floors.txt -e .

A floor is the version named by the ``>=`` (or ``==``, ``~=``) clause of each entry of ``[project].dependencies``;
an entry with no floor is an error, because then nothing says which oldest version the project claims to work
with. ``scripts/test.sh`` installs these floors into a second environment and runs the unit tests there, so a
floor in pyproject.toml is a version the tests passed with, not a guess.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def floors(pyproject: Path = PYPROJECT) -> list[str]:
    """``name==floor`` for each runtime dependency, in pyproject order."""
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = []
    for line in dependencies:
        requirement = Requirement(line)
        lowest = [s.version for s in requirement.specifier if s.operator in (">=", "==", "~=")]
        if len(lowest) != 1:
            raise SystemExit(f"{pyproject.name}: {line!r} needs exactly one lower bound (>=, == or ~=)")
        pins.append(f"{requirement.name}=={lowest[0]}")
    return pins


def main() -> None:
    sys.stdout.write("".join(f"{pin}\n" for pin in floors()))


if __name__ == "__main__":
    main()
