"""The ``/_sim/`` JSON control endpoints, driving what a real ccxt client then sees."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import ccxt
import pytest


def call(server, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.base_url + path, data=data, method=method,  # noqa: S310 - 127.0.0.1 only
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_price_and_move(sim, sim_client):
    assert call(sim, "POST", "/_sim/price", {"symbol": "BTC/USDT", "price": 50000}) == (200, {"ok": True})
    assert sim_client(sim, "bob").fetch_ticker("BTC/USDT")["last"] == 50000.0
    status, moved = call(sim, "POST", "/_sim/move", {"symbol": "BTC/USDT", "pct": -10})
    assert status == 200 and moved["price"] == 45000.0
    assert call(sim, "POST", "/_sim/price", {"symbol": "NOPE/USDT", "price": 1})[0] == 404


def test_positions_and_balances(sim, sim_client):
    status, positions = call(sim, "POST", "/_sim/position",
                             {"account": "alice", "symbol": "LINK/USDT:USDT", "side": "short", "contracts": 4})
    by_symbol = {p["symbol"]: p for p in positions}
    assert status == 200 and by_symbol["LINK/USDT:USDT"]["side"] == "short"
    client = sim_client(sim, "alice", "swap")
    link = [p for p in client.fetch_positions() if p["symbol"] == "LINK/USDT:USDT"]
    assert link and link[0]["side"] == "short" and link[0]["contracts"] == 4.0
    assert call(sim, "POST", "/_sim/balance", {"account": "bob", "asset": "AVAX", "amount": 3})[0] == 200
    status, balances = call(sim, "GET", "/_sim/balances?account=bob")
    assert balances["AVAX"] == {"free": 3.0, "locked": 0.0, "total": 3.0}
    assert call(sim, "GET", "/_sim/positions?account=nobody")[0] == 404


def test_keys_latency_and_faults(sim, sim_client):
    key = sim.scenario.account("bob").api_key
    assert call(sim, "POST", "/_sim/keys/revoke", {"api_key": key})[0] == 200
    with pytest.raises(ccxt.AuthenticationError):
        sim_client(sim, "bob").fetch_balance()
    assert call(sim, "POST", "/_sim/keys/restore", {"api_key": key})[0] == 200
    assert call(sim, "POST", "/_sim/latency", {"seconds": 0.01})[0] == 200
    assert sim.exchange.latency == 0.01
    status, fault = call(sim, "POST", "/_sim/faults", {"path_prefix": "/api/v3/account", "status": 429,
                                                        "retry_after": 5, "count": 1})
    assert status == 200 and fault["kind"] == "status"
    with pytest.raises(ccxt.DDoSProtection):
        sim_client(sim, "bob").fetch_balance()
    assert call(sim, "GET", "/_sim/faults")[1][0]["fired"] == 1
    assert call(sim, "DELETE", "/_sim/faults") == (200, {"ok": True})
    assert call(sim, "GET", "/_sim/faults") == (200, [])
    assert call(sim, "POST", "/_sim/faults", {"status": 200})[0] == 400
    assert call(sim, "POST", "/_sim/faults", {"colour": "red"})[0] == 400


def test_orders_and_state(sim, sim_client):
    sim_client(sim, "alice").create_order("XRP/USDT", "market", "sell", 100, params={"clientOrderId": "x-1"})
    status, orders = call(sim, "GET", "/_sim/orders")
    assert status == 200 and len(orders) == 1
    assert {"account": "alice", "symbol": "XRP/USDT", "side": "sell", "accepted": True,
            "client_order_id": "x-1"}.items() <= orders[0].items()
    status, state = call(sim, "GET", "/_sim/state")
    assert state["accounts"]["alice"]["balances"]["XRP"]["total"] == 100.0
    assert state["order_count"] == 1
    text = json.dumps(state)
    assert sim.scenario.account("alice").secret not in text
    assert sim.scenario.account("alice").api_key not in text
    assert call(sim, "DELETE", "/_sim/orders")[0] == 200
    assert sim.exchange.orders == []


def test_bad_control_requests(sim):
    assert call(sim, "GET", "/_sim/nope")[0] == 404
    assert call(sim, "POST", "/_sim/price", {"symbol": "BTC/USDT"}) == (400, {"error": "missing field 'price'"})


def test_rate_limit_answers_are_counted(sim_factory):
    import dataclasses

    from guard_app.sim import ccxt_overrides, load_scenario
    from tests.fixtures.sim_fixtures import exchanges_scenario_path

    server = sim_factory(dataclasses.replace(load_scenario(exchanges_scenario_path()),
                                             limits={"binance.spot_weight_1m": 1, "binance.ban_after_429s": 100}))
    client = ccxt.binance({"enableRateLimit": False, "timeout": 5000, **ccxt_overrides(server.base_url)})
    client.publicGetTime()
    with pytest.raises(ccxt.DDoSProtection):  # ccxt's class for HTTP 429
        client.publicGetTime()
    assert call(server, "GET", "/_sim/limits") == (200, {"binance 429": 1})
    assert call(server, "DELETE", "/_sim/limits") == (200, {"ok": True})
    assert call(server, "GET", "/_sim/limits") == (200, {})


def test_position_with_margin_mode_in_the_accounts_contracts(sim_exchanges):
    status, positions = call(sim_exchanges, "POST", "/_sim/position",
                             {"account": "okx-hedge", "symbol": "ETH/USDT:USDT", "side": "short", "contracts": 7,
                              "margin_mode": "isolated"})
    assert status == 200
    eth = [p for p in positions if p["symbol"] == "ETH/USDT:USDT"]
    assert eth == [{"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 7.0, "contract_size": 0.1,
                    "margin_mode": "isolated", "hedged": True, "entry_price": 3000.0, "mark_price": 3000.0,
                    "unrealized_pnl": 0.0}]
