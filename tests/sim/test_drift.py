"""The simulator's answers against what the real exchanges send, as captured in ccxt's repository.

ccxt keeps responses captured from the real exchanges in ``ts/src/test/static/response/``
(``okx.json``, ``bybit.json``, ``binance.json``, repository ccxt/ccxt). Those files are not
copied here: :data:`TABLE` is our own compact summary of them — per endpoint, the
envelope's top-level keys, the keys of a data row that ccxt reads, and each one's JSON
type. Exchanges send almost every number as a string; where an exchange's docs say a
field is a JSON number (Bybit ``positionIdx``, ``tradeMode``, ``seq``; Binance
``orderId``, ``updateTime``) the table says ``int`` even though ccxt's capture files store
some of those as strings (the files normalise a few values).

A second test runs ccxt's own default flows (no option narrowing what it loads) against
all three front-ends and asserts that no request hit an unknown endpoint.
"""

from __future__ import annotations

from typing import Any

import pytest

from guard_app.sim import SimServer, load_scenario
from tests.fixtures.sim_fixtures import exchanges_scenario_path, with_client

STR, INT, BOOL, LIST, DICT = "str", "int", "bool", "list", "dict"
_TYPES = {STR: str, INT: int, BOOL: bool, LIST: list, DICT: dict}


def _fields(kind: str, names: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), kind)


# name -> (source in ccxt/ccxt ts/src/test/static/response/, envelope keys, path to a row, row fields)
TABLE: dict[str, tuple[str, set[str], tuple[Any, ...], dict[str, str]]] = {
    "okx account/positions": (
        'okx.json methods.fetchPosition "Inverse swap isolated fetch position"',
        {"code", "data", "msg"}, ("data", 0),
        {**_fields(STR, "instId instType posSide pos mgnMode avgPx markPx notionalUsd upl lever liqPx imr mmr "
                        "margin cTime uTime posId realizedPnl uplRatio last adl availPos ccy"),
         "closeOrderAlgo": LIST},
    ),
    "okx account/balance": (
        'okx.json methods.fetchBalance "spot balance" (type swap)',
        {"code", "data", "msg"}, ("data", 0, "details", 0),
        _fields(STR, "ccy eq availBal availEq frozenBal cashBal ordFrozen upl uTime eqUsd disEq isoEq"),
    ),
    "okx account/balance (account)": (
        'okx.json methods.fetchBalance "spot balance" (type swap)',
        {"code", "data", "msg"}, ("data", 0),
        {**_fields(STR, "adjEq totalEq uTime imr mmr isoEq ordFroz upl notionalUsd"), "details": LIST},
    ),
    "okx trade/batch-orders": (
        'okx.json methods.createOrder "type2 & type3 together" (first)',
        {"code", "data", "inTime", "msg", "outTime"}, ("data", 0),
        _fields(STR, "clOrdId ordId sCode sMsg tag ts"),
    ),
    "bybit position/list": (
        'bybit.json methods.fetchPositions "Fetch linear position"',
        {"retCode", "retMsg", "result", "retExtInfo", "time"}, ("result", "list", 0),
        {**_fields(STR, "symbol leverage avgPrice liqPrice positionValue unrealisedPnl markPrice cumRealisedPnl "
                        "positionMM positionIM createdTime updatedTime side size positionStatus stopLoss "
                        "takeProfit bustPrice positionBalance tpslMode trailingStop riskLimitValue "
                        "mmrSysUpdatedTime leverageSysUpdatedTime"),
         **_fields(INT, "positionIdx tradeMode riskId adlRankIndicator seq autoAddMargin"),
         "isReduceOnly": BOOL},
    ),
    "bybit position/list (result)": (
        'bybit.json methods.fetchPositions "Fetch linear position"',
        {"retCode", "retMsg", "result", "retExtInfo", "time"}, ("result",),
        {"category": STR, "list": LIST, "nextPageCursor": STR},
    ),
    "bybit order/create": (
        'bybit.json methods.editOrder / createMarketBuyOrderWithCost',
        {"retCode", "retMsg", "result", "retExtInfo", "time"}, ("result",),
        _fields(STR, "orderId orderLinkId"),
    ),
    "bybit order/realtime": (
        'bybit.json methods.fetchOrders / fetchClosedOrders rows (linear)',
        {"retCode", "retMsg", "result", "retExtInfo", "time"}, ("result", "list", 0),
        {**_fields(STR, "orderId orderLinkId symbol rejectReason isLeverage price orderIv createdTime tpTriggerBy "
                        "timeInForce leavesValue updatedTime side triggerPrice tpLimitPrice cumExecFee "
                        "slTriggerBy leavesQty placeType cumExecQty qty stopLoss smpOrderId triggerBy "
                        "orderStatus orderType avgPrice cumExecValue stopOrderType tpslMode"),
         **_fields(INT, "positionIdx smpGroup"), **_fields(BOOL, "closeOnTrigger reduceOnly")},
    ),
    "bybit asset/coin/query-info": (
        'bybit.json methods.fetchCurrencies',
        {"retCode", "retMsg", "result", "retExtInfo", "time"}, ("result", "rows", 0, "chains", 0),
        _fields(STR, "chainType confirmation withdrawFee depositMin withdrawMin chain chainDeposit chainWithdraw "
                     "minAccuracy withdrawPercentageFee contractAddress"),
    ),
    "binance fapi batchOrders": (
        'binance.json methods.createOrders "create swap orders"',
        set(), (0,),
        {**_fields(STR, "symbol status clientOrderId price avgPrice origQty executedQty cumQty cumQuote "
                        "timeInForce type side positionSide stopPrice workingType origType priceMatch "
                        "selfTradePreventionMode"),
         **_fields(BOOL, "reduceOnly closePosition priceProtect"), **_fields(INT, "orderId goodTillDate updateTime")},
    ),
}


async def _okx_answers(c: Any) -> dict[str, Any]:
    c.enableLastJsonResponse = True
    await c.load_markets()
    out = {"okx account/positions": await c.privateGetAccountPositions(),
           "okx account/balance": await c.privateGetAccountBalance()}
    out["okx account/balance (account)"] = out["okx account/balance"]
    await c.create_order("BTC/USDT", "market", "sell", 0.001)
    out["okx trade/batch-orders"] = c.last_json_response
    return out


async def _bybit_answers(c: Any) -> dict[str, Any]:
    c.enableLastJsonResponse = True
    await c.load_markets()
    out = {"bybit position/list": await c.privateGetV5PositionList({"category": "linear", "settleCoin": "USDT"}),
           "bybit asset/coin/query-info": await c.privateGetV5AssetCoinQueryInfo(),
           "bybit order/realtime": await c.privateGetV5OrderRealtime({"category": "linear", "settleCoin": "USDT"})}
    out["bybit position/list (result)"] = out["bybit position/list"]
    await c.create_order("BTC/USDT:USDT", "limit", "buy", 0.001, 40000)
    out["bybit order/create"] = c.last_json_response
    return out


async def _binance_answers(c: Any) -> dict[str, Any]:
    c.enableLastJsonResponse = True
    await c.load_markets()
    await c.create_orders([{"symbol": "ETH/USDT:USDT", "type": "limit", "side": "buy", "amount": 0.1, "price": 2000}])
    return {"binance fapi batchOrders": c.last_json_response}


@pytest.fixture(scope="module")
def answers() -> dict[str, Any]:
    """The simulator's raw answers, read once for the whole table."""
    out: dict[str, Any] = {}
    with SimServer(load_scenario(exchanges_scenario_path())) as server:
        out.update(with_client(server, "okx-net", _okx_answers))
        out.update(with_client(server, "bybit-one", _bybit_answers))
        out.update(with_client(server, "binance-one", _binance_answers))
    return out


@pytest.mark.parametrize("name", sorted(TABLE))
def test_answer_matches_the_captured_exchange_answer(answers, name):
    source, envelope, path, fields = TABLE[name]
    answer = answers[name]
    if envelope:
        assert set(answer) == envelope, f"{name}: envelope keys differ from {source}"
    row = answer
    for step in path:
        row = row[step]
    missing = sorted(set(fields) - set(row))
    assert not missing, f"{name}: keys ccxt reads are missing (see {source}): {missing}"
    wrong = {k: type(row[k]).__name__ for k, kind in fields.items()
             if not isinstance(row[k], _TYPES[kind]) or (kind == INT and isinstance(row[k], bool))}
    assert not wrong, f"{name}: JSON types differ from {source}: {wrong}"


def test_numbers_are_strings_in_okx_and_bybit_rows(answers):
    # The exchanges send prices and sizes as strings; a float here would let a client
    # that parses with float() pass against the sim and fail against the exchange.
    for name in ("okx account/positions", "bybit position/list"):
        _, _, path, _ = TABLE[name]
        row = answers[name]
        for step in path:
            row = row[step]
        floats = [k for k, v in row.items() if isinstance(v, float)]
        assert floats == [], f"{name}: {floats}"


async def _default_flow(c: Any) -> None:
    """What a product does with an account: markets, balance, positions, orders, a close."""
    await c.load_markets()
    await c.fetch_balance()
    positions = await c.fetch_positions()
    await c.fetch_open_orders("BTC/USDT:USDT")
    await c.fetch_tickers(["BTC/USDT:USDT"])
    if positions:
        p = positions[0]
        params: dict[str, Any] = {"reduceOnly": True}
        if c.id == "okx":
            params["marginMode"] = p["marginMode"]
        await c.create_order(p["symbol"], "market", "sell" if p["side"] == "long" else "buy", p["contracts"], None,
                             params)


@pytest.mark.parametrize("account", ["okx-net", "bybit-one", "binance-one"])
def test_ccxt_default_flows_hit_no_unknown_endpoint(sim_exchanges, account):
    with_client(sim_exchanges, account, _default_flow, **_DEFAULTS[account])
    assert sim_exchanges.unknown_paths == []


# ccxt's own option defaults (load every market type, currencies...), not the fixture's narrowed ones.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "okx-net": {"fetchMarkets": {"types": ["spot", "future", "swap", "option"]}},
    "bybit-one": {"fetchMarkets": {"types": ["spot", "linear", "inverse", "option"]}},
    "binance-one": {"fetchMarkets": {"types": ["spot", "linear", "inverse"]}, "fetchCurrencies": True,
                    "fetchMargins": True},
}
