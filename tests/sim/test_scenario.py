"""Scenario files: the demo loads, bad files fail with one line naming the key."""

from __future__ import annotations

from decimal import Decimal

import pytest

from guard_app.sim import ScenarioError, demo_scenario_path, load_scenario


def test_demo_scenario_has_what_the_demo_needs():
    scenario = load_scenario(demo_scenario_path())
    alice, bob = scenario.account("alice"), scenario.account("bob")
    held = [a for a in alice.spot if a not in ("USDT", "TRX", "WBETH")]
    assert len(held) == 10  # over a cap of 8
    prices = {m.symbol: m.price for m in scenario.markets}
    assert alice.spot["TRX"] * prices["TRX/USDT"] < 1  # dust
    assert "WBETH/USDT" not in prices  # an asset without a USDT market
    assert {p.side for p in alice.positions} == {"long", "short"}
    assert bob.positions == ()
    assert "not-real" in alice.api_key and "not-real" in bob.secret


def test_secrets_stay_out_of_reprs():
    scenario = load_scenario(demo_scenario_path())
    assert "secret" not in repr(scenario.accounts).lower().replace("secret=", "")
    assert scenario.account("alice").secret not in repr(scenario)


GOOD = """
[[markets]]
symbol = "BTC/USDT"
price = 100
step_size = 0.001
tick_size = 0.01

[[accounts]]
name = "a"
api_key = "k1"
secret = "s1"
[accounts.spot]
USDT = 5
"""


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOD + '\n[[accounts]]\nname = "b"\napi_key = "k2"\n', "bad.toml: accounts[1].secret: missing"),
        (GOOD.replace("price = 100", 'price = "cheap"'), "bad.toml: markets[0].price: must be a number (got 'cheap')"),
        (GOOD.replace("price = 100", "price = -1"), "bad.toml: markets[0].price: must be positive (got -1)"),
        (GOOD.replace('symbol = "BTC/USDT"', 'symbol = "BTCUSDT"'), "bad.toml: markets[0].symbol: a spot symbol looks like BASE/QUOTE (got 'BTCUSDT')"),
        (GOOD + "colour = 1\n", "bad.toml: accounts[0].spot.colour: asset names are upper-case letters and digits"),
        (GOOD.replace("[accounts.spot]", "colour = 1\n[accounts.spot]"), "bad.toml: accounts[0].colour: unknown key"),
        (GOOD + '\n[[accounts]]\nname = "b"\napi_key = "k1"\nsecret = "x"\n', "bad.toml: accounts[1].api_key: the same api_key is used by another account"),
        (GOOD + '[[accounts.positions]]\nsymbol = "BTC/USDT"\nside = "long"\ncontracts = 1\n', "bad.toml: accounts[0].positions[0].symbol: no swap market 'BTC/USDT' in [[markets]]"),
        ("[sim]\nlatency = 0\n", "bad.toml: markets: at least one market is needed"),
        ("markets = [", "bad.toml: not valid TOML"),
    ],
)
def test_bad_scenario_is_one_line_naming_the_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.toml")


def test_good_scenario_defaults(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    scenario = load_scenario(path)
    (market,) = scenario.markets
    assert market.min_qty == Decimal("0.001") and market.min_notional == Decimal(5)
    assert scenario.account("a").spot == {"USDT": Decimal(5)}


def test_three_exchange_scenario_accounts_and_contract_sizes():
    from tests.fixtures.sim_fixtures import exchanges_scenario_path

    scenario = load_scenario(exchanges_scenario_path())
    okx = scenario.account("okx-net")
    assert (okx.exchange, okx.position_mode, okx.passphrase) == ("okx", "one-way", "sim-okx-pass-1")
    assert "sim-okx-pass-1" not in repr(scenario)
    assert scenario.account("bybit-hedge").position_mode == "hedge"
    assert {p.margin_mode for p in okx.positions} == {"cross", "isolated"}
    sizes = {m.symbol: m.contract_size for m in scenario.markets}
    assert sizes["BTC/USDT:USDT"] == Decimal("0.01") and sizes["ETH/USDT:USDT"] == Decimal("0.1")
    assert [o.trigger_price for o in okx.orders] == [None, Decimal(50000)]


SWAP = GOOD.replace('[[accounts]]', '[[markets]]\nsymbol = "BTC/USDT:USDT"\ntype = "swap"\nprice = 100\n'
                    'step_size = 0.001\ntick_size = 0.01\n\n[[accounts]]')


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOD.replace('secret = "s1"', 'secret = "s1"\nexchange = "okx"'), "bad.toml: accounts[0].passphrase: missing"),
        (GOOD.replace('secret = "s1"', 'secret = "s1"\nexchange = "kraken"'),
         "bad.toml: accounts[0].exchange: must be one of binance, okx, bybit (got 'kraken')"),
        (GOOD.replace('secret = "s1"', 'secret = "s1"\npassphrase = "p"'),
         "bad.toml: accounts[0].passphrase: only okx keys have a passphrase"),
        (GOOD.replace('secret = "s1"', 'secret = "s1"\nposition_mode = "both"'),
         "bad.toml: accounts[0].position_mode: must be one of one-way, hedge (got 'both')"),
        (SWAP + '[[accounts.positions]]\nsymbol = "BTC/USDT:USDT"\nside = "long"\ncontracts = 1\n'
                'margin_mode = "portfolio"\n',
         "bad.toml: accounts[0].positions[0].margin_mode: must be one of cross, isolated (got 'portfolio')"),
        (GOOD + '\n[limits]\n"binance.nope" = 1\n', "bad.toml: limits.binance.nope: unknown limit"),
        (GOOD + '\n[limits]\n"okx.order_per_inst_2s" = 0\n',
         "bad.toml: limits.okx.order_per_inst_2s: must be positive (got 0)"),
    ],
)
def test_new_keys_fail_with_one_line(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(err.value).startswith(expected)


def test_limits_lower_the_published_ones(tmp_path):
    path = tmp_path / "fast.toml"
    path.write_text(GOOD + '\n[limits]\n"binance.futures_orders_10s" = 5\n')
    assert load_scenario(path).limits == {"binance.futures_orders_10s": 5.0}


def test_scenario_error_is_the_simulators_own():
    # The simulator imports nothing of the product: its error is a plain ValueError.
    assert ScenarioError.__mro__[1] is ValueError
    err = ScenarioError("markets", "at least one market is needed", "x.toml")
    assert (err.key, err.problem, err.source) == ("markets", "at least one market is needed", "x.toml")
