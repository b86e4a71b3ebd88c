"""A user's server answering the culler's inspection with whatever hurts most, over real loopback sockets.

Each case is a server scripted here (raw bytes on a trio socket: it must be able to say what no well-behaved
HTTP library would), inspected by a child process (``tests/hostile_inspection.py``) the way a pass inspects a
server, so that the child's peak RSS is the inspection's own. What must hold for every case: the inspection
fails with its kind (``unreadable`` for an answer that cannot be read within its bounds, ``timeout`` for one that
never ends), the event loop never stalls (its longest task step, and the longest late wake-up of a 10 ms
heartbeat), and the culler's memory barely moves.

The bounds are generous, for a shared machine, and still far below what the culler did before the answers were
bounded: 256 KiB of ``[{}, {}, ...]`` blocked its event loop for 5 to 13 seconds and raised its RSS from 32 to
378 MiB. ``pytest -s`` prints what each case measured.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_culler._inspect import MAX_ANSWER_BYTES
from trio_culler._notice import MAX_ANSWER_BYTES as NOTICE_MAX_ANSWER_BYTES

pytestmark = pytest.mark.slow  # a child process per case, and two cases wait out a 2 s deadline

ROOT = Path(__file__).resolve().parent.parent
#: The event loop's longest stall allowed while a hostile server answers (measured: tens of milliseconds).
MAX_STALL = 0.5
#: The culler's RSS growth allowed over one hostile inspection.
MAX_RSS_GROWTH_MIB = 50.0
#: --request-timeout in the child: the inspection's deadline is the shorter of it and INSPECT_TIMEOUT.
DEADLINE = 2.0

Answer = Callable[[trio.SocketStream], Awaitable[None]]


def head(length: int | None = None) -> bytes:
    """A 200 head; chunked when no ``length`` is given."""
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + b"\r\n"


def whole(body: bytes) -> Answer:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(head(len(body)) + body)

    return answer


async def huge_body(stream: trio.SocketStream) -> None:
    """A gibibyte announced, and sent for as long as the client reads."""
    await stream.send_all(head(2**30) + b"[")
    piece = b"{}," * 21_845
    while True:
        await stream.send_all(piece)


async def one_byte_chunks(stream: trio.SocketStream) -> None:
    """``[{},{},...`` in chunks of one byte each, sent as fast as the socket takes them."""
    await stream.send_all(head() + b"1\r\n[\r\n")
    piece = b"".join(b"1\r\n%c\r\n" % byte for byte in b"{},") * 4096
    while True:
        await stream.send_all(piece)


async def slow_drip_body(stream: trio.SocketStream) -> None:
    await stream.send_all(head(1000))
    while True:
        await stream.send_all(b"[")
        await trio.sleep(1)


async def slow_drip_head(stream: trio.SocketStream) -> None:
    for byte in b"HTTP/1.1 200 OK\r\n":
        await stream.send_all(bytes([byte]))
        await trio.sleep(1)


CASES: dict[str, tuple[Answer, str]] = {
    "a huge body": (huge_body, "unreadable"),
    "a million-item list of {}": (whole(b"[" + b"{}," * 999_999 + b"{}]"), "unreadable"),
    "[{}, ...] just within the byte cap": (whole(b"[" + b"{}," * (MAX_ANSWER_BYTES // 3 - 1) + b"{}]"), "unreadable"),
    "a list of non-objects": (whole(b"[" + b"1," * (MAX_ANSWER_BYTES // 2 - 1) + b"1]"), "unreadable"),
    "an object, not a list": (whole(b'{"kernels": [' + b'{"id": "k"},' * 10_000 + b"{}]}"), "unreadable"),
    "deep nesting": (whole(b"[" * MAX_ANSWER_BYTES), "unreadable"),
    "deep nesting within the notice's cap": (whole(b'{"keep": ' + b"[" * (NOTICE_MAX_ANSWER_BYTES - 20)), "unreadable"),
    "deep nesting inside an item": (
        whole(b'[{"id": "k", "execution_state": "idle", "x": ' + b"[" * 100_000),
        "unreadable",
    ),
    "1-byte chunks": (one_byte_chunks, "unreadable"),
    "a slow drip (one byte a second)": (slow_drip_body, "timeout"),
    "a slow drip of the status line": (slow_drip_head, "timeout"),
}


@asynccontextmanager
async def hostile_server(answer: Answer) -> AsyncIterator[str]:
    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        try:
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(65536)
                if not data:
                    return
                request += data
            await answer(stream)
            await trio.sleep_forever()
        except trio.BrokenResourceError:
            return  # the culler stopped reading and closed the connection: as it should

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("what", ["kernels", "notice"], ids=["api/kernels", "GET notice"])
async def test_a_hostile_answer_neither_stalls_nor_swells_the_culler(what: str, case: str) -> None:
    """Each case as the answer to the inspection (``api/kernels``), and to the state read before a warned
    server's cull (``GET notice``, whose cap is smaller still)."""
    answer, kind = CASES[case]
    async with hostile_server(answer) as url:
        with trio.fail_after(60):
            child = await trio.run_process(
                [sys.executable, "-m", "tests.hostile_inspection", url, str(DEADLINE), what],
                cwd=ROOT,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert child.returncode == 0, child.stderr.decode()
    measured = json.loads(child.stdout)
    print(f"{what}, {case}: {json.dumps(measured)}")
    assert measured["outcome"] == kind, measured
    assert measured["longest_step"] < MAX_STALL, measured
    assert measured["longest_heartbeat_gap"] < MAX_STALL, measured
    assert measured["rss_peak_mib"] - measured["rss_before_mib"] < MAX_RSS_GROWTH_MIB, measured
    if kind == "timeout":
        assert measured["seconds"] < DEADLINE + 1, "the inspection's own deadline ended it"
