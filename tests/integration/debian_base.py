"""A Debian root filesystem for the container tests' base image, made by mmdebstrap from Debian's packages (no
image registry is needed), and where the tests build: in memory when there is room.

The root filesystem depends only on the Debian suite and the package list, not on this project, so it is kept as a
tarball in the user's cache directory and reused for a week: a repeated run imports it in seconds instead of
installing Debian again, and a week later it is made afresh, so that the test goes on vouching for a base that can
still be built from today's Debian. Delete ``~/.cache/trio-culler-tests`` to make it now.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from .container_tools import BUILD_TIMEOUT, remove_tree

# Debian 12: its python3 is 3.11, the oldest Python pyproject.toml allows, so the image tests the floor.
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the Dockerfile needs of a base: python3 with its venv module, CA certificates for an https hub, and
# groupadd/useradd (passwd) for the culler's user. The "essential" variant adds only Debian's Essential packages.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    f"--include={','.join(BASE_PACKAGES)}",
    # A throw-away root filesystem: no fsync after every file, no documentation.
    "--dpkgopt=force-unsafe-io",
    *(
        f"--dpkgopt=path-exclude={pattern}"
        for pattern in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
    ),
)
BASE_MAX_AGE = 7 * 24 * 3600.0

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trio-culler-tests"
SHM = Path("/dev/shm")
SCRATCH_PREFIX = "trio-culler-podman-"


def _in_memory_room(needed: int) -> bool:
    """Whether /dev/shm is a usable tmpfs with ``needed`` bytes free. mmdebstrap runs dpkg in its chroot (no
    noexec), and a podman store there builds about twice as fast as on a loaded disk and is deleted in a blink."""
    try:
        stat = os.statvfs(SHM)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize >= needed and not stat.f_flag & os.ST_NOEXEC


def base_tarball() -> Path:
    """The cached root filesystem tarball, made by mmdebstrap when missing or older than ``BASE_MAX_AGE``."""
    key = hashlib.sha256(json.dumps([DEBIAN_SUITE, DEBIAN_MIRROR, MMDEBSTRAP_OPTIONS]).encode()).hexdigest()[:12]
    tarball = CACHE_DIR / f"debian-{DEBIAN_SUITE}-{key}.tar"
    try:
        if time.time() - tarball.stat().st_mtime < BASE_MAX_AGE:
            return tarball
    except FileNotFoundError:
        pass
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = CACHE_DIR / f".{os.getpid()}-{tarball.name}"  # mmdebstrap writes a tarball for a name ending in .tar
    env = dict(os.environ)
    if _in_memory_room(2 * 1024**3):
        env["TMPDIR"] = str(SHM)
    try:
        done = subprocess.run(
            ["mmdebstrap", *MMDEBSTRAP_OPTIONS, DEBIAN_SUITE, str(partial), DEBIAN_MIRROR],
            env=env,
            # Without a terminal on stdin, mmdebstrap would read its sources.list from it.
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mmdebstrap exited {done.returncode}:\n{done.stderr[-4000:]}")
        # Atomic: a session running beside this one reads a whole tarball or none.
        partial.replace(tarball)
    finally:
        partial.unlink(missing_ok=True)
    for stale in CACHE_DIR.glob(f"debian-{DEBIAN_SUITE}-*.tar"):
        if stale != tarball:
            stale.unlink(missing_ok=True)
    return tarball


def scratch_directory(fallback: Path) -> Path:
    """A directory for a session's podman store: in /dev/shm when it has room for one (about half a gigabyte,
    with a wide margin), else ``fallback``. What a killed session left in /dev/shm is removed first, since
    memory, unlike pytest's temporary directories, is not cleaned up for us."""
    if not _in_memory_room(4 * 1024**3):
        return fallback
    for leftover in SHM.glob(f"{SCRATCH_PREFIX}*"):
        owner = leftover.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            remove_tree(leftover)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=SHM))
