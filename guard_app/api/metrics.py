"""Prometheus metrics fed by the enforcer's events (names and labels are a contract).

``GuardMetrics`` is an observer of the enforcer's event stream, like the journal, and
keeps its series in a ``CollectorRegistry`` of its own (never the process-global one,
so two enforcers in one process, or tests, never mix their numbers). ``/metrics``
renders it in the Prometheus text format 0.0.4.

Counters count since this process started; the cycle histogram and the last-cycle
time follow full cycles (as the journal's ``cycle_end`` does), not the fast re-reads of
an unwind. Account gauges appear with an account's
first read (unknown is not zero: no ``guard_account_positions`` before a read), except
``guard_account_up`` which is 0 for every configured account until a read succeeds.
``guard_user_forced_unwind`` has a series for every configured user from the start.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from guard_app.core.config import AppConfig
from guard_app.core.events import (
    AccountError,
    AccountRead,
    CycleFinished,
    EnforcerEvent,
    FlagsChanged,
    Intervention,
    OrderFilled,
    OrderRejected,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ORDER_RESULTS = ("filled", "rejected", "unknown")

# Cycles take from milliseconds (a few accounts on a fast exchange) to tens of seconds
# (many accounts, a slow or rate-limited exchange).
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Back under cap: seconds with the fast cadence, up to an hour when closes keep failing.
UNDER_CAP_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class GuardMetrics:
    """The contract's metrics, in their own registry, updated from enforcer events."""

    def __init__(self, config: AppConfig, active_users: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.interventions = Counter(
            "guard_interventions", "Account-cycles in which the enforcer placed close orders",
            registry=r)
        self.activations = Counter(
            "guard_forced_unwind_activations",
            "Forced unwinds turned on since the process started, from any source", registry=r)
        self.orders = Counter(
            "guard_orders", "Close orders by outcome", ["account", "result"], registry=r)
        self.positions = Gauge(
            "guard_account_positions", "Open positions at the last read", ["account"], registry=r)
        self.notional = Gauge(
            "guard_account_notional", "Gross value of the positions at the last read, in quote",
            ["account"], registry=r)
        self.over_cap = Gauge(
            "guard_account_over_cap", "1 when the last read found the account over a cap",
            ["account"], registry=r)
        self.up = Gauge(
            "guard_account_up", "1 when the last read of the account succeeded", ["account"],
            registry=r)
        self.user_unwind = Gauge(
            "guard_user_forced_unwind", "1 while the user's forced unwind is on", ["user"],
            registry=r)
        self.cycle_duration = Histogram(
            "guard_cycle_duration_seconds", "Duration of enforcer cycles", buckets=CYCLE_BUCKETS,
            registry=r)
        self.time_to_under_cap = Histogram(
            "guard_time_to_under_cap_seconds",
            "From the first read over a cap to the first read back under it",
            buckets=UNDER_CAP_BUCKETS, registry=r)
        self.last_cycle = Gauge(
            "guard_last_cycle_timestamp_seconds", "When the last cycle finished (Unix time)",
            registry=r)
        self._lock = threading.Lock()
        self._active: set[str] = set(active_users)
        self._over_since: dict[str, float] = {}
        for account in config.accounts:
            self._account_known(account.id)
        for user in config.user_names:
            self.user_unwind.labels(user=user).set(1 if user in self._active else 0)

    def _account_known(self, account_id: str) -> None:
        # Every result label exists from the start, so rate() sees the first order.
        for result in ORDER_RESULTS:
            self.orders.labels(account=account_id, result=result)
        self.up.labels(account=account_id)

    # -- observer ------------------------------------------------------------------

    def __call__(self, event: EnforcerEvent) -> None:
        with self._lock:
            if isinstance(event, AccountRead):
                self._on_read(event)
            elif isinstance(event, AccountError):
                self._account_known(event.account_id)
                self.up.labels(account=event.account_id).set(0)
            elif isinstance(event, OrderFilled):
                self.orders.labels(account=event.close.account_id, result="filled").inc()
            elif isinstance(event, OrderRejected):
                result = "unknown" if event.unknown_outcome else "rejected"
                self.orders.labels(account=event.close.account_id, result=result).inc()
            elif isinstance(event, Intervention):
                self.interventions.inc()
            elif isinstance(event, CycleFinished) and not event.fast:
                # Full cycles only, like the journal's cycle_end: the fast re-reads of an
                # unwind (every few seconds, for hours) would drown the distribution.
                self.cycle_duration.observe(event.duration)
                self.last_cycle.set(event.ts)
            elif isinstance(event, FlagsChanged):
                self._set_active(set(event.active_users))

    def flags_seen(self, active_users: Iterable[str]) -> None:
        """The users whose forced unwind is on now (the API calls this after a change)."""
        with self._lock:
            self._set_active(set(active_users))

    def _on_read(self, event: AccountRead) -> None:
        snap = event.snapshot
        account_id = snap.account_id
        self._account_known(account_id)
        self.up.labels(account=account_id).set(1)
        self.positions.labels(account=account_id).set(snap.position_count)
        self.notional.labels(account=account_id).set(snap.notional)
        self.over_cap.labels(account=account_id).set(1 if event.over_cap else 0)
        if event.over_cap:
            self._over_since.setdefault(account_id, event.ts)
        elif account_id in self._over_since:
            self.time_to_under_cap.observe(max(0.0, event.ts - self._over_since.pop(account_id)))
        # A cycle reads the flags itself: a change it picked up before the flag watcher
        # did shows here first.
        if event.forced_unwind and snap.user not in self._active:
            self._set_active(self._active | {snap.user})
        elif not event.forced_unwind and snap.user in self._active:
            self._set_active(self._active - {snap.user})

    def _set_active(self, active: set[str]) -> None:
        turned_on = active - self._active
        if turned_on:
            self.activations.inc(len(turned_on))
        for user in turned_on | (self._active - active):
            self.user_unwind.labels(user=user).set(1 if user in active else 0)
        self._active = active

    # -- exposition ----------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format 0.0.4."""
        with self._lock:
            return generate_latest(self.registry)

    def snapshot(self) -> Mapping[str, float]:
        """Sample name{labels} -> value, for tests and the window."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
        return out
