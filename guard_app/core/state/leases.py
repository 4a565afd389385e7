"""Which accounts this enforcer acts on: its leases, renewed by the enforcing loop itself.

Several enforcers may run with the same accounts (a desk's workstations and headless
services, or two on one machine): exactly one acts on an account at a time. The
enforcer's own asyncio loop calls :meth:`LeaseKeeper.renew` every
``lease_seconds / 3``; a loop that hangs or freezes stops renewing, its leases run
out, and a standby takes its accounts over (within ``lease_seconds`` plus one
renewal: about 4 s with the default 3 s, inside the 5 s promise). Before every order
the enforcer calls :meth:`LeaseKeeper.confirm`, which renews first when the last
renewal is older than one renewal period, so a loop that froze mid-cycle never sends
an order for an account it has lost.

A holder on this same machine whose process is gone (a restart after a crash) is
not waited for: its leases are released at once.

The state database unreachable: the keeper keeps the accounts it held (enforcing
them with the flags last seen is safer than enforcing nothing) and takes no new ones;
for one lease length after the database is back it only renews what it held, so the
former holders (whose leases ran out meanwhile) get their accounts back first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from guard_app.core.errors import StateError
from guard_app.core.state.base import StateStore, StateUnavailableError, holder_name

log = logging.getLogger("guard_app.enforcer")


def _dead_here(holder: str, me: str) -> bool:
    """True when ``holder`` (HOST:PID) is a process on this host that no longer exists."""
    host, _, pid = holder.rpartition(":")
    my_host = me.rpartition(":")[0]
    if host != my_host or not pid.isdigit() or holder == me:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists (another user's process): not ours to judge
    return False


class LeaseKeeper:
    """This enforcer's leases: which accounts it holds, and who holds the others."""

    def __init__(self, lease_seconds: float, holder: str | None = None) -> None:
        self.holder = holder or holder_name()
        self.lease_seconds = lease_seconds
        self._held: set[str] = set()
        self._holders: dict[str, str] = {}
        self._renewed_at: float | None = None  # monotonic, taken before the renewal call
        self._store_ok = True
        # After the store was unreachable, only renew for one lease length: the former
        # holders reconnect and renew first, so accounts don't change hands needlessly.
        self._renew_only_until = 0.0

    @property
    def renew_seconds(self) -> float:
        return self.lease_seconds / 3

    @property
    def store_ok(self) -> bool:
        """False while the state database can't be reached (held accounts are kept)."""
        return self._store_ok

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def due(self) -> bool:
        """True when the last renewal is older than one renewal period (or never was)."""
        return (self._renewed_at is None
                or time.monotonic() - self._renewed_at >= self.renew_seconds)

    def renew(self, store: StateStore, account_ids: Sequence[str]) -> set[str]:
        """Take free accounts and renew held ones; returns the accounts just gained."""
        started = time.monotonic()
        only_held = not self._store_ok or started < self._renew_only_until
        wanted = [a for a in account_ids if a in self._held] if only_held else account_ids
        try:
            held = store.acquire_leases(self.holder, wanted, self.lease_seconds)
            holders = store.lease_holders()
            dead = {h for a, h in holders.items() if a in wanted and a not in held
                    and _dead_here(h, self.holder)}
            if dead:
                # A crashed enforcer on this machine (a restart after a kill): its
                # accounts need not wait for its leases to run out.
                for holder in dead:
                    store.release_leases(holder)
                held = store.acquire_leases(self.holder, wanted, self.lease_seconds)
                holders = store.lease_holders()
        except StateUnavailableError:
            self._store_ok = False  # the store logs it (once a minute); keep what we held
            return set()
        except StateError as exc:
            self._store_ok = False
            log.error("could not renew the account leases: %s; keeping the accounts held", exc)
            return set()
        if not self._store_ok:
            self._renew_only_until = started + self.lease_seconds
            log.info("state database back: renewed %d of the accounts held; taking no others "
                     "for %g s", len(held), self.lease_seconds)
        self._store_ok = True
        self._renewed_at = started
        gained, lost = held - self._held, self._held - held
        self._held, self._holders = held, holders
        if gained:
            log.info("now enforcing %s (lease taken as %s)", ", ".join(sorted(gained)),
                     self.holder)
        for account_id in sorted(lost):
            log.warning("%s: lease lost to %s; that enforcer acts on it now", account_id,
                        holders.get(account_id, "another enforcer"))
        return gained

    def holds(self, account_id: str) -> bool:
        """May this enforcer act on ``account_id`` now?"""
        if account_id not in self._held:
            return False
        if not self._store_ok:
            return True  # database away: keep enforcing what we held
        return (self._renewed_at is not None
                and time.monotonic() - self._renewed_at < self.lease_seconds)

    def confirm(self, store: StateStore, account_ids: Sequence[str], account_id: str) -> bool:
        """The check before an order: renew if due, then :meth:`holds`."""
        if self.due():
            self.renew(store, account_ids)
        return self.holds(account_id)

    def enforced_by(self, account_id: str) -> str | None:
        """``HOST:PID`` of the enforcer acting on the account, as last seen (or None)."""
        if self.holds(account_id):
            return self.holder
        holder = self._holders.get(account_id)
        return None if holder == self.holder else holder

    def release(self, store: StateStore) -> None:
        """Give the accounts up at a clean stop, so a standby takes them at once."""
        if not self._held:
            return
        try:
            store.release_leases(self.holder)
        except StateError as exc:
            log.warning("could not give up the account leases (%s); they expire by "
                        "themselves in %g s", exc, self.lease_seconds)
        self._held = set()
