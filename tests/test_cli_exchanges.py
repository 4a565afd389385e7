"""The user's acceptance flows on Binance, OKX and Bybit, through the command line.

As a user would set it up: each account names its exchange and points at the
simulator only through its ``[accounts.ccxt]`` URL override; keys (and OKX's
passphrase) are in the real keyring. Nothing else exchange-specific is configured: the
position mode and margin mode are read from the account. Then ``guard-app run --once``,
``guard-app unwind`` and ``guard-app status --json`` must do the same on all three:
the smallest positions by real value (contracts x contract size x mark) close first,
shorts are bought back, isolated positions close on their own margin, every derivative
close is reduce-only and never a flip, a forced unwind leaves alice flat and never
touches bob, and no credential appears in any output or file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard_app.core.secrets import ApiKeys
from guard_app.sim import ccxt_overrides, parse_scenario
from tests.exchanges.protocol_world import EXCHANGES, credentials, scenario
from tests.fixtures.world import World

pytestmark = pytest.mark.parametrize("exchange", EXCHANGES)

# alice: four positions worth 600 (short, isolated), 1,500, 3,000 and 6,000 USDT.
ALICE = [
    {"symbol": "SOL/USDT:USDT", "side": "short", "contracts": 4.0, "margin_mode": "isolated"},
    {"symbol": "ETH/USDT:USDT", "side": "long", "contracts": 0.5},
    {"symbol": "ETH/USDC:USDC", "side": "long", "contracts": 1.0},
    {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.1},
]
BOB = [{"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.01}]


def _setup(world: World, sim_factory, exchange: str):
    alice_positions = ALICE if exchange == "bybit" else [p for p in ALICE if "USDC" not in p["symbol"]]
    if exchange == "binance":  # Binance USDⓈ-M margins per symbol; one mode in this account
        alice_positions = [{**p, "margin_mode": "cross"} for p in alice_positions]
    doc = scenario("alice", exchange, positions=alice_positions)
    doc["accounts"] += scenario("bob", exchange, positions=BOB)["accounts"]
    sim = sim_factory(parse_scenario(doc, "test"))
    accounts = []
    for name, user in (("alice", "alice"), ("bob", "bob")):
        creds = credentials(name, exchange)
        account_id = f"{name}-{exchange}"
        world.secrets.set(account_id, ApiKeys(creds["api_key"], creds["secret"],
                                              creds.get("passphrase")))
        accounts.append({"id": account_id, "user": user, "exchange": exchange, "market": "swap",
                         "quote": "USDT", "max_positions": 2,
                         "ccxt": {**ccxt_overrides(sim.base_url, exchange), "timeout": 5000}})
    world.write_config(accounts)
    return sim, credentials("alice", exchange), len(alice_positions)


def _status(world: World) -> dict:
    result = world.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return {a["id"]: a for a in json.loads(result.stdout)["accounts"]}


def test_caps_and_a_forced_unwind_work_the_same_on_every_exchange(
        world: World, sim_factory, exchange: str) -> None:
    sim, creds, held = _setup(world, sim_factory, exchange)
    before = _status(world)[f"alice-{exchange}"]
    assert before["position_count"] == held and before["over_cap"] is True
    by_value = sorted(before["positions"], key=lambda p: p["value"])
    assert by_value[0]["symbol"] == "SOL/USDT:USDT" and by_value[0]["value"] == pytest.approx(600, rel=0.01)

    outputs = [world.cli("run", "--once")]
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    after = _status(world)[f"alice-{exchange}"]
    assert after["position_count"] == 2  # back at the cap: the two largest are left
    left = {p["symbol"] for p in after["positions"]}
    assert left == {p["symbol"] for p in sorted(before["positions"], key=lambda p: p["value"])[-2:]}
    orders = [o for o in sim.exchange.orders if o.accepted]
    assert orders and all(o.reduce_only for o in orders), orders  # never opens, never flips
    assert any(o.side == "buy" and o.symbol and "SOL" in o.symbol for o in orders)  # short bought back

    outputs.append(world.cli("unwind", "alice", "--yes"))
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    outputs.append(world.cli("run", "--once"))
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    final = _status(world)
    assert final[f"alice-{exchange}"]["position_count"] == 0
    assert final[f"bob-{exchange}"]["position_count"] == 1  # bob untouched
    assert final[f"alice-{exchange}"]["forced_unwind"] is True

    secrets = [creds["api_key"], creds["secret"], *([creds["passphrase"]] if "passphrase" in creds else [])]
    texts = [o.stdout + o.stderr for o in outputs]
    files = [p for p in Path(world.data_dir).rglob("*") if p.is_file()] + [world.config_path]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    for secret in secrets:
        assert not any(secret in t for t in texts), "a credential reached an output or a file"


def test_a_refused_close_names_the_exchanges_own_code(world: World, sim_factory, exchange: str) -> None:
    sim, _creds, _held = _setup(world, sim_factory, exchange)
    # Binance refuses with HTTP 400; OKX and Bybit inside an HTTP 200 answer.
    status = 400 if exchange == "binance" else 200
    sim.exchange.inject_fault("/", status, body=_refusal(exchange), method="POST")
    result = world.cli("run", "--once")
    assert result.returncode == 1  # a close was refused
    code = {"binance": "-2010", "okx": "51008", "bybit": "170131"}[exchange]
    assert code in result.stderr, result.stderr


def _refusal(exchange: str) -> str:
    if exchange == "okx":
        return json.dumps({"code": "1", "msg": "All operations failed", "data": [
            {"ordId": "", "clOrdId": "", "sCode": "51008",
             "sMsg": "Order failed. Insufficient USDT balance in account."}]})
    if exchange == "bybit":
        return json.dumps({"retCode": 170131, "retMsg": "Insufficient balance.", "result": {},
                           "retExtInfo": {}, "time": 1700000000000})
    return json.dumps({"code": -2010, "msg": "Account has insufficient balance for requested action."})
