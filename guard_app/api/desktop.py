"""The remote API inside the desktop app: served from the enforcer thread's loop.

``DesktopApi`` is two things at once:

* a *loop companion* of the GUI's enforcer host: on the enforcer's worker thread it
  builds the API's observers (``observers``), then starts the server on the enforcer's
  loop next to ``Enforcer.run`` (``start``) and stops it afterwards (``stop``);
* the controller of the window's API panel (``describe``, ``turn_on``,
  ``rotate_token``), called on the GUI thread.

It serves when ``[api] enabled = true`` or after the user turns it on; with no token
stored it starts without the API and says why (``describe().problem``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from guard_app.api.auth import new_token
from guard_app.api.server import ApiService, ApiStartError, EnforcerControl
from guard_app.core.config import AppConfig
from guard_app.core.config_writer import ConfigDocument
from guard_app.core.errors import GuardError
from guard_app.core.events import Observer
from guard_app.core.secrets import SecretStoreProtocol
from guard_app.core.state import open_state

log = logging.getLogger("guard_app.api")

NO_TOKEN_PROBLEM = "no API token stored: create one with 'guard-app api token' or 'Rotate token' here"  # noqa: S105, E501


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the status strip shows: on and where, or off and why."""

    on: bool
    url: str | None
    problem: str | None


class DesktopApi:
    """The API's companion on the enforcer's loop and the panel's controller."""

    def __init__(
        self, config: AppConfig, data_dir: Path, secrets: SecretStoreProtocol,
        config_path: Path | None = None,
    ) -> None:
        self._config = config
        self._data_dir = data_dir
        self._secrets = secrets
        self._config_path = config_path
        self._lock = threading.Lock()
        self._wanted = config.api.enabled
        self._state = ApiState(False, None, None)
        self._service: ApiService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._enforcer: EnforcerControl | None = None
        self.on_change: Callable[[], None] | None = None  # called from any thread

    # -- the panel's side (GUI thread) ---------------------------------------------

    def describe(self) -> ApiState:
        with self._lock:
            return self._state

    @property
    def address(self) -> str:
        """The address clients use (the configured one until the server is up)."""
        state = self.describe()
        return state.url or self._config.api.url

    def turn_on(self) -> str | None:
        """Serve the API now and keep ``[api] enabled = true`` in the config file.

        Returns a token created for the occasion (to show once) when none was stored.
        Raises GuardError (a SecretStoreError or ConfigError) with a one-line reason.
        """
        created = None
        if self._secrets.get_api_token() is None:
            created = new_token()
            self._secrets.set_api_token(created)
        if self._config_path is not None:
            document = ConfigDocument.load(self._config_path)
            document.set_api_enabled(True)
            document.save()
        with self._lock:
            self._wanted = True
            loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._serve(), loop)
        return created

    def rotate_token(self) -> str:
        """Replace the token; the running API refuses the old one within a second."""
        token = new_token()
        self._secrets.set_api_token(token)
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed() and self.describe().problem:
            asyncio.run_coroutine_threadsafe(self._serve(), loop)  # it was waiting for one
        return token

    # -- the enforcer thread's side ------------------------------------------------

    def observers(self) -> Sequence[Observer]:
        """Build the API's view and metrics (worker thread, before the enforcer)."""
        with open_state(self._data_dir, self._config.state) as store:
            active = sorted(store.forced_unwind_flags())
        try:
            token = self._secrets.get_api_token()
        except GuardError as exc:
            token = None
            self._set(ApiState(False, None, f"can't read the API token: {exc}"))
        self._service = ApiService(self._config, self._data_dir,
                                   self._secrets.get_api_token, token, active)
        return self._service.observers

    async def start(self, enforcer: EnforcerControl) -> None:
        """On the enforcer's loop, before ``Enforcer.run``: serve if wanted."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._enforcer = enforcer
            wanted = self._wanted
        if wanted:
            await self._serve()

    async def stop(self) -> None:
        """On the enforcer's loop, after ``Enforcer.run`` ended."""
        with self._lock:
            self._loop = None
        if self._service is not None:
            await self._service.stop()
        self._set(ApiState(False, None, self.describe().problem))

    async def _serve(self) -> None:
        service, enforcer = self._service, self._enforcer
        if service is None or enforcer is None or self.describe().on:
            return
        if not service.tokens.has_token:
            await asyncio.to_thread(service.tokens.refresh)
        if not service.tokens.has_token:
            log.warning("remote API not started: %s", NO_TOKEN_PROBLEM)
            self._set(ApiState(False, None, NO_TOKEN_PROBLEM))
            return
        server = service.bind(enforcer)
        try:
            await service.start()
        except ApiStartError as exc:
            log.error("remote API not started: %s", exc)
            self._set(ApiState(False, None, str(exc)))
            return
        self._set(ApiState(True, server.url, None))

    def _set(self, state: ApiState) -> None:
        with self._lock:
            self._state = state
        callback = self.on_change
        if callback is not None:
            callback()
