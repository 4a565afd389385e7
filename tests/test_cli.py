"""The ``guard-app`` command line, run as a separate process like a user would."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from guard_app import __version__
from guard_app.core.state import StateStore
from tests.fixtures.world import World, sim_account


def guard(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "guard_app", *args], input=input,
                          capture_output=True, text=True, timeout=60, check=False)


def test_version_and_help() -> None:
    version = guard("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"guard-app {__version__}"
    helped = guard("--help")
    assert helped.returncode == 0
    for command in ("run", "status", "unwind", "keys", "demo", "sim"):
        assert command in helped.stdout


def test_bad_usage_exits_2() -> None:
    assert guard("frobnicate").returncode == 2
    assert guard("unwind").returncode == 2  # USER missing


def test_bad_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[accounts]]\nid = "a"\nuser = "u"\nexchange = "binance"\n'
                      "max_positions = -1\n")
    result = guard("run", "--once", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "accounts[0].max_positions" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_says_where_and_exits_2(tmp_path: Path) -> None:
    result = guard("status", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "nope.toml" in result.stderr


def test_config_and_data_dir_work_before_or_after_the_subcommand(world: World) -> None:
    sim = world.start_sim([sim_account("a", spot={"USDT": 10, "BTC": 0.001})])
    world.write_config([world.account("a-spot", sim, "a")])
    cfg, data = str(world.config_path), str(world.data_dir)
    before = guard("--config", cfg, "--data-dir", data, "unwind", "alice", "--yes")
    assert before.returncode == 0, before.stderr
    after = guard("unwind", "alice", "--off", "--config", cfg, "--data-dir", data)
    assert after.returncode == 0, after.stderr
    store = StateStore(world.data_dir)
    assert store.flag("alice") is not None and not store.flag("alice").active
    assert [e.kind for e in store.entries(kinds=["unwind_on", "unwind_off"], newest_first=False)] \
        == ["unwind_on", "unwind_off"]


def test_forced_unwind_from_one_process_is_honoured_by_run_once_in_another(world: World) -> None:
    sim = world.start_sim([
        sim_account("al", spot={"USDT": 10, "BTC": 0.001, "ETH": 0.01}),
        sim_account("af", positions=[("SOL/USDT:USDT", "long", 1.0)]),
        sim_account("bo", spot={"USDT": 10, "ETH": 0.01}),
    ])
    world.write_config([
        world.account("al-spot", sim, "al"),
        world.account("al-fut", sim, "af", market="swap"),
        world.account("bo-spot", sim, "bo", user="bob"),
    ])

    unwind = world.cli("unwind", "alice", "--yes", "--reason", "bad day")
    assert unwind.returncode == 0, unwind.stderr
    run = world.cli("run", "--once")
    assert run.returncode == 0, run.stderr

    assert set(sim.exchange.balances("al")) == {"USDT"}
    assert sim.exchange.positions("af") == []
    assert "ETH" in sim.exchange.balances("bo")
    assert "forced unwind active for alice" in run.stderr
    # the flag survives the process ending ("restart") until a person turns it off
    status = world.cli("status", "--json")
    doc = json.loads(status.stdout)
    assert doc["users"]["alice"]["forced_unwind"] is True
    assert doc["users"]["alice"]["by"] == "cli" and doc["users"]["alice"]["reason"] == "bad day"
    assert doc["users"]["bob"]["forced_unwind"] is False


def test_run_once_exits_1_when_an_account_fails(world: World) -> None:
    good = world.start_sim([sim_account("g", spot={"USDT": 10})])
    bad = world.start_sim([sim_account("b", spot={"USDT": 10})])
    world.write_config([world.account("g-spot", good, "g"),
                        world.account("b-spot", bad, "b", user="bob")])
    bad.exchange.inject_fault("/api/", 503)
    result = world.cli("run", "--once")
    assert result.returncode == 1
    assert "b-spot" in result.stderr and "retrying" in result.stderr
    bad.exchange.clear_faults()
    assert world.cli("run", "--once").returncode == 0


def test_status_json_follows_the_contract_without_key_material(world: World) -> None:
    acc = sim_account("s", spot={"USDT": 100, "BTC": 0.001, "DOGE": 40, "TRX": 1.0})
    sim = world.start_sim([acc])
    world.write_config([world.account("s-spot", sim, "s", max_positions=1)],
                       users={"carol": {"max_positions": 3}})
    result = world.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"users", "accounts"}
    assert set(doc["users"]) == {"alice", "carol"}  # every user named in the config
    (account,) = doc["accounts"]
    for key in ("id", "user", "exchange", "market", "quote", "max_positions", "max_notional",
                "position_count", "notional", "positions", "dust", "over_cap",
                "forced_unwind", "error"):
        assert key in account
    assert account["position_count"] == 2 and account["over_cap"] is True
    assert [p["symbol"] for p in account["positions"]] == ["DOGE/USDT", "BTC/USDT"]
    assert [d["symbol"] for d in account["dust"]] == ["TRX/USDT"]
    assert account["error"] is None
    assert sim.exchange.orders == []  # status never closes anything
    for secret in (acc["api_key"], acc["secret"]):
        assert secret not in result.stdout and secret not in result.stderr


def test_status_exits_1_with_a_one_line_error_when_an_account_cannot_be_read(world: World) -> None:
    sim = world.start_sim([sim_account("e", spot={"USDT": 10})])
    world.write_config([world.account("e-spot", sim, "e", store_keys=False)])
    result = world.cli("status", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)["accounts"][0]["error"]
    assert "no API keys" in error and "\n" not in error


def test_unwind_refuses_without_terminal_and_rejects_unknown_users(world: World) -> None:
    sim = world.start_sim([sim_account("a", spot={"USDT": 10})])
    world.write_config([world.account("a-spot", sim, "a")])
    no_tty = world.cli("unwind", "alice", input="alice\n")
    assert no_tty.returncode == 2 and "--yes" in no_tty.stderr
    assert world.cli("unwind", "mallory", "--yes").returncode == 2
    assert StateStore(world.data_dir).forced_unwind_flags() == {}


def _unwind_on_a_terminal(world: World, answer: str) -> tuple[int, str]:
    """Run `guard-app unwind alice` with a real pseudo-terminal and type ``answer``."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "guard_app", "unwind", "alice", "--config",
         str(world.config_path), "--data-dir", str(world.data_dir)],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 30
    while b"to confirm" not in output:
        assert time.monotonic() < deadline, output
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            output += os.read(master, 4096)
    os.write(master, answer.encode() + b"\n")
    code = proc.wait(30)
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    return code, output.decode(errors="replace")


def test_unwind_on_a_terminal_needs_the_user_name(world: World) -> None:
    sim = world.start_sim([sim_account("a", spot={"USDT": 10})])
    world.write_config([world.account("a-spot", sim, "a")])

    code, output = _unwind_on_a_terminal(world, "yes")
    assert code == 1 and "nothing changed" in output
    assert StateStore(world.data_dir).forced_unwind_flags() == {}

    code, output = _unwind_on_a_terminal(world, "alice")
    assert code == 0, output
    assert "alice" in StateStore(world.data_dir).forced_unwind_flags()


def test_keys_set_from_stdin_go_to_the_keyring_and_delete_removes_them(world: World) -> None:
    sim = world.start_sim([sim_account("k", spot={"USDT": 10})])
    world.write_config([world.account("k-spot", sim, "k", store_keys=False)])
    try:
        stored = world.cli("keys", "set", "k-spot",
                           input='{"apiKey": "cli-key-123456", "secret": "cli-secret-654321"}')
        assert stored.returncode == 0, stored.stderr
        keys = world.secrets.get("k-spot")
        assert keys is not None and keys.api_key == "cli-key-123456"
        assert "cli-secret-654321" not in stored.stdout + stored.stderr
        assert "cli-secret-654321" not in world.config_path.read_text()

        deleted = world.cli("keys", "delete", "k-spot")
        assert deleted.returncode == 0 and world.secrets.get("k-spot") is None
    finally:
        world.secrets.delete("k-spot")


def test_keys_set_rejects_bad_input_without_echoing_it(world: World) -> None:
    sim = world.start_sim([sim_account("k", spot={"USDT": 10})])
    world.write_config([world.account("k-spot", sim, "k", store_keys=False)])
    bad = world.cli("keys", "set", "k-spot", input='{"apiKey": "half-a-key-999"')
    assert bad.returncode == 2
    assert "half-a-key-999" not in bad.stderr
    assert world.secrets.get("k-spot") is None
    unknown = world.cli("keys", "set", "nobody", input="{}")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr


def test_status_says_plainly_what_an_exchange_cannot_do(world: World) -> None:
    # coinspot has no fetchOpenOrders in ccxt: a kill switch there can't cancel orders.
    # The account is never reached (no keys): the limitation is known without a request.
    world.write_config([{"id": "c-spot", "user": "carol", "exchange": "coinspot",
                         "market": "spot", "quote": "AUD", "max_positions": 3}])
    result = world.cli("status", "--json")
    (account,) = json.loads(result.stdout)["accounts"]
    assert any("cannot list open orders" in p for p in account["limitations"])
    text = world.cli("status")
    assert "c-spot" in text.stdout and "note: coinspot cannot list open orders" in text.stdout
