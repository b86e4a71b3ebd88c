"""Build this project's container image with podman, and run it without a container runtime.

podman builds with ``--isolation=chroot``: many machines (this one, CI runners inside containers) refuse crun and
runc the cgroups and rlimits they set, so no container can be started there. The image then runs by ``chroot``
into its root filesystem (``podman image mount``, read-only) as the user its config names, with its
environment, working directory and entry point: what a container engine would do, minus the namespaces.

Everything lives in a podman store of its own (``--root``/``--runroot`` under a temporary directory), so the tests
neither see nor touch the machine's own images, and leave nothing behind. No registry is contacted: the base image
is imported from a root filesystem tarball (debian_base.py), and every build runs with ``--pull=never``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The host's CA certificates, for pip inside the build: it then reaches PyPI exactly as pip outside does (a
# TLS-inspecting proxy's CA included), and the image keeps only its base's certificates.
HOST_CERTS = Path("/etc/ssl/certs")

BUILD_TIMEOUT = 600.0


def cannot_build() -> str | None:
    """Why podman cannot build and run the image here, or None when it can (as far as tools go)."""
    for tool, package in (("podman", "podman"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test.sh installs it on Debian: apt-get install {package})"
    if os.geteuid() != 0:
        return "mmdebstrap's root mode and running the image by chroot need root"
    return None


@dataclass(frozen=True)
class Podman:
    """podman on a store of its own."""

    root: Path
    runroot: Path

    def command(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot), *args]

    def run(
        self, *args: str, timeout: float = 120.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run podman; raise with its output when it fails."""
        done = subprocess.run(
            self.command(*args),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            output = done.stdout[-3000:] + done.stderr[-3000:]
            raise PodmanError(f"podman {' '.join(args[:2])} exited {done.returncode}:\n{output}")
        return done

    def inspect(self, image: str) -> dict[str, Any]:
        (found,) = json.loads(self.run("image", "inspect", image).stdout)
        return dict(found)

    def history(self, image: str) -> list[dict[str, Any]]:
        return list(json.loads(self.run("image", "history", "--no-trunc", "--format=json", image).stdout))

    def mount(self, image: str) -> Path:
        return Path(self.run("image", "mount", image).stdout.strip())

    def remove_store(self) -> None:
        """Unmount what is mounted, then delete the store; a mount left by a failed build is unmounted too."""
        subprocess.run(self.command("image", "unmount", "--all"), capture_output=True, check=False, timeout=60)
        for base in (self.root, self.runroot):
            remove_tree(base)


class PodmanError(RuntimeError):
    pass


def import_base(podman: Podman, tarball: Path, tag: str) -> None:
    """Import a root filesystem tarball as an image, with the PATH Docker's Debian images set (a tarball has none)."""
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    podman.run("import", f"--change=ENV PATH={path}", str(tarball), tag, timeout=BUILD_TIMEOUT)


def remove_tree(path: Path) -> None:
    """Delete ``path``, unmounting first whatever is mounted below it (a podman store's overlay mounts)."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False, timeout=60)
    shutil.rmtree(path, ignore_errors=True)


def probe(podman: Podman, workdir: Path) -> str | None:
    """Whether podman can build at all here (storage driver, chroot isolation): None, or why not."""
    context = workdir / "probe"
    context.mkdir()
    (context / "probe.txt").write_text("probe\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY probe.txt /probe.txt\n")
    try:
        podman.run("build", "--isolation=chroot", "--pull=never", "--tag=localhost/probe", str(context), timeout=120)
    except (PodmanError, subprocess.TimeoutExpired) as error:
        return f"podman cannot build here: {error}"
    return None


def build_image(
    podman: Podman, context: Path, *, base: str, tag: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Build ``context``'s Dockerfile on ``base`` as the README says, with the host's CA certificates mounted."""
    return podman.run(
        "build",
        "--isolation=chroot",
        "--network=host",
        "--pull=never",
        f"--build-arg=BASE_IMAGE={base}",
        f"--volume={HOST_CERTS}:{HOST_CERTS}:ro",
        f"--tag={tag}",
        str(context),
        timeout=BUILD_TIMEOUT,
        env=env,
    )


@dataclass(frozen=True)
class ImageConfig:
    """What a container engine reads from an image to start it."""

    uid: int
    gid: int
    env: dict[str, str]
    entrypoint: list[str]
    workdir: str

    @classmethod
    def read(cls, inspected: Mapping[str, Any]) -> ImageConfig:
        config = inspected["Config"]
        user, _, group = str(config.get("User", "")).partition(":")
        # Numeric, so that no /etc/passwd of the image has to be trusted (Kubernetes' runAsNonRoot checks the same).
        assert user.isdigit(), f"the image's user is not a numeric uid: {config.get('User')!r}"
        # With no group an engine takes the user's from the image's /etc/passwd, or 0: the image names its own.
        assert group.isdigit(), f"the image's group is not a numeric gid: {config.get('User')!r}"
        env = dict(item.partition("=")[::2] for item in config.get("Env") or [])
        return cls(
            uid=int(user),
            gid=int(group),
            env=env,
            entrypoint=list(config.get("Entrypoint") or []),
            workdir=config.get("WorkingDir") or "/",
        )


@dataclass(frozen=True)
class ImageRun:
    returncode: int
    stdout: str
    stderr: str
    #: The process's real, effective, saved and filesystem uids, as the kernel had them (/proc/PID/status).
    uids: tuple[int, ...]
    gids: tuple[int, ...]

    def describe(self) -> str:
        return f"exited {self.returncode}\n--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"


def home_of(root: Path, uid: int) -> str:
    """The uid's home directory in the image's /etc/passwd, as engines set HOME; ``/`` without an entry."""
    for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5]
    return "/"


def run_entrypoint(
    root: Path,
    config: ImageConfig,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> ImageRun:
    """Run the image's entry point with ``args`` inside ``root``, as its uid and gid with no supplementary groups,
    in its working directory, with its environment plus ``env`` (and nothing of this process's)."""
    environment = {"HOME": home_of(root, config.uid), **config.env, **(env or {})}

    def enter_image() -> None:
        os.chroot(root)
        os.chdir(config.workdir)
        os.setgroups([])
        os.setgid(config.gid)
        os.setuid(config.uid)

    # The program is looked up on the image's PATH after the chroot, as an engine does.
    process = subprocess.Popen(
        [*config.entrypoint, *args],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # preexec_fn, because the chroot must come before dropping root and Popen's user= drops it first. (It
        # is unsafe only where other threads may hold locks at fork time; these tests start none.)
        preexec_fn=enter_image,
    )
    # Popen returns once the program was executed; until it is waited for, its status stays readable (as a
    # zombie's, if it has already ended).
    status = Path(f"/proc/{process.pid}/status").read_text(encoding="utf-8")
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    fields = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    uids, gids = (tuple(int(value) for value in fields[name]) for name in ("Uid", "Gid"))
    return ImageRun(process.returncode, stdout, stderr, uids=uids, gids=gids)
