"""Stands in for the culler once, as the hub's managed service, to learn the environment a hub gives it.

``python soak_catch_env.py PATH``: writes ``{"pid": ..., "env": {...}}`` to PATH (atomically), then answers HTTP
200 on ``$JUPYTERHUB_SERVICE_URL`` (a hub waits for a managed service's URL at start-up and exits if it stays
closed) until the hub stops it. The soak then runs the real culler, unmanaged, with exactly this environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    path = Path(sys.argv[1])
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), "env": dict(os.environ)}))
    os.replace(temporary, path)
    port = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"]).port
    server = HTTPServer(("127.0.0.1", port or 80), _Ok)
    with contextlib.suppress(KeyboardInterrupt):  # the hub stops a managed service with SIGINT first
        server.serve_forever()


if __name__ == "__main__":
    main()
