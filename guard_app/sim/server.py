"""The simulator's HTTP server on 127.0.0.1: Binance, OKX and Bybit REST plus ``/_sim/``.

One port serves all three protocols, routed by path (their paths don't collide):

- ``/api/v5/...`` → OKX v5 (:mod:`guard_app.sim.okx_api`);
- ``/v5/...`` → Bybit v5 (:mod:`guard_app.sim.bybit_api`);
- everything else (``/api/v3``, ``/fapi``, ``/sapi``, ``/dapi`` ...) → Binance
  (:mod:`guard_app.sim.binance_api`);
- ``/_sim/...`` → the control API (:mod:`guard_app.sim.control`).

All three share one :class:`SimExchange` (markets and prices are common), but every
account belongs to one exchange and only that front-end accepts its key; each
front-end keeps its own rate-limit windows.

:class:`SimServer` runs a :class:`http.server.ThreadingHTTPServer` (HTTP/1.1, keep-alive)
on a background thread, one thread per connection, so many clients with latency run
side by side. ``stop()`` closes the listener *and* every open keep-alive connection,
and wakes requests sleeping in injected latency, so it returns within a fraction of a
second.

Unknown paths answer 404 and log a line ``sim: unknown endpoint GET /path`` so a new
ccxt call the simulator doesn't speak yet is easy to spot.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from guard_app.sim.binance_api import BinanceApi
from guard_app.sim.bybit_api import BybitApi
from guard_app.sim.control import ControlApi
from guard_app.sim.exchange import SimExchange
from guard_app.sim.frontend import ApiRequest, ApiResponse, RateLimitStats
from guard_app.sim.limits import LimitBook
from guard_app.sim.okx_api import OkxApi
from guard_app.sim.scenario import Scenario

__all__ = ["SimServer"]

log = logging.getLogger("guard_app.sim")


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a second sim on a port in use must fail loudly
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], sim: SimServer) -> None:
        self.sim = sim
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-request is normal here (drops, stop()); don't print tracebacks.
        log.debug("sim: connection from %s ended with an error", client_address, exc_info=True)

    def close_all_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "guard-app-sim/1"
    sys_version = ""
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("sim: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        sim = self.server.sim
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        parts = urlsplit(self.path)
        req = ApiRequest(
            method=self.command, path=parts.path, query=parts.query, body=body,
            headers={k.lower(): v for k, v in self.headers.items()}, client=self.client_address[0],
        )
        if req.path.startswith("/_sim/") or req.path == "/_sim":
            status, payload = sim.control.handle(req)
            self._send_json(ApiResponse(status, payload))
            return
        sim.note_request()
        if sim.stopping.is_set():
            self._drop()
            return
        fault = sim.exchange.faults.pick(req.method, req.path)
        delay = sim.exchange.latency + (fault.delay if fault and fault.kind == "latency" else 0.0)
        if delay > 0 and sim.stopping.wait(delay):
            self._drop()
            return
        if fault is not None and fault.kind == "drop":
            log.info("sim: injected fault: dropping %s %s without an answer", req.method, req.path)
            self._drop()
            return
        if fault is not None and fault.kind == "status":
            log.info("sim: injected fault: HTTP %s for %s %s", fault.status, req.method, req.path)
            if fault.status in (418, 429):
                sim.rate_limit_stats.note("fault", str(fault.status))  # benchmarks count every 429/418
            headers = {"Content-Type": "application/json" if fault.status < 500 else "text/html"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._send_raw(fault.status, fault.response_body(), headers)
            return
        api = sim.api_for(req.path)
        if not api.known(req.method, req.path):
            log.warning("sim: unknown endpoint %s %s (answered 404)", req.method, req.path)
            sim.unknown_paths.append(f"{req.method} {req.path}")
            self._send_raw(404, b"<html><body><h2>404 Not found</h2></body></html>", {"Content-Type": "text/html"})
            return
        response = api.handle(req)
        if fault is not None and fault.kind == "drop_after":
            log.info("sim: injected fault: %s %s processed, answer dropped", req.method, req.path)
            self._drop()
            return
        self._send_json(response)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_json(self, response: ApiResponse) -> None:
        data = json.dumps(response.body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json;charset=UTF-8", **response.headers}
        self._send_raw(response.status, data, headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            # Headers and body in one write: two small writes meet the client's delayed
            # ACK (Nagle) and cost ~40 ms per request on loopback.
            self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]  # stdlib internal, stable
            self.flush_headers()
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class SimServer:
    """Simulated Binance, OKX and Bybit on one port of 127.0.0.1; ``start()`` serves on a
    background thread.

    ``exchange`` is the thread-safe state and control object (:class:`SimExchange`).
    Usable as a context manager (starts on enter, stops on exit).
    """

    def __init__(self, scenario: Scenario, host: str = "127.0.0.1", port: int = 0, seed: int | None = 0) -> None:
        self.scenario = scenario
        self.host = host
        self.requested_port = port
        self.exchange = SimExchange(scenario, seed=seed)
        self.limits = LimitBook(scenario.limits)
        self.rate_limit_stats = RateLimitStats()
        self.api = BinanceApi(self.exchange, self.limits, self.rate_limit_stats)
        self.okx = OkxApi(self.exchange, self.limits, self.rate_limit_stats)
        self.bybit = BybitApi(self.exchange, self.limits, self.rate_limit_stats)
        self.control = ControlApi(self.exchange, self.rate_limit_stats)
        self.stopping = threading.Event()
        self.unknown_paths: list[str] = []
        self.requests_received = 0  # API requests (not /_sim/) read off the wire, answered or not
        self._count_lock = threading.Lock()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def api_for(self, path: str) -> BinanceApi | OkxApi | BybitApi:
        """The protocol front-end serving ``path`` (see the module docstring)."""
        if path.startswith("/api/v5/"):
            return self.okx
        if path.startswith("/v5/"):
            return self.bybit
        return self.api

    def note_request(self) -> None:
        with self._count_lock:
            self.requests_received += 1

    def start(self) -> SimServer:
        """Bind and serve; raises ``OSError`` (e.g. port in use) before any thread starts."""
        if self._httpd is not None:
            return self
        self.stopping.clear()
        self._httpd = _HttpServer((self.host, self.requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("sim: serving simulated Binance, OKX and Bybit on %s", self.base_url)
        return self

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the simulator is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close every connection; quick and idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
        httpd.shutdown()
        httpd.close_all_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("sim: stopped")

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
