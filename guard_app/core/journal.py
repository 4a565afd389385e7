"""The enforcer's two standard observers: the audit journal and the trader log.

Where the journal is written: :class:`JournalObserver` (every entry, its wording and
its data). Where a trader's log line comes from: :class:`TraderLog`. Both follow the
enforcer's event stream (``core/events.py``); the enforcer itself never writes either.

``order_sent`` is the one entry written *before* the thing it records: the journal
observer is a :class:`~guard_app.core.events.SendGate`, so the enforcer hands it the
orders it is about to send, it commits them durably (``synchronous=FULL``) and only
then does the enforcer send them. If that write fails, the orders are not sent and
are reported as rejected ("not sent: could not record it in the journal"): a close we
could not record could be sent twice after a crash.

Fast re-reads (DESIGN rule 14) run every few seconds for as long as an unwind is on,
possibly hours; the journal keeps what matters from them (positions found, decisions,
orders, errors) and leaves out the empty ones (no ``cycle_start``/``cycle_end``, no
``snapshot`` of a flat account, no "still flat" progress).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from guard_app.core.events import (
    AccountError,
    AccountRead,
    CloseDecided,
    ConfigReloaded,
    CycleFinished,
    CycleStarted,
    DryRunSkipped,
    EnforcerEvent,
    EnforcerStarted,
    EnforcerStopped,
    FlagsChanged,
    Intervention,
    OpenOrdersCancelled,
    OrderFilled,
    OrderPlaced,
    OrderRejected,
    OrderSkipped,
    OverCapDetected,
    UnwindPlanned,
    UnwindProgress,
    UnwindRound,
)
from guard_app.core.models import JournalEntry
from guard_app.core.state import StateStore

log = logging.getLogger("guard_app.enforcer")


def money(value: float, quote: str) -> str:
    """An amount of quote currency as a trader reads it: ``1,234.50 USDT``."""
    return f"{value:,.2f} {quote}"


def unwind_progress_text(event: UnwindProgress) -> str:
    """One line about a user's forced unwind, for the journal and the log alike."""
    msg = (f"forced unwind active for {event.user}: {event.total} positions, "
           f"{event.closed} closed this cycle"
           + (f"; not read: {', '.join(event.unread)} (retrying)" if event.unread else ""))
    if event.total == 0 and not event.unread:
        msg = f"forced unwind active for {event.user}: flat, nothing left to close"
    return msg


def rejected_text(event: OrderRejected) -> str:
    next_step = ("position will be re-read before any new order" if event.unknown_outcome
                 else "retrying next cycle")
    return (f"{event.close.account_id}: close of {event.close.position.symbol} failed: "
            f"{event.reason}; {next_step}")


class JournalObserver:
    """Writes the audit journal from the enforcer's events (see the module doc).

    ``state`` returns the enforcer's own StateStore (its thread's connection: the
    journal's writes then don't look like "another process changed something" to the
    flag watcher). ``on_entry`` receives every entry written, e.g. to re-emit it as a
    :class:`~guard_app.core.events.JournalWritten` event for the Activity view.
    """

    def __init__(
        self,
        state: Callable[[], StateStore],
        on_entry: Callable[[JournalEntry], None] | None = None,
    ) -> None:
        self._state = state
        self._on_entry = on_entry
        self._fast_cycles: set[int] = set()

    # -- the send gate: order_sent before the order leaves ---------------------------

    def before_send(self, orders: Sequence[OrderPlaced]) -> None:
        """Commit one durable ``order_sent`` per order; raises if that fails."""
        for event in orders:
            pc = event.close
            self._write(
                "order_sent",
                f"{pc.account_id}: market close {pc.position.symbol} {pc.position.amount:g}",
                account_id=pc.account_id, user=pc.user, cycle_id=event.cycle_id,
                data={"client_order_id": event.client_order_id, "symbol": pc.position.symbol,
                      "side": pc.position.side.value, "amount": pc.position.amount},
            )

    # -- everything else ---------------------------------------------------------------

    def __call__(self, event: EnforcerEvent) -> None:
        try:
            self._record(event)
        except Exception:  # the journal failing must not stop exits
            log.exception("could not write to the journal: %s", type(event).__name__)

    def _record(self, event: EnforcerEvent) -> None:  # noqa: C901 - one branch per event
        if isinstance(event, CycleStarted):
            if event.fast:
                self._fast_cycles.add(event.cycle_id)
                return
            forced = event.forced_users
            self._write(
                "cycle_start",
                f"cycle {event.cycle_id}: {len(event.account_ids)} accounts"
                + (f", forced unwind for {', '.join(forced)}" if forced else ""),
                cycle_id=event.cycle_id,
            )
        elif isinstance(event, CycleFinished):
            if event.cycle_id in self._fast_cycles:
                self._fast_cycles.discard(event.cycle_id)
                return
            failed = event.failed_accounts
            self._write(
                "cycle_end",
                f"cycle {event.cycle_id} done in {event.duration:.2f} s: "
                f"{event.interventions} interventions, {event.orders} orders, "
                f"{len(failed)} accounts failed",
                cycle_id=event.cycle_id,
                data={"duration": event.duration, "failed": list(failed)},
            )
        elif isinstance(event, AccountRead):
            self._snapshot(event)
        elif isinstance(event, OverCapDetected):
            self._write("over_cap", event.message, account_id=event.account_id,
                        user=event.user, cycle_id=event.cycle_id,
                        data={"count": event.count, "notional": event.notional,
                              "closes": [pc.position.symbol for pc in event.planned]})
        elif isinstance(event, CloseDecided):
            p, pc = event.close.position, event.close
            self._write(
                "decision",
                f"{pc.account_id}: close {p.symbol} {p.side.value} {p.amount:g} "
                f"({money(p.value, event.quote)}) — {pc.reason.value}"
                + (" [dry run, not sent]" if event.dry_run else ""),
                account_id=pc.account_id, user=pc.user, cycle_id=event.cycle_id,
                data={"symbol": p.symbol, "side": p.side.value, "amount": p.amount,
                      "value": p.value, "reason": pc.reason.value, "dry_run": event.dry_run},
            )
        elif isinstance(event, OrderFilled):
            pc = event.close
            self._write(
                "order_filled",
                f"{pc.account_id}: {pc.position.symbol} closed, {event.filled:g} filled "
                f"({event.status})",
                account_id=pc.account_id, user=pc.user, cycle_id=event.cycle_id,
                data={"client_order_id": event.client_order_id, "order_id": event.order_id,
                      "filled": event.filled, "status": event.status},
            )
        elif isinstance(event, OrderSkipped):
            pc = event.close
            self._write(
                "order_skipped",
                f"{pc.account_id}: {pc.position.symbol} left as dust after rounding; "
                "nothing sent",
                account_id=pc.account_id, user=pc.user, cycle_id=event.cycle_id,
                data={"client_order_id": event.client_order_id},
            )
        elif isinstance(event, OrderRejected):
            pc = event.close
            self._write(
                "order_unknown" if event.unknown_outcome else "order_rejected",
                rejected_text(event),
                account_id=pc.account_id, user=pc.user, cycle_id=event.cycle_id,
                data={"client_order_id": event.client_order_id, "code": event.code},
            )
        elif isinstance(event, Intervention):
            self._write("intervention", f"{event.account_id}: {event.orders} positions closed",
                        account_id=event.account_id, user=event.user, cycle_id=event.cycle_id,
                        data={"orders": event.orders})
        elif isinstance(event, OpenOrdersCancelled):
            text = (f"{event.account_id}: kill switch: {event.cancelled} open orders cancelled"
                    if event.error is None else
                    f"{event.account_id}: kill switch: could not cancel the open orders "
                    f"({event.error}); closing anyway")
            self._write("orders_cancelled", text, account_id=event.account_id,
                        user=event.user, cycle_id=event.cycle_id,
                        data={"cancelled": event.cancelled, "error": event.error})
        elif isinstance(event, UnwindRound):
            self._write(
                "unwind_round",
                f"{event.account_id}: forced unwind round {event.round}: {event.closes} "
                f"closes sent, re-read: "
                + ("flat" if event.left == 0 else f"{event.left} positions left"),
                account_id=event.account_id, user=event.user, cycle_id=event.cycle_id,
                data={"round": event.round, "closes": event.closes, "left": event.left},
            )
        elif isinstance(event, UnwindProgress):
            if event.fast and event.closed == 0 and not event.unread:
                return  # "still flat" every few seconds is not news
            self._write("unwind_progress", unwind_progress_text(event), user=event.user,
                        cycle_id=event.cycle_id,
                        data={"closed": event.closed, "total": event.total,
                              "unread": list(event.unread)})
        elif isinstance(event, AccountError):
            if event.repeat:
                return
            self._write("account_error", f"{event.account_id}: {event.message}",
                        account_id=event.account_id, user=event.user, cycle_id=event.cycle_id,
                        data={"kind": str(event.kind), "failures": event.failures})

    def _snapshot(self, event: AccountRead) -> None:
        snap = event.snapshot
        if event.fast and not snap.positions and not event.verify:
            return  # a flat account re-read every few seconds: nothing to keep
        max_positions = event.account_caps.max_positions
        self._write(
            "snapshot",
            f"{snap.account_id}: {snap.position_count} positions "
            f"({money(snap.notional, snap.quote)}), cap {max_positions}"
            + (f", {len(snap.dust)} dust" if snap.dust else "")
            + (f", {len(snap.unpriced)} unpriced" if snap.unpriced else ""),
            account_id=snap.account_id, user=snap.user, cycle_id=event.cycle_id,
            data={"positions": [[p.symbol, p.side.value, p.amount, p.value]
                                for p in snap.positions],
                  "dust": [[h.symbol, h.amount, h.value] for h in snap.dust],
                  **({"verify": True} if event.verify else {})},
        )

    def _write(
        self,
        kind: str,
        message: str,
        *,
        account_id: str | None = None,
        user: str | None = None,
        cycle_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        ts = time.time()
        entry_id = self._state().journal(kind, message, account_id=account_id, user=user,
                                         cycle_id=cycle_id, data=data, ts=ts)
        if self._on_entry is not None:
            self._on_entry(JournalEntry(entry_id, ts, kind, message, account_id, user,
                                        cycle_id, dict(data or {})))


class TraderLog:
    """The trader's log (logger ``guard_app.enforcer``): what happened, to which account,
    what happens next. Quiet about fast re-reads that found nothing."""

    def __call__(self, event: EnforcerEvent) -> None:  # noqa: C901 - one branch per event
        if isinstance(event, EnforcerStarted):
            log.info("enforcer started: %d accounts, every %g s%s", event.accounts,
                     event.interval,
                     " (dry run: no orders will be placed)" if event.dry_run else "")
        elif isinstance(event, EnforcerStopped):
            log.info("enforcer stopped")
        elif isinstance(event, ConfigReloaded):
            log.info("config reloaded: %d accounts", event.accounts)
        elif isinstance(event, FlagsChanged):
            log.info("forced unwind now active for: %s; checking accounts now",
                     ", ".join(event.active_users) or "nobody")
        elif isinstance(event, OverCapDetected | UnwindPlanned):
            log.warning(event.message)
        elif isinstance(event, DryRunSkipped):
            log.info("%s: dry run, %d closes planned and not sent", event.account_id,
                     event.count)
        elif isinstance(event, OrderFilled):
            log.info("%s: closed %s %g (%s, order %s)", event.close.account_id,
                     event.close.position.symbol, event.filled or event.amount,
                     event.status, event.order_id)
        elif isinstance(event, OrderSkipped):
            log.info("%s: %s left as dust after rounding; nothing sent",
                     event.close.account_id, event.close.position.symbol)
        elif isinstance(event, OrderRejected):
            log.warning(rejected_text(event))
        elif isinstance(event, OpenOrdersCancelled):
            if event.error is not None:
                log.warning("%s: kill switch: could not cancel the open orders (%s); "
                            "closing anyway", event.account_id, event.error)
            elif event.cancelled:
                log.info("%s: kill switch: %d open orders cancelled", event.account_id,
                         event.cancelled)
        elif isinstance(event, UnwindRound):
            log.info("%s: forced unwind round %d: %d closes sent, %s", event.account_id,
                     event.round, event.closes,
                     "now flat" if event.left == 0 else f"{event.left} positions left")
        elif isinstance(event, UnwindProgress):
            if event.fast and event.closed == 0 and not event.unread:
                log.debug(unwind_progress_text(event))
            else:
                log.info(unwind_progress_text(event))
        elif isinstance(event, AccountError):
            log.warning("%s: %s", event.account_id, event.message)
