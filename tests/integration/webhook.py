"""A webhook for the integration tests: a loopback HTTP listener, in a thread, that keeps the JSON body of each
POST (the culler's ``--warn-url`` events) for the test to wait on and read."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .hubtools import wait_until

Event = dict[str, Any]


class Webhook:
    """The events received so far; :meth:`wait_for` polls them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def add(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def events(self, user: str | None = None) -> list[Event]:
        with self._lock:
            return [event for event in self._events if user is None or event.get("user") == user]

    def kinds(self, user: str) -> list[tuple[str, str | None]]:
        """``(event, detail)`` of each of ``user``'s events, in order."""
        return [(event["event"], event["detail"]) for event in self.events(user)]

    def wait_for(
        self, found: Callable[[list[Event]], bool], *, timeout: float, what: str | Callable[[], str]
    ) -> list[Event]:
        return wait_until(lambda: self.events() if found(self.events()) else None, timeout=timeout, what=what)


@contextmanager
def open_webhook() -> Iterator[Webhook]:
    webhook: Webhook | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            assert webhook is not None
            webhook.add(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reads the events, not an access log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    webhook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/events")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield webhook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
