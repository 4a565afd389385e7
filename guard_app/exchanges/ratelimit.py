"""A rate limiter that knows the exchange's own limits (DESIGN rule 15, issue 11).

ccxt's throttle is one leaky bucket of capacity 1 per client: it spaces every request
out even when the exchange allows a burst (20 Binance USDⓈ-M closes wait >= 3.8 s).
Exchanges publish *windows* instead: so much request weight per minute per IP, so many
orders per 10 s per account. This limiter keeps one budget per published limit and

* lets a burst through at once while the window has room, and waits only when it is
  spent (never sends a request it knows would earn a 429);
* keeps IP budgets in a process-wide registry keyed by exchange + host, so every
  account on one IP shares them, and order budgets per account (or per account and
  instrument / endpoint where the exchange counts that way);
* corrects itself from the usage the exchange reports (``X-MBX-USED-WEIGHT-1M``,
  ``X-Bapi-Limit-Status`` ...) when the exchange saw more than we counted (another
  process on the same IP, a restart inside a window);
* stops a whole budget until the time an exchange gave with a 429/418 answer, so the
  other accounts on that IP don't keep knocking (Binance bans an IP that goes on).

Budgets are sliding windows: "no more than ``limit`` in any ``seconds`` long interval".
That is never looser than the exchange's fixed windows (every fixed window is such an
interval) and it stays safe when the exchange's clock and ours disagree about where a
window starts.

The limiter is thread-safe (the GUI's "Test connection" runs on another loop than the
enforcer): the books are guarded by a lock that is never held across an ``await``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Scope = Literal["ip", "account"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One published limit: ``limit`` units per ``seconds``, counted per IP or per account.

    ``id`` names it inside a profile (``"ip_weight_1m"``, ``"orders_10s"``). ``header`` is
    the answer header in which the exchange reports what it counted (lower case), if any.
    """

    id: str
    limit: float
    seconds: float
    scope: Scope
    header: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """What one request costs against one limit. ``key`` splits a limit further (an
    instrument on OKX, an endpoint on Bybit): each key has its own budget."""

    limit_id: str
    cost: float = 1.0
    key: str = ""


class BudgetBlocked(Exception):
    """The exchange told us to stop (a 429/418 with a time), or the wait for the window
    is longer than a cycle should hang: nothing is sent, the caller reports a rate limit
    with ``retry_after`` and the enforcer parks the exchange (DESIGN rule 8)."""

    def __init__(self, retry_after: float, told_by_exchange: bool) -> None:
        self.retry_after = retry_after
        self.told_by_exchange = told_by_exchange
        what = "the exchange asked us to wait" if told_by_exchange else "this window's budget is spent"
        super().__init__(f"{what}: next request in {retry_after:.1f} s")


# A request waits for its window at most this long; beyond it the call fails at once
# as rate limited (the enforcer retries after the time given) rather than hang a cycle.
MAX_WAIT = 30.0


class Budget:
    """A sliding-window budget: the (time, cost) log of the last ``seconds``."""

    __slots__ = ("blocked_until", "limit", "log", "seconds", "used")

    def __init__(self, limit: float, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.log: deque[tuple[float, float]] = deque()
        self.used = 0.0
        self.blocked_until = 0.0

    def _expire(self, now: float) -> None:
        cutoff = now - self.seconds
        while self.log and self.log[0][0] <= cutoff:
            self.used -= self.log.popleft()[1]
        if not self.log:
            self.used = 0.0  # no float drift once the window is empty

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits (0.0: now). Raises :class:`BudgetBlocked` while
        the exchange's own "wait until" runs."""
        self._expire(now)
        if self.blocked_until > now:
            raise BudgetBlocked(self.blocked_until - now, True)
        wait = 0.0
        if self.used + cost <= self.limit or not self.log:
            # An empty budget always admits one request, even one dearer than the limit.
            return wait
        # Walk the log until enough has expired for ``cost`` to fit.
        need = self.used + cost - self.limit
        freed = 0.0
        for stamp, spent in self.log:
            freed += spent
            if freed >= need:
                return max(wait, stamp + self.seconds - now)
        return max(wait, self.seconds)

    def spend(self, cost: float, now: float) -> None:
        if cost:
            self.log.append((now, cost))
            self.used += cost

    def observe_used(self, used: float, now: float) -> None:
        """The exchange says ``used`` is spent in its window: never count less than that."""
        self._expire(now)
        if used > self.used:
            self.spend(used - self.used, now)

    def block(self, until: float) -> None:
        self.blocked_until = max(self.blocked_until, until)


class _Registry:
    """Process-wide IP budgets, shared by every account on one exchange host."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.budgets: dict[tuple[str, ...], Budget] = {}

    def get(self, key: tuple[str, ...], limit: RateLimit) -> Budget:
        budget = self.budgets.get(key)
        if budget is None:
            budget = self.budgets[key] = Budget(limit.limit, limit.seconds)
        elif budget.limit != limit.limit:
            budget.limit = limit.limit  # the exchange published a new figure (exchangeInfo)
        return budget


_IP_BUDGETS = _Registry()


class RateLimiter:
    """The budgets one account uses: shared IP budgets plus its own account budgets.

    ``ip_key`` identifies the IP side (exchange id + API host): accounts with the same
    key share the IP budgets. ``limits`` are the profile's published limits.
    """

    def __init__(self, ip_key: str, limits: Iterable[RateLimit], *, registry: _Registry | None = None) -> None:
        self.ip_key = ip_key
        self._registry = registry or _IP_BUDGETS
        self._limits: dict[str, RateLimit] = {}
        self._own: dict[tuple[str, str], Budget] = {}
        self.waited = 0.0  # seconds spent waiting for a budget (for benchmarks and tests)
        self.waits = 0  # how many times a request waited
        self.set_limits(limits)

    @property
    def limits(self) -> dict[str, RateLimit]:
        return dict(self._limits)

    def set_limits(self, limits: Iterable[RateLimit]) -> None:
        """Replace or add published limits (e.g. Binance's ``exchangeInfo.rateLimits``)."""
        with self._registry.lock:
            for lim in limits:
                self._limits[lim.id] = lim
                for (lid, _key), budget in self._own.items():
                    if lid == lim.id:
                        budget.limit, budget.seconds = lim.limit, lim.seconds

    def _budget(self, limit_id: str, key: str) -> Budget | None:
        """Caller holds the registry lock."""
        lim = self._limits.get(limit_id)
        if lim is None:
            return None
        if lim.scope == "ip":
            return self._registry.get((self.ip_key, limit_id, key), lim)
        budget = self._own.get((limit_id, key))
        if budget is None:
            budget = self._own[(limit_id, key)] = Budget(lim.limit, lim.seconds)
        return budget

    def try_acquire(self, charges: Sequence[Charge], now: float | None = None) -> float:
        """Spend ``charges`` if they all fit now and return 0.0; else spend nothing and
        return how long to wait before trying again."""
        now = time.monotonic() if now is None else now
        with self._registry.lock:
            budgets = [(self._budget(c.limit_id, c.key), c.cost) for c in charges]
            wait = max((b.wait_for(cost, now) for b, cost in budgets if b is not None), default=0.0)  # may raise
            if wait > 0:
                return wait
            for b, cost in budgets:
                if b is not None:
                    b.spend(cost, now)
            return 0.0

    async def acquire(self, charges: Sequence[Charge], max_wait: float = MAX_WAIT) -> None:
        """Wait until every charge fits its budget, then spend them (all at once).

        Raises :class:`BudgetBlocked` at once while an exchange's 429/418 back-off runs,
        or when the window frees up only after ``max_wait`` seconds.
        """
        while True:
            wait = self.try_acquire(charges)
            if wait <= 0:
                return
            if wait > max_wait:
                raise BudgetBlocked(wait, False)
            self.waited += wait
            self.waits += 1
            await asyncio.sleep(wait)

    def observe(self, limit_id: str, used: float, key: str = "") -> None:
        """The exchange reported ``used`` units of ``limit_id`` spent in its window."""
        now = time.monotonic()
        with self._registry.lock:
            budget = self._budget(limit_id, key)
            if budget is not None:
                budget.observe_used(used, now)

    def block(self, seconds: float, limit_ids: Iterable[str] | None = None, key: str = "") -> None:
        """Send nothing against these limits (default: every IP limit) for ``seconds``."""
        until = time.monotonic() + max(0.0, seconds)
        with self._registry.lock:
            ids = list(limit_ids) if limit_ids is not None else [
                lid for lid, lim in self._limits.items() if lim.scope == "ip"
            ]
            for lid in ids:
                budget = self._budget(lid, key)
                if budget is not None:
                    budget.block(until)

    def used(self, limit_id: str, key: str = "") -> float:
        """Units spent in the current window (for tests and ``status``)."""
        now = time.monotonic()
        with self._registry.lock:
            budget = self._budget(limit_id, key)
            if budget is None:
                return 0.0
            budget._expire(now)  # noqa: SLF001 - same module
            return budget.used


def reset_shared_budgets() -> None:
    """Forget every shared IP budget (tests start each simulator on a fresh IP view)."""
    with _IP_BUDGETS.lock:
        _IP_BUDGETS.budgets.clear()
