"""The simulated exchanges' state and matching engine, plus its thread-safe control surface.

:class:`SimExchange` holds markets, accounts, resting orders and the log of every order
request, for all three protocols at once: each account belongs to one exchange
(``binance``, ``okx`` or ``bybit``) and only that exchange's front-end
(:mod:`~guard_app.sim.binance_api`, :mod:`~guard_app.sim.okx_api`,
:mod:`~guard_app.sim.bybit_api`) accepts its key. Markets (and their prices) are shared;
each front-end names them its own way (``BTCUSDT``, ``BTC-USDT-SWAP``, ``BTCPERP``).

The model:

- Binance accounts have a spot wallet and a separate USDⓈ-M wallet (``wallet``). OKX
  and Bybit accounts are unified: one wallet of coins (``spot``) that is also the
  margin of their perpetuals, and realised PnL settles into it.
- Perpetual sizes are in the exchange's contracts: OKX's are ``ctVal`` base units
  (``MarketSpec.contract_size``), Binance's and Bybit's linear ones 1 base unit.
- Positions are keyed by market + margin mode (``cross``/``isolated``) + leg: ``net`` in
  one-way mode (signed amount), ``long``/``short`` in hedge mode (Binance
  dualSidePosition, OKX long_short_mode, Bybit positionIdx 1/2 — USDT perpetuals only).
- Reduce-only orders never open, grow or flip a position; with nothing to reduce
  (no position of that margin mode / leg) they are refused with the protocol's error.
- Conditional orders (OKX algo orders, Bybit ``orderFilter=StopOrder``, Binance stop /
  take-profit types) are kept apart from resting limit orders; they rest until
  cancelled (the simulator does not trigger them).

It knows nothing about HTTP: the front-ends translate requests into calls here and
:class:`ApiError` back into their protocol's error codes.

Every public method takes one lock, so tests, the HTTP control endpoints and
:class:`~guard_app.sim.strategy.SimStrategy` can drive it from any thread.
"""

from __future__ import annotations

import itertools
import random
import string
import threading
import time
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from guard_app.sim.faults import Fault, FaultBook
from guard_app.sim.scenario import MarketSpec, Scenario

__all__ = ["ApiError", "OrderErrors", "OrderRecord", "SimAccount", "SimExchange", "SimMarket", "SimOrder"]

ZERO = Decimal(0)


class ApiError(Exception):
    """An exchange's error answer: code and message (Binance ``{"code", "msg"}``, OKX
    ``sCode``/``sMsg``, Bybit ``retCode``/``retMsg``) with an HTTP status."""

    def __init__(self, code: int | str, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


# Binance's own messages, so ccxt maps them the way it does in production.
INSUFFICIENT_BALANCE = ApiError(-2010, "Account has insufficient balance for requested action.")
REDUCE_ONLY_REJECTED = ApiError(-2022, "ReduceOnly Order is rejected.")
UNKNOWN_ORDER = ApiError(-2011, "Unknown order sent.")
ORDER_DOES_NOT_EXIST = ApiError(-2013, "Order does not exist.")
INVALID_SYMBOL = ApiError(-1121, "Invalid symbol.")
MARGIN_INSUFFICIENT = ApiError(-2019, "Margin is insufficient.")


@dataclass(frozen=True)
class OrderErrors:
    """How one protocol refuses what the matching engine refuses (see :meth:`SimExchange.place`)."""

    nothing_to_reduce: ApiError  # reduce-only (or a hedge-leg close) with no position to reduce
    reduce_too_large: ApiError | None  # None: clamp a too-large reduce-only order to the position
    insufficient_balance: ApiError
    margin_insufficient: ApiError


BINANCE_ERRORS = OrderErrors(REDUCE_ONLY_REJECTED, REDUCE_ONLY_REJECTED, INSUFFICIENT_BALANCE, MARGIN_INSUFFICIENT)


def dec(value: Any, name: str) -> Decimal:
    """Parse a request parameter as a decimal the way Binance validates it."""
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.",
        ) from None
    if not result.is_finite() or result < 0:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.")
    return result


def fmt(value: Decimal | None, places: int | None = None) -> str:
    """Decimal to Binance's string form (no exponent)."""
    if value is None:
        return "0"
    if places is not None:
        return f"{value:.{places}f}"
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


@dataclass
class SimMarket:
    """A live market: its spec plus the current (mutable) price."""

    spec: MarketSpec
    price: Decimal

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def is_spot(self) -> bool:
        return self.spec.type == "spot"

    def round_down(self, qty: Decimal) -> Decimal:
        step = self.spec.step_size
        return (qty / step).to_integral_value(rounding=ROUND_DOWN) * step


@dataclass
class SimOrder:
    """An order as the exchange keeps it (spot or futures)."""

    order_id: int
    client_order_id: str
    account: str
    market: SimMarket
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT
    orig_qty: Decimal
    price: Decimal
    time_in_force: str
    reduce_only: bool
    time: int
    update_time: int
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    status: str = "NEW"
    margin_mode: str = "cross"
    leg: str = "net"  # net | long | short
    trigger_price: Decimal | None = None  # set: a conditional (algo / stop) order, kept apart
    trigger_type: str = ""  # the protocol's name for it, e.g. Binance STOP_MARKET

    @property
    def conditional(self) -> bool:
        return self.trigger_price is not None

    @property
    def venue(self) -> str:
        return "spot" if self.market.is_spot else "futures"

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    @property
    def position_key(self) -> tuple[str, str, str]:
        return (self.market.id, self.margin_mode, self.leg)


@dataclass(frozen=True)
class OrderRecord:
    """One order request as the exchange received it, and what it answered."""

    timestamp: float
    account: str | None
    venue: str
    symbol: str | None
    side: str | None
    type: str | None
    quantity: float | None
    price: float | None
    reduce_only: bool
    client_order_id: str | None
    accepted: bool
    order_id: int | None = None
    status: str | None = None
    filled: float | None = None
    error_code: int | None = None  # the exchange's code (OKX's "51000" as 51000)
    error_msg: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SimAccount:
    """One API key of one exchange with its wallets and positions.

    ``positions`` maps (market id, margin mode, leg) to [signed contracts, entry price].
    """

    name: str
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    spot: dict[str, list[Decimal]] = field(default_factory=dict)  # asset -> [free, locked]
    wallet: Decimal = ZERO  # Binance USDⓈ-M wallet; unused by unified accounts
    positions: dict[tuple[str, str, str], list[Decimal]] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    revoked: bool = False
    update_time: int = 0
    protocol: str = "binance"
    passphrase: str = field(default="", repr=False)
    hedge: bool = False

    @property
    def unified(self) -> bool:
        """OKX trading account / Bybit UNIFIED: spot coins are the perpetuals' margin."""
        return self.protocol != "binance"

    def bal(self, asset: str) -> list[Decimal]:
        return self.spot.setdefault(asset, [ZERO, ZERO])

    def leg_for(self, market: SimMarket, side: str) -> str:
        """The leg a starting position of ``side`` sits in (net unless hedge applies)."""
        if self.hedge and (self.protocol != "bybit" or market.spec.settle == "USDT"):
            return side
        return "net"


def _int_code(err: ApiError) -> int | None:
    code = str(err.code)
    return int(code) if code.lstrip("-").isdigit() else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class SimExchange:
    """State and control of the simulated exchange (thread-safe)."""

    def __init__(self, scenario: Scenario, seed: int | None = 0) -> None:
        self.scenario = scenario
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._ids = itertools.count(10_000_001)
        self.spot_markets: dict[str, SimMarket] = {}
        self.swap_markets: dict[str, SimMarket] = {}
        self.by_symbol: dict[str, SimMarket] = {}
        for spec in scenario.markets:
            market = SimMarket(spec, spec.price)
            (self.spot_markets if spec.type == "spot" else self.swap_markets)[spec.id] = market
            self.by_symbol[spec.symbol] = market
        self.accounts: dict[str, SimAccount] = {}
        self._by_key: dict[str, SimAccount] = {}
        self._orders: dict[int, SimOrder] = {}
        self._log: list[OrderRecord] = []
        self.faults = FaultBook(seed)
        self.latency = scenario.latency
        self.clock_skew_ms = scenario.clock_skew_ms
        self.partial_fill = Decimal(str(scenario.partial_fill))
        self.default_leverage = scenario.leverage
        self.requests_served = 0
        self._weight_window = (0, 0)  # (minute, weight)
        for spec_acc in scenario.accounts:
            acc = SimAccount(
                name=spec_acc.name,
                api_key=spec_acc.api_key,
                secret=spec_acc.secret,
                spot={a: [amt, ZERO] for a, amt in spec_acc.spot.items()},
                wallet=spec_acc.futures_wallet if spec_acc.futures_wallet is not None else scenario.futures_wallet,
                update_time=_now_ms(),
                protocol=spec_acc.exchange,
                passphrase=spec_acc.passphrase,
                hedge=spec_acc.position_mode == "hedge",
            )
            self.accounts[acc.name] = acc
            self._by_key[acc.api_key] = acc
            for pos in spec_acc.positions:
                market = self.by_symbol[pos.symbol]
                amt = pos.contracts if pos.side == "long" else -pos.contracts
                key = (market.id, pos.margin_mode, acc.leg_for(market, pos.side))
                acc.positions[key] = [amt, pos.entry_price or market.price]
            for o in spec_acc.orders:
                market = self.by_symbol[o.symbol]
                leg = "net"
                if not market.is_spot and acc.leg_for(market, "long") != "net":
                    # A resting order in hedge mode opens the leg of its side unless it reduces.
                    long_leg = (o.side == "buy") != o.reduce_only
                    leg = "long" if long_leg else "short"
                order = self._place(
                    acc, market, o.side.upper(), "LIMIT", o.amount, o.price, reduce_only=o.reduce_only,
                    client_order_id=o.client_order_id, allow_fill=False, leg=leg,
                    trigger_price=o.trigger_price,
                )
                order.margin_mode = o.margin_mode

    # --- clock, weights ----------------------------------------------------------------

    def server_time_ms(self) -> int:
        """The exchange's clock in ms (real time plus the configured skew)."""
        return _now_ms() + self.clock_skew_ms

    def count_weight(self, weight: int = 1) -> int:
        """Add request weight to the current minute; returns the minute's total."""
        with self._lock:
            minute = int(time.time() // 60)
            current_minute, used = self._weight_window
            used = used + weight if minute == current_minute else weight
            self._weight_window = (minute, used)
            self.requests_served += 1
            return used

    # --- lookups -----------------------------------------------------------------------

    def account_for_key(self, api_key: str, protocol: str = "binance") -> SimAccount | None:
        """The account of a live key of ``protocol``'s exchange (None: unknown, revoked or
        another exchange's key)."""
        with self._lock:
            acc = self._by_key.get(api_key)
            return None if acc is None or acc.revoked or acc.protocol != protocol else acc

    def _account(self, name: str) -> SimAccount:
        try:
            return self.accounts[name]
        except KeyError:
            raise KeyError(f"no account {name!r} in the scenario") from None

    def market(self, symbol: str, venue: str | None = None) -> SimMarket:
        """A market by unified symbol, or by Binance id with ``venue`` spot/futures."""
        with self._lock:
            if symbol in self.by_symbol:
                return self.by_symbol[symbol]
            table = self.swap_markets if venue == "futures" else self.spot_markets
            if symbol in table:
                return table[symbol]
            raise KeyError(f"no market {symbol!r}")

    # --- control surface ---------------------------------------------------------------

    def set_price(self, symbol: str, price: float | Decimal | str) -> None:
        """Set a market's price. A unified symbol sets that market; a Binance id
        (``BTCUSDT``) sets the spot and the swap market of that id. Resting limit
        orders that the new price crosses fill at their limit price."""
        value = Decimal(str(price))
        if value <= 0:
            raise ValueError(f"price must be positive, got {price}")
        with self._lock:
            if symbol in self.by_symbol:
                targets = [self.by_symbol[symbol]]
            else:
                targets = [t[symbol] for t in (self.spot_markets, self.swap_markets) if symbol in t]
            if not targets:
                raise KeyError(f"no market {symbol!r}")
            for market in targets:
                market.price = value
                self._match_resting(market)

    def move_price(self, symbol: str, pct: float) -> Decimal:
        """Move a market's price by ``pct`` percent; returns the new price."""
        with self._lock:
            market = self.market(symbol)
            tick = market.spec.tick_size
            new = (market.price * (1 + Decimal(str(pct)) / 100) / tick).to_integral_value() * tick
            self.set_price(market.symbol, max(new, tick))
            return market.price

    def price(self, symbol: str) -> Decimal:
        with self._lock:
            return self.market(symbol).price

    def open_position(
        self, account: str, symbol: str, side: str, contracts: float | Decimal | str,
        entry_price: float | Decimal | str | None = None, margin_mode: str = "cross",
    ) -> None:
        """Add to (or open) a perpetual position directly, bypassing order checks.

        ``contracts`` are the account's exchange's contracts; in hedge mode ``side`` is the leg.
        """
        with self._lock:
            acc = self._account(account)
            market = self.market(symbol, "futures")
            if market.is_spot:
                raise ValueError(f"{symbol} is a spot market; open_position needs a swap symbol")
            qty = Decimal(str(contracts))
            if qty <= 0:
                raise ValueError("contracts must be positive")
            if side not in ("long", "short"):
                raise ValueError(f"side must be long or short, got {side!r}")
            if margin_mode not in ("cross", "isolated"):
                raise ValueError(f"margin_mode must be cross or isolated, got {margin_mode!r}")
            price = Decimal(str(entry_price)) if entry_price is not None else market.price
            key = (market.id, margin_mode, acc.leg_for(market, side))
            self._apply_futures_fill(acc, market, key, qty if side == "long" else -qty, price)

    def add_balance(self, account: str, asset: str, amount: float | Decimal | str) -> None:
        """Credit (or, with a negative amount, debit) a spot asset's free balance."""
        with self._lock:
            acc = self._account(account)
            bal = acc.bal(asset.upper())
            bal[0] = max(ZERO, bal[0] + Decimal(str(amount)))
            acc.update_time = _now_ms()

    def set_futures_wallet(self, account: str, amount: float | Decimal | str) -> None:
        with self._lock:
            self._account(account).wallet = Decimal(str(amount))

    def revoke_key(self, api_key: str) -> None:
        """Make an API key invalid (-2015) until :meth:`restore_key`."""
        with self._lock:
            if api_key not in self._by_key:
                raise KeyError("no account has that API key")
            self._by_key[api_key].revoked = True

    def restore_key(self, api_key: str) -> None:
        with self._lock:
            if api_key not in self._by_key:
                raise KeyError("no account has that API key")
            self._by_key[api_key].revoked = False

    def set_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be zero or positive")
        self.latency = float(seconds)

    def set_clock_skew(self, ms: int) -> None:
        self.clock_skew_ms = int(ms)

    def set_partial_fill(self, fraction: float) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("partial_fill must be in (0, 1]")
        self.partial_fill = Decimal(str(fraction))

    def inject_fault(
        self, path_prefix: str = "", status: int | None = None, *, kind: str | None = None,
        retry_after: int | None = None, probability: float = 1.0, count: int | None = None,
        delay: float = 0.0, method: str | None = None, body: str | None = None,
    ) -> Fault:
        """Add a fault for requests whose path starts with ``path_prefix``.

        ``kind`` defaults to ``status`` when ``status`` is given, else ``drop``.
        ``count`` limits it to the next N matching requests; ``probability`` makes it random.
        """
        if kind is None:
            kind = "status" if status is not None else ("latency" if delay else "drop")
        return self.faults.add(
            Fault(path_prefix=path_prefix, kind=kind, status=status or 503, retry_after=retry_after,
                  probability=probability, count=count, delay=delay, method=method, body=body)
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    # --- read-outs ---------------------------------------------------------------------

    @property
    def orders(self) -> list[OrderRecord]:
        """Every order request received so far (copies, oldest first)."""
        with self._lock:
            return list(self._log)

    def clear_order_log(self) -> None:
        with self._lock:
            self._log.clear()

    def balances(self, account: str) -> dict[str, dict[str, float]]:
        """Spot balances: ``{asset: {"free", "locked", "total"}}`` (non-zero only)."""
        with self._lock:
            acc = self._account(account)
            return {
                asset: {"free": float(f), "locked": float(lk), "total": float(f + lk)}
                for asset, (f, lk) in sorted(acc.spot.items())
                if f or lk
            }

    def positions(self, account: str) -> list[dict[str, Any]]:
        """Open perpetual positions: symbol, side, contracts (the exchange's), contract_size,
        margin_mode, hedged, entry_price, mark_price, unrealized_pnl."""
        with self._lock:
            acc = self._account(account)
            result = []
            for (mid, margin_mode, leg), (amt, entry) in sorted(acc.positions.items()):
                if amt == 0:
                    continue
                market = self.swap_markets[mid]
                cs = self.contract_size(acc, market)
                result.append({
                    "symbol": market.symbol,
                    "side": "long" if amt > 0 else "short",
                    "contracts": float(abs(amt)),
                    "contract_size": float(cs),
                    "margin_mode": margin_mode,
                    "hedged": leg != "net",
                    "entry_price": float(entry),
                    "mark_price": float(market.price),
                    "unrealized_pnl": float(amt * cs * (market.price - entry)),
                })
            return result

    def contract_size(self, acc: SimAccount, market: SimMarket) -> Decimal:
        """Base units per contract of ``market`` on ``acc``'s exchange (OKX ctVal; else 1)."""
        return market.spec.contract_size if acc.protocol == "okx" and not market.is_spot else Decimal(1)

    def open_orders(self, account: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"order_id": o.order_id, "client_order_id": o.client_order_id, "account": o.account,
                 "venue": o.venue, "symbol": o.market.symbol, "side": o.side.lower(),
                 "amount": float(o.orig_qty), "price": float(o.price), "filled": float(o.executed_qty),
                 "reduce_only": o.reduce_only, "conditional": o.conditional}
                for o in self._orders.values()
                if o.is_open and (account is None or o.account == account)
            ]

    def futures_wallet(self, account: str) -> float:
        """The USDT margin wallet: Binance's USDⓈ-M wallet, a unified account's USDT."""
        with self._lock:
            return float(self._wallet(self._account(account), "USDT"))

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-able data (no keys or secrets)."""
        with self._lock:
            return {
                "server_time": self.server_time_ms(),
                "latency": self.latency,
                "clock_skew_ms": self.clock_skew_ms,
                "partial_fill": float(self.partial_fill),
                "markets": [
                    {"symbol": m.symbol, "id": m.id, "type": m.spec.type, "price": float(m.price)}
                    for m in self.by_symbol.values()
                ],
                "accounts": {
                    name: {
                        "exchange": acc.protocol,
                        "position_mode": "hedge" if acc.hedge else "one-way",
                        "revoked": acc.revoked,
                        "balances": self.balances(name),
                        "futures_wallet": float(self._wallet(acc, "USDT")),
                        "positions": self.positions(name),
                        "open_orders": self.open_orders(name),
                    }
                    for name, acc in self.accounts.items()
                },
                "faults": [f.to_dict() for f in self.faults.list()],
                "order_count": len(self._log),
            }

    # --- trading (called by the REST layer) ----------------------------------------------

    def record_rejection(self, account: str | None, venue: str, params: dict[str, str], err: ApiError) -> None:
        """Log an order request that failed before reaching the matching engine (auth...)."""
        with self._lock:
            self._log.append(self._record(account, venue, params, None, err))

    def _record(
        self, account: str | None, venue: str, params: dict[str, str], order: SimOrder | None,
        err: ApiError | None,
    ) -> OrderRecord:
        def num(name: str) -> float | None:
            try:
                return float(params[name]) if name in params else None
            except ValueError:
                return None

        market = (self.spot_markets if venue == "spot" else self.swap_markets).get(params.get("symbol", ""))
        return OrderRecord(
            timestamp=time.time(),
            account=account,
            venue=venue,
            symbol=market.symbol if market else params.get("symbol"),
            side=params.get("side", "").lower() or None,
            type=params.get("type", "").lower() or None,
            quantity=num("quantity"),
            price=num("price"),
            reduce_only=params.get("reduceOnly", "").lower() == "true",
            client_order_id=order.client_order_id if order else params.get("newClientOrderId"),
            accepted=err is None,
            order_id=order.order_id if order else None,
            status=order.status if order else None,
            filled=float(order.executed_qty) if order else None,
            error_code=_int_code(err) if err else None,
            error_msg=err.msg if err else None,
        )

    def new_order(self, acc: SimAccount, venue: str, params: dict[str, str]) -> SimOrder:
        """Validate and execute an order request; logs it either way."""
        with self._lock:
            try:
                order = self._new_order(acc, venue, params)
            except ApiError as err:
                self._log.append(self._record(acc.name, venue, params, None, err))
                raise
            self._log.append(self._record(acc.name, venue, params, order, None))
            return order

    def _new_order(self, acc: SimAccount, venue: str, p: dict[str, str]) -> SimOrder:
        table = self.spot_markets if venue == "spot" else self.swap_markets
        for name in ("symbol", "side", "type"):
            if not p.get(name):
                raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        market = table.get(p["symbol"])
        if market is None:
            raise INVALID_SYMBOL
        side = p["side"].upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        otype = p["type"].upper()
        if otype not in ("MARKET", "LIMIT"):
            raise ApiError(-1116, "Invalid orderType.")
        leg = "net"
        if venue == "futures":
            # USDⓈ-M "New Order": positionSide BOTH in one-way mode, LONG/SHORT in hedge mode;
            # reduceOnly "cannot be sent in Hedge Mode" (-1106).
            position_side = p.get("positionSide", "BOTH").upper()
            if acc.hedge != (position_side in ("LONG", "SHORT")):
                raise ApiError(-4061, "Order's position side does not match user's setting.")
            if acc.hedge:
                if "reduceOnly" in p:
                    raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
                leg = position_side.lower()
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        coid = p.get("newClientOrderId")
        if coid is not None:
            if len(coid) > 36:
                raise ApiError(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
            if any(o.is_open and o.account == acc.name and o.client_order_id == coid for o in self._orders.values()):
                if venue == "spot":
                    raise ApiError(-2010, "Duplicate order sent.")
                raise ApiError(-4116, "ClientOrderId is duplicated.")

        price = market.price
        if otype == "LIMIT":
            if "price" not in p:
                raise ApiError(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
            if venue == "spot" and "timeInForce" not in p:
                raise ApiError(-1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
            price = dec(p["price"], "price")
            tick = market.spec.tick_size
            if price <= 0 or price % tick != 0:
                raise ApiError(-1013, "Filter failure: PRICE_FILTER")

        if "quantity" in p:
            qty = dec(p["quantity"], "quantity")
        elif venue == "spot" and otype == "MARKET" and "quoteOrderQty" in p:
            qty = market.round_down(dec(p["quoteOrderQty"], "quoteOrderQty") / price)
        else:
            raise ApiError(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if qty <= 0:
            if venue == "futures":
                raise ApiError(-4003, "Quantity less than or equal to zero.")
            raise ApiError(-1013, "Filter failure: LOT_SIZE")
        spec = market.spec
        if qty < spec.min_qty or qty > spec.max_qty or (qty - spec.min_qty) % spec.step_size != 0:
            raise ApiError(-1013, f"Filter failure: {'MARKET_LOT_SIZE' if otype == 'MARKET' and qty > spec.max_qty else 'LOT_SIZE'}")

        if venue == "spot" and qty * price < spec.min_notional:
            raise ApiError(-1013, "Filter failure: NOTIONAL")
        if venue == "futures" and not reduce_only and leg == "net" and qty * price < spec.min_notional:
            amt = acc.positions.get((market.id, self.margin_mode_of(acc, market), "net"), [ZERO])[0]
            if not amt or (amt > 0) == (side == "BUY"):
                raise ApiError(-4164, f"Order's notional must be no smaller than {fmt(spec.min_notional)} (unless you choose reduce only).")
        return self._check_and_place(
            acc, market, side, otype, qty, price, reduce_only=reduce_only, client_order_id=coid,
            margin_mode=self.margin_mode_of(acc, market, leg), leg=leg, errors=BINANCE_ERRORS,
            time_in_force=p.get("timeInForce", "GTC"),
        )

    def margin_mode_of(self, acc: SimAccount, market: SimMarket, leg: str = "net") -> str:
        """The margin mode an order on ``market`` uses where the order doesn't say (Binance,
        Bybit: a per-symbol setting): that of the leg's position, else of any position on
        the symbol, else cross."""
        with self._lock:
            modes = [(lg == leg, mm) for (mid, mm, lg), (amt, _e) in acc.positions.items() if mid == market.id and amt]
            return max(modes)[1] if modes else "cross"

    def place(
        self, acc: SimAccount, market: SimMarket, side: str, otype: str, qty: Decimal, price: Decimal, *,
        reduce_only: bool, client_order_id: str | None, margin_mode: str, leg: str, errors: OrderErrors,
        trigger_price: Decimal | None = None, time_in_force: str = "GTC",
    ) -> SimOrder:
        """Validate and execute an order the protocol front-end has already parsed; logs it.

        ``qty`` is in contracts for perpetuals (base units for spot); ``leg`` is ``net`` in
        one-way mode or the hedge leg (``long``/``short``) the order opens or closes.
        """
        with self._lock:
            try:
                order = self._check_and_place(
                    acc, market, side, otype, qty, price, reduce_only=reduce_only, client_order_id=client_order_id,
                    margin_mode=margin_mode, leg=leg, errors=errors, trigger_price=trigger_price,
                    time_in_force=time_in_force,
                )
            except ApiError as err:
                self._log.append(self._record_parsed(acc.name, market, side, otype, qty, price, reduce_only,
                                                     client_order_id, None, err))
                raise
            self._log.append(self._record_parsed(acc.name, market, side, otype, qty, price, reduce_only,
                                                 client_order_id, order, None))
            return order

    def record_refusal(
        self, account: str | None, market: SimMarket | None, side: str | None, qty: Decimal | None,
        reduce_only: bool, client_order_id: str | None, err: ApiError,
    ) -> None:
        """Log an order request a front-end refused before it reached the engine."""
        with self._lock:
            self._log.append(self._record_parsed(account, market, side, None, qty, None, reduce_only,
                                                 client_order_id, None, err))

    def _record_parsed(
        self, account: str | None, market: SimMarket | None, side: str | None, otype: str | None,
        qty: Decimal | None, price: Decimal | None, reduce_only: bool, client_order_id: str | None,
        order: SimOrder | None, err: ApiError | None,
    ) -> OrderRecord:
        return OrderRecord(
            timestamp=time.time(), account=account,
            venue=("spot" if market.is_spot else "futures") if market else "unknown",
            symbol=market.symbol if market else None, side=side.lower() if side else None,
            type=otype.lower() if otype else None, quantity=float(qty) if qty is not None else None,
            price=float(price) if price is not None and otype == "LIMIT" else None, reduce_only=reduce_only,
            client_order_id=order.client_order_id if order else client_order_id, accepted=err is None,
            order_id=order.order_id if order else None, status=order.status if order else None,
            filled=float(order.executed_qty) if order else None,
            error_code=_int_code(err) if err else None,
            error_msg=err.msg if err else None,
        )

    def _check_and_place(
        self, acc: SimAccount, market: SimMarket, side: str, otype: str, qty: Decimal, price: Decimal, *,
        reduce_only: bool, client_order_id: str | None, margin_mode: str, leg: str, errors: OrderErrors,
        trigger_price: Decimal | None = None, time_in_force: str = "GTC",
    ) -> SimOrder:
        if market.is_spot:
            base, quote = market.spec.base, market.spec.quote
            if side == "BUY" and acc.bal(quote)[0] < qty * price:
                raise errors.insufficient_balance
            if side == "SELL" and acc.bal(base)[0] < qty:
                raise errors.insufficient_balance
        elif trigger_price is None:
            key = (market.id, margin_mode, leg)
            amt = acc.positions.get(key, [ZERO, ZERO])[0]
            delta = qty if side == "BUY" else -qty
            if leg == "net":
                closing = amt != 0 and (amt > 0) != (delta > 0)
            else:
                # Hedge leg: the long leg is opened by buys and closed by sells, and vice versa.
                closing = (leg == "long") == (side == "SELL")
            if (reduce_only or (closing and leg != "net")) and (not closing or amt == 0):
                raise errors.nothing_to_reduce
            if closing and (reduce_only or leg != "net") and qty > abs(amt):
                if errors.reduce_too_large is not None:
                    raise errors.reduce_too_large
                qty = abs(amt)
            if not closing or (leg == "net" and qty > abs(amt)):
                increase = abs(amt + delta) - abs(amt) if leg == "net" else qty
                cost = increase * self.contract_size(acc, market) * price / self._leverage(acc, market)
                if cost > self._available(acc, market.spec.settle):
                    raise errors.margin_insufficient
        return self._place(acc, market, side, otype, qty, price, reduce_only, client_order_id, allow_fill=True,
                           time_in_force=time_in_force, leg=leg, margin_mode=margin_mode,
                           trigger_price=trigger_price)

    def _place(
        self, acc: SimAccount, market: SimMarket, side: str, otype: str, qty: Decimal, price: Decimal,
        reduce_only: bool, client_order_id: str | None, allow_fill: bool, time_in_force: str = "GTC",
        leg: str = "net", margin_mode: str = "cross", trigger_price: Decimal | None = None,
    ) -> SimOrder:
        now = self.server_time_ms()
        order = SimOrder(
            order_id=next(self._ids),
            client_order_id=client_order_id or self._random_client_id(),
            account=acc.name, market=market, side=side, type=otype, orig_qty=qty,
            price=price if otype == "LIMIT" else ZERO,
            time_in_force=time_in_force if otype == "LIMIT" else "GTC",
            reduce_only=reduce_only, time=now, update_time=now,
            leg=leg, margin_mode=margin_mode, trigger_price=trigger_price,
        )
        self._orders[order.order_id] = order
        if order.conditional:
            return order  # conditional orders rest apart and never trigger in the simulator
        crosses = otype == "MARKET" or (
            (side == "BUY" and price >= market.price) or (side == "SELL" and price <= market.price)
        )
        if otype == "MARKET":
            fill = market.round_down(qty * self.partial_fill)
            if fill > 0:
                self._fill(order, fill, market.price)
            # A market order never rests: what didn't fill expires.
            order.status = "FILLED" if order.executed_qty == qty else "EXPIRED"
        elif crosses and allow_fill:
            self._fill(order, qty, market.price)
        else:
            if market.is_spot:
                self._lock_spot(acc, order)
        return order

    def _random_client_id(self) -> str:
        return "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(22))

    def _lock_spot(self, acc: SimAccount, order: SimOrder) -> None:
        spec = order.market.spec
        if order.side == "BUY":
            bal, amount = acc.bal(spec.quote), order.orig_qty * order.price
        else:
            bal, amount = acc.bal(spec.base), order.orig_qty
        amount = min(amount, bal[0])
        bal[0] -= amount
        bal[1] += amount

    def _unlock_spot(self, acc: SimAccount, order: SimOrder) -> None:
        spec = order.market.spec
        remaining = order.orig_qty - order.executed_qty
        if order.side == "BUY":
            bal, amount = acc.bal(spec.quote), remaining * order.price
        else:
            bal, amount = acc.bal(spec.base), remaining
        amount = min(amount, bal[1])
        bal[1] -= amount
        bal[0] += amount

    def _fill(self, order: SimOrder, qty: Decimal, price: Decimal, from_locked: bool = False) -> None:
        acc = self.accounts[order.account]
        market = order.market
        if market.is_spot:
            spec = market.spec
            base, quote = acc.bal(spec.base), acc.bal(spec.quote)
            cost = qty * price
            if order.side == "BUY":
                if from_locked:
                    base_locked_cost = min(qty * order.price, quote[1])
                    quote[1] -= base_locked_cost
                    quote[0] += base_locked_cost - cost
                else:
                    quote[0] -= cost
                base[0] += qty
            else:
                if from_locked:
                    base[1] -= min(qty, base[1])
                else:
                    base[0] -= qty
                quote[0] += cost
        else:
            delta = qty if order.side == "BUY" else -qty
            amt = acc.positions.get(order.position_key, [ZERO, ZERO])[0]
            if order.reduce_only or order.leg != "net" and (order.leg == "long") == (order.side == "SELL"):
                # A resting reduce-only (or leg-closing) order never flips a position, even after it changed.
                delta = max(-abs(amt), min(abs(amt), delta)) if amt and (amt > 0) != (delta > 0) else ZERO
                qty = abs(delta)
            if qty:
                self._apply_futures_fill(acc, market, order.position_key, delta, price)
        order.executed_qty += qty
        order.cum_quote += qty * price
        order.update_time = self.server_time_ms()
        order.status = "FILLED" if order.executed_qty >= order.orig_qty else "PARTIALLY_FILLED"
        acc.update_time = order.update_time

    def _apply_futures_fill(
        self, acc: SimAccount, market: SimMarket, key: tuple[str, str, str], delta: Decimal, price: Decimal,
    ) -> None:
        amt, entry = acc.positions.get(key, [ZERO, ZERO])
        if amt == 0 or (amt > 0) == (delta > 0):
            new_amt = amt + delta
            entry = (abs(amt) * entry + abs(delta) * price) / abs(new_amt)
        else:
            closed = min(abs(delta), abs(amt))
            pnl = closed * self.contract_size(acc, market) * (price - entry) * (1 if amt > 0 else -1)
            if acc.unified:
                bal = acc.bal(market.spec.settle)
                bal[0] = max(ZERO, bal[0] + pnl)  # realised PnL settles into the unified wallet
            else:
                acc.wallet += pnl
            new_amt = amt + delta
            if new_amt != 0 and (new_amt > 0) != (amt > 0):
                entry = price  # flipped: the remainder opened at this price
        tick = market.spec.tick_size / 1000
        entry = entry.quantize(tick) if entry else entry
        if new_amt == 0:
            acc.positions.pop(key, None)
        else:
            acc.positions[key] = [new_amt, entry]
        acc.update_time = _now_ms()

    def _match_resting(self, market: SimMarket) -> None:
        for order in list(self._orders.values()):
            if not order.is_open or order.market is not market or order.type != "LIMIT" or order.conditional:
                continue
            if (order.side == "BUY" and market.price <= order.price) or (
                order.side == "SELL" and market.price >= order.price
            ):
                self._fill(order, order.orig_qty - order.executed_qty, order.price, from_locked=market.is_spot)

    def _leverage(self, acc: SimAccount, market: SimMarket) -> int:
        return acc.leverage.get(market.id, self.default_leverage)

    def _settled_in(self, acc: SimAccount, settle: str | None) -> list[tuple[SimMarket, Decimal, Decimal]]:
        rows = []
        for (mid, _mm, _leg), (amt, entry) in acc.positions.items():
            m = self.swap_markets[mid]
            if settle is None or m.spec.settle == settle or not acc.unified:
                rows.append((m, amt, entry))
        return rows

    def _unrealized(self, acc: SimAccount, settle: str | None = None) -> Decimal:
        return sum(
            (amt * self.contract_size(acc, m) * (m.price - entry) for m, amt, entry in self._settled_in(acc, settle)),
            ZERO,
        )

    def _initial_margin(self, acc: SimAccount, settle: str | None = None) -> Decimal:
        return sum(
            (abs(amt) * self.contract_size(acc, m) * m.price / self._leverage(acc, m)
             for m, amt, _e in self._settled_in(acc, settle)),
            ZERO,
        )

    def _open_order_margin(self, acc: SimAccount, settle: str | None = None) -> Decimal:
        return sum(
            ((o.orig_qty - o.executed_qty) * self.contract_size(acc, o.market) * o.price / self._leverage(acc, o.market)
             for o in self._orders.values()
             if o.is_open and o.account == acc.name and not o.market.is_spot and not o.reduce_only
             and not o.conditional and (settle is None or not acc.unified or o.market.spec.settle == settle)),
            ZERO,
        )

    def _wallet(self, acc: SimAccount, settle: str) -> Decimal:
        return acc.bal(settle)[0] if acc.unified else acc.wallet

    def _available(self, acc: SimAccount, settle: str = "USDT") -> Decimal:
        return (self._wallet(acc, settle) + self._unrealized(acc, settle) - self._initial_margin(acc, settle)
                - self._open_order_margin(acc, settle))

    def futures_figures(self, acc: SimAccount, settle: str = "USDT") -> dict[str, Decimal]:
        """Wallet, unrealized PnL, margins and available balance of the margin in ``settle``
        (Binance: the USDⓈ-M wallet; unified accounts: that coin of the one wallet)."""
        with self._lock:
            upnl = self._unrealized(acc, settle)
            wallet = self._wallet(acc, settle)
            return {
                "wallet": wallet,
                "unrealized": upnl,
                "margin_balance": wallet + upnl,
                "initial_margin": self._initial_margin(acc, settle),
                "open_order_margin": self._open_order_margin(acc, settle),
                "available": self._available(acc, settle),
            }

    def leverage_of(self, acc: SimAccount, market: SimMarket) -> int:
        with self._lock:
            return self._leverage(acc, market)

    def set_leverage(self, acc: SimAccount, market: SimMarket, leverage: int) -> None:
        if not 1 <= leverage <= 125:
            raise ApiError(-4028, f"Leverage {leverage} is not valid")
        with self._lock:
            acc.leverage[market.id] = leverage

    def find_order(self, acc: SimAccount, venue: str, params: dict[str, str]) -> SimOrder:
        """An order of this account by ``orderId`` or ``origClientOrderId`` (-2013 if none)."""
        with self._lock:
            return self._find(acc, venue, params, ORDER_DOES_NOT_EXIST)

    def _find(self, acc: SimAccount, venue: str, p: dict[str, str], missing: ApiError) -> SimOrder:
        if not p.get("symbol"):
            raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        table = self.spot_markets if venue == "spot" else self.swap_markets
        market = table.get(p["symbol"])
        if market is None:
            raise INVALID_SYMBOL
        if "orderId" in p:
            try:
                order = self._orders.get(int(p["orderId"]))
            except ValueError:
                raise ApiError(-1100, "Illegal characters found in parameter 'orderId'.") from None
        elif "origClientOrderId" in p:
            matches = [o for o in self._orders.values() if o.account == acc.name and o.market is market
                       and o.client_order_id == p["origClientOrderId"]]
            # Binance resolves a reused client id to the newest order.
            order = matches[-1] if matches else None
        else:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order is None or order.account != acc.name or order.market is not market:
            raise missing
        return order

    def cancel_order(self, acc: SimAccount, venue: str, params: dict[str, str]) -> SimOrder:
        with self._lock:
            order = self._find(acc, venue, params, UNKNOWN_ORDER)
            if not order.is_open:
                raise UNKNOWN_ORDER
            self._cancel(acc, order)
            return order

    def _cancel(self, acc: SimAccount, order: SimOrder) -> None:
        if order.market.is_spot:
            self._unlock_spot(acc, order)
        order.status = "CANCELED"
        order.update_time = self.server_time_ms()

    def cancel_all(self, acc: SimAccount, venue: str, symbol_id: str, conditional: bool | None = None,
                   ) -> list[SimOrder]:
        """Cancel the open orders of ``acc`` on one market (``conditional`` as in
        :meth:`list_open_orders`; None: every kind)."""
        with self._lock:
            table = self.spot_markets if venue == "spot" else self.swap_markets
            market = table.get(symbol_id)
            if market is None:
                raise INVALID_SYMBOL
            cancelled = [o for o in self._orders.values()
                         if o.is_open and o.account == acc.name and o.market is market
                         and (conditional is None or o.conditional == conditional)]
            for order in cancelled:
                self._cancel(acc, order)
            return cancelled

    def list_open_orders(
        self, acc: SimAccount, venue: str | None, symbol_id: str | None, conditional: bool | None = False,
    ) -> list[SimOrder]:
        """Open orders of ``acc`` on ``venue`` (spot | futures | None for both); resting ones only
        by default, ``conditional=True`` for conditional ones only, ``None`` for both."""
        with self._lock:
            table = self.spot_markets if venue == "spot" else self.swap_markets
            if symbol_id is not None and venue is not None and symbol_id not in table:
                raise INVALID_SYMBOL
            return [o for o in self._orders.values()
                    if o.is_open and o.account == acc.name and (venue is None or o.venue == venue)
                    and (conditional is None or o.conditional == conditional)
                    and (symbol_id is None or o.market.id == symbol_id)]

    def order_by_id(self, acc: SimAccount, order_id: int | None = None, client_order_id: str | None = None,
                    ) -> SimOrder | None:
        """An order of ``acc`` by exchange id or (newest) client id; None if there is none."""
        with self._lock:
            if order_id is not None:
                o = self._orders.get(order_id)
                return o if o is not None and o.account == acc.name else None
            matches = [o for o in self._orders.values() if o.account == acc.name and o.client_order_id == client_order_id]
            return matches[-1] if matches else None

    def cancel(self, acc: SimAccount, order: SimOrder) -> bool:
        """Cancel one open order of ``acc``; False if it is not open any more."""
        with self._lock:
            if not order.is_open or order.account != acc.name:
                return False
            self._cancel(acc, order)
            return True

    def spot_rows(self, acc: SimAccount) -> list[tuple[str, Decimal, Decimal]]:
        with self._lock:
            return [(a, f, lk) for a, (f, lk) in sorted(acc.spot.items())]

    def position_legs(self, acc: SimAccount) -> list[tuple[SimMarket, str, str, Decimal, Decimal]]:
        """(market, margin mode, leg, signed contracts, entry) of every position."""
        with self._lock:
            return [(self.swap_markets[mid], mm, leg, amt, entry)
                    for (mid, mm, leg), (amt, entry) in sorted(acc.positions.items())]

    def all_assets(self) -> list[str]:
        with self._lock:
            assets = {m.spec.base for m in self.by_symbol.values()} | {m.spec.quote for m in self.by_symbol.values()}
            for acc in self.accounts.values():
                assets |= set(acc.spot)
            return sorted(assets)
