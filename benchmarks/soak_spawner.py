"""The soak's spawner, loaded by the hub (``soak_hub_config.py``): it runs inside the hub process.

Users named ``real-*`` get a real ``jupyterhub-singleuser`` (jupyter_server, with ipykernel kernels), as
``SimpleLocalProcessSpawner`` starts one: in a session of its own, so a hub that stops leaves it running, and the
next hub finds it by the pid kept in the database.

Every other user gets no process: the hub is given the URL of one light server that the soak harness runs for all
of them (``SOAK_LIGHT_URL``), which answers through the proxy as a single-user server would. Whether such a server
"runs" is kept in the spawner's state, in the hub's database, so that it survives a restart of the hub as a real
one does.
"""

from __future__ import annotations

import os
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner


class SoakSpawner(SimpleLocalProcessSpawner):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._light_running = False

    @property
    def _is_real(self) -> bool:
        return bool(self.user.name.startswith("real-"))

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._light_running:
            state["light"] = True
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._light_running = bool(state.get("light"))

    def clear_state(self) -> None:
        super().clear_state()
        self._light_running = False

    async def start(self) -> Any:
        if self._is_real:
            return await super().start()
        self._light_running = True
        return os.environ["SOAK_LIGHT_URL"]

    async def poll(self) -> int | None:
        if self._is_real:
            status: int | None = await super().poll()
            return status
        return None if self._light_running else 0

    async def stop(self, now: bool = False) -> None:
        if self._is_real:
            await super().stop(now=now)
            return
        self._light_running = False
