"""The API's picture of the enforcer, kept up to date from its event stream.

``LiveView`` is an observer like the journal: the enforcer calls it with every event
on the enforcer's own loop thread and it only stores what it is told (the latest read
of each account, the latest error, cycle times, the heartbeat). The HTTP handlers read
this picture from memory, so answering a request never makes an exchange call and
never waits for a cycle.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from guard_app.core.config import AppConfig
from guard_app.core.events import (
    AccountError,
    AccountRead,
    CycleFinished,
    EnforcerEvent,
    EnforcerStopped,
    Heartbeat,
    LeasesChanged,
)
from guard_app.core.models import AccountSnapshot
from guard_app.core.state import UnwindFlag
from guard_app.core.status import AccountStatus, status_document

# The enforcer beats every second; this long without a beat means its loop is stuck
# or gone, and /healthz says so.
HEARTBEAT_STALE_SECONDS = 10.0
NOT_READ_YET = "not read yet: the first cycle has not reached this account"


def iso_utc(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class _Read:
    snapshot: AccountSnapshot
    at: float  # wall clock of the event


class LiveView:
    """Latest account reads, errors and cycle times, from the enforcer's events.

    Thread-safe (a lock around every read and write), although in practice the
    enforcer and the HTTP server share one loop thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[str, _Read] = {}
        self._errors: dict[str, str] = {}
        self._last_cycle_at: float | None = None
        self._last_beat: float | None = None  # monotonic
        self._paused = False
        self._stopped = False
        self._holders: dict[str, str] = {}  # account id -> HOST:PID holding its lease

    # -- observer ------------------------------------------------------------------

    def __call__(self, event: EnforcerEvent) -> None:
        with self._lock:
            if isinstance(event, AccountRead):
                account_id = event.snapshot.account_id
                self._reads[account_id] = _Read(event.snapshot, event.ts)
                self._errors.pop(account_id, None)
            elif isinstance(event, AccountError):
                self._errors[event.account_id] = event.message
            elif isinstance(event, CycleFinished) and not event.fast:
                self._last_cycle_at = event.ts
            elif isinstance(event, Heartbeat):
                self._last_beat = time.monotonic()
                self._paused = event.paused
            elif isinstance(event, EnforcerStopped):
                self._stopped = True
            elif isinstance(event, LeasesChanged):
                self._holders = {a: h for a, h in event.enforced_by if h is not None}

    def mark_stopped(self) -> None:
        """The enforcer's loop has ended: /healthz answers 503 from now on."""
        with self._lock:
            self._stopped = True

    # -- readers -------------------------------------------------------------------

    def alive(self, now: float | None = None) -> bool:
        """True while the enforcer loop runs and has beaten recently."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return (not self._stopped and self._last_beat is not None
                    and now - self._last_beat <= HEARTBEAT_STALE_SECONDS)

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    @property
    def last_cycle_at(self) -> float | None:
        with self._lock:
            return self._last_cycle_at

    def status_document(
        self, config: AppConfig, flags: dict[str, UnwindFlag], next_cycle_in: float
    ) -> dict[str, Any]:
        """The ``status --json`` document from the latest reads, plus ``enforcer``.

        An account that failed after a good read keeps its last known positions with
        ``read_at`` telling their age, and ``error`` the reason (unknown is not zero);
        one never read has null counts and says so in ``error``.
        """
        with self._lock:
            reads = dict(self._reads)
            errors = dict(self._errors)
            last_cycle_at = self._last_cycle_at
            paused = self._paused
            holders = dict(self._holders)
        statuses = []
        for account in config.accounts:
            read = reads.get(account.id)
            error = errors.get(account.id)
            if read is None and error is None:
                error = NOT_READ_YET
            statuses.append(AccountStatus(account, read.snapshot if read else None, error))
        doc = status_document(config, flags, statuses, holders)
        for entry in doc["accounts"]:
            read = reads.get(entry["id"])
            entry["read_at"] = iso_utc(read.at) if read else None
        doc["enforcer"] = {
            "running": self.alive(),
            "paused": paused,
            "last_cycle_at": iso_utc(last_cycle_at),
            "next_cycle_in": round(max(0.0, next_cycle_in), 3),
        }
        return doc
