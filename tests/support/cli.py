"""The command line run in-process: the environment a hub gives a service, and the settings it reads from argv."""

from __future__ import annotations

from typing import Any

from trio_culler.cli import read_settings

ENV = {"JUPYTERHUB_API_TOKEN": "secret-token-value", "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api"}


def effective(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """What ``--show-config`` would print for ``argv`` in ``env`` (default :data:`ENV`)."""
    return read_settings(argv, ENV if env is None else env).public_dict()
