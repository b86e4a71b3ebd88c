"""Anonymous clients flooding a URL, in a process of their own (the test's own process runs the browser)::

    python tests/integration/flood.py URL CLIENTS [TOTAL]

``CLIENTS`` keep-alive connections ask for ``URL`` (every other one with a forged session cookie), each again
as soon as it is answered, until ``TOTAL`` requests were sent (or SIGTERM). Prints ``refused`` once at the
first 503, then at the end one JSON object: ``{"statuses": {"302": n, ...}, "errors": n}``.

HTTP/1.1 is h11's, over asyncio streams: a flood must be cheap to send, or a loaded machine's client, not the
page's budget, sets its pace (httpx's client costs several times more per request).
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sys
from urllib.parse import urlsplit

import h11


class Flood:
    def __init__(self, url: str, total: int | None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.target = parts.path or "/"
        self.total = total
        self.sent = 0
        self.errors = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.stopping = asyncio.Event()

    def more(self) -> bool:
        return not self.stopping.is_set() and (self.total is None or self.sent < self.total)

    async def client(self, index: int) -> None:
        headers = [("Host", f"{self.host}:{self.port}"), ("Accept", "text/html")]
        if index % 2:
            headers.append(("Cookie", f"trio-culler-session=forged.{index}"))
        while self.more():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.errors += 1
                await asyncio.sleep(0.1)
                continue
            try:
                await self._requests(reader, writer, headers)
            except (OSError, h11.ProtocolError):
                self.errors += 1
            finally:
                writer.close()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: list[tuple[str, str]]
    ) -> None:
        connection = h11.Connection(our_role=h11.CLIENT)
        while self.more():
            self.sent += 1
            writer.write(connection.send(h11.Request(method="GET", target=self.target, headers=headers)))
            writer.write(connection.send(h11.EndOfMessage()))
            status = 0
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(65536))  # b"" at the end: ConnectionClosed
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    raise OSError("the server closed the connection before it answered")
                if isinstance(event, h11.Response):
                    status = event.status_code
                if isinstance(event, h11.EndOfMessage):
                    break
            if status == 503 and not self.statuses[503]:
                print("refused", flush=True)
            self.statuses[status] += 1
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()


async def main(url: str, clients: int, total: int | None) -> None:
    flood = Flood(url, total)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, flood.stopping.set)
    await asyncio.gather(*(flood.client(index) for index in range(clients)))
    print(json.dumps({"statuses": {str(k): v for k, v in flood.statuses.items()}, "errors": flood.errors}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None))
