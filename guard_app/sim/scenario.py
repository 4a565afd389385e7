"""Scenario files for the exchange simulator: markets, accounts and their starting state.

A scenario is a TOML file::

    [sim]                          # optional
    clock_skew_ms = 0              # server clock minus real clock
    latency = 0.0                  # seconds added to every API answer
    partial_fill = 1.0             # fraction of a market order that fills (0 < f <= 1)
    futures_wallet = 10000         # default USDT futures wallet of every account
    leverage = 10                  # default futures leverage

    [[markets]]
    symbol = "BTC/USDT"            # spot: BASE/QUOTE; swap: BASE/QUOTE:SETTLE
    type = "spot"                  # spot | swap (swap needs SETTLE == QUOTE: USDⓈ-M)
    price = 60000.0
    step_size = 0.00001            # LOT_SIZE stepSize
    min_qty = 0.00001              # LOT_SIZE minQty (default: step_size)
    max_qty = 9000                 # LOT_SIZE maxQty (default 9000000)
    min_notional = 5.0             # NOTIONAL (spot) / MIN_NOTIONAL (futures)
    tick_size = 0.01               # PRICE_FILTER tickSize
    contract_size = 0.01           # swap only: OKX's ctVal (base units per contract); default
                                   # OKX's real one (BTC 0.01, ETH 0.1, SOL 1, DOGE 1000, XRP 100 ...)
                                   # Binance USDⓈ-M and Bybit linear contracts are always 1 base unit.
                                   # USDC-settled perpetuals: symbol "BTC/USDC:USDC" (Bybit BTCPERP).

    [limits]                       # optional: lower (or raise) any published rate limit,
    "binance.futures_orders_10s" = 5   # by name (see guard_app.sim.limits.DEFAULT_LIMITS)

    [[accounts]]
    name = "alice"                 # unique across the whole scenario
    exchange = "binance"           # binance (default) | okx | bybit: the protocol this key speaks
    api_key = "..."                # unique
    secret = "..."
    passphrase = "..."             # okx only, required there (OK-ACCESS-PASSPHRASE)
    position_mode = "one-way"      # one-way (default) | hedge: Binance dualSidePosition,
                                   # OKX net_mode / long_short_mode, Bybit positionIdx 0 / 1,2
    futures_wallet = 5000          # optional, binance only: the USDⓈ-M wallet (USDT). OKX and
                                   # Bybit accounts are unified: swaps settle in the spot balances
    [accounts.spot]                # asset = free amount (the unified wallet on okx / bybit)
    USDT = 1000
    BTC = 0.01
    [[accounts.positions]]         # perpetual positions
    symbol = "ETH/USDT:USDT"
    side = "short"                 # long | short (in hedge mode: the leg)
    contracts = 0.5                # in the exchange's contracts (OKX: × contract_size)
    entry_price = 3100             # optional, default the market price
    margin_mode = "cross"          # cross (default) | isolated
    [[accounts.orders]]            # resting limit orders (they lock balance)
    symbol = "BTC/USDT"
    side = "buy"
    amount = 0.001
    price = 50000
    client_order_id = "resting-1"  # optional
    reduce_only = false            # optional (swaps)
    trigger_price = 48000          # optional: a conditional order (OKX algo, Bybit StopOrder,
                                   # Binance STOP_MARKET), listed and cancelled apart; never triggers
    margin_mode = "cross"          # optional (swaps): cross | isolated

Any problem raises :class:`ScenarioError` with one line naming the file, the key and
the problem, e.g. ``demo.toml: accounts[1].secret: missing``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "AccountSpec",
    "MarketSpec",
    "OrderSpec",
    "PositionSpec",
    "Scenario",
    "ScenarioError",
    "demo_scenario_path",
    "load_scenario",
    "parse_scenario",
]


class ScenarioError(ValueError):
    """A scenario file can't be used; ``str(err)`` is one line naming file, key and problem.

    The simulator imports nothing of the product, so this is its own error (a ``ValueError``),
    with the same ``key`` / ``problem`` / ``source`` attributes as the product's config errors.
    """

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


@dataclass(frozen=True)
class MarketSpec:
    """One market: a spot pair or a USDⓈ-M perpetual swap."""

    symbol: str
    type: str
    price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    tick_size: Decimal
    contract_size: Decimal = Decimal(1)  # OKX ctVal; Binance and Bybit linear are 1

    @property
    def settle(self) -> str:
        return self.symbol.split(":")[1] if ":" in self.symbol else ""

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1].split(":")[0]

    @property
    def id(self) -> str:
        """Binance's market id (``BTCUSDT``); spot and swap share it."""
        return self.base + self.quote


@dataclass(frozen=True)
class PositionSpec:
    """A starting futures position (one-way mode)."""

    symbol: str
    side: str
    contracts: Decimal
    entry_price: Decimal | None = None
    margin_mode: str = "cross"


@dataclass(frozen=True)
class OrderSpec:
    """A starting resting limit order."""

    symbol: str
    side: str
    amount: Decimal
    price: Decimal
    client_order_id: str | None = None
    reduce_only: bool = False
    trigger_price: Decimal | None = None
    margin_mode: str = "cross"


@dataclass(frozen=True)
class AccountSpec:
    """One API key and the spot and futures wallets behind it."""

    name: str
    api_key: str
    secret: str = field(repr=False)
    spot: dict[str, Decimal] = field(default_factory=dict)
    futures_wallet: Decimal | None = None
    positions: tuple[PositionSpec, ...] = ()
    orders: tuple[OrderSpec, ...] = ()
    exchange: str = "binance"
    passphrase: str = field(default="", repr=False)
    position_mode: str = "one-way"

    def __repr__(self) -> str:  # never show the key or secret
        return f"AccountSpec(name={self.name!r}, exchange={self.exchange!r}, spot={len(self.spot)} assets, positions={len(self.positions)})"


@dataclass(frozen=True)
class Scenario:
    """A whole simulated exchange: settings, markets and accounts."""

    markets: tuple[MarketSpec, ...]
    accounts: tuple[AccountSpec, ...]
    clock_skew_ms: int = 0
    latency: float = 0.0
    partial_fill: float = 1.0
    futures_wallet: Decimal = Decimal(10000)
    leverage: int = 10
    source: str = ""
    limits: dict[str, float] = field(default_factory=dict)

    def account(self, name: str) -> AccountSpec:
        for acc in self.accounts:
            if acc.name == name:
                return acc
        raise KeyError(name)


def demo_scenario_path() -> Path:
    """The demo scenario shipped with the package (``guard_app/sim/scenarios/demo.toml``)."""
    return Path(str(resources.files("guard_app.sim").joinpath("scenarios", "demo.toml")))


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raises :class:`ScenarioError` on any problem."""
    p = Path(path)
    source = p.name
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("", "file not found", str(p)) from None
    except OSError as exc:
        raise ScenarioError("", f"can't read the file ({exc.strerror})", str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("", f"not valid TOML ({exc})", source) from None
    return parse_scenario(data, source)


# --- validation helpers -------------------------------------------------------------


class _Reader:
    """Reads typed values from a TOML table and names the key in every error."""

    def __init__(self, table: Any, path: str, source: str) -> None:
        if not isinstance(table, dict):
            raise ScenarioError(path, "must be a table", source)
        self.table = table
        self.path = path
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> ScenarioError:
        return ScenarioError(self.key(name), problem, self.source)

    def raw(self, name: str, required: bool) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                raise self.fail(name, "missing")
            return None
        return self.table[name]

    def string(self, name: str, required: bool = True, choices: tuple[str, ...] = ()) -> str | None:
        value = self.raw(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "must be a non-empty string")
        if choices and value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def decimal(
        self, name: str, required: bool = True, positive: bool = True, allow_zero: bool = False
    ) -> Decimal | None:
        value = self.raw(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(name, "must be a number")
        try:
            dec = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(name, f"must be a number (got {value!r})") from None
        if not dec.is_finite():
            raise self.fail(name, "must be a finite number")
        if positive and (dec < 0 or (dec == 0 and not allow_zero)):
            raise self.fail(name, f"must be {'zero or ' if allow_zero else ''}positive (got {value})")
        return dec

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _table_list(data: dict[str, Any], name: str, source: str, path: str = "") -> list[Any]:
    value = data.get(name, [])
    key = f"{path}.{name}" if path else name
    if not isinstance(value, list):
        raise ScenarioError(key, "must be an array of tables ([[...]])", source)
    return value


def _parse_market(raw: Any, path: str, source: str) -> MarketSpec:
    r = _Reader(raw, path, source)
    symbol = r.string("symbol")
    mtype = r.string("type", required=False, choices=("spot", "swap")) or "spot"
    assert symbol is not None  # noqa: S101 - required=True guarantees it
    if mtype == "spot":
        if symbol.count("/") != 1 or ":" in symbol:
            raise r.fail("symbol", f"a spot symbol looks like BASE/QUOTE (got {symbol!r})")
    else:
        parts = symbol.replace(":", "/").split("/")
        if len(parts) != 3 or ":" not in symbol or not all(parts):
            raise r.fail("symbol", f"a swap symbol looks like BASE/QUOTE:SETTLE (got {symbol!r})")
        if parts[1] != parts[2]:
            raise r.fail("symbol", "only USDⓈ-M swaps (SETTLE == QUOTE) are simulated")
    price = r.decimal("price")
    step = r.decimal("step_size")
    min_qty = r.decimal("min_qty", required=False) or step
    max_qty = r.decimal("max_qty", required=False) or Decimal(9000000)
    min_notional = r.decimal("min_notional", required=False, allow_zero=True)
    tick = r.decimal("tick_size")
    contract_size = r.decimal("contract_size", required=False) or (
        OKX_CONTRACT_SIZES.get(symbol.split("/")[0], Decimal(1)) if mtype == "swap" else Decimal(1)
    )
    r.finish()
    assert price is not None and step is not None and tick is not None  # noqa: S101
    assert min_qty is not None  # noqa: S101
    if min_qty > max_qty:
        raise r.fail("min_qty", "is larger than max_qty")
    return MarketSpec(
        symbol=symbol,
        type=mtype,
        price=price,
        step_size=step,
        min_qty=min_qty,
        max_qty=max_qty,
        min_notional=min_notional if min_notional is not None else Decimal(5),
        tick_size=tick,
        contract_size=contract_size,
    )


# OKX's ctVal of its linear perpetuals (public/instruments, instType=SWAP), so a scenario
# that doesn't say gets the real contract sizes: BTC-USDT-SWAP is 0.01 BTC per contract.
OKX_CONTRACT_SIZES: dict[str, Decimal] = {
    "BTC": Decimal("0.01"), "ETH": Decimal("0.1"), "SOL": Decimal(1), "DOGE": Decimal(1000),
    "XRP": Decimal(100), "LINK": Decimal(1), "BNB": Decimal("0.01"), "TRX": Decimal(1000),
}

EXCHANGES = ("binance", "okx", "bybit")


def _parse_account(
    raw: Any, path: str, source: str, markets: dict[str, MarketSpec]
) -> AccountSpec:
    r = _Reader(raw, path, source)
    name = r.string("name")
    api_key = r.string("api_key")
    secret = r.string("secret")
    exchange = r.string("exchange", required=False, choices=EXCHANGES) or "binance"
    passphrase = r.string("passphrase", required=exchange == "okx") or ""
    if passphrase and exchange != "okx":
        raise r.fail("passphrase", "only okx keys have a passphrase")
    position_mode = r.string("position_mode", required=False, choices=("one-way", "hedge")) or "one-way"
    wallet = r.decimal("futures_wallet", required=False, allow_zero=True)
    spot_raw = r.raw("spot", required=False) or {}
    sr = _Reader(spot_raw, r.key("spot"), source)
    spot: dict[str, Decimal] = {}
    for asset in list(spot_raw):
        if not asset.isalnum() or asset.upper() != asset:
            raise sr.fail(asset, "asset names are upper-case letters and digits")
        amount = sr.decimal(asset, allow_zero=True)
        assert amount is not None  # noqa: S101
        spot[asset] = amount
    positions: list[PositionSpec] = []
    for i, praw in enumerate(_table_list(r.table, "positions", source, path)):
        pr = _Reader(praw, f"{path}.positions[{i}]", source)
        symbol = pr.string("symbol")
        if symbol not in markets or markets[symbol].type != "swap":
            raise pr.fail("symbol", f"no swap market {symbol!r} in [[markets]]")
        side = pr.string("side", choices=("long", "short"))
        contracts = pr.decimal("contracts")
        entry = pr.decimal("entry_price", required=False)
        margin_mode = pr.string("margin_mode", required=False, choices=("cross", "isolated")) or "cross"
        pr.finish()
        assert symbol and side and contracts is not None  # noqa: S101
        positions.append(PositionSpec(symbol, side, contracts, entry, margin_mode))
    r.used.add("positions")
    orders: list[OrderSpec] = []
    for i, oraw in enumerate(_table_list(r.table, "orders", source, path)):
        orr = _Reader(oraw, f"{path}.orders[{i}]", source)
        symbol = orr.string("symbol")
        if symbol not in markets:
            raise orr.fail("symbol", f"no market {symbol!r} in [[markets]]")
        side = orr.string("side", choices=("buy", "sell"))
        amount = orr.decimal("amount")
        price = orr.decimal("price")
        coid = orr.string("client_order_id", required=False)
        reduce_only = orr.raw("reduce_only", required=False) or False
        if not isinstance(reduce_only, bool):
            raise orr.fail("reduce_only", "must be true or false")
        trigger = orr.decimal("trigger_price", required=False)
        order_mm = orr.string("margin_mode", required=False, choices=("cross", "isolated")) or "cross"
        orr.finish()
        assert symbol and side and amount is not None and price is not None  # noqa: S101
        orders.append(OrderSpec(symbol, side, amount, price, coid, reduce_only, trigger, order_mm))
    r.used.add("orders")
    r.finish()
    assert name and api_key and secret  # noqa: S101
    return AccountSpec(
        name=name,
        api_key=api_key,
        secret=secret,
        spot=spot,
        futures_wallet=wallet,
        positions=tuple(positions),
        orders=tuple(orders),
        exchange=exchange,
        passphrase=passphrase,
        position_mode=position_mode,
    )


def parse_scenario(data: dict[str, Any], source: str = "scenario") -> Scenario:
    """Validate an already-parsed TOML document (see the module docstring for the format)."""
    top = _Reader(data, "", source)
    sim = _Reader(top.raw("sim", required=False) or {}, "sim", source)
    skew = sim.raw("clock_skew_ms", required=False)
    if skew is not None and (isinstance(skew, bool) or not isinstance(skew, int)):
        raise sim.fail("clock_skew_ms", "must be an integer (milliseconds)")
    latency = sim.decimal("latency", required=False, allow_zero=True)
    partial = sim.decimal("partial_fill", required=False)
    if partial is not None and partial > 1:
        raise sim.fail("partial_fill", "must be a fraction between 0 and 1")
    wallet = sim.decimal("futures_wallet", required=False, allow_zero=True)
    leverage = sim.raw("leverage", required=False)
    if leverage is not None and (isinstance(leverage, bool) or not isinstance(leverage, int) or not 1 <= leverage <= 125):
        raise sim.fail("leverage", "must be an integer from 1 to 125")
    sim.finish()

    markets: dict[str, MarketSpec] = {}
    for i, raw in enumerate(_table_list(data, "markets", source)):
        spec = _parse_market(raw, f"markets[{i}]", source)
        if spec.symbol in markets:
            raise ScenarioError(f"markets[{i}].symbol", f"duplicate market {spec.symbol!r}", source)
        markets[spec.symbol] = spec
    top.used.add("markets")
    if not markets:
        raise ScenarioError("markets", "at least one market is needed", source)

    accounts: list[AccountSpec] = []
    names: set[str] = set()
    keys: set[str] = set()
    for i, raw in enumerate(_table_list(data, "accounts", source)):
        acc = _parse_account(raw, f"accounts[{i}]", source, markets)
        if acc.name in names:
            raise ScenarioError(f"accounts[{i}].name", f"duplicate account {acc.name!r}", source)
        if acc.api_key in keys:
            raise ScenarioError(f"accounts[{i}].api_key", "the same api_key is used by another account", source)
        names.add(acc.name)
        keys.add(acc.api_key)
        accounts.append(acc)
    top.used.add("accounts")
    limits = _parse_limits(top.raw("limits", required=False) or {}, source)
    top.finish()
    return Scenario(
        markets=tuple(markets.values()),
        accounts=tuple(accounts),
        clock_skew_ms=int(skew or 0),
        latency=float(latency or 0),
        partial_fill=float(partial) if partial is not None else 1.0,
        futures_wallet=wallet if wallet is not None else Decimal(10000),
        leverage=int(leverage or 10),
        source=source,
        limits=limits,
    )


def _parse_limits(raw: Any, source: str) -> dict[str, float]:
    # Imported here: limits.py has no dependency on scenarios, and this keeps it that way.
    from guard_app.sim.limits import DEFAULT_LIMITS

    r = _Reader(raw, "limits", source)
    out: dict[str, float] = {}
    for name in list(r.table):
        if name not in DEFAULT_LIMITS:
            raise r.fail(name, f"unknown limit (known: {', '.join(sorted(DEFAULT_LIMITS))})")
        value = r.decimal(name)
        assert value is not None  # noqa: S101
        out[name] = float(value)
    return out
