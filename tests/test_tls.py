"""How hub traffic is secured and routed: internal TLS (certificates made here with trustme, a loopback TLS hub
that requires a client certificate), and proxy variables, which are ignored unless asked for."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trustme

from trio_culler import Config, run_pass
from trio_culler.cli import read_settings
from trio_culler.testing import FakeHub, FakeKernel, FakeServer, Population, open_fake_hub

from .support.faults import TOKEN, assert_exact
from .support.net import dead_port, open_forward_proxy
from .support.processes import running_culler

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def make_hub() -> tuple[FakeHub, Population]:
    now = datetime.now(UTC)
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    return hub, hub.populate(12, idle_fraction=0.5, seed=4, now=now)


@attrs.frozen
class Pki:
    ca: trustme.CA
    #: Laid out as JupyterHub's internal_ssl writes it: <location>/hub-ca/hub-ca.crt, <location>/hub-internal/...
    location: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    location = tmp_path / "internal-ssl"
    (location / "hub-ca").mkdir(parents=True)
    (location / "hub-internal").mkdir()
    ca.cert_pem.write_to_path(str(location / "hub-ca" / "hub-ca.crt"))
    client = ca.issue_cert("hub-internal")
    client.cert_chain_pems[0].write_to_path(str(location / "hub-internal" / "hub-internal.crt"))
    client.private_key_pem.write_to_path(str(location / "hub-internal" / "hub-internal.key"))
    return Pki(ca, location)


def server_context(ca: trustme.CA, *, hostname: str = "127.0.0.1") -> ssl.SSLContext:
    """The hub's side: a certificate for ``hostname`` from ``ca``, and a client certificate from ``ca`` required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(hostname).configure_cert(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def tls_hub(hub: FakeHub, context: ssl.SSLContext) -> AsyncIterator[str]:
    with trio.fail_after(20):
        async with open_fake_hub(hub, ssl_context=context) as api_url:
            assert api_url.startswith("https://127.0.0.1:")
            yield api_url


def tls_config(api_url: str, location: Path, **changes: Any) -> Config:
    return attrs.evolve(
        Config(api_token=TOKEN, url=api_url, ssl_enabled=True, internal_certs_location=str(location), max_retries=0),
        **changes,
    )


# ------------------------------------------------------------------------------------------ TLS


async def test_internal_certificates_from_the_certs_location(pki: Pki) -> None:
    hub, population = make_hub()
    async with tls_hub(hub, server_context(pki.ca)) as api_url:
        report = await run_pass(tls_config(api_url, pki.location))
    # The hub requires a client certificate from the CA, so a pass that got through presented hub-internal's.
    assert report.ok, report.errors
    assert_exact(hub, population)


async def test_the_files_a_hub_gives_its_services_win(pki: Pki, tmp_path: Path) -> None:
    # JUPYTERHUB_SSL_* name files anywhere; internal_certs_location points nowhere, so only they can work.
    elsewhere = tmp_path / "service-certs"
    elsewhere.mkdir()
    client = pki.ca.issue_cert("idle-culler")
    client.cert_chain_pems[0].write_to_path(str(elsewhere / "culler.crt"))
    client.private_key_pem.write_to_path(str(elsewhere / "culler.key"))
    pki.ca.cert_pem.write_to_path(str(elsewhere / "trust-bundle.crt"))
    hub, population = make_hub()
    async with tls_hub(hub, server_context(pki.ca)) as api_url:
        environ = {
            "JUPYTERHUB_API_TOKEN": TOKEN,
            "JUPYTERHUB_API_URL": api_url,
            "JUPYTERHUB_SSL_KEYFILE": str(elsewhere / "culler.key"),
            "JUPYTERHUB_SSL_CERTFILE": str(elsewhere / "culler.crt"),
            "JUPYTERHUB_SSL_CLIENT_CA": str(elsewhere / "trust-bundle.crt"),
        }
        # Through the command line's own reading of argv and the environment.
        settings = read_settings(["--ssl-enabled", f"--internal-certs-location={tmp_path / 'nowhere'}"], environ)
        report = await run_pass(settings.config)
    assert report.ok, report.errors
    assert_exact(hub, population)


async def test_a_hub_certificate_from_another_ca_is_refused(pki: Pki) -> None:
    hub, _population = make_hub()
    async with tls_hub(hub, server_context(trustme.CA())) as api_url:
        report = await run_pass(tls_config(api_url, pki.location, max_retries=5))
    assert report.aborted is not None
    assert "CERTIFICATE_VERIFY_FAILED" in report.aborted, "the error says why"
    # Five retries would wait at least 7.75 s: a certificate that does not verify is not retried within the pass.
    assert report.duration < 2
    assert sum(hub.statistics().requests_by_kind.values()) == 0, "not one request was sent to an unverified hub"


def kernels_hub() -> FakeHub:
    """Two servers idle by the hub's clock: one whose kernel has run a cell for two hours (kept, if its kernels
    can be read), one whose kernel is idle (culled either way)."""
    now = datetime.now(UTC)
    hub = FakeHub(token=TOKEN, clock=lambda: now)
    for name, state in (("computing", "busy"), ("resting", "idle")):
        kernel = FakeKernel(f"k-{name}", state, now - timedelta(hours=2))
        started, active = now - timedelta(hours=5), now - timedelta(hours=2)
        hub.add_user(name, servers={"": FakeServer("", started=started, last_activity=active, kernels=[kernel])})
    return hub


@pytest.mark.parametrize("public_side", ["system CA", "internal CA"])
async def test_with_ssl_enabled_servers_behind_the_proxy_are_verified_with_the_systems_cas(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, public_side: str
) -> None:
    """--ssl-enabled makes the hub's internal CA the trust of hub requests only: the single-user servers, read
    through the proxy's public side, have certificates from the CAs the system trusts (here SSL_CERT_FILE,
    which OpenSSL's default paths honour). A public side certified by the internal CA alone is therefore not
    trusted: its servers cannot be inspected, and are kept (an error of the pass: a failure to look, not a
    server that is not serving, so never a reason to cull)."""
    public_ca = trustme.CA()
    bundle = tmp_path / "system-cas.pem"
    public_ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    proxy = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # a public proxy asks for no client certificate
    (public_ca if public_side == "system CA" else pki.ca).issue_cert("127.0.0.1").configure_cert(proxy)
    hub = kernels_hub()
    async with tls_hub(hub, server_context(pki.ca)) as api_url, open_fake_hub(hub, ssl_context=proxy) as proxy_api:
        public_url = proxy_api.removesuffix("/hub/api")
        assert public_url != api_url.removesuffix("/hub/api"), "another origin than the hub's"
        report = await run_pass(tls_config(api_url, pki.location, inspect_kernels=True, public_url=public_url))
    stopped = {user for user, _server in hub.statistics().stop_requests}
    if public_side == "system CA":
        assert report.ok, report.errors
        assert report.servers_inspected == 2
        assert stopped == {"resting"}, "the busy kernel was read through the proxy, and spared its server"
    else:
        assert report.inspection_failures == {"unreadable": 2}
        assert report.errors_by_kind == {"inspection": 2}
        assert stopped == set(), "kept: a certificate that does not verify is no answer, and no reason to cull"


async def test_a_hub_certificate_for_another_name_is_refused(pki: Pki) -> None:
    hub, _population = make_hub()
    async with tls_hub(hub, server_context(pki.ca, hostname="some-other-hub.example")) as api_url:
        report = await run_pass(tls_config(api_url, pki.location))
    assert report.aborted is not None
    assert "CERTIFICATE_VERIFY_FAILED" in report.aborted
    assert sum(hub.statistics().requests_by_kind.values()) == 0


async def test_without_ssl_enabled_an_https_hub_is_still_verified(pki: Pki) -> None:
    # No --ssl-enabled: the system's CAs apply, and a hub with a private CA's certificate is refused.
    hub, _population = make_hub()
    async with tls_hub(hub, server_context(pki.ca)) as api_url:
        report = await run_pass(Config(api_token=TOKEN, url=api_url, max_retries=0))
    assert report.aborted is not None
    assert sum(hub.statistics().requests_by_kind.values()) == 0


async def test_the_hub_really_requires_a_client_certificate(pki: Pki) -> None:
    # The control for the tests above: a client that trusts the CA but presents no certificate is turned away,
    # so the culler's successful passes prove that it presented hub-internal.crt.
    hub, _population = make_hub()
    trusting = ssl.create_default_context(cafile=str(pki.location / "hub-ca" / "hub-ca.crt"))
    async with (
        tls_hub(hub, server_context(pki.ca)) as api_url,
        httpx.AsyncClient(verify=trusting, trust_env=False) as client,
    ):
        with pytest.raises(httpx.TransportError):
            await client.get(f"{api_url}/users", headers={"Authorization": f"token {TOKEN}"})
    assert hub.statistics().requests_by_kind["list"] == 0


def test_missing_tls_files_are_one_clear_error(tmp_path: Path) -> None:
    args = ["--url=https://127.0.0.1:1/hub/api", "--ssl-enabled", f"--internal-certs-location={tmp_path}", "--once"]
    with running_culler(*args, token=TOKEN, cwd=tmp_path) as culler:
        status = culler.wait(30)
    output = culler.text()
    assert "hub-internal.crt" in output
    assert "Traceback" not in output
    assert status == 2


# ------------------------------------------------------------------------------------------ proxies


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Proxy variables cleared (a CI proxy must not decide these tests); the test sets the ones it means."""
    for name in (*PROXY_VARIABLES, "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def point_proxies_at(monkeypatch: pytest.MonkeyPatch, proxy_url: str) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy_url)
        monkeypatch.setenv(name.lower(), proxy_url)


async def test_proxy_variables_are_ignored_by_default(proxy_env: pytest.MonkeyPatch) -> None:
    point_proxies_at(proxy_env, f"http://127.0.0.1:{dead_port()}")
    hub, population = make_hub()
    with trio.fail_after(20):
        async with open_fake_hub(hub) as api_url:
            report = await run_pass(Config(api_token=TOKEN, url=api_url, max_retries=0))
    assert report.ok, report.errors
    assert_exact(hub, population)


async def test_proxy_variables_are_ignored_for_a_tls_hub_too(proxy_env: pytest.MonkeyPatch, pki: Pki) -> None:
    point_proxies_at(proxy_env, f"http://127.0.0.1:{dead_port()}")
    hub, population = make_hub()
    async with tls_hub(hub, server_context(pki.ca)) as api_url:
        report = await run_pass(tls_config(api_url, pki.location))
    assert report.ok, report.errors
    assert_exact(hub, population)


async def test_use_proxy_env_sends_hub_traffic_through_the_proxy(proxy_env: pytest.MonkeyPatch) -> None:
    hub, population = make_hub()
    with trio.fail_after(20):
        async with open_fake_hub(hub) as api_url, open_forward_proxy() as proxy:
            point_proxies_at(proxy_env, f"http://127.0.0.1:{proxy.port}")
            settings = read_settings(["--use-proxy-env", f"--url={api_url}"], {"JUPYTERHUB_API_TOKEN": TOKEN})
            assert settings.config.use_proxy_env
            report = await run_pass(settings.config)
    assert report.ok, report.errors
    assert_exact(hub, population)
    stats = hub.statistics()
    assert len(proxy.seen) == sum(stats.requests_by_kind.values()), "every request went through the proxy"
    assert all(target.startswith(api_url.removesuffix("/hub/api")) for _method, target in proxy.seen)
    assert ("GET", f"{api_url}/") in proxy.seen


async def test_use_proxy_env_with_a_dead_proxy_does_not_reach_the_hub(proxy_env: pytest.MonkeyPatch) -> None:
    point_proxies_at(proxy_env, f"http://127.0.0.1:{dead_port()}")
    hub, _population = make_hub()
    with trio.fail_after(20):
        async with open_fake_hub(hub) as api_url:
            report = await run_pass(Config(api_token=TOKEN, url=api_url, max_retries=0, use_proxy_env=True))
    assert report.aborted is not None
    assert sum(hub.statistics().requests_by_kind.values()) == 0, "it went to the proxy, not to the hub"
