"""Where a close order is sent: one account's closes, from decision to answer.

:class:`OrderSender` is the only place in the core that asks a broker to close
anything (``BrokerPort.close_many``, implemented in ``guard_app/exchanges``). For each
batch it announces the decisions (CloseDecided), lets every send gate record the
orders durably (the journal's ``order_sent``; if that fails nothing is sent), sends,
and announces what became of each close (OrderFilled, OrderSkipped, OrderRejected).
What the enforcer does with the answers (parking an exchange that asked us to slow
down, the cycle report) stays in the enforcer. See docs/enforcement.md rules 4 and 6.
"""

from __future__ import annotations

import itertools
import logging
import secrets as pysecrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guard_app.core.config import AccountConfig
from guard_app.core.errors import BrokerError, OrderUnknownError
from guard_app.core.events import (
    CloseDecided,
    DryRunSkipped,
    EnforcerEvent,
    OrderFilled,
    OrderPlaced,
    OrderRejected,
    OrderSkipped,
    SendGate,
)
from guard_app.core.models import OrderResult, PlannedClose, client_order_id
from guard_app.core.ports import BrokerPort

log = logging.getLogger("guard_app.enforcer")

Outcome = OrderResult | BrokerError | None


@dataclass(frozen=True, slots=True)
class Sent:
    """One close and its fate: the exchange's answer, the error that stopped it, or
    None when nothing sellable was left after rounding."""

    close: PlannedClose
    client_order_id: str
    outcome: Outcome

    @property
    def closed(self) -> bool:
        return not isinstance(self.outcome, BrokerError)


class OrderSender:
    """Sends closes for the enforcer (see the module doc)."""

    def __init__(self, emit: Callable[[EnforcerEvent], None], gates: Sequence[SendGate]) -> None:
        self._emit = emit
        self._gates = tuple(gates)
        # Client ids: ga<cycle>n<number>r<nonce>, numbers counting up in this process.
        self._numbers = itertools.count()

    async def send(
        self,
        cycle_id: int,
        account: AccountConfig,
        broker: BrokerPort,
        plan: Sequence[PlannedClose],
        *,
        dry_run: bool,
    ) -> list[Sent] | None:
        """Close ``plan`` (all of one account). Returns each close's fate, or None
        when nothing went out: a dry run (planned and announced only)."""
        nonce = pysecrets.token_hex(3)
        ids = [client_order_id(cycle_id, next(self._numbers), nonce) for _ in plan]
        for pc in plan:
            self._emit(CloseDecided(cycle_id=cycle_id, close=pc, quote=account.quote,
                                    dry_run=dry_run))
        placed = [OrderPlaced(cycle_id=cycle_id, close=pc, client_order_id=cid,
                              amount=pc.position.amount, dry_run=dry_run)
                  for pc, cid in zip(plan, ids, strict=True)]
        if dry_run:
            for event in placed:
                self._emit(event)
            self._emit(DryRunSkipped(cycle_id=cycle_id, account_id=account.id, count=len(plan)))
            return None
        try:
            # order_sent is on disk before anything leaves (docs/architecture.md).
            for gate in self._gates:
                gate.before_send(placed)
        except Exception as exc:
            log.exception("%s: could not record the closes before sending them", account.id)
            reason = f"not sent: could not record it in the journal ({type(exc).__name__})"
            outcomes: list[Outcome] = [BrokerError(account.id, reason) for _ in plan]
        else:
            for event in placed:
                self._emit(event)
            outcomes = await broker.close_many(list(zip(plan, ids, strict=True)))
        sent = [Sent(pc, cid, outcome)
                for pc, cid, outcome in zip(plan, ids, outcomes, strict=True)]
        for item in sent:
            self._announce(cycle_id, item)
        return sent

    def _announce(self, cycle_id: int, item: Sent) -> None:
        pc, cid, outcome = item.close, item.client_order_id, item.outcome
        if isinstance(outcome, OrderResult):
            self._emit(OrderFilled(cycle_id=cycle_id, close=pc, client_order_id=cid,
                                   order_id=outcome.order_id, filled=outcome.filled,
                                   status=outcome.status, amount=outcome.amount))
        elif outcome is None:
            self._emit(OrderSkipped(cycle_id=cycle_id, close=pc, client_order_id=cid))
        else:
            self._emit(OrderRejected(cycle_id=cycle_id, close=pc, client_order_id=cid,
                                     reason=outcome.reason,
                                     unknown_outcome=isinstance(outcome, OrderUnknownError),
                                     code=outcome.code))
