"""Where the status page listens and how it takes part in the hub's OAuth: read from the variables a hub
gives a managed service that has a ``url`` (or that an operator sets for a standalone culler).

=================================  ==========================================================================
``JUPYTERHUB_SERVICE_URL``          where to listen (``http://127.0.0.1:10101``); ``--status-bind`` overrides
``JUPYTERHUB_SERVICE_PREFIX``       the path the hub's proxy forwards (``/services/<name>/``)
``JUPYTERHUB_SERVICE_NAME``         the service's name: the access scope is ``access:services!service=<name>``
``JUPYTERHUB_CLIENT_ID``            the OAuth client id (``service-<name>``)
``JUPYTERHUB_OAUTH_CALLBACK_URL``   the redirect URI the hub registered (``/services/<name>/oauth_callback``)
``JUPYTERHUB_OAUTH_ACCESS_SCOPES``  JSON list of the scopes that grant access (default: the one above)
``JUPYTERHUB_HOST``                 the hub's public origin, when the hub is on another host (else empty)
``JUPYTERHUB_BASE_URL``             the hub's base URL (``/``)
``JUPYTERHUB_API_URL``              where the token is exchanged and the user read (the culler's ``--url``)
``JUPYTERHUB_API_TOKEN``            the OAuth client secret, as JupyterHub registers a service's client
=================================  ==========================================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from .._errors import ConfigError

__all__ = ["SESSION_SECONDS", "StatusPageSettings", "parse_bind"]

#: How long a login lasts before the page asks the hub again (transparently, while the hub's own login
#: lasts): a user whose access is revoked loses the page within this time.
SESSION_SECONDS = 600


@attrs.frozen(kw_only=True)
class StatusPageSettings:
    service_name: str
    bind_host: str
    bind_port: int
    #: Path prefix of every route, with leading and trailing slash.
    prefix: str
    client_id: str
    #: The redirect URI exactly as registered with the hub (a path for a managed service).
    callback_url: str
    #: Where browsers are sent to log in: the hub's authorization endpoint (public URL or path).
    authorize_url: str
    #: Scopes of which the user's token must hold one.
    access_scopes: frozenset[str]
    #: Where the hub's login page is, for the "log out" link.
    hub_logout_url: str
    session_seconds: int = SESSION_SECONDS

    @property
    def callback_path(self) -> str:
        return urlsplit(self.callback_url).path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], *, bind: str | None = None) -> StatusPageSettings | None:
        """The page's settings, or None when nothing says where to listen (a managed service without
        ``url``, and no ``--status-bind``). Raises ConfigError when a listening page could not log anyone in."""
        service_url = environ.get("JUPYTERHUB_SERVICE_URL", "")
        if bind is None and not service_url:
            return None
        if bind is not None:
            host, port = parse_bind(bind)
        else:
            parts = urlsplit(service_url)
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise ConfigError(f"JUPYTERHUB_SERVICE_URL {service_url!r} has a bad port") from None
            if not parts.hostname:
                raise ConfigError(f"JUPYTERHUB_SERVICE_URL {service_url!r} names no host")
            host = parts.hostname
        name = environ.get("JUPYTERHUB_SERVICE_NAME", "")
        client_id = environ.get("JUPYTERHUB_CLIENT_ID", "")
        if not name or not client_id:
            raise ConfigError(
                "the status page needs JUPYTERHUB_SERVICE_NAME and JUPYTERHUB_CLIENT_ID (a hub sets them for a "
                "managed service with a url; see the README for a standalone culler), or --status-page=false"
            )
        prefix = "/" + environ.get("JUPYTERHUB_SERVICE_PREFIX", "/").strip("/") + "/"
        prefix = prefix.replace("//", "/")
        hub_origin = environ.get("JUPYTERHUB_HOST", "").rstrip("/")
        base_url = "/" + environ.get("JUPYTERHUB_BASE_URL", "/").strip("/") + "/"
        base_url = base_url.replace("//", "/")
        raw_scopes = environ.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES") or environ.get("JUPYTERHUB_OAUTH_SCOPES")
        scopes = frozenset({f"access:services!service={name}"})
        if raw_scopes:
            try:
                parsed = json.loads(raw_scopes)
            except ValueError:
                raise ConfigError("JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list of scopes") from None
            if not isinstance(parsed, list) or not parsed or not all(isinstance(s, str) for s in parsed):
                raise ConfigError("JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list of scopes")
            scopes = frozenset(parsed)
        return cls(
            service_name=name,
            bind_host=host,
            bind_port=port,
            prefix=prefix,
            client_id=client_id,
            callback_url=environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL") or f"{prefix}oauth_callback",
            authorize_url=f"{hub_origin}{base_url}hub/api/oauth2/authorize",
            access_scopes=scopes,
            hub_logout_url=f"{hub_origin}{base_url}hub/logout",
        )


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ConfigError naming --status-bind if not."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--status-bind: expected HOST:PORT, not {text!r}")
    return host, int(port_text)
