"""Plain data shared by the policy, the enforcer, the brokers and the GUI.

Everything here is immutable and free of I/O so that the decision of *what to close*
can be a pure function of these values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Market(StrEnum):
    """The market type an account trades: spot balances or derivative positions."""

    SPOT = "spot"
    SWAP = "swap"
    FUTURE = "future"

    @property
    def is_derivative(self) -> bool:
        return self is not Market.SPOT


class Side(StrEnum):
    """Direction of a position. Spot holdings are always long."""

    LONG = "long"
    SHORT = "short"


class CloseReason(StrEnum):
    """Why the policy decided to close a position (recorded in the journal)."""

    FORCED_UNWIND = "forced_unwind"
    COUNT_CAP = "count_cap"
    NOTIONAL_CAP = "notional_cap"
    USER_COUNT_CAP = "user_count_cap"
    USER_NOTIONAL_CAP = "user_notional_cap"


@dataclass(frozen=True, slots=True)
class Position:
    """One open position (or spot holding) of an account.

    ``amount`` is always positive: base units for spot, contracts for derivatives.
    ``value`` is the absolute value in the account's quote currency.
    """

    symbol: str
    amount: float
    value: float
    side: Side = Side.LONG
    price: float | None = None


@dataclass(frozen=True, slots=True)
class Holding:
    """A balance that is not counted as a position: dust or unpriced.

    ``reason`` says why in words a trader understands ("below min_position_value 1.0",
    "below the market minimum order", "no ASSET/QUOTE market").
    """

    symbol: str
    amount: float
    value: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Caps:
    """Hard limits: number of positions and optionally gross notional in quote."""

    max_positions: int | None = None
    max_notional: float | None = None

    def count_excess(self, count: int) -> int:
        if self.max_positions is None:
            return 0
        return max(0, count - self.max_positions)

    def notional_exceeded(self, notional: float) -> bool:
        return self.max_notional is not None and notional > self.max_notional


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What one account held at one moment, already split into positions and dust."""

    account_id: str
    user: str
    quote: str
    positions: tuple[Position, ...]
    dust: tuple[Holding, ...] = ()
    unpriced: tuple[Holding, ...] = ()
    taken_at: float = 0.0

    @property
    def position_count(self) -> int:
        return len(self.positions)

    @property
    def notional(self) -> float:
        return sum(p.value for p in self.positions)


@dataclass(frozen=True, slots=True)
class PlannedClose:
    """A decision: close this whole position of this account, for this reason."""

    account_id: str
    user: str
    position: Position
    reason: CloseReason

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.account_id, self.position.symbol, self.position.side.value)


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What the exchange said about a close order it accepted."""

    account_id: str
    symbol: str
    client_order_id: str
    order_id: str | None
    side: str
    amount: float
    filled: float
    status: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UnwindFlag:
    """A user's forced-unwind switch: on until a person turns it off.

    ``since`` is when it last changed (ISO-8601 UTC, ``Z``); ``by`` says who or what
    changed it (``gui``, ``tray``, ``cli``).
    """

    user: str
    active: bool
    since: str
    by: str
    reason: str


@dataclass(frozen=True)
class JournalEntry:
    """One line of the audit journal. ``ts`` is wall-clock seconds since the epoch."""

    id: int
    ts: float
    kind: str
    message: str
    account_id: str | None
    user: str | None
    cycle_id: int | None
    data: dict[str, Any] = field(default_factory=dict)


# Client order ids every supported exchange accepts (checked in tests/core):
# - OKX ``clOrdId``: 1-32 letters and digits only
#   (https://www.okx.com/docs-v5/en/#order-book-trading-trade-post-place-order);
# - Binance ``newClientOrderId``: at most 36 of ``[.A-Z:/a-z0-9_-]``
#   (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/trading-endpoints);
# - Bybit ``orderLinkId``: at most 36 letters, digits, ``-`` and ``_``
#   (https://bybit-exchange.github.io/docs/v5/order/create-order).
# So: letters and digits only, at most 32.
CLIENT_ORDER_ID_MAX = 32


def client_order_id(cycle_id: int, index: int, nonce: str) -> str:
    """``ga<cycle>n<index>r<nonce>``: alphanumeric, at most 32 characters.

    Unique across restarts because cycle ids keep counting in the state database; the
    random ``nonce`` (hex) tells apart two processes that share nothing. The letters
    between the numbers keep them readable (``ga1207n3r5f2a9c``).
    """
    cid = f"ga{cycle_id}n{index}r{nonce}"
    if len(cid) > CLIENT_ORDER_ID_MAX or not cid.isalnum() or not cid.isascii():
        raise ValueError(f"client order id {cid!r} is not 1-32 ASCII letters and digits")
    return cid
