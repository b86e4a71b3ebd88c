"""The Dockerfile and .dockerignore, read without a container engine: the promises the README makes of the image
that can be checked from the files alone, on any machine.

tests/integration/test_container.py builds the image with podman and runs it; where podman cannot build, these
still catch an image that would not build (a file the install needs ignored or not copied), would take the whole
build context, would run as root, would not stop on SIGTERM, or would ignore its base image argument.
(These tests once replayed the install step in a virtual environment, when no engine could build the image;
the real build covers that now, with the installed package's data and command line run inside the image.)
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import attrs

from .support.processes import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VENV = "/opt/trio-culler"


@attrs.frozen
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    argument: str  # continuation lines joined


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    result: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, argument = (pending + line).strip().partition(" ")
        result.append(Instruction(keyword.upper(), " ".join(argument.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def stages() -> tuple[list[Instruction], list[list[Instruction]]]:
    """The instructions before the first FROM, and each stage's (its FROM first)."""
    preamble: list[Instruction] = []
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            result.append([instruction])
        elif result:
            result[-1].append(instruction)
        else:
            preamble.append(instruction)
    return preamble, result


def project() -> dict[str, object]:
    return dict(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"])


# ------------------------------------------------------------------------------------------ .dockerignore


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) for each pattern, with Docker's meaning: ``**`` spans directories, ``*`` does not."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip().strip("/"))
        parts = []
        for piece in re.split(r"(\*\*/?)", pattern):
            if piece.startswith("**"):
                parts.append("(?:.*/)?" if piece.endswith("/") else ".*")
            else:
                parts.append(fnmatch.translate(piece).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*"))
        rules.append((negated, re.compile("".join(parts) + r"\Z")))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path, or one of its parent directories, decides."""
    parents = relative.split("/")
    candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    verdict = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def test_dockerignore_keeps_out_what_lies_in_a_working_folder() -> None:
    rules = _ignore_rules()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-floors/pyvenv.cfg",
        ".venv-3.13/bin/python",
        "trio-culler-notice/.venv/bin/python",
        "trio_culler/__pycache__/cli.cpython-311.pyc",
        "trio_culler.egg-info/PKG-INFO",
        "build/lib/trio_culler/cli.py",
        "dist/trio_culler-0.1.0-py3-none-any.whl",
        ".mypy_cache/3.11/cache.db",
        ".pytest_cache/v/cache/lastfailed",
        "node_modules/.package-lock.json",
        "trio-culler-notice/node_modules/typescript/package.json",
        "trio-culler-notice/.yarn/cache/x.zip",
        "trio-culler-notice/trio_culler_notice/labextension/static/remoteEntry.js",
        "trio-culler-notice/pyproject.toml",
        ".env",
        "deploy/.env",
        "culler.token",
        "idle_culler_config.py",
        "tests/test_cli.py",
        "benchmarks/RESULTS.md",
    ):
        assert ignored(path, rules), path
    for path in ("pyproject.toml", "README.md", "LICENSE", "trio_culler/cli.py", "trio_culler/py.typed"):
        assert not ignored(path, rules), path
    assert not ignored("trio_culler/web/templates/status.html", rules)


# ------------------------------------------------------------------------------------------ the Dockerfile


def test_the_base_image_is_an_argument_defaulting_to_a_slim_python_that_satisfies_requires_python() -> None:
    preamble, all_stages = stages()
    arguments = [instruction.argument for instruction in preamble if instruction.keyword == "ARG"]
    assert len(arguments) == 1, f"one ARG before the first FROM, the base image: {arguments}"
    name, _, default = arguments[0].partition("=")
    match = re.fullmatch(r"(?:docker\.io/library/)?python:3\.(\d+)-slim", default)
    assert match, f"the official slim Python image by default, not {default!r}"
    minimum = re.fullmatch(r">=\s*3\.(\d+)", str(project()["requires-python"]))
    assert minimum, project()["requires-python"]
    assert int(match.group(1)) >= int(minimum.group(1)), "the base satisfies requires-python"
    # Every stage on the same base: the virtual environment made in one runs on the other's interpreter.
    for stage in all_stages:
        assert stage[0].argument.split()[0] in (f"${{{name}}}", f"${name}"), stage[0]


def test_only_what_the_install_needs_is_copied_and_only_the_virtual_environment_reaches_the_image() -> None:
    *builds, final = stages()[1]
    (build,) = builds
    rules = _ignore_rules()
    copied: set[str] = set()
    for instruction in build:
        if instruction.keyword != "COPY":
            continue
        *sources, _destination = shlex.split(instruction.argument)
        for source in sources:
            assert not source.startswith("--"), f"a plain copy from the build context: {instruction}"
            assert source not in (".", "./", "*"), "never the whole build context: it holds whatever lies there"
            assert (REPO / source).exists(), f"{source} is copied but does not exist"
            assert not ignored(source, rules), f"{source} is copied but .dockerignore leaves it out"
            copied.add(source)
    readme, licenses = project()["readme"], project().get("license-files", [])
    assert isinstance(readme, str)
    assert isinstance(licenses, list)
    assert {"pyproject.toml", "trio_culler", readme, *licenses} <= copied, f"the install needs them: {copied}"
    installs = [i for i in build if i.keyword == "RUN" and "pip install" in i.argument]
    assert len(installs) == 1, installs
    assert f"{VENV}/bin/python -m pip install --no-cache-dir " in installs[0].argument, installs[0]

    final_copies = [instruction.argument for instruction in final if instruction.keyword in ("COPY", "ADD")]
    assert final_copies == [f"--from=build {VENV} {VENV}"], "the image gets the virtual environment, no source"


def test_the_image_runs_its_command_line_unprivileged_and_stops_on_sigterm() -> None:
    final = stages()[1][-1]
    keywords = [instruction.keyword for instruction in final]
    users = [instruction for instruction in final if instruction.keyword == "USER"]
    assert users, "a USER instruction: the culler must not run as root"
    uid, _, gid = users[-1].argument.partition(":")
    assert uid.isdigit(), "a numeric uid, so that Kubernetes' runAsNonRoot can check it"
    assert int(uid) == 10001, "the uid the README promises"
    assert gid.isdigit()
    assert int(gid) > 0
    assert "RUN" not in keywords[keywords.index("USER") :], "nothing runs after dropping privileges"

    environment: dict[str, str] = {}
    for instruction in final:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.argument):
                name, _, value = word.partition("=")
                environment[name] = value
    path = environment["PATH"].split(":")
    assert path[0] == f"{VENV}/bin", "the culler's virtual environment first"
    assert "" not in path, "an empty PATH entry would be the working directory"
    assert "$PATH" not in environment["PATH"], "a base imported from a tarball has no PATH to extend"

    (entrypoint,) = (instruction for instruction in final if instruction.keyword == "ENTRYPOINT")
    command = json.loads(entrypoint.argument)
    assert command == ["trio-culler"], "exec form, so the culler is PID 1 and receives the stop signal itself"
    scripts = project()["scripts"]
    assert isinstance(scripts, dict)
    assert "trio-culler" in scripts
    (stop,) = (instruction for instruction in final if instruction.keyword == "STOPSIGNAL")
    assert stop.argument == "SIGTERM"
    assert "CMD" not in keywords, "options come after the image name; a CMD would be replaced by them anyway"

    secret = re.compile(r"TOKEN|SECRET|PASSWORD", re.IGNORECASE)
    for instruction in instructions():
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            assert not secret.search(instruction.argument), f"nothing secret baked in: {instruction}"
