"""Crash recovery of the headless enforcer (``guard-app run`` in its own process).

* SIGKILL in the middle of a forced unwind, start again: the unwind finishes, nothing
  is closed twice, no client order id repeats, and the journal holds both runs.
* ``run`` stops on SIGTERM within seconds with exit code 0.
* A corrupt or truncated state database stops ``run`` with exit 2 and one line naming
  the file, and the file is left exactly as it was (its forced-unwind flags are not
  silently forgotten by starting over).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from guard_app.core.state import DB_FILENAME, StateStore
from guard_app.sim import SimServer
from tests.fixtures.world import World, sim_account

SPOT = {"USDT": 100, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "BNB": 0.02, "LINK": 0.5,
        "DOT": 1.0, "LTC": 0.1, "AVAX": 0.2, "XRP": 10, "DOGE": 40}
FUTURES = [("BTC/USDT:USDT", "long", 0.002), ("ETH/USDT:USDT", "short", 0.05),
           ("SOL/USDT:USDT", "long", 0.5)]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def start_run(world: World, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "guard_app", "run", *extra,
           "--config", str(world.config_path), "--data-dir", str(world.data_dir)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def accepted(sim: SimServer) -> list:
    return [o for o in sim.exchange.orders if o.accepted]


def quiet(sim: SimServer) -> bool:
    # Every API request read off the wire has been answered (or at least processed).
    return sim.requests_received == sim.exchange.requests_served


def test_sigkill_mid_unwind_then_restart_finishes_without_duplicates(world: World) -> None:
    sim = world.start_sim([sim_account("s", spot=SPOT), sim_account("f", positions=FUTURES)])
    accounts = [world.account("al-spot", sim, "s", max_positions=20),
                world.account("al-fut", sim, "f", market="swap", max_positions=20)]
    for acc in accounts:
        # A slow exchange: ccxt spaces this account's requests 120 ms x cost apart.
        acc["ccxt"]["rateLimit"] = 120
    world.write_config(accounts, interval=60)
    sim.exchange.set_latency(0.1)
    # The kill switch sends an account's closes all at once, so the kill can't land
    # between two closes of one account any more: hold the futures account back (its
    # requests answer 3 s late) so that it lands after the spot closes and before the
    # futures ones.
    sim.exchange.inject_fault("/fapi/", kind="latency", delay=3.0)
    total = len(SPOT) - 1 + len(FUTURES)
    with StateStore(world.data_dir) as state:
        state.set_forced_unwind("alice", True, by="test", reason="crash test")

    first = start_run(world)
    try:
        wait_for(lambda: len(accepted(sim)) >= 2, 30, "the first closes to reach the exchange")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    sim.exchange.clear_faults()
    wait_for(lambda: quiet(sim), 10, "the exchange to finish the killed run's requests")
    closed_before = {o.symbol for o in accepted(sim)}
    assert 0 < len(closed_before) < total, "the kill must land in the middle of the unwind"
    log_before = len(sim.exchange.orders)

    second = start_run(world)
    try:
        wait_for(lambda: set(sim.exchange.balances("s")) == {"USDT"}
                 and sim.exchange.positions("f") == [], 30, "the unwind to finish")
        second.send_signal(signal.SIGTERM)
        started = time.monotonic()
        second.wait(timeout=10)
        stopped_in = time.monotonic() - started
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, second.stderr.read() if second.stderr else ""
    assert stopped_in < 5

    log = sim.exchange.orders
    again = log[log_before:]
    assert again and all(o.accepted for o in again), [o.error_msg for o in again]
    # Nothing closed twice: the second run only closed what the first didn't reach.
    assert not closed_before & {o.symbol for o in again}
    assert len({o.symbol for o in log}) == total == len([o for o in log if o.accepted])
    cids = [o.client_order_id for o in log]
    assert len(cids) == len(set(cids))

    with StateStore(world.data_dir) as state:
        starts = state.entries(kinds={"cycle_start"}, newest_first=False, limit=100)
        sent = state.entries(kinds={"order_sent"}, newest_first=False, limit=100)
        assert state.forced_unwind_flags()["alice"].reason == "crash test"
    cycle_ids = [e.cycle_id for e in starts]
    assert cycle_ids == sorted(set(cycle_ids)) and len(cycle_ids) >= 2
    sent_cycles = {e.cycle_id for e in sent}
    assert cycle_ids[0] in sent_cycles and any(c > cycle_ids[0] for c in sent_cycles)
    journaled = {e.data["client_order_id"] for e in sent}
    assert set(cids) <= journaled  # every order that reached the exchange was journaled


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def _truncated(path: Path) -> None:
    with StateStore(path.parent) as state:
        state.set_forced_unwind("alice", True, by="test", reason="must not be forgotten")
        for i in range(300):  # enough pages that half the file loses tables
            state.journal("snapshot", f"filler {i} " + "x" * 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
def test_corrupt_state_database_stops_run_and_is_left_alone(
    world: World, damage: Callable[[Path], None]
) -> None:
    sim = world.start_sim([sim_account("s", spot={"USDT": 100, "BTC": 0.001})])
    world.write_config([world.account("al-spot", sim, "s")])
    db = world.data_dir / DB_FILENAME
    world.data_dir.mkdir(parents=True, exist_ok=True)
    damage(db)
    for leftover in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        leftover.unlink(missing_ok=True)
    content = db.read_bytes()

    for args in (("run", "--once"), ("run",)):
        result = world.cli(*args, timeout=30)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and str(db) in lines[0], result.stderr
        assert "forced-unwind" in lines[0]
    assert db.read_bytes() == content  # not recreated, not "repaired"
    assert sim.requests_received == 0  # nothing was enforced without the flags
