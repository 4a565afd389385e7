"""What the core needs from an exchange, as a protocol: the core never imports ccxt.

``guard_app.exchanges`` implements it (the ccxt broker and its exchange profiles); the
enforcer and ``status`` receive a :data:`BrokerFactory` from whoever wires the app
together (the CLI, the GUI, the demo, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from guard_app.core.config import AccountConfig
from guard_app.core.errors import BrokerError
from guard_app.core.models import AccountSnapshot, OrderResult, PlannedClose
from guard_app.core.secrets import ApiKeys


class BrokerPort(Protocol):
    """One account on one exchange, used on one event loop only."""

    async def snapshot(self) -> AccountSnapshot:
        """Read every position of the account, valued in its quote currency."""
        ...

    async def close_many(
        self, closes: Sequence[tuple[PlannedClose, str]]
    ) -> list[OrderResult | BrokerError | None]:
        """Close positions, each with its client order id; per close: the exchange's
        answer, the error that stopped it, or None when nothing sellable was left."""
        ...

    async def cancel_all_orders(self) -> int:
        """Kill switch: cancel every open order of the account, on every symbol, including
        the conditional / algo orders an exchange keeps apart. Returns how many."""
        ...

    async def warm(self) -> None:
        """Keep the account ready for a kill between cycles: markets loaded and a
        connection open, so the first close after a quiet hour is as fast as the tenth."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP session. Safe to call twice."""
        ...


BrokerFactory = Callable[[AccountConfig, ApiKeys], BrokerPort]
