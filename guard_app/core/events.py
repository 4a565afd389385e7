"""What the enforcer reports as it works, for the CLI log, the GUI and tests.

The enforcer calls one observer (``Callable[[EnforcerEvent], None]``) with these
immutable events, from its own thread. The GUI host re-emits them as Qt signals; the
headless runner turns them into log lines. Observers must not block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from guard_app.core.models import AccountSnapshot, Caps, PlannedClose


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class EnforcerEvent:
    """Base of every event; ``ts`` is wall-clock seconds since the epoch."""

    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleStarted(EnforcerEvent):
    cycle_id: int
    account_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleFinished(EnforcerEvent):
    cycle_id: int
    duration: float
    interventions: int
    failed_accounts: tuple[str, ...]
    next_cycle_in: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRead(EnforcerEvent):
    """A fresh snapshot of one account, with its caps and whether it is over them."""

    cycle_id: int
    snapshot: AccountSnapshot
    caps: Caps
    over_cap: bool
    forced_unwind: bool
    planned: tuple[PlannedClose, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OverCapDetected(EnforcerEvent):
    """An account (or a user's accounts together) is over a cap; closes are planned."""

    cycle_id: int
    account_id: str | None
    user: str
    count: int
    max_positions: int | None
    notional: float
    max_notional: float | None
    planned: tuple[PlannedClose, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPlaced(EnforcerEvent):
    cycle_id: int
    close: PlannedClose
    client_order_id: str
    amount: float
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled(EnforcerEvent):
    cycle_id: int
    close: PlannedClose
    client_order_id: str
    order_id: str | None
    filled: float
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(EnforcerEvent):
    cycle_id: int
    close: PlannedClose
    client_order_id: str | None
    reason: str
    unknown_outcome: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountError(EnforcerEvent):
    """An account could not be read or enforced this cycle.

    ``kind`` is one of: ``temporary``, ``rate_limited``, ``needs_user``, ``no_keys``,
    ``keyring``, ``internal``. ``retry_in`` is seconds until the next attempt.
    """

    cycle_id: int
    account_id: str
    kind: str
    message: str
    retry_in: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnwindProgress(EnforcerEvent):
    """Forced unwind of a user: ``closed`` of ``total`` positions closed this cycle."""

    cycle_id: int
    user: str
    closed: int
    total: int
    remaining: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagsChanged(EnforcerEvent):
    """The set of users under forced unwind changed (from any process)."""

    active_users: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(EnforcerEvent):
    """Sent regularly by a live enforcer loop, even between cycles."""

    next_cycle_in: float
    paused: bool


Observer = Callable[[EnforcerEvent], None]
