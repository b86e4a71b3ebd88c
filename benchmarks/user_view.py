"""What a user's own view of the status page costs the culler: the time to judge their servers and render the page.

``python benchmarks/user_view.py [--servers N] [--culls N] [--number N]``: one user with N running servers (idle
for 30 minutes, under the global options) and N remembered culls; the view is built (``build_user_view``: each
server judged with ``Judge.prejudge``, as a pass judges it) and rendered with the page's own template, ``number``
times in a loop, in this process (no HTTP: hypercorn's share is ``status_load.py --page-cost``'s), and the mean
wall time of one is reported (the loop waits for nothing, so it is the CPU one view takes). The hub's answer is read
once, through FakeHub, before the clock starts: a view reuses it for ``FRESH_SECONDS``.
"""

from __future__ import annotations

import argparse
import json
import timeit
from datetime import UTC, datetime, timedelta

import trio

from trio_culler import Config
from trio_culler._history import History
from trio_culler._hub import open_hub_client
from trio_culler._models import User
from trio_culler._report import CullRecord
from trio_culler.testing import FakeHub, FakeServer
from trio_culler.web import StatusPageSettings
from trio_culler.web._app import _templates
from trio_culler.web._lookup import Lookup
from trio_culler.web._user_view import UserViews, build_user_view

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "user-view-benchmark-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--culls", type=int, default=2)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()

    hub = FakeHub(token=TOKEN, clock=lambda: NOW)
    servers = {
        f"s{index}" if index else "": FakeServer(
            f"s{index}" if index else "", NOW - timedelta(hours=2), NOW - timedelta(minutes=30)
        )
        for index in range(opts.servers)
    }
    hub.add_user("alice", servers=servers)
    config = Config(api_token=TOKEN, url="http://127.0.0.1:8081/hub/api", timeout=3600)

    async def read() -> User | None:
        async with hub.running(), open_hub_client(config, transport=hub.transport()) as client:
            return await client.get_user("alice")

    user = trio.run(read)
    history = History(config.public_dict())
    history.users.add_culls(
        CullRecord(
            user="alice",
            server=f"old-{index}",
            action="stop",
            rule="idle",
            reason="inactive for 01:00:04",
            at=NOW - timedelta(days=1, minutes=index),
            outcome="stopped",
        )
        for index in range(opts.culls)
    )
    views = UserViews(config, history, None)
    assert views.judge is not None
    template = _templates().get_template("user.html")
    settings = StatusPageSettings.from_environment(
        {"JUPYTERHUB_SERVICE_NAME": "culler", "JUPYTERHUB_CLIENT_ID": "service-culler"}, bind="127.0.0.1:0"
    )
    lookup = Lookup(user, NOW)

    def one() -> bytes:
        view = build_user_view(
            "alice",
            lookup,
            config=config,
            judge=views.judge,
            snapshot=history.snapshot,
            culls=history.users.culls_of("alice"),
            judgments=history.users.judgments_of("alice"),
            culls_per_user=history.users.culls_per_user,
            users_remembered=history.users.users,
            now=NOW,
        )
        return template.render(view=view, settings=settings, logout_url="/logout").encode()

    assert b"alice" in one()
    seconds = timeit.timeit(one, number=opts.number) / opts.number
    summary = {"servers": opts.servers, "culls": opts.culls, "us_per_view": round(1e6 * seconds, 1)}
    if opts.json:
        print(json.dumps(summary))
    else:
        print(f"a user's view, {opts.servers} servers and {opts.culls} culls: {summary['us_per_view']} us each")


if __name__ == "__main__":
    main()
