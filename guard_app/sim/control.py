"""The simulator's JSON control API under ``/_sim/``, for driving a standalone sim.

Every endpoint answers JSON; errors are ``{"error": "..."}`` with HTTP 400 (bad input) or
404 (unknown endpoint, account or market). POST bodies are JSON objects.

=======  =======================  ==========================================================
Method   Path                     Body / query → answer
=======  =======================  ==========================================================
GET      /_sim/state              the whole state snapshot (no secrets)
GET      /_sim/orders             the order log: every order request received
DELETE   /_sim/orders             clear the order log
GET      /_sim/balances           ``?account=NAME`` → spot balances
GET      /_sim/positions          ``?account=NAME`` → futures positions
POST     /_sim/price              ``{"symbol", "price"}`` set a price (unified symbol or id)
POST     /_sim/move               ``{"symbol", "pct"}`` move a price by a percentage
POST     /_sim/position           ``{"account", "symbol", "side", "contracts", "entry_price"?,
                                  "margin_mode"?}`` (contracts of the account's exchange)
POST     /_sim/balance            ``{"account", "asset", "amount"}`` credit a spot balance
POST     /_sim/keys/revoke        ``{"api_key"}`` the key answers -2015 from now on
POST     /_sim/keys/restore       ``{"api_key"}``
POST     /_sim/latency            ``{"seconds"}`` latency added to every API answer
POST     /_sim/clock              ``{"skew_ms"}`` server clock minus real clock
POST     /_sim/partial_fill       ``{"fraction"}`` share of a market order that fills
GET      /_sim/limits             rate-limit answers sent so far, e.g. ``{"binance 429": 2,
                                  "binance 418": 1, "okx 429 50011": 3, "bybit 10006": 1,
                                  "bybit 403": 1, "fault 429": 1}`` (injected faults too)
DELETE   /_sim/limits             reset those counts
GET      /_sim/faults             the active faults
POST     /_sim/faults             ``{"path_prefix", "kind"?, "status"?, "retry_after"?,
                                  "probability"?, "count"?, "delay"?, "method"?, "body"?}``
DELETE   /_sim/faults             clear every fault
=======  =======================  ==========================================================

Fault kinds: ``status`` (HTTP error, e.g. 429/418 with ``retry_after``, 503), ``drop``
(close the connection unanswered), ``drop_after`` (process, then drop the answer) and
``latency`` (``delay`` seconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from guard_app.sim.exchange import SimExchange
from guard_app.sim.frontend import ApiRequest, RateLimitStats

__all__ = ["ControlApi"]


class _BadInput(Exception):
    pass


class ControlApi:
    """Handles ``/_sim/...`` requests against a :class:`SimExchange`."""

    def __init__(self, exchange: SimExchange, stats: RateLimitStats | None = None) -> None:
        self.ex = exchange
        ex = exchange
        self.stats = stats or RateLimitStats()
        self.routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("GET", "/_sim/state"): lambda b: ex.snapshot(),
            ("GET", "/_sim/orders"): lambda b: [r.to_dict() for r in ex.orders],
            ("DELETE", "/_sim/orders"): lambda b: _ok(ex.clear_order_log),
            ("GET", "/_sim/balances"): lambda b: ex.balances(_req(b, "account")),
            ("GET", "/_sim/positions"): lambda b: ex.positions(_req(b, "account")),
            ("GET", "/_sim/open_orders"): lambda b: ex.open_orders(b.get("account")),
            ("POST", "/_sim/price"): self._price,
            ("POST", "/_sim/move"): lambda b: {"symbol": b.get("symbol"),
                                               "price": float(ex.move_price(_req(b, "symbol"), float(_req(b, "pct"))))},
            ("POST", "/_sim/position"): self._position,
            ("POST", "/_sim/balance"): lambda b: _ok(ex.add_balance, _req(b, "account"), _req(b, "asset"),
                                                                    _req(b, "amount")),
            ("POST", "/_sim/keys/revoke"): lambda b: _ok(ex.revoke_key, _req(b, "api_key")),
            ("POST", "/_sim/keys/restore"): lambda b: _ok(ex.restore_key, _req(b, "api_key")),
            ("POST", "/_sim/latency"): lambda b: _ok(ex.set_latency, float(_req(b, "seconds"))),
            ("POST", "/_sim/clock"): lambda b: _ok(ex.set_clock_skew, int(_req(b, "skew_ms"))),
            ("POST", "/_sim/partial_fill"): lambda b: _ok(ex.set_partial_fill, float(_req(b, "fraction"))),
            ("GET", "/_sim/faults"): lambda b: [f.to_dict() for f in ex.faults.list()],
            ("POST", "/_sim/faults"): self._fault,
            ("DELETE", "/_sim/faults"): lambda b: _ok(ex.clear_faults),
            ("GET", "/_sim/limits"): lambda b: self.stats.snapshot(),
            ("DELETE", "/_sim/limits"): lambda b: _ok(self.stats.clear),
        }

    def handle(self, req: ApiRequest) -> tuple[int, Any]:
        route = self.routes.get((req.method, req.path))
        if route is None:
            return 404, {"error": f"unknown control endpoint {req.method} {req.path}"}
        args: dict[str, Any] = dict(parse_qsl(req.query))
        if req.body:
            try:
                body = json.loads(req.body)
            except ValueError:
                return 400, {"error": "the body is not valid JSON"}
            if not isinstance(body, dict):
                return 400, {"error": "the body must be a JSON object"}
            args.update(body)
        try:
            return 200, route(args)
        except KeyError as exc:
            return 404, {"error": str(exc.args[0]) if exc.args else "not found"}
        except (_BadInput, ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}

    def _price(self, b: dict[str, Any]) -> dict[str, Any]:
        self.ex.set_price(_req(b, "symbol"), _req(b, "price"))
        return {"ok": True}

    def _position(self, b: dict[str, Any]) -> Any:
        self.ex.open_position(_req(b, "account"), _req(b, "symbol"), _req(b, "side"), _req(b, "contracts"),
                              b.get("entry_price"), b.get("margin_mode", "cross"))
        return self.ex.positions(b["account"])

    def _fault(self, b: dict[str, Any]) -> dict[str, Any]:
        known = {"path_prefix", "kind", "status", "retry_after", "probability", "count", "delay", "method", "body"}
        unknown = sorted(set(b) - known)
        if unknown:
            raise _BadInput(f"unknown fault field {unknown[0]!r}")
        fault = self.ex.inject_fault(
            b.get("path_prefix", ""), b.get("status"), kind=b.get("kind"), retry_after=b.get("retry_after"),
            probability=float(b.get("probability", 1.0)), count=b.get("count"), delay=float(b.get("delay", 0.0)),
            method=b.get("method"), body=b.get("body"),
        )
        return fault.to_dict()


def _req(b: dict[str, Any], name: str) -> Any:
    if name not in b or b[name] in (None, ""):
        raise _BadInput(f"missing field {name!r}")
    return b[name]


def _ok(action: Callable[..., object], *args: Any) -> dict[str, bool]:
    action(*args)
    return {"ok": True}
