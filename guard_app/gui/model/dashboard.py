"""The dashboard's view state: enforcer events folded into what the window shows.

Pure Python, no Qt: the GUI's ``DashboardModel`` feeds every ``EnforcerEvent`` to
:meth:`Dashboard.apply` on the GUI thread and redraws what it says changed; the
tray asks :meth:`Dashboard.worst_state` and shows :meth:`Dashboard.take_notices`.

An account's state is derived from the last thing the enforcer said about it:

- ``unwinding``: its user's forced unwind is on (until a person turns it off, even
  once the account is flat: the flag is still armed);
- ``error``: the last attempt to read or enforce it failed (the exchange's reason is
  kept in ``AccountView.error``); ``no_keys`` when it simply has no keys yet;
- ``over_cap``: the last read found it over a cap (closes are planned);
- ``ok``: the last read found it within its caps; ``pending``: not read yet.

Unknown is not zero (DESIGN rule 16): after a failed read the last snapshot is kept
but marked stale (:attr:`AccountView.stale`, with the time of the last good read), and
an account never read has no numbers at all. :meth:`AccountView.reading` and
:meth:`Dashboard.user_totals` say which, so no view ever draws "0 / 5" for an account
it could not read.

Notices are produced on *transitions* only, never once per event, so a tray
showing them never floods: an account going over cap, coming back under, a forced
unwind starting and finishing (flat), an account failing 3 cycles in a row, and
recovering after that.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from guard_app.core.config import AccountConfig, AppConfig
from guard_app.core.events import (
    AccountError,
    AccountRead,
    CycleFinished,
    CycleStarted,
    EnforcerEvent,
    FlagsChanged,
    Heartbeat,
    LeasesChanged,
    OrderFilled,
    OrderPlaced,
    OrderRejected,
    OverCapDetected,
    UnwindProgress,
)
from guard_app.core.models import AccountSnapshot, Caps, PlannedClose
from guard_app.core.state import Metrics, UnwindFlag

__all__ = [
    "FAILING_AFTER",
    "HISTORY_POINTS",
    "SUMMARY",
    "AccountState",
    "AccountView",
    "Dashboard",
    "Notice",
    "Reading",
    "Summary",
    "UserTotals",
    "UserView",
    "state_rank",
]

#: Consecutive failed cycles after which an account is reported as "keeps failing".
FAILING_AFTER = 3
#: Points kept per account for the time-series chart (12 h at the default 60 s).
HISTORY_POINTS = 720
PreviewRow = tuple[str, str, float, float]
"""(symbol, side, amount, estimated value in quote) of a position a forced unwind closes."""

#: The id :meth:`Dashboard.apply` returns when the summary or a user header changed.
SUMMARY = "*"


class AccountState(StrEnum):
    """What an account needs from the trader, in the words of the state pill."""

    OK = "ok"
    OVER_CAP = "over_cap"
    UNWINDING = "unwinding"
    ERROR = "error"
    NO_KEYS = "no_keys"
    PENDING = "pending"


# Worst first. A running forced unwind is the most urgent thing on screen (the
# trader's own kill switch is closing everything); an error means the guard cannot
# protect that account at all, which is worse than being over a cap the enforcer is
# already fixing; missing keys is a setup gap the trader knows about; pending (not
# read yet) is no news.
_SEVERITY: dict[AccountState, int] = {
    AccountState.UNWINDING: 5,
    AccountState.ERROR: 4,
    AccountState.OVER_CAP: 3,
    AccountState.NO_KEYS: 2,
    AccountState.OK: 1,
    AccountState.PENDING: 0,
}


def state_rank(state: AccountState) -> int:
    """Higher is worse: unwinding > error > over_cap > no_keys > ok > pending."""
    return _SEVERITY[state]


@dataclass(frozen=True, slots=True)
class Notice:
    """A one-off alert for the tray: something changed that the trader should know."""

    kind: str  # over_cap | back_under | unwind_started | unwind_finished | failing | recovered
    #            | database_unreachable | database_back (a desk)
    title: str
    text: str
    account_id: str | None
    user: str | None


@dataclass(frozen=True, slots=True)
class Reading:
    """How far an account's numbers can be trusted right now.

    ``known``: the last attempt read it, the numbers are current. ``stale``: the last
    attempt failed, the numbers are the last good read's (``read_at``). Neither: never
    read, there are no numbers. ``reason`` says why it is not known.
    """

    known: bool
    stale: bool
    read_at: float | None
    reason: str | None

    @property
    def has_numbers(self) -> bool:
        return self.known or self.stale


@dataclass
class AccountView:
    """Everything the window shows about one account."""

    config: AccountConfig
    snapshot: AccountSnapshot | None = None
    over_cap: bool = False
    forced_unwind: bool = False
    error: str | None = None
    error_kind: str | None = None
    failures: int = 0
    last_check: float | None = None
    last_read_at: float | None = None  # the last *successful* read (snapshot's time)
    next_check_at: float | None = None
    planned: tuple[PlannedClose, ...] = ()
    closing: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    # A desk (docs/desk.md): HOST:PID of the enforcer acting on the account, and whether
    # that is another one (this window's enforcer stands by for it).
    enforced_by: str | None = None
    standby: bool = False
    history: deque[tuple[float, int, float]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_POINTS)
    )

    @property
    def account_id(self) -> str:
        return self.config.id

    @property
    def caps(self) -> Caps:
        # Always the configured caps: while enforcement is paused the enforcer reads
        # with no caps, but the trader still wants to see how far over they are.
        return self.config.caps

    @property
    def state(self) -> AccountState:
        if self.forced_unwind:
            return AccountState.UNWINDING
        if self.error is not None:
            return AccountState.NO_KEYS if self.error_kind == "no_keys" else AccountState.ERROR
        if self.snapshot is None:
            return AccountState.PENDING
        return AccountState.OVER_CAP if self.over_cap else AccountState.OK

    @property
    def reading(self) -> Reading:
        """Current, stale (last good read kept) or never read; and why not current."""
        if self.snapshot is not None and self.error is None:
            return Reading(True, False, self.last_read_at, None)
        reason = self.error or "not read yet"
        return Reading(False, self.snapshot is not None, self.last_read_at, reason)

    @property
    def position_count(self) -> int:
        """Positions as last read (0 when never read: check :attr:`reading` first)."""
        return 0 if self.snapshot is None else self.snapshot.position_count

    @property
    def notional(self) -> float:
        return 0.0 if self.snapshot is None else self.snapshot.notional

    @property
    def dust_held(self) -> bool:
        return self.snapshot is not None and bool(self.snapshot.dust)

    @property
    def planned_symbols(self) -> set[str]:
        """Symbols the enforcer decided to close (this cycle) or is closing now."""
        return {pc.position.symbol for pc in self.planned} | self.closing

    def state_text(self) -> str:
        """The words on the state pill: "OK", "OVER CAP 10/8", "ERROR: <reason>", ..."""
        state = self.state
        if self.standby and state in (AccountState.PENDING, AccountState.OK,
                                      AccountState.OVER_CAP, AccountState.UNWINDING):
            return f"STANDBY: {self.enforced_by} enforces"
        if state is AccountState.UNWINDING:
            if self.error is not None:
                return f"UNWINDING, NOT READ: {self.error}"
            return "UNWOUND (flat)" if self.snapshot is not None and not self.position_count \
                and not self.closing else "UNWINDING"
        if state is AccountState.ERROR:
            return f"ERROR: {self.error}"
        if state is AccountState.NO_KEYS:
            return "NO KEYS"
        if state is AccountState.PENDING:
            return "CHECKING…"
        if state is AccountState.OVER_CAP:
            caps = self.caps
            if caps.count_excess(self.position_count):
                return f"OVER CAP {self.position_count}/{caps.max_positions}"
            if caps.notional_exceeded(self.notional) and caps.max_notional is not None:
                return f"OVER CAP {self.notional:,.0f}/{caps.max_notional:,.0f} {self.config.quote}"
            return "OVER USER CAP"
        return "OK"


@dataclass(frozen=True, slots=True)
class UserTotals:
    """A user's positions and exposure over the accounts whose numbers exist.

    ``unread``: accounts never read (their numbers are missing from the sums, so the
    sums are a lower bound); ``stale``: accounts counted with their last good read.
    """

    count: int
    notional: float
    unread: tuple[str, ...]
    stale: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.unread and not self.stale


@dataclass
class UserView:
    """One user's header: caps, forced unwind and its progress, and their accounts."""

    name: str
    caps: Caps
    account_ids: list[str]
    flag: UnwindFlag | None = None
    forced_unwind: bool = False
    unwind_closed: int = 0
    unwind_total: int = 0
    unwind_flat: bool = False

    @property
    def progress_text(self) -> str:
        if self.unwind_flat:
            return f"flat: closed {self.unwind_closed} of {self.unwind_total}"
        return f"closed {self.unwind_closed} of {self.unwind_total}"


@dataclass
class Summary:
    """The status strip: is the enforcer alive, what has it done lately."""

    running: bool = False
    paused: bool = False
    stalled: bool = False
    stalled_for: float = 0.0
    cycle_running: bool = False
    last_cycle_id: int | None = None
    last_cycle_at: float | None = None
    last_cycle_duration: float | None = None
    last_failed: tuple[str, ...] = ()
    next_cycle_at: float | None = None
    interventions_today: int = 0
    interventions: int = 0
    unwind_activations: int = 0
    last_back_under_seconds: float | None = None
    worst_back_under_seconds: float | None = None

    @property
    def status_word(self) -> str:
        if self.stalled:
            return "stalled"
        if not self.running:
            return "stopped"
        return "paused" if self.paused else "running"


class Dashboard:
    """Folds enforcer events into per-account, per-user and summary view state."""

    def __init__(self, config: AppConfig) -> None:
        self.accounts: dict[str, AccountView] = {}
        self.users: dict[str, UserView] = {}
        self.summary = Summary()
        self._notices: list[Notice] = []
        self._failing_notified: set[str] = set()
        self._database_ok = True  # a desk's shared state database (LeasesChanged)
        self._config = config
        self.set_config(config)

    @property
    def config(self) -> AppConfig:
        return self._config

    # -- configuration and flags ------------------------------------------------------

    def set_config(self, config: AppConfig) -> None:
        """Use a new config: keep what is known about accounts that stay."""
        self._config = config
        old = self.accounts
        self.accounts = {}
        for account in config.accounts:
            view = old.get(account.id)
            if view is None:
                view = AccountView(account)
            elif view.config != account:
                view.config = account
            self.accounts[account.id] = view
        old_users = self.users
        self.users = {}
        for name in config.user_names:
            user_cfg = config.users.get(name)
            caps = user_cfg.caps if user_cfg is not None else Caps()
            ids = [a.id for a in config.accounts_of(name)]
            user = old_users.get(name)
            if user is None:
                user = UserView(name, caps, ids)
            else:
                user.caps, user.account_ids = caps, ids
            self.users[name] = user
            for account_id in ids:
                self.accounts[account_id].forced_unwind = user.forced_unwind
        self._failing_notified &= set(self.accounts)

    def set_flags(self, flags: Mapping[str, UnwindFlag]) -> None:
        """The forced-unwind flags as stored (only active ones need be given).

        Fed only from ``FlagsChanged`` (the enforcer's announcement of the stored flags):
        reads and unwind progress never switch a user's unwind on or off by themselves.
        """
        active = {name for name, flag in flags.items() if flag.active}
        for name, user in self.users.items():
            user.flag = flags.get(name)
        self._set_active_users(active)

    def set_metrics(self, metrics: Metrics) -> None:
        s = self.summary
        s.interventions = metrics.interventions
        s.interventions_today = metrics.interventions_today
        s.unwind_activations = metrics.unwind_activations
        s.last_back_under_seconds = metrics.last_back_under_cap_seconds
        s.worst_back_under_seconds = metrics.worst_back_under_cap_seconds

    def set_running(self, running: bool) -> None:
        self.summary.running = running
        if running:
            self.summary.stalled = False

    def set_stalled(self, seconds: float) -> None:
        """The host saw no heartbeat for ``seconds`` (0 clears it)."""
        self.summary.stalled = seconds > 0
        self.summary.stalled_for = seconds

    def _set_active_users(self, active: set[str]) -> bool:
        changed = False
        for name, user in self.users.items():
            on = name in active
            if on == user.forced_unwind:
                continue
            changed = True
            user.forced_unwind = on
            user.unwind_closed = user.unwind_total = 0
            user.unwind_flat = False
            for account_id in user.account_ids:
                self.accounts[account_id].forced_unwind = on
            if on:
                self._notice("unwind_started", f"Forced unwind ON for {name}",
                             f"Closing every position of {name}'s "
                             f"{len(user.account_ids)} accounts.", None, name)
        return changed

    # -- events -----------------------------------------------------------------------

    def apply(self, event: EnforcerEvent) -> set[str]:
        """Fold one event in; returns the ids of accounts whose view changed (``*``: summary)."""
        if isinstance(event, AccountRead):
            return self._account_read(event)
        if isinstance(event, AccountError):
            return self._account_error(event)
        if isinstance(event, OrderPlaced):
            return self._with_account(event.close.account_id, lambda v: v.closing.add(
                event.close.position.symbol))
        if isinstance(event, OrderFilled):
            symbol = event.close.position.symbol

            def filled(v: AccountView) -> None:
                v.closing.discard(symbol)
                v.closed.add(symbol)
            return self._with_account(event.close.account_id, filled)
        if isinstance(event, OrderRejected):
            symbol = event.close.position.symbol

            def rejected(v: AccountView) -> None:
                v.closing.discard(symbol)
                v.rejected[symbol] = event.reason
            return self._with_account(event.close.account_id, rejected)
        if isinstance(event, OverCapDetected):
            return self._over_cap(event)
        if isinstance(event, UnwindProgress):
            return self._unwind_progress(event)
        if isinstance(event, LeasesChanged):
            changed = set()
            if event.database_ok != self._database_ok:
                self._database_ok = event.database_ok
                changed.add(SUMMARY)
                if event.database_ok:
                    self._notice("database_back", "Shared database reachable again",
                                 f"{event.database}: flags and the journal are shared again.",
                                 None, None)
                else:
                    self._notice("database_unreachable", "Shared database unreachable",
                                 f"{event.database}: enforcing the accounts held, with the "
                                 "flags last seen; reconnecting.", None, None)
            for account_id, by in event.enforced_by:
                view = self.accounts.get(account_id)
                standby = event.standby(account_id)
                if view is not None and (view.enforced_by, view.standby) != (by, standby):
                    view.enforced_by, view.standby = by, standby
                    changed.add(account_id)
            return changed
        if isinstance(event, FlagsChanged):
            records = {f.user: f for f in event.flags}
            for name, user in self.users.items():
                user.flag = records.get(name)
            self._set_active_users(set(event.active_users))
            return {SUMMARY}
        if isinstance(event, CycleStarted):
            self.summary.cycle_running = True
            self.summary.running = True
            return {SUMMARY}
        if isinstance(event, CycleFinished):
            s = self.summary
            s.cycle_running = False
            s.last_cycle_id = event.cycle_id
            s.last_cycle_at = event.ts
            s.last_cycle_duration = event.duration
            s.last_failed = event.failed_accounts
            s.next_cycle_at = event.ts + event.next_cycle_in
            for view in self.accounts.values():
                view.next_check_at = s.next_cycle_at
            return {SUMMARY}
        if isinstance(event, Heartbeat):
            s = self.summary
            s.running = True
            s.stalled = False
            s.paused = event.paused
            if not s.cycle_running:
                s.next_cycle_at = event.ts + event.next_cycle_in
            return {SUMMARY}
        return set()

    def _with_account(self, account_id: str, change: Callable[[AccountView], None]) -> set[str]:
        view = self.accounts.get(account_id)
        if view is None:
            return set()
        change(view)
        return {account_id}

    def _account_read(self, event: AccountRead) -> set[str]:
        view = self.accounts.get(event.snapshot.account_id)
        if view is None:
            return set()
        was_over = view.over_cap and view.snapshot is not None
        recovered = view.account_id in self._failing_notified
        view.snapshot = event.snapshot
        view.over_cap = event.over_cap
        view.error = view.error_kind = None
        view.failures = 0
        view.last_check = view.last_read_at = event.ts
        view.planned = event.planned
        view.closing.clear()
        view.closed.clear()
        view.rejected.clear()
        view.history.append((event.ts, event.snapshot.position_count, event.snapshot.notional))
        changed = {view.account_id}
        user_view = self.users.get(view.config.user)
        if (user_view is not None and user_view.unwind_flat and view.forced_unwind
                and event.snapshot.position_count):
            # A position opened after "flat" (a strategy still running): not flat now.
            user_view.unwind_flat = False
            changed.add(SUMMARY)
        aid = view.account_id
        if event.over_cap and not was_over:
            self._notice("over_cap", f"{aid} is over its cap",
                         f"{view.state_text().title()}: closing "
                         f"{len(view.planned)} smallest positions "
                         f"({', '.join(sorted(view.planned_symbols))}).", aid, view.config.user)
        elif was_over and not event.over_cap:
            self._notice("back_under", f"{aid} is back under its cap",
                         f"{view.position_count} positions, "
                         f"{view.notional:,.2f} {view.config.quote}.", aid, view.config.user)
        if recovered:
            self._failing_notified.discard(aid)
            self._notice("recovered", f"{aid} is working again",
                         "The enforcer can read and close positions on it again.",
                         aid, view.config.user)
        return changed

    def _account_error(self, event: AccountError) -> set[str]:
        view = self.accounts.get(event.account_id)
        if view is None:
            return set()
        view.error = event.message
        view.error_kind = event.kind
        view.failures += 1
        view.last_check = event.ts
        view.closing.clear()
        if event.retry_in is not None:
            view.next_check_at = event.ts + event.retry_in
        aid = view.account_id
        if (event.kind != "no_keys" and view.failures >= FAILING_AFTER
                and aid not in self._failing_notified):
            self._failing_notified.add(aid)
            self._notice("failing", f"{aid} keeps failing",
                         f"{view.failures} cycles in a row: {event.message}. Its positions are "
                         "NOT being guarded until this is fixed.", aid, view.config.user)
        return {aid}

    def _over_cap(self, event: OverCapDetected) -> set[str]:
        if event.account_id is not None:
            return set()  # AccountRead already carried this account's plan
        # A user cap: the closes land on several of the user's accounts.
        changed: set[str] = set()
        by_account: dict[str, list[PlannedClose]] = {}
        for pc in event.planned:
            by_account.setdefault(pc.account_id, []).append(pc)
        for account_id, closes in by_account.items():
            view = self.accounts.get(account_id)
            if view is None:
                continue
            known = {pc.key for pc in view.planned}
            view.planned = view.planned + tuple(pc for pc in closes if pc.key not in known)
            view.over_cap = True
            changed.add(account_id)
        return changed

    def _unwind_progress(self, event: UnwindProgress) -> set[str]:
        user = self.users.get(event.user)
        if user is None:
            return set()
        user.unwind_closed += event.closed
        # New positions may appear during an unwind (a strategy still running):
        # n grows so that k of n stays true.
        user.unwind_total = max(user.unwind_total, user.unwind_closed + event.remaining)
        unread = any(
            self.accounts[a].state is AccountState.UNWINDING and self.accounts[a].error
            for a in user.account_ids
        )
        flat = event.remaining == 0 and not unread
        if flat and not user.unwind_flat:
            self._notice("unwind_finished", f"Forced unwind of {user.name}: flat",
                         f"Closed {user.unwind_closed} of {user.unwind_total} positions; every "
                         f"account of {user.name} is flat. The flag stays on until you turn it "
                         "off.", None, user.name)
        user.unwind_flat = flat
        return {SUMMARY}

    # -- reading ----------------------------------------------------------------------

    def _notice(self, kind: str, title: str, text: str, account_id: str | None,
                user: str | None) -> None:
        self._notices.append(Notice(kind, title, text, account_id, user))

    def take_notices(self) -> list[Notice]:
        """The notices produced since the last call (each is returned once)."""
        notices, self._notices = self._notices, []
        return notices

    def worst_state(self) -> AccountState:
        """The most urgent account state (see :func:`state_rank`); ``ok`` with no accounts."""
        return max(
            (v.state for v in self.accounts.values()),
            key=state_rank,
            default=AccountState.OK,
        )

    def accounts_of(self, user: str) -> list[AccountView]:
        return [self.accounts[a] for a in self.users[user].account_ids if a in self.accounts]

    def user_totals(self, user: str) -> UserTotals:
        """Sums over ``user``'s accounts that have numbers, and which ones are missing."""
        count, notional = 0, 0.0
        unread: list[str] = []
        stale: list[str] = []
        for view in self.accounts_of(user):
            reading = view.reading
            if not reading.has_numbers:
                unread.append(view.account_id)
                continue
            if reading.stale:
                stale.append(view.account_id)
            count += view.position_count
            notional += view.notional
        return UserTotals(count, notional, tuple(unread), tuple(stale))

    def unread_accounts(self) -> list[AccountView]:
        """Accounts whose numbers are not current (never read, or the last read failed)."""
        return [v for v in self.accounts.values() if not v.reading.known]

    def unwind_preview(self, user: str) -> list[tuple[AccountView, list[PreviewRow]]]:
        """What a forced unwind of ``user`` would close, per account, as last read.

        Rows are (symbol, side, amount, estimated value) of every non-dust position
        still open now: positions closed since that read (``closed ✓`` in the panel)
        are left out, they are not there to close any more.
        """
        result: list[tuple[AccountView, list[PreviewRow]]] = []
        for view in self.accounts_of(user):
            rows = [] if view.snapshot is None else [
                (p.symbol, p.side.value, p.amount, p.value) for p in view.snapshot.positions
                if p.symbol not in view.closed
            ]
            result.append((view, rows))
        return result

    def next_check_in(self, account_id: str, now: float | None = None) -> float | None:
        view = self.accounts[account_id]
        if view.next_check_at is None:
            return None
        return max(0.0, view.next_check_at - (time.time() if now is None else now))
