"""User names that break URLs must name exactly that user.

Sent unencoded, ``u#x`` and ``u?x=1`` both become requests about user ``u`` (the rest is a fragment or a
query), ``u%41`` becomes ``uA`` (no such user), ``u%23x`` becomes ``u#x``, ``u x`` may become ``u+x``.
So: every hostile user is idle, the plain user ``u`` is active, and after one pass ``u`` must be untouched
while every hostile user's server is stopped (a culler that aims at the wrong user leaves the right one
running).  With --cull-users the hostile users are deleted and ``u`` survives.
"""

from __future__ import annotations

import pytest

from .hubtools import IDLE_TIMEOUT, HubAPI, HubProcess, sleep_until_idle, start_servers

pytestmark = pytest.mark.integration

# All accepted by JupyterHub 5/6: its validate_username only refuses "/", empty names, names made only of
# dots, and leading or trailing whitespace (and it lowercases).  Inner whitespace, control characters
# (which could forge log lines), a zero-width space and non-ASCII letters all pass.
HOSTILE_NAMES = [
    "u#x",
    "u?x=1",
    "u;x",
    "u@example.org",
    "u+tag",
    "u+x",
    "u.dot",
    "u x",
    "u%41",
    "u%23x",
    "u%2fx",
    "u&x=1",
    "u:x",
    "u,x",
    "u'x",
    'u"x',
    "u<x>",
    "u\\x",
    "u~x",
    "u!x",
    "u$x",
    "u*x",
    "u(x)",
    "u[x]",
    "u{x}",
    "u|x",
    "u^x",
    "u`x",
    "u..",
    "u\tx",
    "u\nx",
    "u\u200bx",
    "ü-user",
    "ß",
    "ユーザー",
]
# Refused by the hub, so no culler can ever meet them.
REJECTED_NAMES = ["u/x", " u", "u ", "..", ".", "%2e%2e"]
PLAIN = "u"


def _start_idle_hostiles_and_active_plain(api: HubAPI, hub: HubProcess) -> list[str]:
    created = api.create_users([PLAIN, *HOSTILE_NAMES])
    assert created == [PLAIN, *HOSTILE_NAMES], "all of these are valid, already-lowercase JupyterHub names"
    # "u" has a named server too, so a request misrouted to "u" has something to stop either way.
    ready_at = start_servers(hub, [(PLAIN, ""), (PLAIN, "nb"), *((name, "") for name in HOSTILE_NAMES)])
    sleep_until_idle(ready_at, IDLE_TIMEOUT)
    api.post_activity(PLAIN, ["", "nb"])
    return created


def test_hub_accepts_the_hostile_names_and_rejects_the_rest(api: HubAPI) -> None:
    for name in REJECTED_NAMES:
        response = api.try_create_user(name)
        assert response.status_code == 400, f"{name!r}: {response.status_code} {response.text}"
    # Upper case is folded, so a culler never sees it.
    assert api.create_user("U+Upper") == "u+upper"


def test_hostile_names_stop_exactly_their_own_servers(api: HubAPI, hub: HubProcess) -> None:
    _start_idle_hostiles_and_active_plain(api, hub)

    run = api.run_culler(f"--timeout={IDLE_TIMEOUT}")

    # Hub state first: it tells which user a wrong request hit, where the exit status only says "error".
    assert api.server_state(PLAIN) == "running", run.describe()
    assert api.server_state(PLAIN, "nb") == "running", run.describe()
    still_running = [name for name in HOSTILE_NAMES if api.server_state(name) != "stopped"]
    assert still_running == [], run.describe()
    assert run.returncode == 0, run.describe()


def test_hostile_names_delete_exactly_their_own_users(api: HubAPI, hub: HubProcess) -> None:
    _start_idle_hostiles_and_active_plain(api, hub)

    run = api.run_culler(f"--timeout={IDLE_TIMEOUT}", "--cull-users")

    assert api.user_exists(PLAIN), run.describe()
    assert api.server_state(PLAIN) == "running", run.describe()
    assert api.server_state(PLAIN, "nb") == "running", run.describe()
    survivors = [name for name in HOSTILE_NAMES if api.user_exists(name)]
    assert survivors == [], run.describe()
    assert api.all_user_names() == {PLAIN}
    assert run.returncode == 0, run.describe()
