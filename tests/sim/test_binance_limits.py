"""Binance's published rate limits in the simulator: weights, order counts, headers, 429, 418, batchOrders, hedge."""

from __future__ import annotations

import asyncio
import dataclasses

import ccxt
import pytest

from guard_app.sim import load_scenario
from tests.fixtures.sim_fixtures import exchanges_scenario_path, with_client


def _server(sim_factory, **limits):
    return sim_factory(dataclasses.replace(load_scenario(exchanges_scenario_path()), limits=limits))


def test_exchange_info_announces_the_published_limits_and_headers_report_usage(sim_exchanges):
    async def body(c):
        await c.load_markets()
        info = await c.fapiPublicGetExchangeInfo()
        await c.create_order("ETH/USDT:USDT", "market", "buy", 0.1, None, {"reduceOnly": True})
        return info["rateLimits"], dict(c.last_response_headers)

    limits, headers = with_client(sim_exchanges, "binance-one", body)
    announced = {(r["rateLimitType"], r["interval"], r["intervalNum"]): r["limit"] for r in limits}
    assert announced == {("REQUEST_WEIGHT", "MINUTE", 1): 2400, ("ORDERS", "MINUTE", 1): 1200,
                         ("ORDERS", "SECOND", 10): 300}
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-mbx-order-count-10s"] == "1" and lower["x-mbx-order-count-1m"] == "1"
    assert int(lower["x-mbx-used-weight-1m"]) > 0


def test_order_count_429_with_retry_after_then_418_ban(sim_factory):
    server = _server(sim_factory, **{"binance.futures_orders_10s": 2, "binance.ban_after_429s": 2})

    async def body(c):
        await c.load_markets()
        results = []
        for _ in range(6):
            try:
                await c.create_order("ETH/USDT:USDT", "limit", "buy", 0.01, 2000)
                results.append(("ok", None))
            except ccxt.BaseError as exc:
                results.append((type(exc).__name__, dict(c.last_response_headers)))
        return results

    results = with_client(server, "binance-one", body)
    kinds = [k for k, _ in results]
    assert kinds[:2] == ["ok", "ok"]
    assert "DDoSProtection" in kinds or "RateLimitExceeded" in kinds
    stats = server.rate_limit_stats.snapshot()
    assert stats["binance 429"] >= 1 and stats["binance 418"] >= 1  # kept going after the 429
    refused_headers = [h for k, h in results if k != "ok"]
    assert all(int({k.lower(): v for k, v in h.items()}["retry-after"]) >= 1 for h in refused_headers)


def test_symbol_less_open_orders_cost_40_weight(sim_exchanges):
    async def body(c):
        def used():
            return int({k.lower(): v for k, v in c.last_response_headers.items()}["x-mbx-used-weight-1m"])

        await c.fetch_open_orders("ETH/USDT:USDT")
        one = used()
        await c.fetch_open_orders(None, None, None, {"type": "swap"})
        return one, used()

    one, after = with_client(sim_exchanges, "binance-one", body)
    assert after - one == 40


def test_weight_limit_429(sim_factory):
    server = _server(sim_factory, **{"binance.futures_weight_1m": 3})

    async def body(c):
        return await asyncio.gather(*(c.fapiPublicGetTime() for _ in range(5)), return_exceptions=True)

    results = with_client(server, "binance-one", body)
    assert any(isinstance(r, ccxt.BaseError) for r in results)
    assert server.rate_limit_stats.total() >= 1


def test_batch_orders_per_order_errors_and_hedge_mode(sim_exchanges):
    async def body(c):
        await c.load_markets()
        orders = await c.create_orders([
            {"symbol": "ETH/USDT:USDT", "type": "market", "side": "buy", "amount": 0.1, "params": {"reduceOnly": True}},
            {"symbol": "ETH/USDT:USDT", "type": "market", "side": "buy", "amount": 5, "params": {"reduceOnly": True}},
        ])
        left = await c.fetch_positions()
        try:
            await c.set_position_mode(True)
        except ccxt.BaseError as exc:
            return orders, left, str(exc), await c.fapiPrivateGetPositionSideDual()
        return orders, left, None, None

    orders, left, error, dual = with_client(sim_exchanges, "binance-one", body)
    assert [o["status"] for o in orders].count("rejected") == 1  # 5 ETH can't reduce a 0.4 short
    assert [p["contracts"] for p in left] == [pytest.approx(0.4)]
    assert error is not None and "-4068" in error  # no mode change while a position is open
    assert dual["dualSidePosition"] is False


HEDGE = {
    "markets": [{"symbol": "ETH/USDT:USDT", "type": "swap", "price": 3000, "step_size": 0.001, "tick_size": 0.01}],
    "accounts": [{"name": "h", "api_key": "hk", "secret": "hs", "position_mode": "hedge", "futures_wallet": 10000,
                  "positions": [{"symbol": "ETH/USDT:USDT", "side": "long", "contracts": 1},
                                {"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 0.5,
                                 "margin_mode": "isolated"}]}],
}


def test_hedge_mode_legs_close_by_position_side(sim_factory):
    server = sim_factory(HEDGE)

    async def body(c):
        await c.load_markets()
        mode = await c.fetch_position_mode("ETH/USDT:USDT")
        legs = await c.fetch_positions()
        errors = []
        for params in ({"positionSide": "SHORT", "reduceOnly": True}, {}):
            try:
                await c.create_order("ETH/USDT:USDT", "market", "buy", 0.5, None, params)
            except ccxt.BaseError as exc:
                errors.append(str(exc))
        await c.create_order("ETH/USDT:USDT", "market", "buy", 0.5, None, {"positionSide": "SHORT"})
        return mode, legs, errors, await c.fetch_positions()

    mode, legs, errors, left = with_client(server, "h", body)
    assert mode["hedged"] is True
    assert sorted((p["side"], p["contracts"], p["hedged"], p["marginMode"]) for p in legs) == [
        ("long", 1, True, "cross"), ("short", 0.5, True, "isolated")]
    # reduceOnly is refused in hedge mode; an order without positionSide doesn't match the mode.
    assert "-1106" in errors[0] and "-4061" in errors[1]
    assert [(p["side"], p["contracts"]) for p in left] == [("long", 1)]


def test_spot_orders_that_fill_leave_the_unfilled_order_count(sim_factory):
    server = _server(sim_factory, **{"binance.spot_orders_10s": 1})

    async def body(c):
        await c.load_markets()
        for _ in range(3):  # each fills at once: the count of 1 is never spent
            await c.create_order("BTC/USDT", "market", "sell", 0.001)
        counts = {k.lower(): v for k, v in c.last_response_headers.items()}
        await c.create_order("BTC/USDT", "limit", "buy", 0.001, 10000)  # rests: counted
        with pytest.raises(ccxt.DDoSProtection):
            await c.create_order("BTC/USDT", "limit", "buy", 0.001, 10000)
        return counts

    counts = with_client(server, "binance-one", body, market="spot")
    assert counts["x-mbx-order-count-10s"] == "0"


def test_lowered_limits_are_announced(sim_factory):
    server = _server(sim_factory, **{"binance.futures_orders_10s": 7, "binance.spot_weight_1m": 600})

    async def body(c):
        return (await c.fapiPublicGetExchangeInfo())["rateLimits"], (await c.publicGetExchangeInfo())["rateLimits"]

    futures, spot = with_client(server, "binance-one", body)
    assert {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 7} in futures
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 600} in spot


def test_usdm_conditional_orders_live_in_the_algo_service(sim_exchanges):
    async def body(c):
        await c.load_markets()
        stop = await c.create_order("ETH/USDT:USDT", "market", "buy", 0.5, None,
                                    {"triggerPrice": 3500, "reduceOnly": True})
        tp = await c.create_order("ETH/USDT:USDT", "market", "buy", 0.5, None,
                                  {"triggerPrice": 2500, "reduceOnly": True})
        await c.create_order("ETH/USDT:USDT", "limit", "buy", 0.1, 2000)
        regular = await c.fetch_open_orders("ETH/USDT:USDT")
        algos = await c.fetch_open_orders("ETH/USDT:USDT", None, None, {"trigger": True})
        await c.cancel_order(stop["id"], "ETH/USDT:USDT", {"trigger": True})
        await c.cancel_all_orders("ETH/USDT:USDT")  # regular orders only
        left = await c.fetch_open_orders("ETH/USDT:USDT", None, None, {"trigger": True})
        await c.cancel_all_orders("ETH/USDT:USDT", {"trigger": True})
        return (stop, tp, regular, algos, left, await c.fetch_open_orders("ETH/USDT:USDT", None, None,
                                                                          {"trigger": True}))

    stop, tp, regular, algos, left, after = with_client(sim_exchanges, "binance-one", body)
    assert stop["triggerPrice"] == 3500 and stop["reduceOnly"] is True
    assert [o["price"] for o in regular] == [2000]
    assert sorted(o["triggerPrice"] for o in algos) == [2500, 3500]
    assert [o["id"] for o in left] == [tp["id"]]
    assert after == []
    assert sim_exchanges.unknown_paths == []
