"""What the enforcer reports as it works: the one stream every observer follows.

The enforcer only emits these immutable events; it never writes the journal or a log
line itself. Observers (``Callable[[EnforcerEvent], None]``) turn them into what they
need: the audit journal and the trader log (``core/journal.py``), the GUI (its host
re-emits them as Qt signals), later the API and the metrics. Observers run on the
enforcer's thread, in the order given, and must not block; one that raises is logged
and skipped, never stops enforcement.

One ordering is a contract, not a habit: an order's ``order_sent`` journal entry is on
disk *before* the order leaves (it is what prevents a double close after a crash).
Observers that must record an order first implement :class:`SendGate`; the enforcer
calls ``before_send`` with the orders it is about to send and sends only if every gate
returned. A gate that raises stops those orders: they are reported as not sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from guard_app.core.errors import ErrorKind
from guard_app.core.models import AccountSnapshot, Caps, JournalEntry, PlannedClose, UnwindFlag


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class EnforcerEvent:
    """Base of every event; ``ts`` is wall-clock seconds since the epoch."""

    ts: float = field(default_factory=_now)


# -- the loop -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnforcerStarted(EnforcerEvent):
    """The loop started (``run``)."""

    accounts: int
    interval: float
    dry_run: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EnforcerStopped(EnforcerEvent):
    """The loop ended after ``stop()``: sessions and the state database are closed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloaded(EnforcerEvent):
    """A new config is in use from this cycle on."""

    accounts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleStarted(EnforcerEvent):
    """A cycle began. ``fast``: a fast re-read of only the accounts that need it
    (forced unwind, recently over a cap; DESIGN rule 14), not a full cycle."""

    cycle_id: int
    account_ids: tuple[str, ...]
    forced_users: tuple[str, ...] = ()
    fast: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleFinished(EnforcerEvent):
    cycle_id: int
    duration: float
    interventions: int
    failed_accounts: tuple[str, ...]
    next_cycle_in: float
    orders: int = 0
    fast: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(EnforcerEvent):
    """Sent regularly by a live enforcer loop, even between cycles."""

    next_cycle_in: float
    paused: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagsChanged(EnforcerEvent):
    """The forced-unwind flags changed (from any process). ``flags`` are the active
    flags with who set them, when and why: the one source of truth for the window."""

    active_users: tuple[str, ...]
    flags: tuple[UnwindFlag, ...] = ()

    def flag(self, user: str) -> UnwindFlag | None:
        return next((f for f in self.flags if f.user == user), None)


# -- one account ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRead(EnforcerEvent):
    """A fresh snapshot of one account, with its caps and whether it is over them.

    ``caps`` are the caps in force (none while paused); ``account_caps`` the configured
    ones. ``verify``: the re-read right after this account's closes were answered
    (DESIGN rule 13), so it shows the state after the orders. ``fast``: part of a fast
    re-read (rule 14).
    """

    cycle_id: int
    snapshot: AccountSnapshot
    caps: Caps
    over_cap: bool
    forced_unwind: bool
    planned: tuple[PlannedClose, ...]
    account_caps: Caps = field(default_factory=Caps)
    verify: bool = False
    fast: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OverCapDetected(EnforcerEvent):
    """An account (or a user's accounts together) is over a cap; closes are planned.
    ``message`` says so in a trader's words (what, by how much, what will be closed)."""

    cycle_id: int
    account_id: str | None
    user: str
    count: int
    max_positions: int | None
    notional: float
    max_notional: float | None
    planned: tuple[PlannedClose, ...]
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnwindPlanned(EnforcerEvent):
    """A forced unwind will close these positions of one account."""

    cycle_id: int
    account_id: str
    user: str
    planned: tuple[PlannedClose, ...]
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseDecided(EnforcerEvent):
    """The decision to close one position, and why (journal ``decision``).
    ``dry_run``: planned only, no order will be sent."""

    cycle_id: int
    close: PlannedClose
    quote: str
    dry_run: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DryRunSkipped(EnforcerEvent):
    """Dry run: ``count`` closes of one account were planned and not sent."""

    cycle_id: int
    account_id: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenOrdersCancelled(EnforcerEvent):
    """Kill switch (DESIGN rule 12): every open order of the account was cancelled
    before its closes (``cancelled`` of them), or the cancel failed (``error``)."""

    cycle_id: int
    account_id: str
    user: str
    cancelled: int
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPlaced(EnforcerEvent):
    """A close order is about to leave (``dry_run``: it won't). Observers that are a
    :class:`SendGate` have recorded it before this event is emitted."""

    cycle_id: int
    close: PlannedClose
    client_order_id: str
    amount: float
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled(EnforcerEvent):
    """The exchange accepted a close: ``filled`` of ``amount`` (the order's amount)."""

    cycle_id: int
    close: PlannedClose
    client_order_id: str
    order_id: str | None
    filled: float
    status: str
    amount: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSkipped(EnforcerEvent):
    """Nothing was sent: after rounding to the market's precision only dust was left."""

    cycle_id: int
    close: PlannedClose
    client_order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(EnforcerEvent):
    """A close failed. ``unknown_outcome``: the answer was lost, the order may have
    executed, the position is re-read before any new order. ``code``: the exchange's."""

    cycle_id: int
    close: PlannedClose
    client_order_id: str | None
    reason: str
    unknown_outcome: bool = False
    code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Intervention(EnforcerEvent):
    """Close orders were placed on one account this cycle (the ``interventions`` metric
    counts these)."""

    cycle_id: int
    account_id: str
    user: str
    orders: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UnwindRound(EnforcerEvent):
    """One round of a forced unwind on one account (DESIGN rule 12): ``closes`` orders
    sent, then re-read: ``left`` positions still open (0: flat)."""

    cycle_id: int
    account_id: str
    user: str
    round: int
    closes: int
    left: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountError(EnforcerEvent):
    """An account could not be read or enforced this cycle.

    ``kind`` says which failure (:class:`ErrorKind`); ``retry_in`` is seconds until the
    next attempt. ``repeat``: the same parked state reported again (not news for the
    journal). ``failures`` counts consecutive failed cycles.
    """

    cycle_id: int
    account_id: str
    kind: ErrorKind
    message: str
    retry_in: float | None
    user: str | None = None
    failures: int = 1
    repeat: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UnwindProgress(EnforcerEvent):
    """Forced unwind of a user: ``closed`` of ``total`` positions closed this cycle;
    ``remaining`` open after the re-read; ``unread`` accounts could not be read."""

    cycle_id: int
    user: str
    closed: int
    total: int
    remaining: int
    unread: tuple[str, ...] = ()
    fast: bool = False


# -- what observers add -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalWritten(EnforcerEvent):
    """The journal observer wrote this entry: the Activity view follows these instead
    of polling the database."""

    entry: JournalEntry


Observer = Callable[[EnforcerEvent], None]


@runtime_checkable
class SendGate(Protocol):
    """An observer that must record orders before they leave (the journal)."""

    def before_send(self, orders: Sequence[OrderPlaced]) -> None:
        """Record ``orders`` durably, or raise: then they are not sent."""
        ...
