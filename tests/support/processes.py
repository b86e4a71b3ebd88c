"""Child processes for the tests that must see the real command line: the culler, and a FakeHub of its own
(``tests/support/hubproc.py``).

A background process's output (stdout and stderr merged, in order) is read by a thread that stamps every line
with ``time.monotonic()`` on arrival, so a test can wait for a line with a deadline and compare when things
happened with when it sent a signal. Every wait is bounded; leaving a context kills whatever is still running,
and every pipe is closed (the suite turns a ResourceWarning into an error). Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any

import attrs
import httpx

__all__ = [
    "REPO",
    "STEP_TIMEOUT",
    "TOKEN",
    "ChildProcess",
    "HubProcess",
    "Line",
    "child_env",
    "run_culler",
    "running_culler",
    "running_hub",
    "running_process",
]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "ops-test-token-3f9c2a"
#: How long any one subprocess step may take before the test gives up on it.
STEP_TIMEOUT = 30.0
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def child_env(token: str = TOKEN, **extra: str) -> dict[str, str]:
    """The environment of a child process: this one's without proxy variables (a CI proxy must not capture
    loopback traffic) and without any ``JUPYTERHUB_`` setting, with ``token`` as the API token (none when
    empty), unbuffered output (lines arrive as they are written), and this checkout first on the path (so that
    ``python -m trio_culler`` runs the code under test, from any directory); then ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in PROXY_VARIABLES and not key.startswith("JUPYTERHUB_")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if token:
        env["JUPYTERHUB_API_TOKEN"] = token
    env.update(extra)
    return env


@attrs.frozen
class Line:
    at: float  # time.monotonic() when it was read
    text: str


@attrs.define
class ChildProcess:
    """A process running in the background, its output collected line by line as it is written."""

    popen: subprocess.Popen[str]
    lines: list[Line] = attrs.Factory(list)
    changed: threading.Condition = attrs.Factory(threading.Condition)
    _reader: threading.Thread | None = None

    def _read(self, stream: IO[str]) -> None:
        for text in stream:
            with self.changed:
                self.lines.append(Line(time.monotonic(), text.rstrip("\n")))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def mark(self) -> int:
        """Where the output is now: pass it as ``since`` to look only at what comes after."""
        with self.changed:
            return len(self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = STEP_TIMEOUT, *, since: int = 0) -> Line:
        """The first line from ``since`` on (already read or still to come) that satisfies ``predicate``;
        AssertionError after ``timeout`` seconds, or once the process ended without it, with what it said."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[since:]:
                    if predicate(line.text):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no such line within {timeout} s; got:\n{self.text()}")
                self.changed.wait(min(left, 0.1))

    def wait_until(self, check: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
        """Return once ``check()`` is true, checking again as each line arrives; AssertionError after
        ``timeout`` seconds, or once the process ended with ``check()`` still false."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader is not None and not self._reader.is_alive()):
                    raise AssertionError(f"not so within {timeout} s; got:\n{self.text()}")
                self.changed.wait(min(left, 0.1))

    def wait_for_match(self, pattern: str, timeout: float = STEP_TIMEOUT, *, since: int = 0) -> re.Match[str]:
        """The match of the first line from ``since`` on in which ``pattern`` is found (searched)."""
        regex = re.compile(pattern)
        line = self.wait_for(lambda text: regex.search(text) is not None, timeout, since=since)
        match = regex.search(line.text)
        assert match is not None
        return match

    def text(self) -> str:
        with self.changed:
            return "\n".join(line.text for line in self.lines)

    def events(self, *, since: int = 0) -> list[dict[str, Any]]:
        """The lines from ``since`` on that are JSON objects (what ``hubproc.py`` prints)."""
        with self.changed:
            return [json.loads(line.text) for line in self.lines[since:] if line.text.startswith("{")]

    def wait(self, timeout: float = STEP_TIMEOUT) -> int:
        """The exit status, once the rest of the output is read; AssertionError (after killing it) if the process
        is still running at ``timeout``."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(f"still running after {timeout} s; output:\n{self.text()}") from None
        if self._reader is not None:
            self._reader.join(5)
        return status

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STEP_TIMEOUT) -> int:
        """Send ``signum``, then wait for the exit status and the rest of the output."""
        self.popen.send_signal(signum)
        return self.wait(timeout)


@contextmanager
def running_process(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None) -> Iterator[ChildProcess]:
    """Run ``argv`` in the background for the block; killed on exit if the test did not end it."""
    popen = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert popen.stdout is not None
    child = ChildProcess(popen)
    child._reader = threading.Thread(target=child._read, args=(popen.stdout,), daemon=True)
    child._reader.start()
    try:
        yield child
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(10)
        child._reader.join(5)
        popen.stdout.close()


def running_culler(
    *args: str, token: str = TOKEN, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> AbstractContextManager[ChildProcess]:
    """``python -m trio_culler *args`` in the background, with :func:`child_env` and then ``env``. Run it in an
    empty directory (``cwd``): the culler reads a config file from where it runs."""
    return running_process([sys.executable, "-m", "trio_culler", *args], env=child_env(token, **(env or {})), cwd=cwd)


def run_culler(
    *args: str, token: str = TOKEN, env: Mapping[str, str] | None = None, cwd: Path, timeout: float = STEP_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``python -m trio_culler *args`` to completion, its stdout and stderr kept apart; ``cwd`` should be an
    empty directory (no config file)."""
    return subprocess.run(
        [sys.executable, "-m", "trio_culler", *args],
        cwd=cwd,
        env=child_env(token, **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


@attrs.frozen
class HubProcess:
    """A running ``hubproc.py``, and what it announced."""

    process: ChildProcess
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
        """What the hub saw so far (see hubproc.py)."""
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
    idle: float = 1.0,
    named: float = 0.0,
    stop_latency: float = 0.0,
    slow_stop_timeout: float | None = None,
    token: str = TOKEN,
    fail_users: Sequence[str] = (),
    names: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> Iterator[HubProcess]:
    """Start ``python -m tests.support.hubproc`` (see there for the options; ``names``: more idle users, any
    text) and yield it once it listens; SIGTERM it on exit."""
    argv = [
        sys.executable,
        "-m",
        "tests.support.hubproc",
        f"--users={users}",
        f"--idle={idle}",
        f"--named={named}",
        f"--stop-latency={stop_latency}",
        *([] if slow_stop_timeout is None else [f"--slow-stop-timeout={slow_stop_timeout}"]),
        *(f"--fail-user={name}" for name in fail_users),
        *(f"--name-json={json.dumps(name)}" for name in names),
        "--max-lifetime=300",
        *extra,
    ]
    with running_process(argv, env=child_env(token), cwd=REPO) as process:
        ready = json.loads(process.wait_for(lambda text: '"event": "ready"' in text).text)
        try:
            yield HubProcess(
                process=process,
                url=ready["url"],
                stats_url=ready["stats_url"],
                fail_url=ready["fail_url"],
                users=tuple(ready["users"]),
                servers=frozenset(ready["servers"]),
                idle=frozenset(ready["idle"]),
                idle_users=frozenset(ready["idle_users"]),
            )
        finally:
            process.stop(signal.SIGTERM)
