"""The real async ccxt binance client (aiohttp, keep-alive) against the simulator."""

from __future__ import annotations

import asyncio
import time

import ccxt
import ccxt.async_support as accxt
import pytest

from tests.fixtures.sim_fixtures import ccxt_config


async def _with_client(server, account, market, body):
    client = accxt.binance(ccxt_config(server, account, market))
    try:
        return await body(client)
    finally:
        await client.close()


def test_async_markets_balances_positions_and_close(sim):
    async def body(client):
        await client.load_markets()
        positions = {p["symbol"]: p for p in await client.fetch_positions()}
        short = positions["DOGE/USDT:USDT"]
        assert (short["side"], short["contracts"]) == ("short", 1000.0)
        order = await client.create_order("DOGE/USDT:USDT", "market", "buy", 1000, params={"reduceOnly": True})
        assert order["status"] == "closed"
        remaining = {p["symbol"] for p in await client.fetch_positions()}
        assert "DOGE/USDT:USDT" not in remaining
        return (await client.fetch_balance())["USDT"]["total"]

    total = asyncio.run(_with_client(sim, "alice", "swap", body))
    assert total > 5000
    assert not any(p["symbol"] == "DOGE/USDT:USDT" for p in sim.exchange.positions("alice"))


def test_async_spot_sell_and_open_orders(sim):
    async def body(client):
        await client.create_order("BTC/USDT", "market", "sell", 0.001)
        await client.create_order("ETH/USDT", "limit", "sell", 0.01, 9000)
        return await client.fetch_open_orders("ETH/USDT"), await client.fetch_balance()

    open_orders, balance = asyncio.run(_with_client(sim, "bob", "spot", body))
    assert [o["amount"] for o in open_orders] == [0.01]
    assert balance["BTC"]["total"] == pytest.approx(0.001)
    assert balance["ETH"]["used"] == pytest.approx(0.01)


def test_async_bad_key_and_rate_limit_and_drop(sim):
    async def bad_key():
        client = accxt.binance(ccxt_config(sim, "bob") | {"apiKey": "unknown"})
        try:
            await client.fetch_balance()
        finally:
            await client.close()

    with pytest.raises(ccxt.AuthenticationError):
        asyncio.run(bad_key())

    sim.exchange.inject_fault("/api/v3/account", 429, retry_after=3, count=1)

    async def rate_limited(client):
        await client.fetch_balance()

    with pytest.raises(ccxt.DDoSProtection):
        asyncio.run(_with_client(sim, "bob", "spot", rate_limited))

    # aiohttp retries an idempotent GET once on a dropped connection: drop both tries.
    sim.exchange.inject_fault("/api/v3/account", kind="drop", count=2)
    with pytest.raises(ccxt.NetworkError):
        asyncio.run(_with_client(sim, "bob", "spot", rate_limited))


def test_many_concurrent_clients_with_latency(sim_factory):
    accounts = [
        {"name": f"acct{i}", "api_key": f"FAKE-key-{i:03d}", "secret": f"FAKE-secret-{i:03d}",
         "spot": {"USDT": 100, "DOGE": 50 + i}}
        for i in range(50)
    ]
    scenario = {
        "sim": {"latency": 0.05},
        "markets": [{"symbol": "DOGE/USDT", "price": 0.16, "step_size": 1, "min_notional": 1, "tick_size": 0.00001}],
        "accounts": accounts,
    }
    server = sim_factory(scenario)

    async def everyone():
        clients = [accxt.binance(ccxt_config(server, f"acct{i}")) for i in range(50)]
        try:
            await asyncio.gather(*(c.load_markets() for c in clients))
            start = time.monotonic()
            for _ in range(3):
                balances = await asyncio.gather(*(c.fetch_balance() for c in clients))
            return [b["DOGE"]["total"] for b in balances], time.monotonic() - start
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    totals, elapsed = asyncio.run(everyone())
    assert totals == [50.0 + i for i in range(50)]
    # 3 rounds x 50 clients x 50 ms: 7.5 s one at a time, about 0.15 s side by side.
    assert elapsed < 3.0
