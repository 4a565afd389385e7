"""Kill switch, verify after close, keep flat (DESIGN rules 12-14): the real enforcer
against the simulator through the real ccxt."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Any

from guard_app.core.config import AppConfig
from guard_app.core.enforcer import Enforcer
from guard_app.core.events import (
    AccountRead,
    CycleStarted,
    EnforcerEvent,
    OpenOrdersCancelled,
    OrderFilled,
    UnwindRound,
)
from guard_app.core.state import StateStore
from guard_app.exchanges import make_broker
from tests.fixtures.world import World, sim_account


def run_once(world: World, config: AppConfig, events: list[EnforcerEvent]) -> Any:
    async def go() -> Any:
        enforcer = Enforcer(config, world.data_dir, world.secrets, events.append,
                            broker_factory=make_broker)
        try:
            return await enforcer.run_cycle()
        finally:
            await enforcer.aclose()

    return asyncio.run(go())


def test_kill_switch_cancels_a_resting_order_on_a_symbol_without_a_position(world: World) -> None:
    # A resting buy on ETH (no ETH held): it would reopen a position when it fills.
    acc = sim_account("k", spot={"USDT": 100, "BTC": 0.001},
                      orders=[{"symbol": "ETH/USDT", "side": "buy", "amount": 0.01,
                               "price": 2500.0}])
    sim = world.start_sim([acc])
    config = world.write_config([world.account("k-spot", sim, "k", user="kim")])
    assert len(sim.exchange.open_orders("k")) == 1
    StateStore(world.data_dir).set_forced_unwind("kim", True, by="test", reason="kill")
    events: list[EnforcerEvent] = []

    report = run_once(world, config, events)

    assert report.ok, report.errors
    assert sim.exchange.open_orders("k") == []
    assert set(sim.exchange.balances("k")) == {"USDT"}
    cancelled = [e for e in events if isinstance(e, OpenOrdersCancelled)]
    assert [(e.account_id, e.cancelled, e.error) for e in cancelled] == [("k-spot", 1, None)]
    # the cancel came before the first close order
    first_cancel = events.index(cancelled[0])
    first_read = next(i for i, e in enumerate(events) if isinstance(e, AccountRead))
    assert first_cancel < first_read
    kinds = [e.kind for e in StateStore(world.data_dir).entries(limit=200)]
    assert "orders_cancelled" in kinds and "unwind_round" in kinds


def test_the_account_is_re_read_after_its_closes_and_shown_flat(world: World) -> None:
    sim = world.start_sim([
        sim_account("v", spot={"USDT": 100, "BTC": 0.001, "SOL": 0.1},
                    positions=[("ETH/USDT:USDT", "short", 0.05)]),
    ])
    config = world.write_config([
        world.account("v-spot", sim, "v", user="val"),
        world.account("v-fut", sim, "v", user="val", market="swap"),
    ])
    StateStore(world.data_dir).set_forced_unwind("val", True, by="test", reason="flat")
    events: list[EnforcerEvent] = []

    report = run_once(world, config, events)

    assert report.ok, report.errors
    for account_id in ("v-spot", "v-fut"):
        reads = [e for e in events if isinstance(e, AccountRead)
                 and e.snapshot.account_id == account_id]
        assert [r.verify for r in reads] == [False, True]
        assert reads[0].snapshot.position_count > 0
        assert reads[-1].snapshot.position_count == 0  # what the window shows: flat
        assert report.snapshots[account_id].position_count == 0
    rounds = [e for e in events if isinstance(e, UnwindRound)]
    assert sorted((e.account_id, e.round, e.left) for e in rounds) == [
        ("v-fut", 1, 0), ("v-spot", 1, 0)]


def test_over_cap_closes_are_verified_by_a_fresh_read(world: World) -> None:
    sim = world.start_sim([sim_account("o", spot={"USDT": 10, "BTC": 0.001, "ETH": 0.01,
                                                  "SOL": 0.1})])
    config = world.write_config([world.account("o-spot", sim, "o", max_positions=2)])
    events: list[EnforcerEvent] = []

    run_once(world, config, events)

    reads = [e for e in events if isinstance(e, AccountRead)]
    assert [(r.verify, r.snapshot.position_count, r.over_cap) for r in reads] == [
        (False, 3, True), (True, 2, False)]


def test_a_position_opened_during_an_unwind_is_closed_by_a_fast_re_read(world: World) -> None:
    sim = world.start_sim([sim_account("w", spot={"USDT": 1000, "BTC": 0.001})])
    config = world.write_config([world.account("w-spot", sim, "w", user="wes")],
                                interval=3600)
    config = dataclasses.replace(
        config, enforcer=dataclasses.replace(config.enforcer, fast_interval_seconds=1.0))
    StateStore(world.data_dir).set_forced_unwind("wes", True, by="test", reason="keep flat")
    events: list[EnforcerEvent] = []
    enforcer = Enforcer(config, world.data_dir, world.secrets, events.append,
                        broker_factory=make_broker)
    thread = threading.Thread(target=lambda: asyncio.run(enforcer.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while "BTC" in sim.exchange.balances("w"):
            assert time.monotonic() < deadline, "the first cycle never unwound the account"
            time.sleep(0.02)
        while not any(isinstance(e, CycleStarted) and e.fast for e in list(events)):
            assert time.monotonic() < deadline, "no fast re-read during the unwind"
            time.sleep(0.02)
        # A strategy buys again while the unwind is on: the next full cycle is an hour away.
        sim.exchange.add_balance("w", "ETH", 0.01)
        deadline = time.monotonic() + 20
        while "ETH" in sim.exchange.balances("w"):
            assert time.monotonic() < deadline, "the new position was not closed"
            time.sleep(0.02)
    finally:
        enforcer.stop()
        thread.join(10)
    assert not thread.is_alive()
    fast = [e for e in events if isinstance(e, CycleStarted) and e.fast]
    assert fast and all(e.account_ids == ("w-spot",) for e in fast)
    eth = [e for e in events if isinstance(e, OrderFilled) and e.close.position.symbol == "ETH/USDT"]
    assert len(eth) == 1 and eth[0].cycle_id in {e.cycle_id for e in fast}
    # fast re-reads of a flat account leave no cycle_start/cycle_end behind
    starts = StateStore(world.data_dir).entries(kinds=["cycle_start"], limit=100)
    assert len(starts) == 1
