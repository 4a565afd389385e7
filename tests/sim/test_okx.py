"""The real ccxt async okx client against the simulator's OKX v5 front-end."""

from __future__ import annotations

import ccxt
import pytest

from tests.fixtures.sim_fixtures import with_client


def test_markets_contract_sizes_balance_and_positions(sim_exchanges):
    async def body(c):
        markets = await c.load_markets()
        return markets, await c.fetch_balance(), await c.fetch_positions()

    markets, balance, positions = with_client(sim_exchanges, "okx-net", body)
    assert markets["BTC/USDT:USDT"]["contractSize"] == 0.01
    assert markets["ETH/USDT:USDT"]["contractSize"] == 0.1
    assert markets["BTC/USDT"]["spot"]
    assert balance["BTC"]["total"] == pytest.approx(0.05)
    assert balance["USDT"]["total"] == pytest.approx(20000)
    by_symbol = {p["symbol"]: p for p in positions}
    btc, eth = by_symbol["BTC/USDT:USDT"], by_symbol["ETH/USDT:USDT"]
    assert (btc["side"], btc["contracts"], btc["marginMode"], btc["hedged"]) == ("long", 5, "cross", False)
    assert btc["notional"] == pytest.approx(5 * 0.01 * 60000)  # contracts × ctVal × mark
    assert (eth["side"], eth["marginMode"]) == ("short", "isolated")
    assert sim_exchanges.unknown_paths == []


def test_long_short_mode_legs_and_position_mode(sim_exchanges):
    async def body(c):
        return await c.fetch_position_mode(), await c.fetch_positions()

    mode, positions = with_client(sim_exchanges, "okx-hedge", body)
    assert mode["hedged"] is True
    legs = sorted((p["side"], p["contracts"], p["hedged"]) for p in positions)
    assert legs == [("long", 4, True), ("short", 2, True)]


def test_reduce_only_close_in_net_mode_needs_the_positions_margin_mode(sim_exchanges):
    async def wrong_mode(c):
        # ccxt sends tdMode=cross by default: the isolated short is not found.
        await c.create_order("ETH/USDT:USDT", "market", "buy", 3, None, {"reduceOnly": True})

    with pytest.raises(ccxt.ExchangeError) as info:
        with_client(sim_exchanges, "okx-net", wrong_mode)
    assert '"sCode":"51169"' in str(info.value)
    assert "don't have any positions in this direction" in str(info.value)

    async def right_mode(c):
        await c.create_order("ETH/USDT:USDT", "market", "buy", 3, None,
                             {"reduceOnly": True, "marginMode": "isolated"})
        return await c.fetch_positions()

    left = with_client(sim_exchanges, "okx-net", right_mode)
    assert [p["symbol"] for p in left] == ["BTC/USDT:USDT"]


def test_reduce_only_never_flips_and_is_trimmed_to_the_position(sim_exchanges):
    async def body(c):
        await c.create_order("BTC/USDT:USDT", "market", "sell", 9, None, {"reduceOnly": True})
        return await c.fetch_positions()

    left = with_client(sim_exchanges, "okx-net", body)
    assert [p["symbol"] for p in left] == ["ETH/USDT:USDT"]  # BTC closed, not flipped to a short


def test_long_short_mode_close_names_the_leg(sim_exchanges):
    async def without_pos_side(c):
        await c.create_order("BTC/USDT:USDT", "market", "sell", 4, None, {"reduceOnly": True, "hedged": False})

    with pytest.raises(ccxt.BadRequest) as info:
        with_client(sim_exchanges, "okx-hedge", without_pos_side)
    assert "Parameter posSide error" in str(info.value) and "51000" in str(info.value)

    async def close_long(c):
        await c.create_order("BTC/USDT:USDT", "market", "sell", 4, None, {"reduceOnly": True, "posSide": "long"})
        return await c.fetch_positions()

    left = with_client(sim_exchanges, "okx-hedge", close_long)
    assert [(p["side"], p["contracts"]) for p in left] == [("short", 2)]


def test_client_order_id_rule(sim_exchanges):
    async def body(c):
        await c.create_order("BTC/USDT", "market", "sell", 0.001, None, {"clientOrderId": "ga-12-0-3fa2b1"})

    with pytest.raises(ccxt.BadRequest) as info:
        with_client(sim_exchanges, "okx-net", body)
    assert "Parameter clOrdId error" in str(info.value) and '"code":"1"' in str(info.value)
    assert "All operations failed" in str(info.value)


def test_batch_orders_report_each_order(sim_exchanges):
    async def body(c):
        return await c.create_orders([
            {"symbol": "BTC/USDT", "type": "market", "side": "sell", "amount": 0.001,
             "params": {"clientOrderId": "good1"}},
            {"symbol": "BTC/USDT", "type": "market", "side": "sell", "amount": 0.001,
             "params": {"clientOrderId": "bad-id"}},
        ])

    orders = with_client(sim_exchanges, "okx-net", body)
    by_id = {o["clientOrderId"]: o for o in orders}
    assert by_id["good1"]["id"]
    assert by_id["bad-id"]["status"] == "rejected"
    assert sim_exchanges.exchange.balances("okx-net")["BTC"]["total"] == pytest.approx(0.049)


def test_open_and_algo_orders_listed_and_cancelled_apart(sim_exchanges):
    async def body(c):
        resting = await c.fetch_open_orders()
        algo = await c.fetch_open_orders(None, None, None, {"trigger": True})
        await c.cancel_orders([o["id"] for o in resting], "BTC/USDT:USDT")
        await c.cancel_orders([o["id"] for o in algo], "BTC/USDT:USDT", {"trigger": True})
        return resting, algo, await c.fetch_open_orders(), await c.fetch_open_orders(None, None, None, {"trigger": True})

    resting, algo, resting_after, algo_after = with_client(sim_exchanges, "okx-net", body)
    assert [o["reduceOnly"] for o in resting] == [True] and resting[0]["price"] == 70000
    assert len(algo) == 1 and algo[0]["triggerPrice"] == 50000
    assert resting_after == [] and algo_after == []


@pytest.mark.parametrize(("change", "code"), [
    ({"password": "wrong"}, "50105"), ({"secret": "wrong"}, "50113"), ({"apiKey": "nobody"}, "50111"),
])
def test_bad_credentials_answer_okx_codes(sim_exchanges, change, code):
    async def body(c):
        for key, value in change.items():
            setattr(c, key, value)
        await c.fetch_balance()

    with pytest.raises(ccxt.AuthenticationError) as info:
        with_client(sim_exchanges, "okx-net", body)
    assert code in str(info.value)


def test_place_order_rate_limit_per_instrument(sim_factory):
    import asyncio
    import dataclasses

    from guard_app.sim import load_scenario
    from tests.fixtures.sim_fixtures import exchanges_scenario_path

    scenario = dataclasses.replace(load_scenario(exchanges_scenario_path()), limits={"okx.order_per_inst_2s": 2, "okx.batch_orders_per_inst_2s": 2})
    server = sim_factory(scenario)

    async def body(c):
        await c.load_markets()
        return await asyncio.gather(
            *(c.create_order("BTC/USDT", "market", "sell", 0.001) for _ in range(5)), return_exceptions=True)

    results = with_client(server, "okx-net", body)
    refused = [r for r in results if isinstance(r, Exception)]
    # ccxt places single orders through batch-orders (300 orders / 2 s per instrument).
    # 5 at once against 2 per 2 s: even if the window rolls mid-burst, at most 4 pass.
    assert refused and all(isinstance(r, ccxt.RateLimitExceeded) for r in refused)
    assert "50011" in str(refused[0]) and "Too Many Requests" in str(refused[0])
    assert server.rate_limit_stats.snapshot()["okx 429 50011"] == len(refused)


def test_close_position_endpoint_and_position_mode_switch(sim_exchanges):
    async def body(c):
        await c.load_markets()
        await c.close_position("ETH/USDT:USDT", None, {"marginMode": "isolated"})
        await c.close_position("BTC/USDT:USDT", None, {"marginMode": "cross"})
        await c.cancel_orders([o["id"] for o in await c.fetch_open_orders()], "BTC/USDT:USDT")
        algo = await c.fetch_open_orders(None, None, None, {"trigger": True})
        await c.cancel_orders([o["id"] for o in algo], "BTC/USDT:USDT", {"trigger": True})
        await c.set_position_mode(True)
        return await c.fetch_positions(), await c.fetch_position_mode()

    positions, mode = with_client(sim_exchanges, "okx-net", body)
    assert positions == [] and mode["hedged"] is True


def test_position_mode_switch_refused_with_open_positions(sim_exchanges):
    async def body(c):
        await c.set_position_mode(True)

    with pytest.raises(ccxt.ExchangeError) as info:
        with_client(sim_exchanges, "okx-net", body)
    assert "51070" in str(info.value)


def test_get_order_by_id_and_client_id(sim_exchanges):
    async def body(c):
        placed = await c.create_order("BTC/USDT", "limit", "buy", 0.001, 50000, {"clientOrderId": "rest1"})
        by_id = await c.fetch_order(placed["id"], "BTC/USDT")
        by_client = await c.fetch_order(None, "BTC/USDT", {"clOrdId": "rest1"})
        try:
            await c.fetch_order("999", "BTC/USDT")
        except ccxt.OrderNotFound as exc:
            return by_id, by_client, str(exc)
        return by_id, by_client, None

    by_id, by_client, missing = with_client(sim_exchanges, "okx-net", body)
    assert by_id["status"] == "open" and by_id["clientOrderId"] == "rest1" and by_id["price"] == 50000
    assert by_client["id"] == by_id["id"]
    assert missing is not None and "51603" in missing


def test_ccxt_hedged_option_closes_a_leg_and_spot_needs_cash(sim_exchanges):
    async def body(c):
        await c.load_markets()
        await c.create_order("BTC/USDT:USDT", "market", "buy", 2, None, {"reduceOnly": True, "hedged": True})
        left = await c.fetch_positions()
        try:
            await c.create_order("BTC/USDT", "market", "sell", 0.001, None, {"marginMode": "cross"})
        except ccxt.BaseError as exc:
            return left, str(exc)
        return left, None

    left, spot_error = with_client(sim_exchanges, "okx-hedge", body)
    assert [(p["side"], p["contracts"]) for p in left] == [("long", 4)]  # the short leg was bought back
    assert spot_error is not None and "Parameter tdMode error" in spot_error


def test_every_refusal_is_in_the_order_log(sim_exchanges):
    async def body(c):
        for params in ({"clientOrderId": "bad-id"}, {"marginMode": "isolated"}):
            try:
                await c.create_order("ETH/USDT:USDT", "market", "buy", 3, None, {"reduceOnly": True, **params})
            except ccxt.BaseError:
                pass

    sim_exchanges.exchange.clear_order_log()
    with_client(sim_exchanges, "okx-net", body)
    log = sim_exchanges.exchange.orders
    assert [(r.accepted, r.error_code, r.symbol) for r in log] == [
        (False, 51000, "ETH/USDT:USDT"), (True, None, "ETH/USDT:USDT")]


def test_take_profit_and_stop_loss_become_algo_orders(sim_exchanges):
    async def body(c):
        await c.load_markets()
        tp = await c.create_order("ETH/USDT:USDT", "market", "buy", 3, None,
                                  {"takeProfitPrice": 2500, "reduceOnly": True, "marginMode": "isolated"})
        sl = await c.create_order("BTC/USDT:USDT", "limit", "sell", 5, 49000,
                                  {"stopLossPrice": 50000, "reduceOnly": True})
        return tp, sl, await c.fetch_open_orders(None, None, None, {"ordType": "conditional"}), \
            await c.fetch_open_orders()

    tp, sl, algos, regular = with_client(sim_exchanges, "okx-net", body)
    assert tp["id"] and sl["id"]
    ids = {o["id"] for o in algos}
    assert {tp["id"], sl["id"]} <= ids
    assert not ids & {o["id"] for o in regular}
