"""Helpers for broker tests on the three simulated protocols (Binance, OKX v5, Bybit v5).

A scenario is built from a few markets and one account per test; the broker is the
real one, pointed at the simulator only through the account's ``[accounts.ccxt]`` URLs
(as a user would), with the real ccxt underneath.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from guard_app.core.config import AccountConfig
from guard_app.core.models import Market
from guard_app.core.secrets import ApiKeys
from guard_app.exchanges.broker import Broker
from guard_app.exchanges.ratelimit import reset_shared_budgets
from guard_app.sim import SimServer, ccxt_overrides

T = TypeVar("T")

EXCHANGES = ("binance", "okx", "bybit")

MARKETS: list[dict[str, Any]] = [
    {"symbol": "BTC/USDT", "type": "spot", "price": 60000.0, "step_size": 0.00001, "min_notional": 5, "tick_size": 0.01},
    {"symbol": "ETH/USDT", "type": "spot", "price": 3000.0, "step_size": 0.0001, "min_notional": 5, "tick_size": 0.01},
    {"symbol": "SOL/USDT", "type": "spot", "price": 150.0, "step_size": 0.001, "min_notional": 5, "tick_size": 0.01},
    {"symbol": "BTC/USDT:USDT", "type": "swap", "price": 60000.0, "step_size": 0.001, "min_notional": 5,
     "tick_size": 0.1},
    {"symbol": "ETH/USDT:USDT", "type": "swap", "price": 3000.0, "step_size": 0.01, "min_notional": 5,
     "tick_size": 0.01},
    {"symbol": "SOL/USDT:USDT", "type": "swap", "price": 150.0, "step_size": 0.1, "min_notional": 5,
     "tick_size": 0.01},
    {"symbol": "XRP/USDT:USDT", "type": "swap", "price": 0.6, "step_size": 1, "min_notional": 5,
     "tick_size": 0.0001},
    {"symbol": "DOGE/USDT:USDT", "type": "swap", "price": 0.16, "step_size": 10, "min_notional": 5,
     "tick_size": 0.00001},
    {"symbol": "ETH/USDC:USDC", "type": "swap", "price": 3000.0, "step_size": 0.01, "min_notional": 5,
     "tick_size": 0.01},
]

# Contract size per exchange (OKX ctVal; Binance and Bybit linear contracts are 1 base unit).
OKX_CT_VAL = {"BTC/USDT:USDT": 0.01, "ETH/USDT:USDT": 0.1, "SOL/USDT:USDT": 1.0, "XRP/USDT:USDT": 100.0,
              "DOGE/USDT:USDT": 1000.0, "ETH/USDC:USDC": 0.1}


def contract_size(exchange: str, symbol: str) -> float:
    return OKX_CT_VAL[symbol] if exchange == "okx" else 1.0


def contracts(exchange: str, symbol: str, base_amount: float) -> float:
    """The exchange's contracts for ``base_amount`` of the base asset."""
    return round(base_amount / contract_size(exchange, symbol), 8)


def credentials(name: str, exchange: str) -> dict[str, str]:
    creds = {"api_key": f"{name}KEY{exchange}0123456789", "secret": f"{name}SECRET{exchange}abcdefghij"}
    if exchange == "okx":
        creds["passphrase"] = f"{name}Pass{exchange}42"
    return creds


def scenario(
    name: str,
    exchange: str,
    *,
    spot: Mapping[str, float] | None = None,
    positions: Iterable[Mapping[str, Any]] = (),
    orders: Iterable[Mapping[str, Any]] = (),
    hedge: bool = False,
    limits: Mapping[str, float] | None = None,
    markets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One account on ``exchange``; positions are given in base units and converted."""
    acc: dict[str, Any] = {
        "name": name,
        "exchange": exchange,
        "spot": dict(spot or {"USDT": 100000, "USDC": 100000}),
        "position_mode": "hedge" if hedge else "one-way",
        **credentials(name, exchange),
    }
    if exchange == "binance":
        acc["futures_wallet"] = 100000
    if positions:
        acc["positions"] = [
            {**p, "contracts": contracts(exchange, p["symbol"], p["contracts"])} for p in positions
        ]
    if orders:
        acc["orders"] = [dict(o) for o in orders]
    doc: dict[str, Any] = {"markets": [dict(m) for m in (markets or MARKETS)], "accounts": [acc]}
    if exchange == "okx":
        for m in doc["markets"]:
            if m["type"] == "swap":
                m["contract_size"] = OKX_CT_VAL[m["symbol"]]
    if limits:
        doc["limits"] = dict(limits)
    return doc


def make_broker(server: SimServer, name: str, exchange: str, market: Market, *,
                secret: str | None = None, account_id: str | None = None, **ccxt: Any) -> Broker:
    creds = credentials(name, exchange)
    account = AccountConfig(
        id=account_id or f"{name}-{exchange}-{market.value}", user="u", exchange=exchange, max_positions=10,
        market=market, ccxt={**ccxt_overrides(server.base_url, exchange), "timeout": 5000, **ccxt},
    )
    keys = ApiKeys(creds["api_key"], secret or creds["secret"], creds.get("passphrase"))
    return Broker(account, keys)


def run(fn: Callable[..., Awaitable[T]], *brokers: Broker) -> T:
    """Run ``fn(*brokers)`` on a fresh loop and close the brokers after it."""

    async def go() -> T:
        try:
            return await fn(*brokers)
        finally:
            await asyncio.gather(*(b.aclose() for b in brokers))

    reset_shared_budgets()  # every simulator is a fresh IP as far as the limiter knows
    return asyncio.run(go())
