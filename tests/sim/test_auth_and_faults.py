"""Signed-request checks and injected faults, seen through the real ccxt client's exceptions."""

from __future__ import annotations

import time

import ccxt
import pytest

from tests.fixtures.sim_fixtures import ccxt_config


def test_unknown_key_raises_authentication_error(sim):
    config = ccxt_config(sim, "alice") | {"apiKey": "not-a-key-the-sim-knows"}
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        ccxt.binance(config).fetch_balance()


def test_wrong_secret_fails_the_signature_check(sim):
    config = ccxt_config(sim, "alice") | {"secret": "not-alices-secret"}
    with pytest.raises(ccxt.AuthenticationError, match="Signature for this request is not valid"):
        ccxt.binance(config).fetch_balance()


def test_revoked_key_fails_until_restored(sim, sim_client):
    key = sim.scenario.account("bob").api_key
    sim.exchange.revoke_key(key)
    with pytest.raises(ccxt.AuthenticationError):
        sim_client(sim, "bob").fetch_balance()
    sim.exchange.restore_key(key)
    assert sim_client(sim, "bob").fetch_balance()["USDT"]["free"] == 1000.0


def test_orders_with_a_bad_key_are_logged_as_rejected(sim):
    config = ccxt_config(sim, "bob") | {"apiKey": "nope"}
    client = ccxt.binance(config)
    client.load_markets()
    with pytest.raises(ccxt.AuthenticationError):
        client.create_order("BTC/USDT", "market", "sell", 0.001)
    (record,) = sim.exchange.orders
    assert (record.account, record.accepted, record.error_code) == (None, False, -2015)


def test_clock_skew_outside_recv_window_and_ccxt_time_sync(sim, sim_client):
    sim.exchange.set_clock_skew(-60_000)  # the exchange's clock is a minute behind
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        sim_client(sim, "bob").fetch_balance()
    synced = sim_client(sim, "bob", adjustForTimeDifference=True)
    synced.load_markets()
    assert synced.fetch_balance()["USDT"]["free"] == 1000.0


def test_injected_429_is_a_rate_limit_with_retry_after(sim, sim_client):
    client = sim_client(sim, "bob")
    sim.exchange.inject_fault("/api/v3/account", 429, retry_after=7, count=1)
    with pytest.raises(ccxt.DDoSProtection):
        client.fetch_balance()
    assert client.last_response_headers["Retry-After"] == "7"
    assert client.fetch_balance()["USDT"]["free"] == 1000.0  # count=1: only the next request


def test_injected_418_ban(sim, sim_client):
    client = sim_client(sim, "bob")
    sim.exchange.inject_fault("/api/", 418, retry_after=120)
    with pytest.raises(ccxt.DDoSProtection, match="418"):
        client.fetch_ticker("BTC/USDT")
    sim.exchange.clear_faults()
    assert client.fetch_ticker("BTC/USDT")["last"] == 65000.0


def test_rate_limit_code_on_400_is_rate_limit_exceeded(sim, sim_client):
    body = '{"code":-1003,"msg":"Too much request weight used; current limit is 6000 request weight per 1 MINUTE."}'
    sim.exchange.inject_fault("/api/v3/account", 400, body=body, count=1)
    with pytest.raises(ccxt.RateLimitExceeded):
        sim_client(sim, "bob").fetch_balance()


def test_injected_503_is_a_network_error(sim, sim_client):
    sim.exchange.inject_fault("/fapi/", 503, count=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        sim_client(sim, "alice", "swap").fetch_positions()


def test_dropped_connection_is_a_network_error(sim, sim_client):
    client = sim_client(sim, "bob")
    client.load_markets()
    sim.exchange.inject_fault("/api/v3/account", kind="drop", count=2)
    with pytest.raises(ccxt.NetworkError):
        client.fetch_balance()


def test_drop_after_processing_leaves_the_order_placed(sim, sim_client):
    client = sim_client(sim, "alice")
    client.load_markets()
    sim.exchange.inject_fault("/api/v3/order", kind="drop_after", method="POST", count=1)
    with pytest.raises(ccxt.NetworkError):
        client.create_order("SOL/USDT", "market", "sell", 1, params={"clientOrderId": "unknown-fate"})
    # The order's fate was unknown to the client, but the exchange executed it.
    found = client.fetch_order(None, "SOL/USDT", params={"origClientOrderId": "unknown-fate"})
    assert found["status"] == "closed"
    assert sim.exchange.balances("alice")["SOL"]["free"] == 1.0


def test_probabilistic_fault_is_deterministic_with_a_seed(sim_factory):
    outcomes = []
    for _ in range(2):
        server = sim_factory(seed=42)
        server.exchange.inject_fault("/api/v3/time", 503, probability=0.5)
        client = ccxt.binance(ccxt_config(server, "bob"))
        run = []
        for _ in range(8):
            try:
                client.fetch_time()
                run.append(True)
            except ccxt.ExchangeNotAvailable:
                run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert True in outcomes[0] and False in outcomes[0]


def test_latency_applies_to_api_not_control(sim, sim_client):
    client = sim_client(sim, "bob")
    sim.exchange.set_latency(0.2)
    start = time.monotonic()
    client.fetch_time()
    assert time.monotonic() - start >= 0.2
    sim.exchange.set_latency(0)
    start = time.monotonic()
    client.fetch_time()
    assert time.monotonic() - start < 0.2


def test_stop_is_quick_with_open_keepalive_connections_and_latency(sim_factory):
    import threading

    server = sim_factory()
    client = ccxt.binance(ccxt_config(server, "bob"))
    client.fetch_time()  # leaves a keep-alive connection open
    server.exchange.set_latency(30)
    errors: list[Exception] = []
    thread = threading.Thread(target=lambda: _call(client.fetch_time, errors))
    thread.start()
    deadline = time.monotonic() + 5
    while server.requests_received < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition with a deadline
    start = time.monotonic()
    server.stop()
    thread.join(5)
    assert time.monotonic() - start < 2
    assert errors and isinstance(errors[0], ccxt.NetworkError)


def _call(fn, errors):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        errors.append(exc)


def test_unknown_endpoint_is_404_and_recorded(sim, sim_client):
    client = sim_client(sim, "bob")
    with pytest.raises(ccxt.BaseError):
        client.fetch_my_trades("BTC/USDT")
    assert any("/api/v3/myTrades" in p for p in sim.unknown_paths)
