"""The broker's acceptance flows on all three protocols, real ccxt against the simulator.

Binance, OKX v5 and Bybit v5 are each reached only through the account's
``[accounts.ccxt]`` URL overrides: read and value (contracts × contract size × mark),
shorts bought back, reduce-only everywhere (never a flip), isolated positions, hedge
legs, Bybit USDC perpetuals, batch closes, the kill switch's cancel_all_orders with
resting and conditional orders, refusals in the exchange's own code and words, and no
credential in any error.
"""

from __future__ import annotations

import pytest

from guard_app.core.errors import BrokerError, NeedsUserError, OrderRejectedError
from guard_app.core.models import CloseReason, Market, PlannedClose, Position, Side
from guard_app.sim import SimServer, parse_scenario
from tests.exchanges.protocol_world import (
    EXCHANGES,
    contract_size,
    credentials,
    make_broker,
    run,
    scenario,
)

pytestmark = pytest.mark.parametrize("exchange", EXCHANGES)


@pytest.fixture
def start(sim_factory):
    def go(doc) -> SimServer:
        return sim_factory(parse_scenario(doc, "test"))

    return go


def _unwind(broker, positions, prefix="ga"):
    return [(PlannedClose(broker.account_id, "u", p, CloseReason.FORCED_UNWIND), f"{prefix}{i}x1")
            for i, p in enumerate(positions)]


def test_positions_are_read_and_valued_in_contracts_times_contract_size_times_mark(exchange, start) -> None:
    server = start(scenario("v", exchange, positions=[
        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.02},
        {"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 0.5},
    ]))
    server.exchange.set_price("ETH/USDT:USDT", 3100)
    snap = run(lambda b: b.snapshot(), make_broker(server, "v", exchange, Market.SWAP))
    by_symbol = {p.symbol: p for p in snap.positions}
    btc, eth = by_symbol["BTC/USDT:USDT"], by_symbol["ETH/USDT:USDT"]
    assert btc.side is Side.LONG and eth.side is Side.SHORT
    # amount is in the exchange's contracts; value in USDT whatever the contract size
    assert btc.amount == pytest.approx(0.02 / contract_size(exchange, "BTC/USDT:USDT"))
    assert btc.value == pytest.approx(1200.0)
    assert eth.value == pytest.approx(0.5 * 3100)


def test_every_close_is_reduce_only_shorts_are_bought_back_and_nothing_flips(exchange, start) -> None:
    server = start(scenario("c", exchange, positions=[
        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.02},
        {"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 0.5},
        {"symbol": "SOL/USDT:USDT", "side": "short", "contracts": 3, "margin_mode": "isolated"},
    ]))

    async def go(broker):
        snap = await broker.snapshot()
        results = await broker.close_many(_unwind(broker, snap.positions))
        return snap, results, await broker.snapshot()

    before, results, after = run(go, make_broker(server, "c", exchange, Market.SWAP))
    assert len(before.positions) == 3
    assert all(not isinstance(r, BrokerError) and r is not None for r in results), results
    sides = {r.symbol: r.side for r in results}
    assert sides == {"BTC/USDT:USDT": "sell", "ETH/USDT:USDT": "buy", "SOL/USDT:USDT": "buy"}
    assert after.positions == () and server.exchange.positions("c") == []
    sent = [o for o in server.exchange.orders if o.account == "c" and o.accepted]
    assert len(sent) == 3 and all(o.reduce_only for o in sent)


def test_isolated_positions_close_on_their_own_margin_mode(exchange, start) -> None:
    server = start(scenario("i", exchange, positions=[
        {"symbol": "ETH/USDT:USDT", "side": "long", "contracts": 0.3, "margin_mode": "isolated"},
        {"symbol": "BTC/USDT:USDT", "side": "short", "contracts": 0.01, "margin_mode": "cross"},
    ]))

    async def go(broker):
        snap = await broker.snapshot()
        return await broker.close_many(_unwind(broker, snap.positions))

    results = run(go, make_broker(server, "i", exchange, Market.SWAP))
    assert all(not isinstance(r, BrokerError) for r in results), results
    assert server.exchange.positions("i") == []


def test_hedge_legs_are_closed_each_on_its_own_leg(exchange, start) -> None:
    server = start(scenario("h", exchange, hedge=True, positions=[
        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.02},
        {"symbol": "BTC/USDT:USDT", "side": "short", "contracts": 0.01},
        {"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 0.2},
    ]))

    async def go(broker):
        snap = await broker.snapshot()
        results = await broker.close_many(_unwind(broker, snap.positions))
        return snap, results, await broker.snapshot()

    before, results, after = run(go, make_broker(server, "h", exchange, Market.SWAP))
    assert sorted((p.symbol, p.side.value) for p in before.positions) == [
        ("BTC/USDT:USDT", "long"), ("BTC/USDT:USDT", "short"), ("ETH/USDT:USDT", "short")]
    assert all(not isinstance(r, BrokerError) for r in results), results
    assert after.positions == () and server.exchange.positions("h") == []


def test_usdc_settled_perpetuals_are_seen_and_closed(exchange, start) -> None:
    if exchange == "binance":
        pytest.skip("a Binance USDⓈ-M account here settles in USDT only")
    server = start(scenario("u", exchange, positions=[
        {"symbol": "ETH/USDC:USDC", "side": "long", "contracts": 0.4},
        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.01},
    ]))

    async def go(broker):
        snap = await broker.snapshot()
        results = await broker.close_many(_unwind(broker, snap.positions))
        return snap, results, await broker.snapshot()

    before, results, after = run(go, make_broker(server, "u", exchange, Market.SWAP))
    assert {p.symbol for p in before.positions} == {"ETH/USDC:USDC", "BTC/USDT:USDT"}
    assert all(not isinstance(r, BrokerError) for r in results), results
    assert after.positions == ()


def test_many_closes_go_out_in_batches_and_each_answer_finds_its_close(exchange, start) -> None:
    symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT", "DOGE/USDT:USDT"]
    amounts = {"BTC/USDT:USDT": 0.01, "ETH/USDT:USDT": 0.2, "SOL/USDT:USDT": 2, "XRP/USDT:USDT": 1000,
               "DOGE/USDT:USDT": 10000}
    positions = [{"symbol": s, "side": side, "contracts": amounts[s]} for s in symbols for side in ("long", "short")]
    server = start(scenario("b", exchange, hedge=True, positions=positions))

    async def go(broker):
        snap = await broker.snapshot()
        closes = _unwind(broker, snap.positions)
        return closes, await broker.close_many(closes), await broker.snapshot()

    closes, results, after = run(go, make_broker(server, "b", exchange, Market.SWAP))
    assert len(closes) == 10
    for (planned, cid), result in zip(closes, results, strict=True):
        assert not isinstance(result, BrokerError) and result is not None, result
        assert result.client_order_id == cid and result.symbol == planned.position.symbol
    assert after.positions == ()


def test_cancel_all_orders_removes_resting_and_conditional_orders_on_every_symbol(exchange, start) -> None:
    server = start(scenario("k", exchange, positions=[
        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.02},
    ], orders=[
        {"symbol": "ETH/USDT:USDT", "side": "buy", "amount": contract_size(exchange, "ETH/USDT:USDT") * 1,
         "price": 2000},
        {"symbol": "SOL/USDT:USDT", "side": "buy", "amount": 1, "price": 100, "trigger_price": 120},
        {"symbol": "BTC/USDT:USDT", "side": "sell", "amount": contract_size(exchange, "BTC/USDT:USDT"),
         "price": 70000, "reduce_only": True, "trigger_price": 69000},
    ]))
    assert len(server.exchange.open_orders("k")) == 3

    async def go(broker):
        return await broker.cancel_all_orders()

    assert run(go, make_broker(server, "k", exchange, Market.SWAP)) == 3
    assert server.exchange.open_orders("k") == []


def test_spot_closes_cancel_the_orders_that_lock_the_balance_first(exchange, start) -> None:
    server = start(scenario("s", exchange, spot={"USDT": 1000, "BTC": 0.01, "ETH": 0.2}, orders=[
        {"symbol": "BTC/USDT", "side": "sell", "amount": 0.01, "price": 90000},
    ]))

    async def go(broker):
        snap = await broker.snapshot()
        return await broker.close_many(_unwind(broker, snap.positions))

    results = run(go, make_broker(server, "s", exchange, Market.SPOT))
    assert len(results) == 2 and all(not isinstance(r, BrokerError) for r in results), results
    assert server.exchange.open_orders("s") == []
    spot = server.exchange.balances("s")
    assert all(spot.get(asset, {}).get("free", 0) == 0 for asset in ("BTC", "ETH")), spot


def test_a_refusal_carries_the_exchanges_own_code_and_words(exchange, start) -> None:
    server = start(scenario("r", exchange, spot={"USDT": 1000, "BTC": 0.001, "ETH": 0.01}))

    async def go(broker):
        await broker.snapshot()
        too_much = Position("BTC/USDT", 0.5, 30000.0)  # more than the account holds
        fine = Position("ETH/USDT", 0.01, 30.0)
        return await broker.close_many(_unwind(broker, [too_much, fine]))

    refused, filled = run(go, make_broker(server, "r", exchange, Market.SPOT))
    assert isinstance(refused, OrderRejectedError), refused
    record = next(o for o in server.exchange.orders if o.account == "r" and not o.accepted)
    assert refused.code == str(record.error_code)
    assert record.error_msg and record.error_msg.strip() in refused.reason
    assert f"code {refused.code}" in refused.reason and "All operations failed" not in refused.reason
    assert not isinstance(filled, BrokerError) and filled is not None


def test_a_bad_signature_never_repeats_a_credential(exchange, start) -> None:
    server = start(scenario("x", exchange))
    creds = credentials("x", exchange)
    wrong = "WRONGsecret" + creds["secret"][::-1]

    async def go(broker):
        try:
            await broker.snapshot()
        except BrokerError as exc:
            return exc
        return None

    err = run(go, make_broker(server, "x", exchange, Market.SWAP, secret=wrong))
    assert isinstance(err, NeedsUserError), err
    assert err.code is not None and f"code {err.code}" in err.reason
    text = f"{err.reason} {err.describe()} {err!r} {err.args}"
    for value in (creds["api_key"], creds["secret"], wrong, creds.get("passphrase")):
        if value:
            assert value not in text
            assert value[:12] not in text


# Requests a kill costs on a hedge-mode swap account with 10 positions and one resting
# order, after warm(): (cancel_all_orders, close_many).
KILL_REQUESTS = {
    # openOrders(type swap) + openAlgoOrders + allOpenOrders(ETH); two batchOrders of 5
    "binance": (3, 2),
    # orders-pending + 3 algo lists + one cancel-batch-orders; one batch-orders of 10
    "okx": (5, 1),
    # cancel-all per settle coin (USDT, USDC), no read; one create-batch of 10
    "bybit": (2, 1),
}


def test_a_kill_costs_a_handful_of_requests_whatever_the_number_of_positions(exchange, start) -> None:
    size = {"BTC/USDT:USDT": 0.01, "ETH/USDT:USDT": 0.2, "SOL/USDT:USDT": 2, "XRP/USDT:USDT": 1000,
            "DOGE/USDT:USDT": 10000}
    server = start(scenario("n", exchange, hedge=True, positions=[
        {"symbol": s, "side": side, "contracts": c} for s, c in size.items() for side in ("long", "short")
    ], orders=[{"symbol": "ETH/USDT:USDT", "side": "buy", "amount": contract_size(exchange, "ETH/USDT:USDT"),
                "price": 2000}]))

    async def go(broker):
        await broker.warm()
        snap = await broker.snapshot()
        before = broker.requests_sent
        cancelled = await broker.cancel_all_orders()
        middle = broker.requests_sent
        results = await broker.close_many(_unwind(broker, snap.positions))
        return cancelled, middle - before, broker.requests_sent - middle, results

    cancelled, cancel_requests, close_requests, results = run(go, make_broker(server, "n", exchange, Market.SWAP))
    assert cancelled == 1 and len(results) == 10
    assert all(not isinstance(r, BrokerError) for r in results), results
    assert (cancel_requests, close_requests) == KILL_REQUESTS[exchange]
    assert server.exchange.positions("n") == [] and server.exchange.open_orders("n") == []


def test_warm_keeps_markets_loaded_and_a_connection_open(exchange, start) -> None:
    server = start(scenario("w", exchange))

    async def go(broker):
        await broker.warm()
        first = broker.requests_sent
        await broker.warm(idle=0.0)  # "a quiet hour later": one cheap request, no market reload
        after = broker.requests_sent
        return first, after, await broker.check_connection()

    first, after, check = run(go, make_broker(server, "w", exchange, Market.SWAP))
    assert first > 0 and after - first == 1
    assert check.profile == exchange and check.problems == () and check.markets > 0


def test_the_generic_profile_closes_hedge_legs_and_isolated_positions_on_ccxts_unified_fields(
    exchange, start
) -> None:
    """What any other ccxt exchange gets: no exchange-specific parameter, only ccxt's
    unified ``hedged``, ``side``, ``marginMode`` and ``reduceOnly`` (and its throttle)."""
    from guard_app.core.secrets import ApiKeys
    from guard_app.exchanges.broker import Broker
    from guard_app.exchanges.profiles import Profile

    server = start(scenario("g", exchange, hedge=True, positions=[
        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.02},
        {"symbol": "BTC/USDT:USDT", "side": "short", "contracts": 0.01, "margin_mode": "isolated"},
    ], orders=[{"symbol": "BTC/USDT:USDT", "side": "buy", "amount": contract_size(exchange, "BTC/USDT:USDT"),
                "price": 50000}]))
    profiled = make_broker(server, "g", exchange, Market.SWAP)
    creds = credentials("g", exchange)
    generic = Broker(profiled.account, ApiKeys(creds["api_key"], creds["secret"], creds.get("passphrase")),
                     profile=Profile())

    async def go(profiled, broker):
        snap = await broker.snapshot()
        results = await broker.close_many(_unwind(broker, snap.positions))
        return broker.limiter, snap, results, await broker.snapshot()

    limiter, before, results, after = run(go, profiled, generic)
    assert limiter is None  # ccxt's own throttle on an exchange we know no limits of
    assert len(before.positions) == 2
    assert all(not isinstance(r, BrokerError) for r in results), results
    assert after.positions == () and server.exchange.open_orders("g") == []
