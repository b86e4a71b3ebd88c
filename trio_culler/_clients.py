"""How the culler's HTTP clients are made, and where its API token may go.

::

    http_client(config, ...)     every httpx client the culler has (the hub's, the --warn-url webhook's, the
                                 status page's OAuth one): one transport choice, TLS trust, no cookies, no
                                 redirects, proxy variables only with --use-proxy-env, and no credential
    TokenScope(--url, token)     the URLs the culler's token may go to: those under --url, and only those

The token is never a client's default header. ``_http.RequestEngine`` attaches it per request, when
:meth:`TokenScope.contains` says the request's final URL is under ``--url`` (same scheme, host, port and path
prefix, dot-segments resolved); every other request carries the credential its caller passed for it, or none.
No client follows redirects; should one ever be made to, :meth:`TokenScope.fence`, a request hook on every
client, takes the token off any request that leaves the scope (httpx itself keeps it within an origin).
"""

from __future__ import annotations

import posixpath
import re
import ssl
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final

import httpx

from ._config import Config
from ._errors import ConfigError
from ._transport import MAX_IDLE_PER_ORIGIN, TrioH11Transport
from ._version import __version__

__all__ = ["HEADER_SAFE_RE", "TokenScope", "check_client_settings", "header_token", "http_client", "make_ssl_context"]

#: What an HTTP header value may hold (visible ASCII and inner spaces); anything else in a token could not be sent
#: and would end up quoted in an exception message instead.
HEADER_SAFE_RE: Final = re.compile(r"^[\x21-\x7e]+(?: +[\x21-\x7e]+)*$")
_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}


class TokenScope:
    """Where the culler's token may go: the URLs under ``--url``, and only those.

    Origin alone is not enough: a standalone culler's ``--url`` is often the public one
    (``https://hub.example.org/hub/api``), the very origin of the users' servers (``/user/<name>/``)."""

    def __init__(self, api_url: str, token: str) -> None:
        base = httpx.URL(api_url)
        self._scheme = base.raw_scheme
        self._host = base.raw_host
        self._port = base.port or _DEFAULT_PORTS.get(base.raw_scheme, 0)
        prefix = base.raw_path.partition(b"?")[0].rstrip(b"/")
        self._prefix = prefix
        self._below = prefix + b"/"
        #: The header value, or None for an empty token (a hub that needs none; nothing to keep in).
        self.authorization = f"token {token}" if token else None

    def contains(self, url: httpx.URL) -> bool:
        """Whether ``url`` is under the hub's API: same scheme, host and port, and a path that stays below the
        API's path once percent-encoded dot-segments are resolved too (``/hub/api/%2E%2E/%2E%2E/user/x`` is not
        under ``/hub/api``; httpx resolves the literal ones itself)."""
        scheme = url.raw_scheme
        if scheme != self._scheme or url.raw_host != self._host:
            return False
        if (url.port or _DEFAULT_PORTS.get(scheme, 0)) != self._port:
            return False
        path = url.raw_path.partition(b"?")[0]
        if b"%2" in path and b"%2e" in path.lower():
            path = posixpath.normpath(re.sub(rb"%2[eE]", b".", path))
        return path == self._prefix or path.startswith(self._below)

    async def fence(self, request: httpx.Request) -> None:
        """An httpx request hook, run for every request a client sends itself (redirects it follows included):
        the culler's token never leaves the scope, whoever built the request."""
        carried = request.headers.get("authorization")
        if carried is not None and carried == self.authorization and not self.contains(request.url):
            del request.headers["authorization"]


def header_token(raw: str) -> str:
    """The token as it can go in a header, or ConfigError (which never quotes it).

    Surrounding whitespace is dropped: a Kubernetes secret or a file often ends in a newline, and a hub strips
    it from the header anyway. A control or non-ASCII character inside cannot be sent at all; httpx would fail
    on every request with an error that quotes the whole header, token included.
    """
    token = raw.strip()
    if token and not HEADER_SAFE_RE.match(token):
        raise ConfigError(
            "JUPYTERHUB_API_TOKEN contains characters that cannot be sent in an HTTP header "
            "(control characters or non-ASCII); check how the secret is provided"
        )
    return token


def make_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context for hub traffic, or None for plain HTTP / system defaults.

    With ``ssl_enabled`` the client certificate and CA come from the files a hub gives its managed services
    (``JUPYTERHUB_SSL_*``) when present, else from ``internal_certs_location`` laid out as JupyterHub's
    internal_ssl writes it. The server certificate is always verified against that CA.
    """
    if not config.ssl_enabled:
        return None
    location = config.internal_certs_location.rstrip("/")
    keyfile = config.ssl_keyfile or f"{location}/hub-internal/hub-internal.key"
    certfile = config.ssl_certfile or f"{location}/hub-internal/hub-internal.crt"
    cafile = config.ssl_client_ca or f"{location}/hub-ca/hub-ca.crt"
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"--ssl-enabled: cannot load TLS files ({certfile}, {keyfile}, {cafile}): {error}") from None
    return context


def check_client_settings(config: Config) -> None:
    """Raise ConfigError now for what would otherwise fail only once requests start: a token that cannot be
    sent in a header, TLS files that cannot be loaded. The CLI calls it before it starts, to exit 2."""
    header_token(config.api_token)
    make_ssl_context(config)


def http_client(
    config: Config,
    *,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    connections: int | None = MAX_IDLE_PER_ORIGIN,
) -> httpx.AsyncClient:
    """An httpx client as every client of the culler's is made (the hub's, the webhook's, the status page's
    OAuth one): the project's h11-on-trio transport (``transport`` replaces it; with ``--use-proxy-env`` httpx's
    default one, which honours HTTP(S)_PROXY and NO_PROXY), ``tls`` as its trust (None: the system's CAs), no
    cookies kept or sent, no redirects followed, proxy variables only when asked for, and no credential: the
    culler's token is added per request by ``_http.RequestEngine``, and :meth:`TokenScope.fence` takes it off any
    request outside the hub's API that reaches this client by another way.

    ``connections``: how many requests its caller lets run at once (None: no bound). The h11 transport keeps as
    many idle connections (within reason); httpcore's pool gets room for all of them, or the surplus would fail
    with PoolTimeout."""
    if transport is None and not config.use_proxy_env:
        transport = TrioH11Transport(ssl_context=tls, max_idle_per_origin=min(connections or 64, 256))
    pool = connections + 2 if connections else None
    return httpx.AsyncClient(
        headers={
            "User-Agent": f"trio-culler/{__version__}",
            # The answers are small JSON documents: compression costs more than it saves, and an answer that is
            # compressed anyway cannot be bounded by its bytes on the wire.
            "Accept-Encoding": "identity",
        },
        transport=transport,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        trust_env=config.use_proxy_env,
        verify=tls or True,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        event_hooks={"request": [TokenScope(config.url, header_token(config.api_token)).fence]},
    )
