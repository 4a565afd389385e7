"""The remote-control HTTP API (aiohttp.web), served from the enforcer's own loop.

Endpoints and rules are the contract in docs/api.md: every request
but ``GET /healthz`` needs ``Authorization: Bearer <token>`` (checked first, whatever
the path); errors are ``{"error": "one line"}``; bodies over 64 KiB are 413; repeated
wrong tokens from one address get 429. No cookies, no CORS headers, no access log (a
request line is nobody's business but the risk manager's; flag changes are logged and
journaled).

Nothing here may delay a cycle: handlers answer from the ``LiveView`` and the metrics
in memory, and the few state-database calls (flag reads and writes, which fsync) run
on a thread of their own with its own SQLite connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiohttp import web

from guard_app.api.auth import BadTokenLimiter, TokenKeeper
from guard_app.api.metrics import CONTENT_TYPE, GuardMetrics
from guard_app.api.view import LiveView
from guard_app.core.config import ApiConfig, AppConfig
from guard_app.core.errors import GuardError
from guard_app.core.events import Observer
from guard_app.core.state import StateStore, UnwindFlag, open_state

log = logging.getLogger("guard_app.api")

MAX_BODY_BYTES = 64 * 1024
MAX_REASON_CHARS = 500
API_PREFIX = "/api/v1"
T = TypeVar("T")


class ApiStartError(GuardError):
    """The API could not start (address in use, bad certificate): names the config key."""


class EnforcerControl(Protocol):
    """What the API needs of the enforcer (``core.enforcer.Enforcer`` fits)."""

    @property
    def config(self) -> AppConfig: ...

    @property
    def next_cycle_in(self) -> float: ...

    def wake(self) -> None: ...


class _StateThread:
    """One worker thread with its own StateStore: flag reads and writes off the loop."""

    def __init__(self, open_store: Callable[[], StateStore]) -> None:
        self._open_store = open_store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="guard-api-state")
        self._store: StateStore | None = None

    def _with_store(self, fn: Callable[[StateStore], T]) -> T:
        if self._store is None:
            self._store = self._open_store()
        return fn(self._store)

    async def call(self, fn: Callable[[StateStore], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_store, fn)

    def close(self) -> None:
        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        with contextlib.suppress(RuntimeError):
            self._executor.submit(close_store)
        self._executor.shutdown(wait=True)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _flag_document(user: str, flag: UnwindFlag | None) -> dict[str, Any]:
    if flag is None:
        return {"user": user, "forced_unwind": False, "since": None, "by": None, "reason": None}
    return {"user": user, "forced_unwind": flag.active, "since": flag.since, "by": flag.by,
            "reason": flag.reason}


def peer_address(request: web.Request) -> str:
    """The client's IP as seen on the socket: never a forwarded header."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return "unknown"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def ssl_context(api: ApiConfig) -> ssl.SSLContext | None:
    """The server's TLS context from ``tls_cert``/``tls_key``, or None without TLS."""
    if not api.tls or api.tls_cert is None or api.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, path in (("api.tls_cert", api.tls_cert), ("api.tls_key", api.tls_key)):
        if not path.is_file():
            raise ApiStartError(f"{key}: no file at {path}")
    try:
        context.load_cert_chain(api.tls_cert, api.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ApiStartError(
            f"api.tls_cert: can't use {api.tls_cert} with {api.tls_key} ({exc.strerror or exc}); "
            "both must be PEM files and the key must match the certificate"
        ) from None
    return context


class ApiServer:
    """The HTTP API of one enforcer. ``start``/``stop`` on the enforcer's loop."""

    def __init__(
        self,
        api: ApiConfig,
        control: EnforcerControl,
        open_store: Callable[[], StateStore],
        view: LiveView,
        metrics: GuardMetrics,
        tokens: TokenKeeper,
    ) -> None:
        self.api = api
        self._control = control
        self._view = view
        self._metrics = metrics
        self._tokens = tokens
        self._limiter = BadTokenLimiter()
        self._state = _StateThread(open_store)
        self._runner: web.AppRunner | None = None
        self._refresh: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.api.url

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/healthz", self._healthz, allow_head=False)
        app.router.add_get(f"{API_PREFIX}/status", self._status, allow_head=False)
        flag = f"{API_PREFIX}/users/{{user}}/forced_unwind"
        app.router.add_get(flag, self._get_flag, allow_head=False)
        app.router.add_post(flag, self._post_flag)
        app.router.add_delete(flag, self._delete_flag)
        app.router.add_get("/metrics", self._metrics_text, allow_head=False)
        return app

    async def start(self) -> None:
        """Listen on ``api.listen``; ApiStartError (naming the key) when it can't."""
        context = ssl_context(self.api)
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.api.host, self.api.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ApiStartError(
                f"api.listen: can't listen on {self.api.host}:{self.api.port} "
                f"({exc.strerror or exc}); pick another port or stop what uses it"
            ) from None
        self._runner = runner
        self._refresh = asyncio.create_task(self._tokens.keep_fresh(), name="guard-api-token")
        log.info("remote API listening on %s (token from the OS keyring)", self.url)

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("remote API stopped")
        await asyncio.to_thread(self._state.close)

    # -- the gate every request passes ---------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not (request.method == "GET" and request.path == "/healthz"):
            address = peer_address(request)
            good = self._tokens.check(_bearer(request))
            if self._limiter.retry_after(address) is not None:
                if not good:  # still guessing: the quiet minute starts again
                    self._limiter.wrong_token(address)
                wait = self._limiter.retry_after(address) or 1
                return _error(429, f"too many wrong tokens from {address}: try again in {wait} s",
                              {"Retry-After": str(wait)})
            if not good:
                self._limiter.wrong_token(address)
                return _error(401, "missing or wrong API token (Authorization: Bearer TOKEN)",
                              {"WWW-Authenticate": 'Bearer realm="guard-app"'})
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, f"request body over {MAX_BODY_BYTES // 1024} KiB")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _error(404, f"no such endpoint: {request.method} {request.path}")
            if exc.status == 405:
                allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
                return _error(405, f"{request.method} is not allowed on {request.path} "
                              f"(allowed: {', '.join(allowed)})", {"Allow": ", ".join(allowed)})
            if exc.status == 413:
                return _error(413, f"request body over {MAX_BODY_BYTES // 1024} KiB")
            return _error(exc.status, exc.reason)
        except GuardError as exc:
            log.error("remote API: %s %s failed: %s", request.method, request.path, exc)
            return _error(500, f"could not complete the request: {exc}")
        except Exception:  # a bug here must answer, and never stop the enforcer's loop
            log.exception("remote API: %s %s failed unexpectedly", request.method, request.path)
            return _error(500, "internal error in guard-app; see its log")

    # -- handlers ------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = self._view.alive()
        return web.json_response({"ok": alive}, status=200 if alive else 503)

    async def _status(self, request: web.Request) -> web.Response:
        flags = await self._state.call(lambda s: s.forced_unwind_flags())
        config = self._control.config
        return web.json_response(
            self._view.status_document(config, flags, self._control.next_cycle_in)
        )

    def _user(self, request: web.Request) -> str:
        user = request.match_info["user"]
        users = self._control.config.user_names
        if user not in users:
            raise web.HTTPNotFound(reason=f"unknown user {user!r}")
        return user

    async def _get_flag(self, request: web.Request) -> web.Response:
        try:
            user = self._user(request)
        except web.HTTPNotFound as exc:
            return _error(404, exc.reason)
        flag = await self._state.call(lambda s: s.flag(user))
        return web.json_response(_flag_document(user, flag))

    async def _post_flag(self, request: web.Request) -> web.Response:
        return await self._change_flag(request, True)

    async def _delete_flag(self, request: web.Request) -> web.Response:
        return await self._change_flag(request, False)

    async def _change_flag(self, request: web.Request, active: bool) -> web.Response:
        try:
            user = self._user(request)
        except web.HTTPNotFound as exc:
            return _error(404, exc.reason)
        body = await request.read()
        reason = ""
        if body.strip():
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                return _error(400, "the body is not JSON: send {\"reason\": \"...\"} or nothing")
            if not isinstance(data, dict):
                return _error(400, "the body must be a JSON object like {\"reason\": \"...\"}")
            raw_reason = data.get("reason", "")
            if not isinstance(raw_reason, str):
                return _error(400, "reason must be a string")
            # One line in the journal and the log, whatever the client sent.
            reason = " ".join(raw_reason.split())[:MAX_REASON_CHARS]
        address = peer_address(request)

        def write(store: StateStore) -> tuple[UnwindFlag, list[str]]:
            flag = store.set_forced_unwind(user, active, by="api", reason=reason,
                                           data={"address": address})
            return flag, sorted(store.forced_unwind_flags())

        flag, active_users = await self._state.call(write)
        self._metrics.flags_seen(active_users)
        self._control.wake()
        if active:
            log.warning("forced unwind ON for %s through the remote API from %s%s; closing "
                        "every position of %s now", user, address,
                        f" ({reason})" if reason else "", user)
        else:
            log.info("forced unwind OFF for %s through the remote API from %s; normal caps "
                     "apply again", user, address)
        return web.json_response(_flag_document(user, flag))

    async def _metrics_text(self, request: web.Request) -> web.Response:
        body = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


class ApiService:
    """Everything the API needs around one enforcer: its observers and its server.

    Build it before the enforcer (its ``observers`` go to ``Enforcer(observers=...)``),
    ``bind`` the
    enforcer, then ``start`` on the enforcer's loop.
    """

    def __init__(
        self,
        config: AppConfig,
        data_dir: Path,
        read_token: Callable[[], str | None],
        token: str | None,
        active_users: list[str] | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.view = LiveView()
        self.metrics = GuardMetrics(config, active_users or ())
        self.tokens = TokenKeeper(read_token, token)
        self.server: ApiServer | None = None

    @property
    def observers(self) -> list[Observer]:
        return [self.view, self.metrics]

    def _open_store(self) -> StateStore:
        """The store ``[state]`` selects: a desk's API sets flags in the shared database."""
        return open_state(self.data_dir, self.config.state)

    def bind(self, control: EnforcerControl) -> ApiServer:
        self.server = ApiServer(self.config.api, control, self._open_store, self.view,
                                self.metrics, self.tokens)
        return self.server

    async def start(self) -> None:
        if self.server is None:
            raise RuntimeError("ApiService.bind(enforcer) first")
        await self.server.start()

    async def stop(self) -> None:
        self.view.mark_stopped()
        if self.server is not None:
            await self.server.stop()
