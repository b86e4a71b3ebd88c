"""Fixtures for the real-JupyterHub integration tests.

``hub`` is module-scoped: each test module gets a fresh JupyterHub (with its own sqlite database,
cookie secret, ports and configurable-http-proxy) and tears it down when the module is done.  Within a
module, tests share the hub, so ``api`` deletes every user a test created when the test ends: a culler
pass acts on the whole hub, and the next test must not find someone else's idle servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .hubtools import HubAPI, HubProcess, missing_tools, module_hub


@pytest.fixture(scope="session")
def hub_tools() -> None:
    """Skip (never fail) where jupyterhub or configurable-http-proxy is missing; CI installs both."""
    reason = missing_tools()
    if reason is not None:
        pytest.skip(f"real-JupyterHub integration tests need their tools: {reason}")


hub = module_hub("hub")


@pytest.fixture
def api(hub: HubProcess) -> Iterator[HubAPI]:
    client = HubAPI(hub)
    try:
        yield client
    finally:
        try:
            client.cleanup()
        finally:
            client.close()
