"""EnforcerHost: the enforcer on its own QThread, against the real simulator over ccxt.

These tests block the GUI thread, crash and stall the worker for real, and check
that closes still reach the simulator.
"""

from __future__ import annotations

import time

import pytest
from PySide6.QtWidgets import QApplication

from guard_app.core.events import AccountRead, CycleFinished, Heartbeat, OrderFilled
from tests.fixtures.world import World, sim_account
from tests.gui.conftest import EventLog, MakeHost

pytestmark = [pytest.mark.gui, pytest.mark.keyring]

UNDER_CAP = {"USDT": 500, "BTC": 0.001, "ETH": 0.01}  # 2 positions (60 and 30 USDT)
EXTRA = {"SOL": 0.1, "BNB": 0.02, "LINK": 0.5}  # 15, 12 and 7.5 USDT


def one_account(world: World, *, interval: float, max_positions: int = 2):
    sim = world.start_sim([sim_account("a", spot=UNDER_CAP)])
    config = world.write_config(
        [world.account("a-spot", sim, "a", max_positions=max_positions)], interval=interval)
    return sim, config


def push_over_cap(sim) -> None:
    for asset, amount in EXTRA.items():
        sim.exchange.add_balance("a", asset, amount)


def accepted_sells(sim) -> list:
    return [o for o in sim.exchange.orders if o.accepted and o.side == "sell"]


def test_orders_reach_the_simulator_while_the_gui_thread_is_blocked(
        qtbot, world: World, make_host: MakeHost) -> None:
    sim, config = one_account(world, interval=1.0)
    host = make_host(config, world.data_dir, world.secrets)
    log = EventLog(host)
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=10_000)
    assert not accepted_sells(sim)

    push_over_cap(sim)
    blocked_from = time.time()
    time.sleep(3.5)  # the GUI thread is busy for 3.5 intervals: no Qt events at all
    blocked_until = time.time()

    during = [o for o in accepted_sells(sim) if blocked_from <= o.timestamp <= blocked_until]
    assert sorted(o.symbol for o in during) == ["BNB/USDT", "LINK/USDT", "SOL/USDT"]
    # the queued events arrive once the GUI thread is free again
    qtbot.waitUntil(lambda: len(log.of(OrderFilled)) >= 3, timeout=5_000)


def test_forced_unwind_from_the_gui_thread_wakes_the_enforcer_at_once(
        qtbot, world: World, make_host: MakeHost) -> None:
    sim, config = one_account(world, interval=60.0, max_positions=8)
    host = make_host(config, world.data_dir, world.secrets)
    log = EventLog(host)
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=10_000)
    assert not accepted_sells(sim)

    flag = host.set_forced_unwind("alice", True, by="gui", reason="test")

    assert flag.active and host.state().flag("alice").active
    # the next scheduled cycle is a minute away: only the wake can do this in time
    qtbot.waitUntil(lambda: len(accepted_sells(sim)) >= 2, timeout=10_000)
    assert {o.symbol for o in accepted_sells(sim)} == {"BTC/USDT", "ETH/USDT"}


def test_pause_stops_cap_enforcement_and_resume_restores_it(
        qtbot, world: World, make_host: MakeHost) -> None:
    sim, config = one_account(world, interval=60.0)
    host = make_host(config, world.data_dir, world.secrets)
    log = EventLog(host)
    host.pause()
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=10_000)
    push_over_cap(sim)
    host.wake()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 2, timeout=10_000)
    assert host.paused
    assert not accepted_sells(sim)
    assert any(isinstance(e, Heartbeat) and e.paused for e in log.events)

    host.resume()

    qtbot.waitUntil(lambda: len(accepted_sells(sim)) >= 3, timeout=10_000)
    assert not host.paused


def test_a_crashed_worker_is_reported_and_restarted(
        qtbot, world: World, make_host: MakeHost) -> None:
    sim, config = one_account(world, interval=60.0)
    host = make_host(config, world.data_dir, world.secrets, restart_backoff=0.2)
    log = EventLog(host)
    crashes: list[str] = []
    host.crashed.connect(crashes.append)
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=10_000)
    worker = host._worker
    assert worker is not None and worker.loop is not None

    # Kill the worker's event loop from outside: run_until_complete() raises and the
    # thread ends, as it would on any unexpected failure of the loop itself.
    with qtbot.waitSignal(host.crashed, timeout=5_000):
        worker.loop.call_soon_threadsafe(worker.loop.stop)

    assert "Event loop stopped" in crashes[0]
    assert not worker.isRunning()
    # restarted automatically: a new thread, a new cycle, and it still enforces
    before = log.cycles_finished()
    qtbot.waitUntil(lambda: log.cycles_finished() > before, timeout=10_000)
    assert host.alive and host._worker is not worker
    push_over_cap(sim)
    host.wake()
    qtbot.waitUntil(lambda: len(accepted_sells(sim)) >= 3, timeout=10_000)
    assert len(crashes) == 1


def test_a_stalled_enforcer_is_reported_and_recovers(
        qtbot, world: World, make_host: MakeHost) -> None:
    _sim, config = one_account(world, interval=60.0)
    host = make_host(config, world.data_dir, world.secrets, stall_after=1.0)
    log = EventLog(host)
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=10_000)
    worker = host._worker
    assert worker is not None and worker.loop is not None

    # Block the enforcer's own loop (as a hung call would): no heartbeats for 2.5 s.
    with qtbot.waitSignal(host.stalled, timeout=5_000) as stalled:
        worker.loop.call_soon_threadsafe(time.sleep, 2.5)

    assert stalled.args[0] >= 1.0
    beats = len(log.of(Heartbeat))
    qtbot.waitUntil(lambda: len(log.of(Heartbeat)) > beats, timeout=5_000)
    assert host.alive


def test_a_blocked_gui_thread_is_not_taken_for_a_stall(
        qtbot, world: World, make_host: MakeHost) -> None:
    _sim, config = one_account(world, interval=60.0)
    # Heartbeats come every 1.0-1.2 s: allow two of them, and block the GUI thread for
    # longer than that, so a stall check right after the block would see an old beat
    # if beats were being recorded on the GUI thread.
    host = make_host(config, world.data_dir, world.secrets, stall_after=2.5)
    log = EventLog(host)
    stalls: list[float] = []
    host.stalled.connect(stalls.append)
    host.start()
    qtbot.waitUntil(lambda: len(log.of(Heartbeat)) >= 1, timeout=10_000)

    time.sleep(3.5)  # the GUI thread is busy; the enforcer keeps beating
    beats = len(log.of(Heartbeat))
    qtbot.waitUntil(lambda: len(log.of(Heartbeat)) > beats + 1, timeout=5_000)
    QApplication.processEvents()

    assert stalls == []


def test_restart_and_update_config(qtbot, world: World, make_host: MakeHost) -> None:
    sim, config = one_account(world, interval=60.0, max_positions=8)
    host = make_host(config, world.data_dir, world.secrets)
    log = EventLog(host)
    running: list[bool] = []
    host.running_changed.connect(running.append)
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=10_000)
    first = host._worker

    host.restart()

    assert host._worker is not first and first is not None and not first.isRunning()
    assert running == [True, False, True]
    before = log.cycles_finished()
    qtbot.waitUntil(lambda: log.cycles_finished() > before, timeout=10_000)

    # a tighter cap from the accounts dialog takes effect from the next cycle
    tighter = world.write_config(
        [world.account("a-spot", sim, "a", max_positions=1)], interval=60.0)
    with qtbot.waitSignal(host.config_changed, timeout=1_000):
        host.update_config(tighter)
    qtbot.waitUntil(lambda: len(accepted_sells(sim)) >= 1, timeout=10_000)
    assert [o.symbol for o in accepted_sells(sim)] == ["ETH/USDT"]
    reads = [e for e in log.of(AccountRead) if e.caps.max_positions == 1]
    assert reads, "the enforcer never read the account with the new cap"
    assert host.stop() and not host.alive
    assert isinstance(log.of(CycleFinished)[-1], CycleFinished)
