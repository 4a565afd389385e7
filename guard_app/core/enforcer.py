"""The continuous exit enforcer: every cycle, every account, isolated, whatever fails.

One ``Enforcer`` lives on one asyncio loop (the GUI runs it on its own QThread, the
headless ``guard-app run`` on the main thread). Each cycle it reads every account
concurrently, asks the pure policy what to close, and closes it:

* account caps and forced unwinds are enforced as soon as that account is read, so a
  slow or failing account never delays another one;
* per-user caps are enforced once all of that user's accounts have been read;
* after its closes are answered an account is re-read at once (docs/enforcement.md rule 13) and
  what is left is closed, within ``MAX_CLOSE_ROUNDS`` rounds;
* a forced unwind is a kill switch (rule 12): every open order of the account is
  cancelled first, so nothing resting can reopen a position or block a close;
* while a user's unwind is on, and for one normal interval after an account was last
  over a cap, that account is re-read every ``fast_interval_seconds`` (rule 14);
* every failure is caught per account, reported and retried next cycle; rate limits
  park that exchange for as long as it asked; a refused key parks the account until
  its keys change (or a slow retry);
* a forced-unwind flag changed by any process (the window, the tray, ``guard-app
  unwind`` in a terminal) is seen within ``FLAG_POLL_SECONDS`` through the state
  store's "has anything changed?" check and wakes the loop at once (rule 11); on
  PostgreSQL that check is a counter LISTEN/NOTIFY bumps (no round trip);
* with other enforcers on the same state (a desk) it acts only on the accounts whose
  lease it holds (``core/state/leases.py``): renewed by this loop, confirmed before
  every send.

The enforcer only emits events (``core/events.py``). The journal and the trader log
are observers (``core/journal.py``), wired in by default; callers add their own.
Where a close order is sent: :class:`~guard_app.core.orders.OrderSender`. Where the
journal is written: :class:`~guard_app.core.journal.JournalObserver`.

Nothing here blocks the loop for long: keyring reads run on the keyring's own thread.
Thread-safe entry points for other threads: ``wake``, ``stop``, ``pause``, ``resume``,
``update_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from guard_app.core.cadence import FLAG_POLL_SECONDS, Cadence, FlagWatcher
from guard_app.core.config import AccountConfig, AppConfig
from guard_app.core.errors import (
    BrokerError,
    ErrorKind,
    GuardError,
    NeedsUserError,
    RateLimitedError,
)
from guard_app.core.events import (
    AccountError,
    AccountRead,
    ConfigReloaded,
    CycleFinished,
    CycleStarted,
    EnforcerEvent,
    EnforcerStarted,
    EnforcerStopped,
    Heartbeat,
    Intervention,
    JournalWritten,
    LeasesChanged,
    Observer,
    OpenOrdersCancelled,
    OverCapDetected,
    SendGate,
    UnwindPlanned,
    UnwindProgress,
    UnwindRound,
)
from guard_app.core.journal import JournalObserver, JournalTail, TraderLog
from guard_app.core.models import (
    AccountSnapshot,
    Caps,
    CloseReason,
    JournalEntry,
    OrderResult,
    PlannedClose,
)
from guard_app.core.orders import OrderSender
from guard_app.core.policy import describe_plan, describe_user_plan, plan_closes
from guard_app.core.ports import BrokerFactory, BrokerPort
from guard_app.core.secrets import ApiKeys, SecretReader, SecretStore
from guard_app.core.state import StateStore, StateUnavailableError, open_state
from guard_app.core.state.leases import LeaseKeeper

log = logging.getLogger("guard_app.enforcer")

NEEDS_USER_RETRY_SECONDS = 300.0
HEARTBEAT_SECONDS = 1.0
STOP_GRACE_SECONDS = 3.0
# Between cycles, how often each account's connection and markets are kept ready.
KEEP_WARM_SECONDS = 30.0
# Close, re-read, close what is left: at most this many close rounds per account and
# cycle; anything still open after them waits for the next (fast) cycle.
MAX_CLOSE_ROUNDS = 3

CloseKey = tuple[str, str, str]


@dataclass
class AccountRuntime:
    """What the enforcer remembers about one account between cycles."""

    config: AccountConfig
    broker: BrokerPort | None = None
    keys_fingerprint: str | None = None
    parked_until: float = 0.0  # monotonic; needs-user parking
    park_reason: str = ""
    consecutive_failures: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Fast re-reads (rule 14) until then (monotonic): set when found over a cap.
    hot_until: float = 0.0
    # Kill switch: when every open order was last cancelled (monotonic), 0 = not in
    # this unwind yet.
    cancelled_at: float = 0.0


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


@dataclass
class _AccountPass:
    """One account's part of a cycle: first read, state after the closes, outcomes."""

    first: AccountSnapshot | None = None
    last: AccountSnapshot | None = None
    outcomes: dict[CloseKey, bool] = field(default_factory=dict)


def _fingerprint(keys: ApiKeys) -> str:
    # Only to notice that keys changed; the digest never leaves this process.
    raw = f"{keys.api_key}\0{keys.secret}\0{keys.password or ''}".encode()
    return hashlib.sha256(raw).hexdigest()


def _exchange_key(account: AccountConfig) -> str:
    """Accounts sharing this key share a rate limit (same exchange, same endpoints)."""
    urls = account.ccxt.get("urls")
    return account.exchange + (json.dumps(urls, sort_keys=True) if urls else "")


class Enforcer:
    """Keeps every configured account under its caps and honours forced unwinds.

    ``observers`` follow the event stream after the standard ones (the journal and
    the trader log; ``standard_observers=False`` leaves them out, e.g. for a second
    enforcer that must not journal). ``observer`` is the same as one more entry in
    ``observers`` (kept for callers that pass one positionally).
    """

    def __init__(
        self,
        config: AppConfig,
        data_dir: Path,
        secrets: SecretReader | None = None,
        observer: Observer | None = None,
        *,
        observers: Sequence[Observer] = (),
        broker_factory: BrokerFactory,
        standard_observers: bool = True,
    ) -> None:
        self._config = config
        self._pending_config: AppConfig | None = None
        self._data_dir = data_dir
        self._secrets: SecretReader = secrets or SecretStore()
        chain: list[Observer] = []
        if standard_observers:
            chain += [JournalObserver(lambda: self.state, on_entry=self._journal_written),
                      TraderLog()]
        chain += list(observers)
        if observer is not None:
            chain.append(observer)
        self._observers: tuple[Observer, ...] = tuple(chain)
        gates: tuple[SendGate, ...] = tuple(
            o for o in chain if isinstance(o, SendGate)  # type: ignore[misc]
        )
        self._orders = OrderSender(self._emit, gates)
        self._broker_factory: BrokerFactory = broker_factory
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
        self._flags = FlagWatcher(lambda: self.state, self._emit)
        self._tail = JournalTail(lambda: self.state, self._emit)
        self._cadence = Cadence()
        # Active/standby per account (a desk): act only on accounts whose lease we hold.
        self._leases = LeaseKeeper(config.state.lease_seconds)
        self._leases_announced: tuple[tuple[tuple[str, str | None], ...], bool] = ((), True)

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
    def observers(self) -> tuple[Observer, ...]:
        """Everything that follows the event stream, in call order."""
        return self._observers

    @property
    def state(self) -> StateStore:
        """The enforcer's own connection to the state database (its thread only)."""
        if self._state is None:
            self._state = open_state(self._data_dir, self._config.state)
        return self._state

    def _emit(self, event: EnforcerEvent) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:  # an observer bug must never stop enforcement
                log.exception("event observer failed on %s", type(event).__name__)

    def _journal_written(self, entry: JournalEntry) -> None:
        self._tail.own(entry)
        self._emit(JournalWritten(entry=entry))

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
        self._emit(ConfigReloaded(accounts=len(pending.accounts)))

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

    def _renew_leases(self, *, wake: bool = True) -> None:
        ids = [a.id for a in self._config.accounts]
        gained = self._leases.renew(self.state, ids)
        view = tuple((a, self._leases.enforced_by(a)) for a in ids)
        ok = self._leases.store_ok
        if (view, ok) != self._leases_announced:
            self._leases_announced = (view, ok)
            self._emit(LeasesChanged(holder=self._leases.holder, enforced_by=view,
                                     database_ok=ok, database=self.state.location))
        if gained and wake and self._cadence.next_full_at and self._wake_event is not None:
            # Accounts taken over: enforce them now, not at the next interval (we are on
            # the loop: set the event directly).
            self._wake_event.set()

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Cycle until ``stop()``. Never lets an exception end the loop.

        Raises ``StateError`` at once when the state database is unusable: running
        without it would forget forced-unwind flags.
        """
        self._tail.catch_up()  # opens the state database: a corrupt one stops us here
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
        warmer = asyncio.create_task(self._keep_warm(), name="guard-keep-warm")
        self._emit(EnforcerStarted(accounts=len(self._config.accounts),
                                   interval=self._config.enforcer.interval_seconds,
                                   dry_run=self._config.enforcer.dry_run))
        only: set[str] | None = None  # None: a full cycle
        try:
            while not self._stop_event.is_set():
                cycle = asyncio.create_task(self._guarded_cycle(only), name="guard-cycle")
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
                only = await self._cadence.wait(self._config.enforcer, self._hot_accounts,
                                                self._wake_event, self._stop_event)
        finally:
            for task in (watcher, leases, warmer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.aclose()
            self._emit(EnforcerStopped())

    def _hot_accounts(self) -> set[str]:
        """Accounts re-read at the fast cadence now (rule 14): their user is under
        forced unwind, or they were over a cap within the last normal interval. Parked
        accounts and exchanges wait for their own time."""
        now = time.monotonic()
        hot = set()
        for account in self._config.accounts:
            runtime = self._accounts.get(account.id)
            if runtime is None or runtime.parked_until > now:
                continue
            parked = self._exchange_parked_until.get(_exchange_key(account))
            if parked and parked[0] > now:
                continue
            if account.user in self._flags.flags or runtime.hot_until > now:
                hot.add(account.id)
        return hot

    @property
    def next_cycle_in(self) -> float:
        return self._cadence.next_cycle_in

    async def _guarded_cycle(self, only: set[str] | None = None) -> None:
        try:
            await self.run_cycle(only)
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
                if self._flags.changed_elsewhere():
                    if self._flags.refresh() and self._wake_event is not None:
                        self._wake_event.set()  # we are on the loop: no trip via wake()
                    self._tail.catch_up()
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

    async def _keep_warm(self) -> None:
        """Between cycles, keep every account's client ready for a kill (markets loaded,
        a connection open): with a long interval the first close after a quiet hour
        would otherwise pay a fresh TLS handshake and a market load. An account in a
        cycle is skipped. The account's lock is NOT taken: a kill arriving meanwhile
        must never find the account busy. A failure here is only logged."""
        while True:
            await asyncio.sleep(KEEP_WARM_SECONDS)
            for runtime in list(self._accounts.values()):
                broker = runtime.broker
                if broker is None or runtime.lock.locked():
                    continue
                try:
                    await broker.warm()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the next cycle reports real trouble
                    log.debug("%s: keeping the connection warm failed: %s", runtime.config.id, exc)

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

    async def run_cycle(self, only: set[str] | None = None) -> CycleReport:
        """Read and enforce every account once (``only``: a fast cycle over these)."""
        fast = only is not None
        if not fast:
            if self._wake_event is not None:
                self._wake_event.clear()
            with self._thread_lock:
                self._wake_requested = False
            self._apply_pending_config()
            self._flags.refresh()
            # The flag read above hides those changes from the watcher. (A desk database
            # that is away: the flags last seen are used, the tail waits for its return.)
            with contextlib.suppress(StateUnavailableError):
                self._tail.catch_up()
        started = time.monotonic()
        config = self._config
        interval = config.enforcer.interval_seconds
        if not fast:
            self._cadence.full_cycle_started(started, interval)
        cycle_id = self.state.next_cycle_id()
        report = CycleReport(cycle_id)
        forced = self._flags.users
        if self._leases.due():  # first cycle, or `run --once`
            self._renew_leases(wake=False)  # this very cycle enforces what it gains
        # Accounts another enforcer holds are its to act on (this one is their standby).
        accounts = [a for a in config.accounts
                    if (only is None or a.id in only) and self._leases.holds(a.id)]
        self._emit(CycleStarted(cycle_id=cycle_id, account_ids=tuple(a.id for a in accounts),
                                forced_users=tuple(sorted(forced)), fast=fast))
        users: dict[str, list[AccountConfig]] = {}
        for account in accounts:
            users.setdefault(account.user, []).append(account)
        await asyncio.gather(
            *(self._enforce_user(cycle_id, user, accs, forced, report, fast=fast,
                                 complete=len(accs) == len(config.accounts_of(user)))
              for user, accs in users.items())
        )
        report.duration = time.monotonic() - started
        self._emit(
            CycleFinished(
                cycle_id=cycle_id,
                duration=report.duration,
                interventions=report.interventions,
                failed_accounts=tuple(sorted(report.errors)),
                next_cycle_in=self._cadence.next_cycle_after(config.enforcer,
                                                             bool(self._hot_accounts())),
                orders=len(report.orders),
                fast=fast,
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
        *,
        fast: bool,
        complete: bool,
    ) -> None:
        runtimes = [self._runtime(a) for a in accounts]
        passes = await asyncio.gather(*(
            self._one_at_a_time(cycle_id, r, report, partial(
                self._enforce_account, cycle_id, r, forced, report, fast=fast), fast=fast)
            for r in runtimes
        ))
        done_keys = {key for p in passes for key in p.outcomes}
        closed = sum(1 for p in passes for ok in p.outcomes.values() if ok)
        user_cfg = self._config.users.get(user)
        latest = {p.last.account_id: p.last for p in passes if p.last is not None}
        if user_cfg is not None and not self._paused and latest and complete:
            caps = {a.id: self._caps_for(a) for a in accounts}
            snapshots = list(latest.values())
            plan = plan_closes(snapshots, caps, {user: user_cfg.caps}, forced)
            extra = [pc for pc in plan if pc.key not in done_keys]
            if extra:
                self._emit(OverCapDetected(
                    cycle_id=cycle_id, account_id=None, user=user,
                    count=sum(s.position_count for s in snapshots),
                    max_positions=user_cfg.caps.max_positions,
                    notional=sum(s.notional for s in snapshots),
                    max_notional=user_cfg.caps.max_notional, planned=tuple(extra),
                    message=describe_user_plan(user, snapshots, user_cfg.caps, plan),
                ))
                by_account: dict[str, list[PlannedClose]] = {}
                for pc in extra:
                    by_account.setdefault(pc.account_id, []).append(pc)
                # Over the user's cap: keep all of the user's accounts on the fast cadence.
                hot_until = time.monotonic() + self._config.enforcer.interval_seconds
                for a in accounts:
                    self._runtime(a).hot_until = hot_until
                user_passes = await asyncio.gather(*(
                    self._one_at_a_time(cycle_id, self._accounts[aid], report, partial(
                        self._close_and_verify, cycle_id, self._accounts[aid], latest[aid],
                        pcs, forced, report, fast=fast), fast=fast)
                    for aid, pcs in by_account.items()
                ))
                closed += sum(1 for p in user_passes for ok in p.outcomes.values() if ok)
                for p in user_passes:
                    if p.last is not None:
                        latest[p.last.account_id] = p.last
        if user in forced:
            self._emit(UnwindProgress(
                cycle_id=cycle_id, user=user, closed=closed,
                total=sum(p.first.position_count for p in passes if p.first is not None),
                remaining=sum(s.position_count for s in latest.values()),
                unread=tuple(a.id for a in accounts if a.id not in report.snapshots),
                fast=fast,
            ))

    async def _one_at_a_time(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        report: CycleReport,
        work: Callable[[], Awaitable[_AccountPass]],
        *,
        fast: bool,
    ) -> _AccountPass:
        """Run ``work`` on one account under its lock (never two passes at once: a
        second one is skipped) and turn any failure into an AccountError. Never raises."""
        if runtime.lock.locked():
            return _AccountPass()
        async with runtime.lock:
            try:
                return await work()
            except asyncio.CancelledError:
                raise
            except BrokerError as exc:
                self._account_failed(cycle_id, runtime, exc, report, fast=fast)
            except GuardError as exc:
                self._report_account_error(cycle_id, runtime, exc.kind, str(exc), report)
            except Exception as exc:
                log.exception("%s: unexpected error", runtime.config.id)
                self._report_account_error(
                    cycle_id, runtime, ErrorKind.INTERNAL, f"unexpected error: {exc!r}", report
                )
            return _AccountPass()

    async def _enforce_account(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        forced: set[str],
        report: CycleReport,
        *,
        fast: bool,
    ) -> _AccountPass:
        """Read one account and enforce its own caps / forced unwind."""
        account = runtime.config
        broker = await self._broker_for(cycle_id, runtime, report)
        if broker is None:
            return _AccountPass()
        now = time.monotonic()
        parked = self._exchange_parked_until.get(_exchange_key(account))
        if parked and parked[0] > now:
            wait = parked[0] - now
            self._report_account_error(
                cycle_id, runtime, ErrorKind.RATE_LIMITED,
                f"{account.exchange} asked us to slow down; waiting {wait:.0f} s before the next request",
                report, retry_in=wait,
            )
            return _AccountPass()
        killing = account.user in forced and not self._config.enforcer.dry_run
        if not killing:
            runtime.cancelled_at = 0.0
        read = self._read(cycle_id, runtime, forced, report, fast=fast)
        if killing and (runtime.cancelled_at == 0.0 or now - runtime.cancelled_at
                        >= self._config.enforcer.interval_seconds):
            # Kill switch, first thing in an unwind (and once per normal interval while
            # it lasts): no resting order may reopen a position or block a close. The
            # read goes out at the same time (one round trip less before the closes);
            # the closes wait for both.
            _, snapshot = await asyncio.gather(self._cancel_all(cycle_id, runtime, broker), read)
        else:
            snapshot = await read
        plan = self._plan(runtime, snapshot, forced)
        if not plan:
            return _AccountPass(snapshot, snapshot)
        caps = self._caps_for(account)
        text = describe_plan(snapshot, caps, plan, forced=account.user in forced)
        over_plan = [pc for pc in plan if pc.reason is not CloseReason.FORCED_UNWIND]
        if over_plan:
            self._emit(OverCapDetected(
                cycle_id=cycle_id, account_id=account.id, user=account.user,
                count=snapshot.position_count, max_positions=caps.max_positions,
                notional=snapshot.notional, max_notional=caps.max_notional,
                planned=tuple(over_plan), message=text,
            ))
        else:
            self._emit(UnwindPlanned(cycle_id=cycle_id, account_id=account.id,
                                     user=account.user, planned=tuple(plan), message=text))
            if killing and runtime.cancelled_at < now:
                # Positions came back during the unwind: whatever opened them may have
                # left orders too.
                await self._cancel_all(cycle_id, runtime, broker)
        done = await self._close_and_verify(cycle_id, runtime, snapshot, plan, forced, report,
                                            fast=fast)
        return _AccountPass(snapshot, done.last, done.outcomes)

    def _plan(
        self, runtime: AccountRuntime, snapshot: AccountSnapshot, forced: set[str]
    ) -> list[PlannedClose]:
        account = runtime.config
        return plan_closes([snapshot], {account.id: self._caps_for(account)}, {}, forced)

    async def _read(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        forced: set[str],
        report: CycleReport,
        *,
        fast: bool,
        verify: bool = False,
    ) -> AccountSnapshot:
        """Read one account, remember it and announce it (AccountRead)."""
        account = runtime.config
        if runtime.broker is None:  # its keys were removed meanwhile
            raise BrokerError(account.id, "its API keys were removed; not read")
        snapshot = await runtime.broker.snapshot()
        runtime.consecutive_failures = 0
        runtime.parked_until = 0.0
        report.snapshots[account.id] = snapshot
        caps = self._caps_for(account)
        plan = self._plan(runtime, snapshot, forced)
        over = bool(plan) and any(pc.reason is not CloseReason.FORCED_UNWIND for pc in plan)
        exceeded = (caps.count_excess(snapshot.position_count) > 0
                    or caps.notional_exceeded(snapshot.notional))
        if exceeded:
            runtime.hot_until = time.monotonic() + self._config.enforcer.interval_seconds
        with contextlib.suppress(Exception):
            self.state.record_over_cap(account.id, exceeded)
        self._emit(AccountRead(cycle_id=cycle_id, snapshot=snapshot, caps=caps, over_cap=over,
                               forced_unwind=account.user in forced, planned=tuple(plan),
                               account_caps=account.caps, verify=verify, fast=fast))
        return snapshot

    async def _cancel_all(self, cycle_id: int, runtime: AccountRuntime, broker: BrokerPort) -> None:
        """Kill switch: cancel every open order of the account. A failure is reported
        and the closes go ahead anyway: closing matters more."""
        account = runtime.config
        runtime.cancelled_at = time.monotonic()
        try:
            count = await broker.cancel_all_orders()
        except BrokerError as exc:
            if isinstance(exc, RateLimitedError):
                self._park_exchange(account, exc)
            self._emit(OpenOrdersCancelled(cycle_id=cycle_id, account_id=account.id,
                                           user=account.user, cancelled=0, error=exc.reason))
            return
        self._emit(OpenOrdersCancelled(cycle_id=cycle_id, account_id=account.id,
                                       user=account.user, cancelled=count))

    async def _close_and_verify(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        snapshot: AccountSnapshot,
        plan: Sequence[PlannedClose],
        forced: set[str],
        report: CycleReport,
        *,
        fast: bool,
    ) -> _AccountPass:
        """Close, re-read at once (rule 13), close what is left (partial fills, a
        position opened meanwhile; rule 12), at most MAX_CLOSE_ROUNDS times. A close
        that failed is not retried in the same cycle."""
        account = runtime.config
        unwinding = account.user in forced
        result = _AccountPass(snapshot, snapshot)
        failed: set[CloseKey] = set()
        placed = 0
        for round_no in range(1, MAX_CLOSE_ROUNDS + 1):
            outcomes = await self._execute(cycle_id, runtime, plan, report)
            for key, ok in outcomes.items():
                result.outcomes[key] = result.outcomes.get(key, False) or ok
                if not ok:
                    failed.add(key)
            sent = sum(1 for pc in plan if pc.key in outcomes)
            placed += sum(1 for ok in outcomes.values() if ok)
            if self._config.enforcer.dry_run or runtime.broker is None or not self._may_ask(runtime):
                break
            try:
                result.last = await self._read(cycle_id, runtime, forced, report, fast=fast,
                                               verify=True)
            except BrokerError as exc:
                self._account_failed(cycle_id, runtime, exc, report, fast=fast)
                break
            left = [pc for pc in self._plan(runtime, result.last, forced) if pc.key not in failed]
            if unwinding:
                self._emit(UnwindRound(cycle_id=cycle_id, account_id=account.id,
                                       user=account.user, round=round_no, closes=sent,
                                       left=result.last.position_count))
            if not left:
                break
            plan = left
        if placed:
            report.interventions += 1
            self._emit(Intervention(cycle_id=cycle_id, account_id=account.id,
                                    user=account.user, orders=placed))
        return result

    def _may_ask(self, runtime: AccountRuntime) -> bool:
        """False while the account or its exchange is parked (don't earn another 429)."""
        now = time.monotonic()
        parked = self._exchange_parked_until.get(_exchange_key(runtime.config))
        return runtime.parked_until <= now and not (parked and parked[0] > now)

    async def _broker_for(
        self, cycle_id: int, runtime: AccountRuntime, report: CycleReport
    ) -> BrokerPort | None:
        account = runtime.config
        keys = await self._secrets.aget(account.id)  # may raise SecretStoreError
        if keys is None:
            self._drop_broker(runtime)
            self._report_account_error(
                cycle_id, runtime, ErrorKind.NO_KEYS,
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
                cycle_id, runtime, ErrorKind.NEEDS_USER,
                f"{runtime.park_reason}; next try in {wait:.0f} s or as soon as its keys change",
                report, retry_in=wait, repeat=True,
            )
            return None
        return runtime.broker

    async def _execute(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        plan: Sequence[PlannedClose],
        report: CycleReport,
    ) -> dict[CloseKey, bool]:
        """Have one account's closes sent (``core/orders.py``) and take in the answers.
        Returns {close key: closed?} for every close that was decided."""
        account = runtime.config
        broker = runtime.broker
        if broker is None:  # keys removed since the read: nothing can be sent
            return {pc.key: False for pc in plan}
        if not self._leases.confirm(self.state, [a.id for a in self._config.accounts],
                                    account.id):
            log.warning("%s: lease lost before sending %d closes; not sent (%s acts on it)",
                        account.id, len(plan), self.enforced_by(account.id) or "another enforcer")
            return {pc.key: False for pc in plan}
        sent = await self._orders.send(cycle_id, account, broker, plan,
                                       dry_run=self._config.enforcer.dry_run)
        report.planned.extend(plan)
        if sent is None:  # dry run
            return {pc.key: False for pc in plan}
        for item in sent:
            outcome = item.outcome
            if isinstance(outcome, OrderResult):
                report.orders.append(outcome)
            elif isinstance(outcome, BrokerError):
                if isinstance(outcome, RateLimitedError):
                    self._park_exchange(account, outcome)
                if isinstance(outcome, NeedsUserError):
                    self._park_account(runtime, outcome)
                report.rejected.append(
                    f"{account.id} {item.close.position.symbol}: {outcome.reason}")
        return {item.close.key: item.closed for item in sent}

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
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        exc: BrokerError,
        report: CycleReport,
        *,
        fast: bool = False,
    ) -> None:
        interval = self._config.enforcer.interval_seconds
        if isinstance(exc, NeedsUserError):
            self._park_account(runtime, exc)
            retry_in = runtime.parked_until - time.monotonic()
            message = f"{exc.reason}: needs you; fix the key or its permissions (next try in {retry_in:.0f} s)"
        elif isinstance(exc, RateLimitedError):
            self._park_exchange(runtime.config, exc)
            retry_in = max(exc.retry_after or 0.0, interval)
            message = f"{exc.reason}; retrying in {retry_in:.0f} s"
        else:
            retry_in = interval
            message = f"{exc.reason}; retrying in {interval:g} s"
        # In fast re-reads the same outage would be journaled every few seconds.
        self._report_account_error(cycle_id, runtime, exc.kind, message, report,
                                   retry_in=retry_in,
                                   repeat=fast and runtime.consecutive_failures > 0)

    def _report_account_error(
        self,
        cycle_id: int,
        runtime: AccountRuntime,
        kind: ErrorKind,
        message: str,
        report: CycleReport,
        *,
        retry_in: float | None = None,
        repeat: bool = False,
    ) -> None:
        account = runtime.config
        runtime.consecutive_failures += 1
        report.errors[account.id] = message
        self._emit(AccountError(cycle_id=cycle_id, account_id=account.id, kind=kind,
                                message=message, retry_in=retry_in, user=account.user,
                                failures=runtime.consecutive_failures, repeat=repeat))
