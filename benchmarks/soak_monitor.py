"""Watching the culler from outside: its JSON log as it is written, its process (RSS, open FDs), its metrics (trio
tasks), and its status page through the proxy (``api/status`` with a token, and the page itself after a login at
the hub's form and the OAuth dance)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from soak_procs import process_usage
from soak_timeline import CullIntent, LogLine, PassEnd, Sample, Spare, StatusProbe, Timeline, server_key

__all__ = ["LogTailer", "Sampler", "StatusProber", "login_and_open_page"]

#: Culler log lines the monitor keeps whole (WARNING and above); the rest become timeline records or are skipped.
_KEPT_LEVELS = ("warning", "error", "critical")


def _stamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class LogTailer:
    """Reads the culler's log as it grows and turns each line into timeline records."""

    def __init__(self, path: Path, timeline: Timeline) -> None:
        self.path = path
        self.timeline = timeline
        self.offset = 0
        self.partial = b""
        self.lines = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def poll(self) -> int:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        for raw in complete:
            if raw.strip():
                self.parse(raw.decode("utf-8", errors="replace"))
        return len(complete)

    def parse(self, line: str) -> None:
        self.lines += 1
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        when = _stamp(entry.get("time")) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or when is None:
            self.timeline.log_lines.append(LogLine(time.time(), "unparsed", line[:2000]))
            return
        level = str(entry.get("level", ""))
        message = str(entry.get("message", ""))
        event = entry.get("event")
        user = entry.get("user")
        key = server_key(user, entry.get("server") or "") if isinstance(user, str) else None
        if event == "pass":
            aborted = message.startswith(("Pass aborted", "Pass not run"))
            duration = float(entry.get("duration_seconds") or 0.0)
            # The line comes after what follows the pass (its stops confirmed, unused tokens revoked): the start
            # it names, when it names one, is the pass's; its own time less the duration may be seconds late.
            started = _stamp(entry.get("started"))
            if started is not None and started < when:
                duration = max(duration, when - started)
            self.timeline.passes.append(PassEnd(when, duration, aborted))
        elif key is not None and "action" in entry and message.startswith("Culling server"):
            inactive = entry.get("inactive_seconds")
            self.timeline.intents.append(
                CullIntent(when, key, str(entry.get("rule")), float(inactive) if inactive is not None else None)
            )
        elif key is not None and entry.get("rule") == "kernel_busy" and message.startswith("Not culling server"):
            self.timeline.spares.append(Spare(when, key, "kernel_busy"))
        if level in _KEPT_LEVELS:
            error = entry.get("error")
            self.timeline.log_lines.append(
                LogLine(
                    when,
                    level,
                    message[:2000] + ("\n" + str(entry["exception"])[:4000] if "exception" in entry else ""),
                    event if isinstance(event, str) else None,
                    user if isinstance(user, str) else None,
                    str(error) if error is not None else None,
                )
            )
        for listener in self.listeners:
            listener(entry)


class Sampler:
    """The culler's resident memory, open file descriptors and trio tasks, every ``every`` seconds."""

    def __init__(self, timeline: Timeline, pid: int, metrics_url: str, running: Callable[[], int]) -> None:
        self.timeline = timeline
        self.pid = pid
        self.metrics_url = metrics_url
        self.running = running
        self.metrics: dict[str, float] = {}

    async def run(self, every: float) -> None:
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            while True:
                await self.sample(client)
                await trio.sleep(every)

    async def sample(self, client: httpx.AsyncClient) -> None:
        now = time.time()
        usage = process_usage(self.pid)
        if usage is None:
            if self.timeline.culler_died_at is None:
                self.timeline.culler_died_at = now
            return
        tasks = None
        try:
            response = await client.get(self.metrics_url)
            if response.status_code == 200:
                self.metrics = _metric_values(response.text)
                value = self.metrics.get("trio_culler_trio_tasks")
                tasks = int(value) if value is not None else None
        except httpx.HTTPError:
            pass
        rss, fds = usage
        self.timeline.samples.append(Sample(now, round(rss, 2), fds, tasks, self.running()))


def _metric_values(text: str) -> dict[str, float]:
    """Every sample, by name with its labels (``trio_culler_errors_total{kind="scope"}``)."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return values


class StatusProber:
    """``api/status`` through the proxy with a token of a service whose only scope is access to the page."""

    def __init__(self, timeline: Timeline, url: str, token: str) -> None:
        self.timeline = timeline
        self.url = url
        self.token = token

    async def run(self, every: float) -> None:
        headers = {"Authorization": f"token {self.token}"}
        async with httpx.AsyncClient(timeout=10.0, trust_env=False, headers=headers) as client:
            while True:
                await self.probe(client)
                await trio.sleep(every)

    async def probe(self, client: httpx.AsyncClient) -> None:
        started = time.time()
        try:
            response = await client.get(self.url)
        except httpx.HTTPError as error:
            self.timeline.status.append(StatusProbe(started, time.time() - started, None, False, "api", repr(error)))
            return
        latency = time.time() - started
        ok = response.status_code == 200 and '"passes"' in response.text
        detail = "" if ok else response.text[:200]
        self.timeline.status.append(StatusProbe(started, latency, response.status_code, ok, "api", detail))


class _Xsrf(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("name") == "_xsrf":
            self.value = found.get("value")


async def login_and_open_page(proxy_url: str, page_path: str, user: str, password: str) -> StatusProbe:
    """What a browser does: open the page without a session, land on the hub's login form, log in, come back
    through the hub's OAuth to the page. One StatusProbe (kind ``oauth``) for the whole dance."""
    started = time.time()

    def probe(ok: bool, status: int | None, detail: str) -> StatusProbe:
        return StatusProbe(started, time.time() - started, status, ok, "oauth", detail)

    try:
        async with httpx.AsyncClient(timeout=30.0, trust_env=False, follow_redirects=True) as client:
            login = await client.get(proxy_url + page_path)
            if login.status_code != 200 or urlsplit(str(login.url)).path != "/hub/login":
                return probe(False, login.status_code, f"expected the hub's login form, got {login.url}")
            parser = _Xsrf()
            parser.feed(login.text)
            form = {"username": user, "password": password, "_xsrf": parser.value or ""}
            page = await client.post(str(login.url), data=form)
    except httpx.HTTPError as error:
        return probe(False, None, repr(error))
    ok = page.status_code == 200 and urlsplit(str(page.url)).path == page_path and "<title>Idle culler" in page.text
    return probe(ok, page.status_code, "" if ok else f"ended at {page.url}: {page.text[:200]}")
