"""The standalone simulator command and the simulated strategy."""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request

import pytest

from guard_app.sim import SimServer, SimStrategy, demo_scenario_path, load_scenario
from guard_app.sim.cli import add_sim_arguments, run_sim


def parse(argv):
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return parser.parse_args(argv)


def test_defaults():
    args = parse([])
    assert (args.port, args.scenario, args.strategy) == (8765, None, False)
    assert parse(["--strategy", "--port", "9"]).strategy is True


def test_bad_scenario_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[markets]]\nsymbol = "BTC/USDT"\nprice = 1\ntick_size = 0.1\n')
    assert run_sim(parse(["--scenario", str(bad), "--port", "0"])) == 2
    err = capsys.readouterr().err
    assert err.strip() == "guard-app sim: bad scenario: bad.toml: markets[0].step_size: missing"


def test_port_in_use_is_one_line_and_exit_2(sim, capsys):
    assert run_sim(parse(["--port", str(sim.port)])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"port {sim.port} on 127.0.0.1 is already in use" in err
    with pytest.raises(OSError):
        SimServer(load_scenario(demo_scenario_path()), port=sim.port).start()


def test_run_sim_serves_until_stopped(capsys):
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_sim(parse(["--port", "0", "--strategy"]), stop)))
    thread.start()
    deadline = time.monotonic() + 10
    url = None
    while url is None and time.monotonic() < deadline:
        out = capsys.readouterr().out
        for line in out.splitlines():
            if " on http://127.0.0.1:" in line:
                url = line.rsplit(" on ", 1)[1]
        if url is None:
            time.sleep(0.02)
    assert url is not None
    with urllib.request.urlopen(url + "/api/v3/time", timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
        assert "serverTime" in json.loads(resp.read())
    stop.set()
    thread.join(5)
    assert result == [0]


def test_strategy_opens_new_positions_deterministically():
    def run(seed):
        server = SimServer(load_scenario(demo_scenario_path()))  # not started: state only
        strategy = SimStrategy(server.exchange, ["alice", "bob"], seed=seed)
        lines = strategy.step() + strategy.step()
        return lines, server.exchange

    lines, exchange = run(7)
    assert len(lines) == 4
    assert run(7)[0] == lines
    assert len(exchange.positions("alice")) + len(exchange.balances("alice")) > 4 + 13
    assert len(exchange.balances("bob")) == 7  # bob is spot only: two new assets


def test_strategy_thread_starts_and_stops(sim):
    strategy = SimStrategy(sim.exchange, ["bob"], interval=0.02, seed=1).start()
    deadline = time.monotonic() + 5
    while strategy.trades < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    strategy.stop()
    assert strategy.trades >= 2 and not strategy.running
    assert len(sim.exchange.balances("bob")) >= 7


def test_three_exchange_scenario_banner_prints_each_override(capsys):
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_sim(parse(["--port", "0", "--scenario", "exchanges"]),
                                                                   stop)))
    thread.start()
    deadline = time.monotonic() + 10
    out = ""
    while time.monotonic() < deadline and "okx accounts" not in out:
        out += capsys.readouterr().out
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    out += capsys.readouterr().out
    assert result == [0]
    assert "Simulated Binance, OKX, Bybit serving" in out
    assert "okx-net (okx)" in out and "bybit-hedge (bybit)" in out
    assert 'urls = { api = { rest = "http://127.0.0.1:' in out
    assert 'private = "http://127.0.0.1:' in out


def test_help_says_how_the_three_exchanges_are_served():
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    text = parser.format_help()
    assert "/api/v5/" in text and "/v5/" in text and "Bybit" in text


def test_strategy_trades_okx_and_bybit_accounts_in_their_contracts():
    from tests.fixtures.sim_fixtures import exchanges_scenario_path

    server = SimServer(load_scenario(exchanges_scenario_path()))  # not started: the model alone
    strategy = SimStrategy(server.exchange, accounts=["okx-hedge", "bybit-hedge"], venues=("swap",), seed=1)
    before = {a: len(server.exchange.positions(a)) for a in ("okx-hedge", "bybit-hedge")}
    for _ in range(3):
        strategy.step()
    after = {a: server.exchange.positions(a) for a in ("okx-hedge", "bybit-hedge")}
    assert len(after["okx-hedge"]) > before["okx-hedge"] and len(after["bybit-hedge"]) > before["bybit-hedge"]
    # OKX sizes are whole contracts of ctVal base units, never a fraction of the base amount.
    assert all(p["contracts"] >= 1 for p in after["okx-hedge"])
    assert {p["contract_size"] for p in after["okx-hedge"]} <= {0.01, 0.1}
