"""Rate limits of the three simulated exchanges: published defaults and a fixed-window counter.

Each front-end (Binance, OKX, Bybit) charges every request to one or more
:class:`Window` counters (per IP, per account, per instrument ...) and refuses the
request the way its exchange does when a window is spent. The numbers below are the
published ones; a scenario's ``[limits]`` table may lower (or raise) any of them by name
so tests can hit a limit in a handful of requests (see :mod:`guard_app.sim.scenario`).

Sources:

- Binance spot: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
  (6,000 request weight per minute per IP; order counts per account from
  ``exchangeInfo.rateLimits``: 100 per 10 s, 200,000 per day). USDⓈ-M:
  https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info
  ("IP Limits": 2,400 weight per minute; "Order Rate Limits": 1,200 per minute and
  300 per 10 s per account). A 429 says "back off"; "repeatedly violating rate limits
  and/or failing to back off after receiving 429s will result in an automated IP ban
  (HTTP status 418)", from 2 minutes up to 3 days, with ``Retry-After``.
- OKX v5: https://www.okx.com/docs-v5/en/#overview-rate-limits and each endpoint's
  "Rate Limit" line (place order 60 requests / 2 s per instrument, batch orders
  300 orders / 2 s per instrument, cancel 60 / 2 s, pending orders 60 / 2 s,
  balance 10 / 2 s, positions 10 / 2 s, public instruments 20 / 2 s, tickers 20 / 2 s,
  mark price 10 / 2 s, algo pending 20 / 2 s, cancel algos 20 / 2 s,
  close-position 20 / 2 s). Over the limit: HTTP 429, ``{"code":"50011","msg":"Too Many Requests"}``.
- Bybit v5: https://bybit-exchange.github.io/docs/v5/rate-limit (per IP 600 requests
  per 5 s, HTTP 403 "access too frequent" for 10 minutes when exceeded; per UID and
  endpoint, e.g. order/create 10/s linear and 20/s spot, create-batch counts the orders,
  wallet-balance / position-list / order-realtime 50/s). Over a per-UID limit:
  HTTP 200, ``retCode`` 10006 "Too many visits!", with ``X-Bapi-Limit``,
  ``X-Bapi-Limit-Status`` and ``X-Bapi-Limit-Reset-Timestamp`` (ms) — no ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "LimitBook", "Window"]

# name -> published limit. Names are ``exchange.what``; windows are in the name's unit.
DEFAULT_LIMITS: dict[str, float] = {
    # Binance
    "binance.spot_weight_1m": 6000,
    "binance.spot_orders_10s": 100,
    "binance.spot_orders_1d": 200000,
    "binance.futures_weight_1m": 2400,
    "binance.futures_orders_10s": 300,
    "binance.futures_orders_1m": 1200,
    "binance.ban_seconds": 120,  # first automated IP ban: 2 minutes
    "binance.ban_after_429s": 3,  # requests answered 429 in a row before the ban
    # OKX (all per 2 s)
    "okx.order_per_inst_2s": 60,
    "okx.batch_orders_per_inst_2s": 300,
    "okx.cancel_per_inst_2s": 60,
    "okx.cancel_batch_per_inst_2s": 300,
    "okx.read_orders_2s": 60,
    "okx.account_2s": 10,
    "okx.public_2s": 20,
    "okx.algo_2s": 20,
    "okx.close_position_2s": 20,
    # Bybit
    "bybit.ip_5s": 600,
    "bybit.ip_ban_seconds": 600,
    "bybit.order_linear_1s": 10,
    "bybit.order_spot_1s": 20,
    "bybit.read_1s": 50,
}


@dataclass
class Window:
    """A fixed window of ``seconds`` allowing ``limit`` units; ``used`` in the current one."""

    limit: float
    seconds: float
    start: float = 0.0
    used: float = 0.0

    def roll(self, now: float) -> None:
        start = math.floor(now / self.seconds) * self.seconds
        if start != self.start:
            self.start, self.used = start, 0.0

    def reset_at(self) -> float:
        return self.start + self.seconds


class LimitBook:
    """Fixed-window counters by key, with the scenario's limits; thread-safe."""

    def __init__(self, overrides: dict[str, float] | None = None) -> None:
        self.limits = dict(DEFAULT_LIMITS)
        self.limits.update(overrides or {})
        self._windows: dict[tuple[str, ...], Window] = {}
        self._lock = threading.Lock()

    def limit(self, name: str) -> float:
        return self.limits[name]

    def window(self, name: str, seconds: float, *key: str) -> Window:
        """The current window of limit ``name`` for ``key`` (created on first use)."""
        with self._lock:
            now = time.time()
            w = self._windows.get((name, *key))
            if w is None:
                w = self._windows[(name, *key)] = Window(self.limits[name], seconds)
            w.roll(now)
            return w

    def charge(self, name: str, seconds: float, *key: str, cost: float = 1) -> tuple[bool, Window]:
        """Charge ``cost``; ``(allowed, window)``. A refused request still counts
        when the exchange counts it (callers decide by calling :meth:`charge` or :meth:`peek`)."""
        with self._lock:
            now = time.time()
            w = self._windows.get((name, *key))
            if w is None:
                w = self._windows[(name, *key)] = Window(self.limits[name], seconds)
            w.roll(now)
            if w.used + cost > w.limit:
                return False, w
            w.used += cost
            return True, w

    def refund(self, name: str, seconds: float, *key: str, cost: float = 1) -> Window:
        """Take ``cost`` back off the current window (Binance spot: a filled order leaves
        the unfilled-order count)."""
        with self._lock:
            w = self._windows.get((name, *key))
            if w is None:
                w = self._windows[(name, *key)] = Window(self.limits[name], seconds)
            w.roll(time.time())
            w.used = max(0.0, w.used - cost)
            return w
