"""Child processes for the tests that must see the real command line: a FakeHub (``_hubproc.py``) and the culler.

Both are read by a thread per stream that stamps every line with ``time.monotonic()`` on arrival, so a test can
wait for a line with a deadline and compare when things happened with when it sent a signal. Every wait is
bounded; leaving the context kills whatever is still running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import attrs

__all__ = ["ChildProcess", "Line", "child_env", "run_culler", "run_hub"]

HUBPROC = Path(__file__).with_name("_hubproc.py")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@attrs.frozen
class Line:
    at: float  # time.monotonic() when it was read
    text: str


@attrs.define
class ChildProcess:
    popen: subprocess.Popen[str]
    lines: list[Line] = attrs.Factory(list)
    changed: threading.Condition = attrs.Factory(threading.Condition)

    def _read(self, stream: IO[str]) -> None:
        for text in stream:
            with self.changed:
                self.lines.append(Line(time.monotonic(), text.rstrip("\n")))
                self.changed.notify_all()

    def mark(self) -> int:
        """Where the output is now: pass it as ``since`` to look only at what comes after."""
        with self.changed:
            return len(self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, *, since: int = 0) -> Line:
        """The first line from ``since`` on (already read or still to come) that satisfies ``predicate``;
        AssertionError after ``timeout`` seconds, with what the process said so far."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[since:]:
                    if predicate(line.text):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._readers_alive()):
                    raise AssertionError(f"no such line within {timeout} s; got:\n{self.text()}")
                self.changed.wait(min(left, 0.1))

    def _readers_alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def text(self) -> str:
        with self.changed:
            return "\n".join(line.text for line in self.lines)

    def events(self, *, since: int = 0) -> list[dict[str, Any]]:
        """The lines from ``since`` on that are JSON objects (what ``_hubproc.py`` prints)."""
        found = []
        with self.changed:
            for line in self.lines[since:]:
                if line.text.startswith("{"):
                    found.append(json.loads(line.text))
        return found

    def wait(self, timeout: float) -> int:
        """The exit status; AssertionError (after killing it) if the process is still running at ``timeout``."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(f"still running after {timeout} s; output:\n{self.text()}") from None
        for thread in self._threads:
            thread.join(5)
        return status

    _threads: list[threading.Thread] = attrs.Factory(list)


def child_env(token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without proxy variables (a CI proxy must not capture loopback traffic), the
    token for the hub and the culler, and unbuffered output so lines arrive as they are written."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARIABLES}
    env.update(JUPYTERHUB_API_TOKEN=token, PYTHONUNBUFFERED="1")
    env.pop("JUPYTERHUB_API_URL", None)
    env.update(extra or {})
    return env


@contextmanager
def _child(
    argv: Sequence[str], env: Mapping[str, str], *, merge_stderr: bool, cwd: Path | None = None
) -> Iterator[ChildProcess]:
    popen = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    child = ChildProcess(popen)
    streams = [popen.stdout] if merge_stderr else [popen.stdout, popen.stderr]
    for stream in streams:
        assert stream is not None
        thread = threading.Thread(target=child._read, args=(stream,), daemon=True)
        thread.start()
        child._threads.append(thread)
    try:
        yield child
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(10)
        for stream in streams:
            assert stream is not None
            stream.close()
        for thread in child._threads:
            thread.join(5)


@contextmanager
def run_hub(token: str, *args: str) -> Iterator[tuple[ChildProcess, str]]:
    """Start ``_hubproc.py`` with ``args``; yields the process and the hub's API URL once it listens."""
    argv = [sys.executable, str(HUBPROC), "--max-lifetime", "120", *args]
    with _child(argv, child_env(token), merge_stderr=False) as hub:
        ready = hub.wait_for(lambda text: '"event": "ready"' in text, timeout=30)
        url = json.loads(ready.text)["url"]
        try:
            yield hub, url
        finally:
            hub.popen.terminate()
            hub.wait(15)


@contextmanager
def run_culler(
    token: str, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[ChildProcess]:
    """Start ``python -m trio_culler *args`` (stdout and stderr merged, in order)."""
    argv = [sys.executable, "-m", "trio_culler", *args]
    full_env = child_env(token, env)
    if cwd is not None:
        # Running from another directory: the package must still be importable.
        paths = [str(Path(__file__).parents[1]), full_env.get("PYTHONPATH", "")]
        full_env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    with _child(argv, full_env, merge_stderr=True, cwd=cwd) as culler:
        yield culler
