"""The real sync ccxt binance client against the simulator: markets, balances, positions, orders."""

from __future__ import annotations

import ccxt
import pytest

from tests.fixtures.sim_fixtures import ccxt_config


def test_load_markets_with_ccxt_defaults_and_keys(sim):
    # Default options: spot, linear and inverse exchangeInfo plus the signed sapi calls.
    client = ccxt.binance(ccxt_config(sim, "alice"))
    client.options = ccxt.binance().options  # ccxt's own defaults, nothing restricted
    markets = client.load_markets()
    assert sim.unknown_paths == []
    btc = markets["BTC/USDT"]
    assert btc["spot"] and btc["precision"]["amount"] == 0.00001
    assert btc["limits"]["cost"]["min"] == 5.0
    assert btc["limits"]["amount"]["min"] == 0.00001
    swap = markets["BTC/USDT:USDT"]
    assert swap["swap"] and swap["linear"] and swap["contractSize"] == 1.0
    assert swap["limits"]["cost"]["min"] == 100.0
    assert swap["precision"]["price"] == 0.1
    assert "TRX" in client.currencies


@pytest.mark.parametrize("types", [["spot"], ["linear"]])
def test_load_markets_restricted_to_one_type(sim, sim_client, types):
    client = sim_client(sim, "bob", fetchMarkets={"types": types})
    markets = client.load_markets()
    kinds = {m["type"] for m in markets.values()}
    assert kinds == ({"spot"} if types == ["spot"] else {"swap"})


def test_spot_balances_free_and_locked(sim, sim_client):
    balance = sim_client(sim, "alice").fetch_balance()
    assert balance["BTC"]["free"] == pytest.approx(0.01)
    # The demo's resting LINK sell locks 2 of 5 LINK.
    assert balance["LINK"] == {"free": 3.0, "used": 2.0, "total": 5.0}
    assert balance["TRX"]["total"] == pytest.approx(1.7)


def test_tickers_and_mark_price_follow_set_price(sim, sim_client):
    spot = sim_client(sim, "alice")
    swap = sim_client(sim, "alice", "swap")
    sim.exchange.set_price("DOGE/USDT", 0.2)
    tickers = spot.fetch_tickers(["DOGE/USDT", "BTC/USDT"])
    assert tickers["DOGE/USDT"]["last"] == 0.2
    assert tickers["BTC/USDT"]["last"] == 65000.0
    assert int(spot.last_response_headers["x-mbx-used-weight-1m"]) > 0
    sim.exchange.set_price("BTC/USDT:USDT", 70000)
    assert swap.fetch_mark_price("BTC/USDT:USDT")["markPrice"] == 70000.0
    assert spot.fetch_ticker("BTC/USDT")["last"] == 65000.0  # the spot market kept its own price


def test_positions_long_and_short(sim, sim_client):
    positions = {p["symbol"]: p for p in sim_client(sim, "alice", "swap").fetch_positions()}
    assert set(positions) == {"BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "DOGE/USDT:USDT"}
    assert positions["BTC/USDT:USDT"]["side"] == "long"
    assert positions["BTC/USDT:USDT"]["contracts"] == 0.005
    assert positions["ETH/USDT:USDT"]["side"] == "short"
    assert positions["ETH/USDT:USDT"]["entryPrice"] == 3300.0
    assert positions["ETH/USDT:USDT"]["notional"] == pytest.approx(320.1)
    assert sim.unknown_paths == []


def test_futures_balance(sim, sim_client):
    usdt = sim_client(sim, "alice", "swap").fetch_balance()["USDT"]
    assert usdt["total"] > 5000  # wallet 5000 plus the demo positions' unrealized profit
    assert usdt["used"] > 0


def test_spot_market_sell_credits_quote(sim, sim_client):
    client = sim_client(sim, "alice")
    order = client.create_order("SOL/USDT", "market", "sell", 2)
    assert order["status"] == "closed" and order["filled"] == 2.0
    assert order["average"] == 150.0
    balances = sim.exchange.balances("alice")
    assert "SOL" not in balances
    assert balances["USDT"]["free"] == pytest.approx(500 + 300)


@pytest.mark.parametrize("symbol,side", [("BTC/USDT:USDT", "sell"), ("ETH/USDT:USDT", "buy")])
def test_reduce_only_close_leaves_position_flat(sim, sim_client, symbol, side):
    client = sim_client(sim, "alice", "swap")
    amount = next(p["contracts"] for p in client.fetch_positions([symbol]))
    order = client.create_order(symbol, "market", side, amount, params={"reduceOnly": True})
    assert order["status"] == "closed" and order["reduceOnly"] is True
    assert client.fetch_positions([symbol]) == []
    assert all(p["symbol"] != symbol for p in sim.exchange.positions("alice"))


def test_reduce_only_that_would_flip_is_rejected_with_2022(sim, sim_client):
    client = sim_client(sim, "alice", "swap")
    # On a non-Binance host ccxt can't pick its futures table, so -2022 surfaces as ExchangeError.
    with pytest.raises(ccxt.ExchangeError, match="-2022") as err:
        client.create_order("BTC/USDT:USDT", "market", "sell", 0.01, params={"reduceOnly": True})
    assert "ReduceOnly Order is rejected." in str(err.value)
    with pytest.raises(ccxt.ExchangeError, match="-2022"):  # same direction: would increase
        client.create_order("BTC/USDT:USDT", "market", "buy", 0.001, params={"reduceOnly": True})
    btc = next(p for p in sim.exchange.positions("alice") if p["symbol"] == "BTC/USDT:USDT")
    assert btc["side"] == "long" and btc["contracts"] == 0.005
    rejected = [r for r in sim.exchange.orders if not r.accepted]
    assert [r.error_code for r in rejected] == [-2022, -2022]


def test_non_reduce_only_futures_order_opens_and_increases(sim, sim_client):
    client = sim_client(sim, "bob", "swap")
    sim.exchange.set_futures_wallet("bob", 1000)
    client.create_order("XRP/USDT:USDT", "market", "buy", 100)
    client.create_order("XRP/USDT:USDT", "market", "buy", 50)
    (position,) = client.fetch_positions()
    assert position["side"] == "long" and position["contracts"] == 150.0


def test_amount_truncating_to_zero_raises_invalid_order_without_a_request(sim, sim_client):
    client = sim_client(sim, "alice")
    client.load_markets()
    before = len(sim.exchange.orders)
    with pytest.raises(ccxt.InvalidOrder):
        client.create_order("BTC/USDT", "market", "sell", 0.000001)
    assert len(sim.exchange.orders) == before


def test_notional_too_small_reaches_the_server(sim, sim_client):
    client = sim_client(sim, "alice")
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        client.create_order("BTC/USDT", "market", "sell", 0.00002)  # 1.3 USDT < 5
    (record,) = sim.exchange.orders
    assert (record.accepted, record.error_code, record.error_msg) == (False, -1013, "Filter failure: NOTIONAL")


def test_lot_size_failure_is_invalid_order(sim, sim_client):
    client = sim_client(sim, "alice")
    client.load_markets()
    # Bypass ccxt's own rounding to send an amount that isn't a multiple of the step.
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        client.private_post_order({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.000155"})


def test_insufficient_balance(sim, sim_client):
    client = sim_client(sim, "bob")
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "sell", 0.01)  # bob holds 0.002
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("ETH/USDT", "market", "buy", 1)  # 3200 USDT > 1000
    assert sim.exchange.balances("bob")["BTC"]["free"] == 0.002


def test_resting_orders_cancel_frees_locked_balance(sim, sim_client):
    client = sim_client(sim, "bob")
    order = client.create_order("ETH/USDT", "limit", "sell", 0.02, 5000, params={"clientOrderId": "bob-eth-1"})
    client.create_order("ETH/USDT", "limit", "sell", 0.03, 6000)
    assert order["status"] == "open"
    assert client.fetch_balance()["ETH"] == {"free": 0.0, "used": 0.05, "total": 0.05}
    assert len(client.fetch_open_orders("ETH/USDT")) == 2
    cancelled = client.cancel_order(order["id"], "ETH/USDT")
    assert cancelled["status"] == "canceled"
    assert client.fetch_balance()["ETH"]["used"] == pytest.approx(0.03)
    client.cancel_all_orders("ETH/USDT")
    assert client.fetch_open_orders("ETH/USDT") == []
    assert client.fetch_balance()["ETH"] == {"free": 0.05, "used": 0.0, "total": 0.05}


def test_futures_resting_order_and_cancel_all(sim, sim_client):
    client = sim_client(sim, "alice", "swap")
    client.create_order("SOL/USDT:USDT", "limit", "sell", 1, 200, params={"reduceOnly": True})
    assert [o["side"] for o in client.fetch_open_orders("SOL/USDT:USDT")] == ["sell"]
    client.cancel_all_orders("SOL/USDT:USDT")
    assert client.fetch_open_orders("SOL/USDT:USDT") == []


def test_fetch_order_by_id_and_by_client_id(sim, sim_client):
    client = sim_client(sim, "alice")
    placed = client.create_order("DOGE/USDT", "market", "sell", 100, params={"clientOrderId": "guard-close-42"})
    by_id = client.fetch_order(placed["id"], "DOGE/USDT")
    by_client = client.fetch_order(None, "DOGE/USDT", params={"origClientOrderId": "guard-close-42"})
    assert by_id["id"] == by_client["id"] == placed["id"]
    assert by_client["clientOrderId"] == "guard-close-42" and by_client["filled"] == 100.0
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order(None, "DOGE/USDT", params={"origClientOrderId": "never-sent"})


def test_resting_limit_fills_when_price_crosses(sim, sim_client):
    client = sim_client(sim, "alice")
    sim.exchange.set_price("LINK/USDT", 21)  # the demo's LINK sell at 20 fills
    assert client.fetch_open_orders("LINK/USDT") == []
    assert client.fetch_order(None, "LINK/USDT", params={"origClientOrderId": "demo-resting-link-sell"})["status"] == "closed"
    balance = client.fetch_balance()
    assert balance["LINK"] == {"free": 3.0, "used": 0.0, "total": 3.0}
    assert balance["USDT"]["free"] == pytest.approx(540)


def test_order_log_records_every_request(sim, sim_client):
    client = sim_client(sim, "alice", "swap")
    client.create_order("SOL/USDT:USDT", "market", "sell", 1, params={"reduceOnly": True, "clientOrderId": "c1"})
    with pytest.raises(ccxt.ExchangeError):
        client.create_order("SOL/USDT:USDT", "market", "buy", 1, params={"reduceOnly": True, "clientOrderId": "c2"})
    ok, bad = sim.exchange.orders
    assert (ok.account, ok.symbol, ok.side, ok.type, ok.quantity, ok.reduce_only, ok.client_order_id,
            ok.accepted) == ("alice", "SOL/USDT:USDT", "sell", "market", 1.0, True, "c1", True)
    assert (bad.accepted, bad.error_code, bad.client_order_id) == (False, -2022, "c2")
    assert bad.timestamp >= ok.timestamp


def test_partial_fill(sim, sim_client):
    sim.exchange.set_partial_fill(0.5)
    client = sim_client(sim, "alice")
    order = client.create_order("DOGE/USDT", "market", "sell", 100)
    assert order["filled"] == 50.0 and order["status"] == "expired"
    assert sim.exchange.balances("alice")["DOGE"]["free"] == 450.0
