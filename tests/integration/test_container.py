"""The container image, built by podman from the project's Dockerfile on a Debian base, and run as an engine would
run it: its entry point, as its uid, in its environment, on its read-only root filesystem (container_tools.py
says how, without a container runtime).

The build context is a copy of this checkout cluttered the way a developer's or CI's folder is: a virtual
environment, VCS data with a credential, build output, the extension's node_modules, a token file, a config file
holding a token. The build also runs with a token in its environment. None of it may reach the image.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import trio_culler

from .container_tools import (
    ImageConfig,
    Podman,
    build_image,
    cannot_build,
    import_base,
    probe,
    remove_tree,
    run_entrypoint,
)
from .debian_base import DEBIAN_SUITE, base_tarball, scratch_directory
from .hubtools import IDLE_TIMEOUT, REPO_ROOT, HubAPI, HubProcess, sleep_until_idle, start_servers

pytestmark = pytest.mark.integration

#: Stands for a real token wherever one may lie around at build time; it must not be found in the image.
CANARY = f"canary-{secrets.token_hex(16)}"
#: Found in a file's name or path, it means the build took something it should have left out.
PLANTED = "planted-by-the-container-test"
#: The user the README promises.
CULLER_UID = 10001

# Copied from the checkout into the build context (as the checkout has them): everything but what is heavy and
# rebuilt anyway. The test then plants its own versions of these.
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv*", "node_modules", ".yarn", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
    ".hypothesis", "*.egg-info", ".work", "build", "dist",
)  # fmt: skip
# Relative path -> content: what lies in a working folder and must stay out of the image.
_CLUTTER = {
    ".git/config": f'[remote "origin"]\n\turl = https://x-access-token:{CANARY}@example.org/trio-culler.git\n',
    f".git/objects/{PLANTED}": CANARY,
    f".venv/lib/python3.11/site-packages/{PLANTED}.py": f"TOKEN = {CANARY!r}\n",
    ".venv/pyvenv.cfg": f"home = /usr/bin\ncommand = /usr/bin/python3 -m venv {REPO_ROOT}/.venv\n",
    f".venv-floors/{PLANTED}.txt": CANARY,
    ".env": f"JUPYTERHUB_API_TOKEN={CANARY}\n",
    "culler.token": CANARY,
    "idle_culler_config.py": f"c.IdleCuller.api_token = {CANARY!r}  # {PLANTED}\n",
    f"trio_culler/__pycache__/{PLANTED}.cpython-311.pyc": CANARY,
    f"trio_culler/{PLANTED}.token": CANARY,
    # Not ignored by .dockerignore: only the Dockerfile's own COPY list keeps these out.
    f"trio_culler/{PLANTED}.txt": CANARY,
    f"scratch/{PLANTED}.txt": CANARY,
    f"build/lib/trio_culler/{PLANTED}.py": f"TOKEN = {CANARY!r}\n",
    f"dist/{PLANTED}.whl": CANARY,
    f"trio-culler-notice/node_modules/{PLANTED}/index.js": f"// {CANARY}\n",
    f"trio-culler-notice/trio_culler_notice/labextension/{PLANTED}.js": f"// {CANARY}\n",
}


@dataclass(frozen=True)
class BuiltImage:
    podman: Podman
    tag: str
    root: Path  # the image's root filesystem, mounted read-only
    config: ImageConfig
    context: Path


def cluttered_context(destination: Path) -> Path:
    shutil.copytree(REPO_ROOT, destination, ignore=_NOT_COPIED, symlinks=True, dirs_exist_ok=True)
    for relative, content in _CLUTTER.items():
        path = destination / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return destination


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """A podman store of the session's own; skips where podman cannot build."""
    reason = cannot_build()
    if reason is not None:
        pytest.skip(f"the container image cannot be built here: {reason}")
    workdir = scratch_directory(tmp_path_factory.mktemp("podman"))
    store = Podman(root=workdir / "store", runroot=workdir / "run")
    try:
        reason = probe(store, workdir)
        if reason is not None:
            pytest.skip(reason)
        yield store
    finally:
        store.remove_store()
        remove_tree(workdir)


@pytest.fixture(scope="session")
def debian_base(podman: Podman) -> str:
    """A Debian base image with python3 and python3-venv, from Debian's packages (cached: see debian_base.py)."""
    tag = f"localhost/trio-culler-test-base:{DEBIAN_SUITE}"
    import_base(podman, base_tarball(), tag)
    return tag


@pytest.fixture(scope="session")
def image(podman: Podman, debian_base: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    context = cluttered_context(tmp_path_factory.mktemp("context"))
    tag = "localhost/trio-culler:test"
    # As an operator's shell on the hub's host might have it.
    build_env = {**os.environ, "JUPYTERHUB_API_TOKEN": CANARY}
    build_image(podman, context, base=debian_base, tag=tag, env=build_env)
    root = podman.mount(tag)
    return BuiltImage(podman, tag, root, ImageConfig.read(podman.inspect(tag)), context)


def mount_options(path: Path) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == str(path):
                return fields[3].split(",")
    raise AssertionError(f"{path} is not a mount point")


def test_the_image_runs_as_uid_10001_with_its_entry_point_the_culler(image: BuiltImage) -> None:
    config = image.config
    assert (config.uid, config.gid) == (CULLER_UID, CULLER_UID)
    assert config.entrypoint == ["trio-culler"]
    assert config.env["PATH"].startswith("/opt/trio-culler/bin:"), config.env
    assert "ro" in mount_options(image.root), "the culler runs on a read-only root filesystem"

    version = run_entrypoint(image.root, config, ["--version"])
    assert version.returncode == 0, version.describe()
    assert version.stdout.strip() == f"trio-culler {trio_culler.__version__}", "this checkout's culler"
    assert set(version.uids) == {CULLER_UID}, f"real, effective, saved and fs uid: {version.uids}"
    assert set(version.gids) == {CULLER_UID}, f"real, effective, saved and fs gid: {version.gids}"

    demo = run_entrypoint(image.root, config, ["--demo"])
    assert demo.returncode == 0, demo.describe()
    check = re.search(r"^Check: expected (\d+) servers culled \((\d+) idle past --timeout\)", demo.stdout, re.M)
    assert check, demo.describe()
    assert int(check.group(1)) == int(check.group(2)) > 0
    assert "Check: the culler did exactly that." in demo.stdout, demo.describe()
    assert set(demo.uids) == {CULLER_UID}


def test_one_pass_from_the_image_culls_the_idle_server_on_the_real_hub(
    image: BuiltImage, api: HubAPI, hub: HubProcess
) -> None:
    api.create_users(["ctr-idle", "ctr-active"])
    ready_at = start_servers(hub, [("ctr-idle", ""), ("ctr-active", "")])
    sleep_until_idle(ready_at, IDLE_TIMEOUT)
    api.post_activity("ctr-active", [""], user=False)

    # As `docker run -e JUPYTERHUB_API_TOKEN -e JUPYTERHUB_API_URL=... trio-culler --timeout=... --once` would.
    env = {"JUPYTERHUB_API_TOKEN": hub.culler_token, "JUPYTERHUB_API_URL": hub.api_url}
    run = run_entrypoint(image.root, image.config, ["--once", f"--timeout={IDLE_TIMEOUT}"], env=env, timeout=120)

    assert run.returncode == 0, run.describe()
    assert api.server_state("ctr-idle") == "stopped", run.describe()
    assert api.server_state("ctr-active") == "running", run.describe()
    assert set(run.uids) == {CULLER_UID}, "not root"
    assert hub.culler_token not in run.stdout + run.stderr


def _image_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every path in the image (``/``-rooted) with its lstat."""
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = Path(directory, name)
            yield "/" + path.relative_to(root).as_posix(), path.lstat()


def _source_files(context: Path) -> dict[int, dict[bytes, str]]:
    """The build context's files that the installed package does not contain, by size, then by content: the
    project's tests, docs, scripts, pyproject.toml, the Dockerfile, the planted clutter. (trio_culler/ is installed
    as is, and LICENSE into the package's metadata, so its text is no sign of a source tree wherever else it
    stands, e.g. beside the single-user extension; empty files say nothing.)"""
    found: dict[int, dict[bytes, str]] = {}
    license_text = (context / "LICENSE").read_bytes()
    for path in context.rglob("*"):
        relative = path.relative_to(context).as_posix()
        if path.is_symlink() or not path.is_file() or relative.startswith("trio_culler/"):
            continue
        content = path.read_bytes()
        if content and content != license_text:
            found.setdefault(len(content), {})[content] = relative
    return found


def test_nothing_secret_and_no_source_tree_is_baked_in(image: BuiltImage) -> None:
    canary = CANARY.encode()
    site_packages = re.compile(r"^/opt/trio-culler/lib/python3\.\d+/site-packages/")
    sources = _source_files(image.context)
    assert any(name.startswith("tests/integration/") for same_size in sources.values() for name in same_size.values())
    found_installed: set[str] = set()
    scanned = 0
    for path, status in _image_files(image.root):
        parts = path.split("/")
        assert PLANTED not in path, f"{path}: taken from the build context"
        assert ".git" not in parts, path
        assert not any(part.startswith(".venv") for part in parts), path
        assert "node_modules" not in parts, path
        if "trio_culler" in parts:
            assert site_packages.match(path), f"{path}: the package outside the installed copy"
        if path.endswith(("/trio_culler/cli.py", "/trio_culler/web/templates/status.html")):
            found_installed.add(path.rsplit("/trio_culler/", 1)[1])
        if path.startswith("/opt/trio-culler"):
            # The culler cannot rewrite its own code.
            assert status.st_uid == 0, f"{path} is owned by uid {status.st_uid}"
            assert stat.S_ISLNK(status.st_mode) or not status.st_mode & 0o022, f"{path} is writable by others"
        if stat.S_ISREG(status.st_mode):
            scanned += 1
            content = (image.root / path.lstrip("/")).read_bytes()
            assert canary not in content, f"{path} holds the build's token"
            copied = sources.get(len(content), {}).get(content)
            assert copied is None, f"{path} is the build context's {copied}: the source tree was baked in"
    assert found_installed == {"cli.py", "web/templates/status.html"}, "the package and its data are installed"
    assert scanned > 1000, f"only {scanned} files scanned: is the image's root filesystem mounted?"
    venv = (image.root / "opt/trio-culler/pyvenv.cfg").read_text()
    assert str(REPO_ROOT) not in venv, f"a host's virtual environment:\n{venv}"
    assert str(image.context) not in venv, f"a virtual environment from the build context:\n{venv}"

    # Nor in the image's metadata: its config (environment, labels) and the history of its layers.
    metadata = str(image.podman.inspect(image.tag)) + str(image.podman.history(image.tag))
    assert CANARY not in metadata
    assert "JUPYTERHUB_API_TOKEN" not in metadata
