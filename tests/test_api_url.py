"""A ``--url`` that is not the hub's API: the error says which URL is, from the hub's own redirect."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from trio_culler import Config, run_pass
from trio_culler._api_url import suggest_api_url
from trio_culler.testing import FakeHub

TOKEN = "api-url-token"


@pytest.mark.parametrize(
    ("url", "location", "api"),
    [
        # The hub's own port, its root: JupyterHub redirects / to /hub/.
        ("http://host:8081", "/hub/", "http://host:8081/hub/api"),
        ("http://host:8081/", "/hub/", "http://host:8081/hub/api"),
        # The hub's prefix without api: /hub/ goes to the login page.
        ("http://host:8081/hub", "/hub/login?next=%2Fhub%2F", "http://host:8081/hub/api"),
        # A hub with base_url = "/jhub/": its prefix is /jhub/hub/.
        ("http://host:8081/jhub", "/jhub/hub/", "http://host:8081/jhub/hub/api"),
        (
            "https://hub.example.org/jhub/",
            "https://hub.example.org/jhub/hub/home",
            "https://hub.example.org/jhub/hub/api",
        ),
        # A base_url that is itself "hub": the last /hub/ is the hub's prefix.
        ("http://host:8000/hub", "/hub/hub/", "http://host:8000/hub/hub/api"),
        # No usable redirect: from the URL itself.
        ("http://host:8081", "", "http://host:8081/hub/api"),
        ("http://host:8081/hub/", "", "http://host:8081/hub/api"),
        ("http://host:8081/jhub", "/elsewhere", "http://host:8081/jhub/hub/api"),
    ],
)
def test_the_api_url_suggested(url: str, location: str, api: str) -> None:
    assert suggest_api_url(url, location) == api


async def test_the_error_for_a_root_url_names_the_api_url(autojump_clock: trio.testing.MockClock) -> None:
    hub = FakeHub(token=TOKEN)

    async def root_redirects(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/":
            return httpx.Response(302, headers={"location": "/hub/"})
        return None

    hub.fault = root_redirects
    async with hub.running():
        report = await run_pass(Config(api_token=TOKEN, url="http://127.0.0.1:8081/"), transport=hub.transport())
    assert report.aborted is not None
    assert report.aborted.endswith(
        "HTTP 302 (the hub answered with a redirect to /hub/; --url must be the hub's API URL, e.g. "
        "http://127.0.0.1:8081/hub/api)"
    )
