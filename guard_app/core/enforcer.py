"""The continuous exit enforcer: every cycle, every account, isolated, whatever fails.

One ``Enforcer`` lives on one asyncio loop (the GUI runs it on its own QThread, the
headless ``guard-app run`` on the main thread). Each cycle it reads every account
concurrently, asks the pure policy what to close, and closes it:

* account caps and forced unwinds are enforced as soon as that account is read, so a
  slow or failing account never delays another one;
* per-user caps are enforced once all of that user's accounts have been read;
* every failure is caught per account, journaled, reported and retried next cycle;
  rate limits park that exchange for as long as it asked; a refused key parks the
  account until its keys change (or a slow retry);
* a forced-unwind flag changed by any process (the window, the tray, ``guard-app
  unwind`` in a terminal) is seen within a fraction of a second through the store's
  ``data_version`` (SQLite's own; on PostgreSQL a counter LISTEN/NOTIFY bumps) and
  wakes the loop at once;
* with other enforcers on the same state (a desk), it acts only on the accounts whose
  lease it holds (core/state/leases.py): renewed from this loop, checked before
  every order.

Nothing here blocks the loop for long: keyring reads run in a worker thread.
Thread-safe entry points for other threads: ``wake``, ``stop``, ``pause``, ``resume``,
``update_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets as pysecrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard_app.core.config import AccountConfig, AppConfig
from guard_app.core.errors import (
    BrokerError,
    GuardError,
    NeedsUserError,
    OrderUnknownError,
    RateLimitedError,
)
from guard_app.core.events import (
    AccountError,
    AccountRead,
    CycleFinished,
    CycleStarted,
    EnforcerEvent,
    FlagsChanged,
    Heartbeat,
    Observer,
    OrderFilled,
    OrderPlaced,
    OrderRejected,
    OverCapDetected,
    UnwindProgress,
)
from guard_app.core.models import AccountSnapshot, Caps, CloseReason, OrderResult, PlannedClose
from guard_app.core.policy import describe_plan, describe_user_plan, plan_closes
from guard_app.core.ports import BrokerFactory, BrokerPort
from guard_app.core.secrets import ApiKeys, SecretStore
from guard_app.core.state import StateStore, open_state
from guard_app.core.state.leases import LeaseKeeper

log = logging.getLogger("guard_app.enforcer")

NEEDS_USER_RETRY_SECONDS = 300.0
FLAG_POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 1.0
STOP_GRACE_SECONDS = 3.0

@dataclass
class AccountRuntime:
    """What the enforcer remembers about one account between cycles."""

    config: AccountConfig
    broker: BrokerPort | None = None
    keys_fingerprint: str | None = None
    parked_until: float = 0.0  # monotonic; needs-user parking
    park_reason: str = ""
    last_snapshot: AccountSnapshot | None = None
    consecutive_failures: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class CycleReport:
    """What one cycle saw and did (returned by ``run_cycle``; used by ``run --once``)."""

    cycle_id: int
    snapshots: dict[str, AccountSnapshot] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    orders: list[OrderResult] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    planned: list[PlannedClose] = field(default_factory=list)
    interventions: int = 0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every account was read and no close was rejected."""
        return not self.errors and not self.rejected


def _fingerprint(keys: ApiKeys) -> str:
    # Only to notice that keys changed; the digest never leaves this process.
    raw = f"{keys.api_key}\0{keys.secret}\0{keys.password or ''}".encode()
    return hashlib.sha256(raw).hexdigest()


def _exchange_key(account: AccountConfig) -> str:
    """Accounts sharing this key share a rate limit (same exchange, same endpoints)."""
    urls = account.ccxt.get("urls")
    return account.exchange + (json.dumps(urls, sort_keys=True) if urls else "")


def _money(value: float, quote: str) -> str:
    return f"{value:,.2f} {quote}"


class Enforcer:
    """Keeps every configured account under its caps and honours forced unwinds."""

    def __init__(
        self,
        config: AppConfig,
        data_dir: Path,
        secrets: SecretStore | None = None,
        observer: Observer | None = None,
        *,
        broker_factory: BrokerFactory,
        source: str = "enforcer",
    ) -> None:
        self._config = config
        self._pending_config: AppConfig | None = None
        self._data_dir = data_dir
        self._secrets = secrets or SecretStore()
        self._observer = observer
        self._broker_factory: BrokerFactory = broker_factory
        self._source = source
        self._state: StateStore | None = None
        self._accounts: dict[str, AccountRuntime] = {}
        self._exchange_parked_until: dict[str, tuple[float, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_event: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread_lock = threading.Lock()
        self._wake_requested = False
        self._stop_requested = False
        self._paused = False
        self._forced: dict[str, Any] = {}
        self._data_version: int | None = None
        self._next_cycle_at = 0.0
        # Active/standby per account (a desk): act only on accounts whose lease we hold.
        self._leases = LeaseKeeper(config.state.lease_seconds)

    # -- thread-safe controls -----------------------------------------------------

    def wake(self) -> None:
        """Run a cycle now (or right after the one in progress). Any thread."""
        self._signal(lambda: self._wake_event.set() if self._wake_event else None, "wake")

    def stop(self) -> None:
        """Stop after the requests in flight. Any thread."""
        self._signal(lambda: self._stop_event.set() if self._stop_event else None, "stop")

    def pause(self) -> None:
        """Stop enforcing caps (forced unwinds still run). Any thread."""
        self._paused = True
        self.wake()

    def resume(self) -> None:
        self._paused = False
        self.wake()

    @property
    def paused(self) -> bool:
        return self._paused

    def update_config(self, config: AppConfig) -> None:
        """Use a new config from the next cycle on (accounts added, edited, removed)."""
        with self._thread_lock:
            self._pending_config = config
        self.wake()

    def _signal(self, action: Callable[[], None], kind: str) -> None:
        with self._thread_lock:
            if kind == "wake":
                self._wake_requested = True
            else:
                self._stop_requested = True
            loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing
                loop.call_soon_threadsafe(action)

    # -- plumbing -----------------------------------------------------------------

    @property
    def config(self) -> AppConfig:
        return self._config

    @property
    def state(self) -> StateStore:
        """The enforcer's own connection to the state database (its thread only)."""
        if self._state is None:
            self._state = open_state(self._data_dir, self._config.state, self._secrets)
        return self._state

    def _emit(self, event: EnforcerEvent) -> None:
        if self._observer is None:
            return
        try:
            self._observer(event)
        except Exception:  # an observer bug must never stop enforcement
            log.exception("event observer failed on %s", type(event).__name__)

    def _journal(self, kind: str, message: str, **kw: Any) -> None:
        try:
            self.state.journal(kind, message, **kw)
        except Exception:  # the journal failing must not stop exits
            log.exception("could not write to the journal: %s", message)

    def _apply_pending_config(self) -> None:
        with self._thread_lock:
            pending, self._pending_config = self._pending_config, None
        if pending is None:
            return
        old = {a.id: a for a in self._config.accounts}
        self._config = pending
        for account in pending.accounts:
            runtime = self._accounts.get(account.id)
            if runtime is not None and old.get(account.id) != account:
                runtime.config = account
                self._drop_broker(runtime)
        for account_id in set(self._accounts) - {a.id for a in pending.accounts}:
            self._drop_broker(self._accounts.pop(account_id))
        log.info("config reloaded: %d accounts", len(pending.accounts))

    def _drop_broker(self, runtime: AccountRuntime) -> None:
        broker, runtime.broker, runtime.keys_fingerprint = runtime.broker, None, None
        if broker is not None:
            task = asyncio.ensure_future(broker.aclose())
            task.add_done_callback(lambda _t: None)

    def _runtime(self, account: AccountConfig) -> AccountRuntime:
        runtime = self._accounts.get(account.id)
        if runtime is None:
            runtime = self._accounts[account.id] = AccountRuntime(account)
        return runtime

    def enforced_by(self, account_id: str) -> str | None:
        """``HOST:PID`` of the enforcer acting on the account (this one or another)."""
        return self._leases.enforced_by(account_id)

    def _renew_leases(self) -> None:
        if self._leases.renew(self.state, [a.id for a in self._config.accounts]):
            self.wake()  # accounts taken over: enforce them now, not at the next interval

    def _read_flags(self) -> dict[str, Any]:
        return dict(self.state.forced_unwind_flags())

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Cycle until ``stop()``. Never lets an exception end the loop.

        Raises ``StateError`` at once when the state database is unusable: running
        without it would forget forced-unwind flags.
        """
        _ = self.state
        self._loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        self._stop_event = asyncio.Event()
        with self._thread_lock:
            if self._wake_requested:
                self._wake_event.set()
            if self._stop_requested:
                self._stop_event.set()
        watcher = asyncio.create_task(self._watch_flags(), name="guard-flag-watcher")
        leases = asyncio.create_task(self._keep_leases(), name="guard-leases")
        log.info(
            "enforcer started: %d accounts, every %g s%s",
            len(self._config.accounts),
            self._config.enforcer.interval_seconds,
            " (dry run: no orders will be placed)" if self._config.enforcer.dry_run else "",
        )
        try:
            while not self._stop_event.is_set():
                cycle = asyncio.create_task(self._guarded_cycle(), name="guard-cycle")
                stop_wait = asyncio.create_task(self._stop_event.wait())
                await asyncio.wait({cycle, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not cycle.done():
                    # Stopping: let the requests in flight finish, briefly.
                    done, _ = await asyncio.wait({cycle}, timeout=STOP_GRACE_SECONDS)
                    if not done:
                        cycle.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await cycle
                stop_wait.cancel()
                if self._stop_event.is_set():
                    break
                await self._sleep_until_next_cycle()
        finally:
            for task in (watcher, leases):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.aclose()
            log.info("enforcer stopped")

    async def _sleep_until_next_cycle(self) -> None:
        if self._wake_event is None or self._stop_event is None:
            return
        interval = self._config.enforcer.interval_seconds
        self._next_cycle_at = time.monotonic() + interval
        wake = asyncio.create_task(self._wake_event.wait())
        stop = asyncio.create_task(self._stop_event.wait())
        try:
            await asyncio.wait({wake, stop}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            stop.cancel()

    @property
    def next_cycle_in(self) -> float:
        return max(0.0, self._next_cycle_at - time.monotonic())

    async def _guarded_cycle(self) -> None:
        try:
            await self.run_cycle()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in one cycle must not end enforcement: log it, try again next cycle.
            log.exception("enforcer cycle failed unexpectedly; retrying next cycle")

    async def _watch_flags(self) -> None:
        """Notice flag changes from any process within FLAG_POLL_SECONDS; heartbeat."""
        last_beat = 0.0
        while True:
            try:
                version = self.state.data_version()
                if version != self._data_version:
                    self._data_version = version
                    flags = self._read_flags()
                    if set(flags) != set(self._forced):
                        self._forced = flags
                        self._emit(FlagsChanged(active_users=tuple(sorted(flags))))
                        log.info(
                            "forced unwind now active for: %s; checking accounts now",
                            ", ".join(sorted(flags)) or "nobody",
                        )
                        self.wake()
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_SECONDS:
                    last_beat = now
                    self._emit(Heartbeat(next_cycle_in=self.next_cycle_in, paused=self._paused))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not read forced-unwind flags; trying again")
            await asyncio.sleep(FLAG_POLL_SECONDS)

    async def _keep_leases(self) -> None:
        """Renew the leases from this very loop: a loop that freezes loses them."""
        while True:
            try:
                self._renew_leases()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not renew the account leases; trying again")
            await asyncio.sleep(self._leases.renew_seconds)

    async def aclose(self) -> None:
        """Close every exchange session and the state database."""
        for runtime in self._accounts.values():
            if runtime.broker is not None:
                await runtime.broker.aclose()
                runtime.broker = None
        if self._state is not None:
            self._leases.release(self._state)
            self._state.close()
            self._state = None

    # -- one cycle ----------------------------------------------------------------

    async def run_cycle(self) -> CycleReport:
        """Read and enforce every account once."""
        if self._wake_event is not None:
            self._wake_event.clear()
        with self._thread_lock:
            self._wake_requested = False
        self._apply_pending_config()
        started = time.monotonic()
        config = self._config
        cycle_id = self.state.next_cycle_id()
        report = CycleReport(cycle_id)
        if self._leases.due():  # first cycle, or `run --once`
            self._renew_leases()
        self._forced = self._read_flags()
        self._data_version = self.state.data_version()
        forced = set(self._forced)
        self._emit(CycleStarted(cycle_id=cycle_id, account_ids=tuple(a.id for a in config.accounts)))
        self._journal(
            "cycle_start",
            f"cycle {cycle_id}: {len(config.accounts)} accounts"
            + (f", forced unwind for {', '.join(sorted(forced))}" if forced else ""),
            cycle_id=cycle_id,
        )
        users: dict[str, list[AccountConfig]] = {}
        for account in config.accounts:
            if self._leases.holds(account.id):  # the others are another enforcer's to act on
                users.setdefault(account.user, []).append(account)
        await asyncio.gather(
            *(self._enforce_user(cycle_id, user, accounts, forced, report)
              for user, accounts in users.items())
        )
        report.duration = time.monotonic() - started
        failed = tuple(sorted(report.errors))
        self._journal(
            "cycle_end",
            f"cycle {cycle_id} done in {report.duration:.2f} s: "
            f"{report.interventions} interventions, {len(report.orders)} orders, "
            f"{len(failed)} accounts failed",
            cycle_id=cycle_id,
            data={"duration": report.duration, "failed": list(failed)},
        )
        self._emit(
            CycleFinished(
                cycle_id=cycle_id,
                duration=report.duration,
                interventions=report.interventions,
                failed_accounts=failed,
                next_cycle_in=config.enforcer.interval_seconds,
            )
        )
        return report

    def _caps_for(self, account: AccountConfig) -> Caps:
        return Caps() if self._paused else account.caps

    async def _enforce_user(
        self,
        cycle_id: int,
        user: str,
        accounts: Sequence[AccountConfig],
        forced: set[str],
        report: CycleReport,
    ) -> None:
        unwinding = user in forced
        results = await asyncio.gather(
            *(self._enforce_account(cycle_id, a, forced, report) for a in accounts)
        )
        snapshots = [snap for snap, _ in results if snap is not None]
        done_keys = {key for _, keys in results for key in keys}
        closed = sum(1 for _, outcomes in results for ok in outcomes.values() if ok)
        user_cfg = self._config.users.get(user)
        if user_cfg is not None and not self._paused and snapshots:
            caps = {a.id: self._caps_for(a) for a in accounts}
            plan = plan_closes(snapshots, caps, {user: user_cfg.caps}, forced)
            extra = [pc for pc in plan if pc.key not in done_keys]
            if extra:
                count = sum(s.position_count for s in snapshots)
                notional = sum(s.notional for s in snapshots)
                text = describe_user_plan(user, snapshots, user_cfg.caps, plan)
                self._announce_over_cap(
                    cycle_id, text, None, user, count, notional, user_cfg.caps, extra
                )
                by_account: dict[str, list[PlannedClose]] = {}
                for pc in extra:
                    by_account.setdefault(pc.account_id, []).append(pc)
                outcomes = await asyncio.gather(
                    *(self._execute(cycle_id, self._accounts[aid], pcs, report)
                      for aid, pcs in by_account.items())
                )
                closed += sum(1 for o in outcomes for ok in o.values() if ok)
        if unwinding:
            total = sum(s.position_count for s in snapshots)
            remaining = max(0, total - closed)
            self._emit(UnwindProgress(cycle_id=cycle_id, user=user, closed=closed,
                                      total=total, remaining=remaining))
            unread = [a.id for a in accounts if a.id not in report.snapshots]
            msg = (f"forced unwind active for {user}: {total} positions, {closed} closed this cycle"
                   + (f"; not read: {', '.join(unread)} (retrying)" if unread else ""))
            if total == 0 and not unread:
                msg = f"forced unwind active for {user}: flat, nothing left to close"
            log.info(msg)
            self._journal("unwind_progress", msg, user=user, cycle_id=cycle_id,
                          data={"closed": closed, "total": total, "unread": unread})

    async def _enforce_account(
        self,
        cycle_id: int,
        account: AccountConfig,
        forced: set[str],
        report: CycleReport,
    ) -> tuple[AccountSnapshot | None, dict[tuple[str, str, str], bool]]:
        """Read one account and enforce its own caps / forced unwind. Never raises."""
        runtime = self._runtime(account)
        if not self._leases.holds(account.id):
            return None, {}  # another enforcer holds this account (standby here)
        if runtime.lock.locked():
            return None, {}  # a cycle for this account is still running: never two at once
        async with runtime.lock:
            try:
                return await self._enforce_account_locked(cycle_id, runtime, forced, report)
            except asyncio.CancelledError:
                raise
            except BrokerError as exc:
                self._account_failed(cycle_id, runtime, exc, report)
            except GuardError as exc:
                self._report_account_error(cycle_id, runtime, "keyring", str(exc), report)
            except Exception as exc:
                log.exception("%s: unexpected error", account.id)
                self._report_account_error(
                    cycle_id, runtime, "internal", f"unexpected error: {exc!r}", report
                )
            return None, {}

    async def _enforce_account_locked(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        forced: set[str],
        report: CycleReport,
    ) -> tuple[AccountSnapshot | None, dict[tuple[str, str, str], bool]]:
        account = runtime.config
        broker = await self._broker_for(cycle_id, runtime, report)
        if broker is None:
            return None, {}
        now = time.monotonic()
        parked = self._exchange_parked_until.get(_exchange_key(account))
        if parked and parked[0] > now:
            wait = parked[0] - now
            self._report_account_error(
                cycle_id, runtime, "rate_limited",
                f"{account.exchange} asked us to slow down; waiting {wait:.0f} s before the next request",
                report, retry_in=wait,
            )
            return None, {}
        snapshot = await broker.snapshot()
        runtime.last_snapshot = snapshot
        runtime.consecutive_failures = 0
        runtime.parked_until = 0.0
        report.snapshots[account.id] = snapshot
        caps = self._caps_for(account)
        plan = plan_closes([snapshot], {account.id: caps}, {}, forced)
        over = bool(plan) and any(pc.reason is not CloseReason.FORCED_UNWIND for pc in plan)
        with contextlib.suppress(Exception):
            self.state.record_over_cap(account.id, caps.count_excess(snapshot.position_count) > 0
                                       or caps.notional_exceeded(snapshot.notional))
        self._emit(AccountRead(cycle_id=cycle_id, snapshot=snapshot, caps=caps, over_cap=over,
                               forced_unwind=account.user in forced, planned=tuple(plan)))
        self._journal(
            "snapshot",
            f"{account.id}: {snapshot.position_count} positions "
            f"({_money(snapshot.notional, account.quote)}), cap {account.max_positions}"
            + (f", {len(snapshot.dust)} dust" if snapshot.dust else "")
            + (f", {len(snapshot.unpriced)} unpriced" if snapshot.unpriced else ""),
            account_id=account.id, user=account.user, cycle_id=cycle_id,
            data={"positions": [[p.symbol, p.side.value, p.amount, p.value]
                                for p in snapshot.positions],
                  "dust": [[h.symbol, h.amount, h.value] for h in snapshot.dust]},
        )
        if not plan:
            return snapshot, {}
        text = describe_plan(snapshot, caps, plan, forced=account.user in forced)
        if over:
            self._announce_over_cap(
                cycle_id, text, account.id, account.user, snapshot.position_count,
                snapshot.notional, caps,
                [pc for pc in plan if pc.reason is not CloseReason.FORCED_UNWIND],
            )
        else:
            log.warning(text)
        outcomes = await self._execute(cycle_id, runtime, plan, report)
        return snapshot, outcomes

    def _announce_over_cap(
        self,
        cycle_id: int,
        text: str,
        account_id: str | None,
        user: str,
        count: int,
        notional: float,
        caps: Caps,
        plan: Sequence[PlannedClose],
    ) -> None:
        log.warning(text)
        self._journal("over_cap", text, account_id=account_id, user=user, cycle_id=cycle_id,
                      data={"count": count, "notional": notional,
                            "closes": [pc.position.symbol for pc in plan]})
        self._emit(OverCapDetected(
            cycle_id=cycle_id, account_id=account_id, user=user, count=count,
            max_positions=caps.max_positions, notional=notional, max_notional=caps.max_notional,
            planned=tuple(plan),
        ))

    async def _broker_for(
        self, cycle_id: int, runtime: AccountRuntime, report: CycleReport
    ) -> BrokerPort | None:
        account = runtime.config
        keys = await asyncio.to_thread(self._secrets.get, account.id)  # may raise SecretStoreError
        if keys is None:
            self._drop_broker(runtime)
            self._report_account_error(
                cycle_id, runtime, "no_keys",
                f"no API keys in the keyring; add them with 'guard-app keys set {account.id}' "
                "(skipped until then)",
                report,
            )
            return None
        fingerprint = _fingerprint(keys)
        if fingerprint != runtime.keys_fingerprint:
            self._drop_broker(runtime)
            runtime.parked_until = 0.0  # new keys: try them at once
            runtime.broker = self._broker_factory(account, keys)
            runtime.keys_fingerprint = fingerprint
        elif runtime.parked_until > time.monotonic():
            wait = runtime.parked_until - time.monotonic()
            self._report_account_error(
                cycle_id, runtime, "needs_user",
                f"{runtime.park_reason}; next try in {wait:.0f} s or as soon as its keys change",
                report, retry_in=wait, journal=False,
            )
            return None
        return runtime.broker

    async def _execute(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        plan: Sequence[PlannedClose],
        report: CycleReport,
    ) -> dict[tuple[str, str, str], bool]:
        """Send the closes of one account. Returns {close key: closed?}."""
        account = runtime.config
        dry = self._config.enforcer.dry_run
        ids = [f"ga-{cycle_id}-{i}-{pysecrets.token_hex(3)}" for i, _ in enumerate(plan)]
        for pc in plan:
            p = pc.position
            self._journal(
                "decision",
                f"{account.id}: close {p.symbol} {p.side.value} {p.amount:g} "
                f"({_money(p.value, account.quote)}) — {pc.reason.value}"
                + (" [dry run, not sent]" if dry else ""),
                account_id=account.id, user=account.user, cycle_id=cycle_id,
                data={"symbol": p.symbol, "side": p.side.value, "amount": p.amount,
                      "value": p.value, "reason": pc.reason.value, "dry_run": dry},
            )
        if dry:
            for pc, cid in zip(plan, ids, strict=True):
                self._emit(OrderPlaced(cycle_id=cycle_id, close=pc, client_order_id=cid,
                                       amount=pc.position.amount, dry_run=True))
            log.info("%s: dry run, %d closes planned and not sent", account.id, len(plan))
            report.planned.extend(plan)
            return {pc.key: False for pc in plan}
        broker = runtime.broker
        if broker is None:  # keys removed since the read: nothing can be sent
            return {pc.key: False for pc in plan}
        if not self._leases.confirm(self.state, [a.id for a in self._config.accounts],
                                    account.id):
            log.warning("%s: lease lost before sending %d closes; not sent (%s acts on it)",
                        account.id, len(plan), self.enforced_by(account.id) or "another enforcer")
            return {pc.key: False for pc in plan}
        for pc, cid in zip(plan, ids, strict=True):
            self._journal(
                "order_sent",
                f"{account.id}: market close {pc.position.symbol} {pc.position.amount:g}",
                account_id=account.id, user=account.user, cycle_id=cycle_id,
                data={"client_order_id": cid, "symbol": pc.position.symbol,
                      "side": pc.position.side.value, "amount": pc.position.amount},
            )
            self._emit(OrderPlaced(cycle_id=cycle_id, close=pc, client_order_id=cid,
                                   amount=pc.position.amount))
        report.planned.extend(plan)
        outcomes = await broker.close_many(list(zip(plan, ids, strict=True)))
        result: dict[tuple[str, str, str], bool] = {}
        placed = 0
        for pc, cid, outcome in zip(plan, ids, outcomes, strict=True):
            result[pc.key] = self._record_outcome(cycle_id, account, pc, cid, outcome, report)
            placed += isinstance(outcome, OrderResult)
        if placed:
            report.interventions += 1
            self._journal(
                "intervention", f"{account.id}: {placed} positions closed",
                account_id=account.id, user=account.user, cycle_id=cycle_id,
                data={"orders": placed},
            )
        return result

    def _record_outcome(
        self,
        cycle_id: int,
        account: AccountConfig,
        pc: PlannedClose,
        cid: str,
        outcome: OrderResult | BrokerError | None,
        report: CycleReport,
    ) -> bool:
        symbol = pc.position.symbol
        where = dict(account_id=account.id, user=account.user, cycle_id=cycle_id)
        if isinstance(outcome, OrderResult):
            report.orders.append(outcome)
            log.info("%s: closed %s %g (%s, order %s)", account.id, symbol, outcome.filled or
                     outcome.amount, outcome.status, outcome.order_id)
            self._journal("order_filled",
                          f"{account.id}: {symbol} closed, {outcome.filled:g} filled ({outcome.status})",
                          data={"client_order_id": cid, "order_id": outcome.order_id,
                                "filled": outcome.filled, "status": outcome.status}, **where)
            self._emit(OrderFilled(cycle_id=cycle_id, close=pc, client_order_id=cid,
                                   order_id=outcome.order_id, filled=outcome.filled,
                                   status=outcome.status))
            return True
        if outcome is None:
            msg = f"{account.id}: {symbol} left as dust after rounding; nothing sent"
            log.info(msg)
            self._journal("order_skipped", msg, data={"client_order_id": cid}, **where)
            return True
        unknown = isinstance(outcome, OrderUnknownError)
        if isinstance(outcome, RateLimitedError):
            self._park_exchange(account, outcome)
        if isinstance(outcome, NeedsUserError):
            self._park_account(self._accounts[account.id], outcome)
        next_step = ("position will be re-read before any new order" if unknown
                     else "retrying next cycle")
        msg = f"{account.id}: close of {symbol} failed: {outcome.reason}; {next_step}"
        log.warning(msg)
        report.rejected.append(f"{account.id} {symbol}: {outcome.reason}")
        self._journal("order_unknown" if unknown else "order_rejected", msg,
                      data={"client_order_id": cid, "code": outcome.code}, **where)
        self._emit(OrderRejected(cycle_id=cycle_id, close=pc, client_order_id=cid,
                                 reason=outcome.reason, unknown_outcome=unknown))
        return False

    # -- failures -----------------------------------------------------------------

    def _park_exchange(self, account: AccountConfig, exc: RateLimitedError) -> None:
        if exc.retry_after:
            until = time.monotonic() + exc.retry_after
            self._exchange_parked_until[_exchange_key(account)] = (until, exc.reason)

    def _park_account(self, runtime: AccountRuntime, exc: NeedsUserError) -> None:
        runtime.parked_until = time.monotonic() + max(
            NEEDS_USER_RETRY_SECONDS, self._config.enforcer.interval_seconds
        )
        runtime.park_reason = exc.reason

    def _account_failed(
        self, cycle_id: int, runtime: AccountRuntime, exc: BrokerError, report: CycleReport
    ) -> None:
        interval = self._config.enforcer.interval_seconds
        if isinstance(exc, NeedsUserError):
            self._park_account(runtime, exc)
            kind, retry_in = "needs_user", runtime.parked_until - time.monotonic()
            message = f"{exc.reason}: needs you; fix the key or its permissions (next try in {retry_in:.0f} s)"
        elif isinstance(exc, RateLimitedError):
            self._park_exchange(runtime.config, exc)
            retry_in = max(exc.retry_after or 0.0, interval)
            kind, message = "rate_limited", f"{exc.reason}; retrying in {retry_in:.0f} s"
        else:
            kind, retry_in = "temporary", interval
            message = f"{exc.reason}; retrying in {interval:g} s"
        self._report_account_error(cycle_id, runtime, kind, message, report, retry_in=retry_in)

    def _report_account_error(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        kind: str,
        message: str,
        report: CycleReport,
        *,
        retry_in: float | None = None,
        journal: bool = True,
    ) -> None:
        account = runtime.config
        runtime.consecutive_failures += 1
        report.errors[account.id] = message
        line = f"{account.id}: {message}"
        log.warning(line)
        if journal:
            self._journal("account_error", line, account_id=account.id, user=account.user,
                          cycle_id=cycle_id, data={"kind": kind,
                                                   "failures": runtime.consecutive_failures})
        self._emit(AccountError(cycle_id=cycle_id, account_id=account.id, kind=kind,
                                message=message, retry_in=retry_in))
