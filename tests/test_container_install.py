"""The Dockerfile, without a container engine (CI has none): its install step replayed in a fresh virtual
environment, from a build context made with its .dockerignore, and its runtime settings read from the file.

If the image would not build (a file the install needs is ignored, a dependency missing), or would run as root, or
would not stop on SIGTERM, one of these tests fails.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import attrs
import pytest

import trio_culler

from .support.processes import REPO, TOKEN, child_env, running_hub

pytestmark = pytest.mark.slow

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
INSTALL_TIMEOUT = 300


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


def only(keyword: str) -> list[Instruction]:
    return [instruction for instruction in instructions() if instruction.keyword == keyword]


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


def build_context(destination: Path) -> list[str]:
    """Copy what ``docker build .`` would send, honouring .dockerignore; returns the files copied."""
    rules = _ignore_rules()
    copied = []
    for directory, subdirectories, files in os.walk(REPO):
        base = Path(directory).relative_to(REPO)
        subdirectories[:] = [d for d in subdirectories if not ignored((base / d).as_posix(), rules)]
        for name in files:
            relative = (base / name).as_posix()
            if ignored(relative, rules):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target)
            copied.append(relative)
    return sorted(copied)


def test_dockerignore_matching() -> None:
    rules = _ignore_rules()
    for path in (".git/HEAD", ".venv/bin/python", "trio_culler/__pycache__/cli.cpython-311.pyc", "tests/x.pyc"):
        assert ignored(path, rules), path
    for path in ("pyproject.toml", "README.md", "LICENSE", "trio_culler/cli.py", "trio_culler/py.typed"):
        assert not ignored(path, rules), path


# ------------------------------------------------------------------------------------------ the Dockerfile


def test_dockerfile_runtime_settings() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (base,) = only("FROM")
    match = re.fullmatch(r"python:(3)\.(\d+)-slim", base.argument)
    assert match, f"a slim Python base, not {base.argument!r}"
    minimum = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert minimum, project["requires-python"]
    assert int(match.group(2)) >= int(minimum.group(1)), "the base satisfies requires-python"

    users = only("USER")
    assert users, "a USER instruction: the culler must not run as root"
    uid, _, gid = users[-1].argument.partition(":")
    assert uid.isdigit(), "a numeric uid, so that Kubernetes' runAsNonRoot can check it"
    assert int(uid) > 0, "not root"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    keywords = [instruction.keyword for instruction in instructions()]
    install = next(i for i, ins in enumerate(instructions()) if ins.keyword == "RUN" and "pip install" in ins.argument)
    assert keywords.index("USER") > install, "installed as root, run as the unprivileged user"
    assert "RUN" not in keywords[keywords.index("USER") :], "nothing runs after dropping privileges"

    (entrypoint,) = only("ENTRYPOINT")
    command = json.loads(entrypoint.argument)
    assert command == ["trio-culler"], "exec form, so the culler is PID 1 and receives the stop signal itself"
    assert "trio-culler" in project["scripts"]
    (stop,) = only("STOPSIGNAL")
    assert stop.argument == "SIGTERM"
    assert not only("CMD"), "options come after the image name; a CMD would be replaced by them anyway"

    secret = re.compile(r"TOKEN|SECRET|PASSWORD", re.IGNORECASE)
    for instruction in instructions():
        if instruction.keyword in ("ENV", "ARG"):
            assert not secret.search(instruction.argument), f"nothing secret baked in: {instruction}"


def replay_environment() -> dict[str, str]:
    """The ENV instructions' variables, as the RUN steps see them."""
    variables: dict[str, str] = {}
    for instruction in only("ENV"):
        for word in shlex.split(instruction.argument):
            name, _, value = word.partition("=")
            variables[name] = value
    return variables


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv into which the Dockerfile's install step ran, from a .dockerignore'd copy of the context."""
    root = tmp_path_factory.mktemp("container")
    workdirs = [instruction.argument for instruction in only("WORKDIR")]
    copies = only("COPY")
    assert [copy.argument for copy in copies] == [". ."], "the whole (filtered) context, into WORKDIR"
    steps = [instruction.argument for instruction in only("RUN") if "pip" in instruction.argument]
    assert len(steps) == 1, f"one pip step to replay, not {steps}"
    words = shlex.split(steps[0])
    assert words[:2] == ["pip", "install"], steps[0]
    assert not set(words) & {"&&", "||", ";", "|"}, "a single command, replayable as is"
    assert "--no-cache-dir" in words
    assert workdirs
    assert workdirs[0] == "/src"

    context = root / "src"
    files = build_context(context)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for needed in ["pyproject.toml", "trio_culler/__init__.py", project["readme"], *project.get("license-files", [])]:
        assert needed in files, f"{needed} is needed by the install, and .dockerignore leaves it out"
    assert not any(name.startswith((".git/", ".venv/")) or "__pycache__" in name for name in files)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT)
    python = venv / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(replay_environment())
    result = subprocess.run(
        [str(python), "-m", *words],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{steps[0]} failed:\n{result.stdout}\n{result.stderr}"
    return venv


def venv_env() -> dict[str, str]:
    return {key: value for key, value in child_env().items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_installed_command_runs(installed: Path, tmp_path: Path) -> None:
    program = installed / "bin" / "trio-culler"
    env = venv_env()
    origin = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import trio_culler; print(trio_culler.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(origin.stdout.strip()).is_relative_to(installed), "the installed copy, not this checkout"

    version = subprocess.run([str(program), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"trio-culler {trio_culler.__version__}"

    shown = subprocess.run(
        [str(program), "--show-config", "--timeout=3600", "--cull-users"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    config = json.loads(shown.stdout)
    assert (config["timeout"], config["cull_users"], config["api_token_set"]) == (3600, True, True)
    assert TOKEN not in shown.stdout

    # The status page's template is package data: it must be in the installed copy, not only in this checkout.
    rendered = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "from trio_culler.web._app import _templates; print(_templates().get_template('status.html').filename)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert Path(rendered.stdout.strip()).is_relative_to(installed)


def test_installed_command_culls(installed: Path, tmp_path: Path) -> None:
    """The image's entry point with the options a user would pass, the token and URL in the environment."""
    with running_hub(users=16, idle=0.5) as hub:
        env = {**venv_env(), "JUPYTERHUB_API_URL": hub.url}
        result = subprocess.run(
            [str(installed / "bin" / "trio-culler"), "--once", "--timeout=3600"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        stats = hub.stats()
    assert result.returncode == 0, result.stderr
    assert sorted(stats["stops_completed"]) == sorted(hub.idle)
