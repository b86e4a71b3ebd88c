"""Helpers for the operational tests: a hub process (tests/ops_hubproc.py) and the real CLI as a subprocess.

Everything binds 127.0.0.1 only. Processes are always waited for and their pipes closed, so that no
ResourceWarning escapes (the suite turns warnings into errors).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import attrs
import httpx

__all__ = [
    "REPO",
    "TOKEN",
    "BackgroundProcess",
    "HubProcess",
    "closed_port",
    "culler_env",
    "run_culler",
    "running_culler",
    "running_hub",
    "running_process",
]

REPO = Path(__file__).resolve().parent.parent
TOKEN = "ops-test-token-3f9c2a"
#: How long any one subprocess step may take before the test gives up on it.
STEP_TIMEOUT = 30.0


def culler_env(token: str = TOKEN, **extra: str) -> dict[str, str]:
    """The environment of a culler process: this one's, minus anything hub-related, plus the token.

    PYTHONPATH points at this checkout so that ``python -m trio_culler`` runs the code under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    if token:
        env["JUPYTERHUB_API_TOKEN"] = token
    env.update(extra)
    return env


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.frozen
class HubProcess:
    url: str
    stats_url: str
    fail_url: str
    users: tuple[str, ...]
    #: Every server: ``user`` for a default server, ``user/name`` for a named one.
    servers: frozenset[str]
    #: The servers idle for two hours or more (the others were active within a minute).
    idle: frozenset[str]
    #: Users all of whose servers are idle (what ``--cull-users`` deletes).
    idle_users: frozenset[str]

    def stats(self) -> dict[str, Any]:
        """What the hub saw so far (see tests/ops_hubproc.py)."""
        response = httpx.get(self.stats_url, timeout=10, trust_env=False)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def fail(self, user: str) -> None:
        """From now on, answer 500 to every DELETE about ``user``."""
        httpx.get(self.fail_url, params={"user": user}, timeout=10, trust_env=False).raise_for_status()


@contextmanager
def running_hub(
    *,
    users: int = 20,
    idle: float = 0.5,
    stop_latency: float = 0.0,
    named: float = 0.0,
    token: str = TOKEN,
    fail_users: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> Iterator[HubProcess]:
    """Start ``python -m tests.ops_hubproc`` and yield what it announced; SIGTERM it on exit."""
    argv = [
        sys.executable,
        "-m",
        "tests.ops_hubproc",
        f"--users={users}",
        f"--idle={idle}",
        f"--named={named}",
        f"--stop-latency={stop_latency}",
        f"--token={token}",
        *(f"--fail-user={name}" for name in fail_users),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = _readline_within(process.stdout, STEP_TIMEOUT)
            if not line:
                raise RuntimeError(f"the hub process exited ({process.wait(STEP_TIMEOUT)}) without announcing itself")
            info = json.loads(line)
            yield HubProcess(
                url=info["url"],
                stats_url=info["stats_url"],
                fail_url=info["fail_url"],
                users=tuple(info["users"]),
                servers=frozenset(info["servers"]),
                idle=frozenset(info["idle"]),
                idle_users=frozenset(info["idle_users"]),
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STEP_TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - only when the hub process hangs
                process.kill()
                process.wait()


def _readline_within(stream: IO[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"no line within {timeout} s") from None


def run_culler(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path, timeout: float = STEP_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``python -m trio_culler ARGS`` to completion; ``cwd`` should be an empty directory (no config file)."""
    return subprocess.run(
        [sys.executable, "-m", "trio_culler", *args],
        cwd=cwd,
        env=dict(culler_env() if env is None else env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class BackgroundProcess:
    """A process running in the background; its output (stdout and stderr together) is collected line by line
    as it is written."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        assert process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = STEP_TIMEOUT) -> re.Match[str]:
        """The first output line matching ``pattern`` (searched), waiting for it to be written."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))
                self._new_line.wait(min(remaining, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STEP_TIMEOUT) -> int:
        """Send ``sig``, then wait for the exit status and the rest of the output."""
        self.process.send_signal(sig)
        status = self.process.wait(timeout)
        self._reader.join(timeout)
        return status

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(STEP_TIMEOUT)


@contextmanager
def running_process(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> Iterator[BackgroundProcess]:
    """Run ``argv`` in the background for the block; killed on exit if the test did not stop it."""
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        background = BackgroundProcess(process)
        try:
            yield background
        finally:
            background.close()


def running_culler(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[BackgroundProcess]:
    """``python -m trio_culler ARGS`` in the background (its log is what the process writes)."""
    return running_process(
        [sys.executable, "-m", "trio_culler", *args], cwd=cwd, env=culler_env() if env is None else env
    )
