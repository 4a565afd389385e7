"""The real ccxt async bybit client against the simulator's Bybit v5 front-end (unified account)."""

from __future__ import annotations

import asyncio
import dataclasses

import ccxt
import pytest

from guard_app.sim import load_scenario
from tests.fixtures.sim_fixtures import exchanges_scenario_path, with_client


def test_markets_wallet_and_positions_of_every_settle_coin(sim_exchanges):
    async def body(c):
        markets = await c.load_markets()
        usdt = await c.fetch_positions()
        usdc = await c.fetch_positions(None, {"settleCoin": "USDC"})
        return markets, await c.fetch_balance(), usdt, usdc

    markets, balance, usdt, usdc = with_client(sim_exchanges, "bybit-one", body)
    assert markets["BTC/USDC:USDC"]["id"] == "BTCPERP" and markets["BTC/USDC:USDC"]["settle"] == "USDC"
    assert markets["BTC/USDT:USDT"]["contractSize"] == 1
    assert balance["USDC"]["total"] == pytest.approx(10000) and balance["ETH"]["total"] == pytest.approx(1)
    # ccxt without symbols reads USDT-settled positions only; USDC needs its own call.
    assert [(p["symbol"], p["side"]) for p in usdt] == [("BTC/USDT:USDT", "long")]
    assert [(p["symbol"], p["side"], p["contracts"]) for p in usdc] == [("BTC/USDC:USDC", "short", 0.03)]
    assert sim_exchanges.unknown_paths == []


def test_reduce_only_close_of_a_usdc_perpetual_and_nothing_to_reduce(sim_exchanges):
    async def body(c):
        await c.create_order("BTC/USDC:USDC", "market", "buy", 0.03, None, {"reduceOnly": True})
        try:
            await c.create_order("BTC/USDC:USDC", "market", "buy", 0.03, None, {"reduceOnly": True})
        except ccxt.InvalidOrder as exc:
            return str(exc), await c.fetch_positions(None, {"settleCoin": "USDC"})
        return None, None

    error, left = with_client(sim_exchanges, "bybit-one", body)
    assert left == []
    assert error is not None and '"retCode":110017' in error


def test_hedge_mode_needs_the_leg_index(sim_exchanges):
    async def one_way_close(c):
        await c.create_order("BTC/USDT:USDT", "market", "sell", 0.01, None, {"reduceOnly": True, "positionIdx": 0})

    with pytest.raises(ccxt.BadRequest) as info:
        with_client(sim_exchanges, "bybit-hedge", one_way_close)
    assert "10001" in str(info.value) and "position idx not match position mode" in str(info.value)

    async def leg_close(c):
        positions = await c.fetch_positions()
        await c.create_order("BTC/USDT:USDT", "market", "buy", 0.02, None, {"reduceOnly": True, "positionIdx": 2})
        return positions, await c.fetch_positions()

    before, after = with_client(sim_exchanges, "bybit-hedge", leg_close)
    assert sorted((p["side"], p["hedged"]) for p in before) == [("long", True), ("short", True)]
    assert [(p["side"], p["contracts"]) for p in after] == [("long", 0.01)]


def test_open_orders_all_kinds_and_cancel_all(sim_exchanges):
    async def body(c):
        linear = await c.fetch_open_orders(None, None, None, {"settleCoin": "USDT"})
        stops = await c.fetch_open_orders(None, None, None, {"settleCoin": "USDT", "trigger": True})
        spot = await c.fetch_open_orders(None, None, None, {"type": "spot"})
        await c.cancel_all_orders(None, {"settleCoin": "USDT"})
        await c.cancel_all_orders("ETH/USDT")
        return linear, stops, spot, await c.fetch_open_orders(None, None, None, {"settleCoin": "USDT"})

    linear, stops, spot, after = with_client(sim_exchanges, "bybit-one", body)
    assert [o["triggerPrice"] for o in linear] == [50000]  # a unified account lists every kind by default
    assert len(stops) == 1
    assert [(o["symbol"], o["side"]) for o in spot] == [("ETH/USDT", "buy")]
    assert after == []
    assert sim_exchanges.exchange.open_orders("bybit-one") == []


def test_batch_create_reports_each_order(sim_exchanges):
    async def body(c):
        return await c.create_orders([
            {"symbol": "BTC/USDT:USDT", "type": "market", "side": "sell", "amount": 0.01,
             "params": {"reduceOnly": True, "clientOrderId": "ok_1"}},
            {"symbol": "BTC/USDT:USDT", "type": "market", "side": "sell", "amount": 0.01,
             "params": {"reduceOnly": True, "clientOrderId": "bad id!"}},
        ])

    orders = with_client(sim_exchanges, "bybit-one", body)
    by_id = {o["clientOrderId"]: o for o in orders}
    assert by_id["ok_1"]["id"]
    assert by_id["bad id!"]["status"] == "rejected"


def test_bad_signature_echoes_the_key_like_bybit(sim_exchanges):
    async def body(c):
        c.secret = "wrong"
        await c.fetch_balance()

    with pytest.raises(ccxt.AuthenticationError) as info:
        with_client(sim_exchanges, "bybit-one", body)
    text = str(info.value)
    assert "10004" in text and "error sign! origin_string[" in text
    assert "sim-bybit-key-1" in text  # the product must scrub it


def test_recv_window_violation(sim_exchanges):
    sim_exchanges.exchange.set_clock_skew(60_000)

    with pytest.raises(ccxt.InvalidNonce) as info:
        with_client(sim_exchanges, "bybit-one", lambda c: c.fetch_balance())
    assert "10002" in str(info.value)


def test_order_rate_limit_answers_10006_with_limit_headers(sim_factory):
    scenario = dataclasses.replace(load_scenario(exchanges_scenario_path()), limits={"bybit.order_linear_1s": 2})
    server = sim_factory(scenario)

    async def body(c):
        await c.load_markets()
        results = await asyncio.gather(
            *(c.create_order("BTC/USDT:USDT", "limit", "buy", 0.001, 40000) for _ in range(5)),
            return_exceptions=True)
        return results, dict(c.last_response_headers)

    results, headers = with_client(server, "bybit-one", body)
    refused = [r for r in results if isinstance(r, Exception)]
    assert refused and all(isinstance(r, ccxt.RateLimitExceeded) for r in refused)
    assert "10006" in str(refused[0]) and "Too many visits" in str(refused[0])
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-bapi-limit"] == "2"
    assert int(lower["x-bapi-limit-reset-timestamp"]) > 1_600_000_000_000
    assert "retry-after" not in lower
    assert server.rate_limit_stats.snapshot()["bybit 10006"] == len(refused)


def test_ip_limit_answers_403(sim_factory):
    scenario = dataclasses.replace(load_scenario(exchanges_scenario_path()), limits={"bybit.ip_5s": 3})
    server = sim_factory(scenario)

    async def body(c):
        return await asyncio.gather(*(c.fetch_time() for _ in range(6)), return_exceptions=True)

    results = with_client(server, "bybit-one", body)
    refused = [r for r in results if isinstance(r, Exception)]
    assert refused
    assert server.rate_limit_stats.snapshot()["bybit 403"] >= len(refused)


def test_cancel_batch_reports_each_order(sim_exchanges):
    async def body(c):
        resting = await c.fetch_open_orders(None, None, None, {"settleCoin": "USDT"})
        return await c.cancel_orders([resting[0]["id"], "123"], "BTC/USDT:USDT"), \
            await c.fetch_open_orders(None, None, None, {"settleCoin": "USDT"})

    cancelled, left = with_client(sim_exchanges, "bybit-one", body)
    assert left == []
    assert len(cancelled) == 2


def test_ccxt_hedged_option_picks_the_leg_index(sim_exchanges):
    async def body(c):
        await c.create_order("BTC/USDT:USDT", "market", "sell", 0.01, None, {"reduceOnly": True, "hedged": True})
        return await c.fetch_positions()

    left = with_client(sim_exchanges, "bybit-hedge", body)
    assert [(p["side"], p["contracts"]) for p in left] == [("short", 0.02)]  # the long leg (idx 1) closed


def test_spot_market_orders_sized_by_market_unit(sim_exchanges):
    async def body(c):
        await c.load_markets()
        await c.create_order("ETH/USDT", "market", "buy", 0.1)  # ccxt: marketUnit baseCoin
        await c.create_order("ETH/USDT", "market", "sell", 0, None, {"cost": 150})  # marketUnit quoteCoin
        return (await c.fetch_balance())["ETH"]["total"]

    eth = with_client(sim_exchanges, "bybit-one", body)
    assert eth == pytest.approx(1 + 0.1 - 0.05)  # 150 USDT of ETH at 3000 is 0.05 ETH
