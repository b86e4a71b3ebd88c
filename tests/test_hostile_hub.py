"""The real command line against a hub that keeps the socket full: SIGTERM still stops it within the grace period.

The adversarial review found that the old client never yielded to trio while bytes were waiting, so against an
endless stream of ``100 Continue`` heads or of 1-byte chunks neither the request deadline nor SIGTERM could act
(only SIGKILL ended it). Every read of the new transport is a trio checkpoint. Here a loopback server in a thread
writes such a stream as fast as the culler reads it, the request deadline is far away (JUPYTERHUB_REQUEST_TIMEOUT
= 600 s), and SIGTERM must end the process, with status 0, within the grace period.

Bounds are generous (these are not benchmarks): a child needs about half a second just to import.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .support.processes import running_culler

TOKEN = "hostile-token-3c9e1f07d2"
SLACK = 5.0
GRACE = 2.0
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@contextmanager
def flooding_server(head: bytes, piece: bytes) -> Iterator[tuple[str, threading.Event]]:
    """A loopback server that answers each request head with ``head`` and then ``piece`` forever. Yields the API
    URL and an event set once a megabyte has gone out (the culler is reading the flood)."""
    listener = socket.create_server(("127.0.0.1", 0))
    flooding = threading.Event()
    stop = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                data = connection.recv(65536)
                if not data:
                    return
                request += data
            sent = 0
            try:
                connection.sendall(head)
                while not stop.is_set():
                    connection.sendall(piece)
                    sent += len(piece)
                    if sent > 1 << 20:
                        flooding.set()
            except OSError:
                return  # the culler closed the connection

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _address = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hub/api", flooding
    finally:
        stop.set()
        listener.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("head", "piece"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n" * 4096, id="1-byte chunks"
        ),
        pytest.param(b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 1024, id="100 Continue"),
    ],
)
def test_sigterm_stops_the_culler_within_the_grace_period(head: bytes, piece: bytes) -> None:
    with flooding_server(head, piece) as (url, flooding):
        args = [f"--url={url}", f"--grace-period={GRACE:g}", "--cull-every=3600"]
        with running_culler(*args, token=TOKEN, env={"JUPYTERHUB_REQUEST_TIMEOUT": "600"}) as culler:
            assert flooding.wait(30), culler.text()
            time.sleep(0.5)  # well into the flood (for 100 Continue: the culler is refusing and retrying)
            sent = time.monotonic()
            culler.popen.send_signal(signal.SIGTERM)
            status = culler.wait(GRACE + SLACK)
            took = time.monotonic() - sent
    assert status == 0, culler.text()
    assert took < GRACE + SLACK
