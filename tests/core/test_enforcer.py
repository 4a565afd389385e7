"""The enforcer against the simulator: real ccxt over HTTP, real keyring, real SQLite."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from guard_app.core.enforcer import Enforcer
from guard_app.core.events import (
    AccountError,
    AccountRead,
    EnforcerEvent,
    FlagsChanged,
    OrderFilled,
    UnwindProgress,
)
from guard_app.core.state import StateStore
from guard_app.exchanges import make_broker
from tests.fixtures.world import World, sim_account


def run_cycle(world: World, config, events: list[EnforcerEvent] | None = None):
    async def go():
        enforcer = Enforcer(config, world.data_dir, world.secrets,
                            events.append if events is not None else None,
                            broker_factory=make_broker)
        try:
            return await enforcer.run_cycle()
        finally:
            await enforcer.aclose()

    return asyncio.run(go())


def spot_ten() -> dict[str, float]:
    # values: BTC 60, ETH 30, SOL 15, BNB 12, LINK 7.5, DOT 7, LTC 8, AVAX 7, XRP 6, DOGE 6.4
    return {"USDT": 500, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "BNB": 0.02, "LINK": 0.5,
            "DOT": 1.0, "LTC": 0.1, "AVAX": 0.2, "XRP": 10, "DOGE": 40}


def test_spot_over_cap_closes_the_smallest_and_ends_at_the_cap(world: World) -> None:
    sim = world.start_sim([sim_account("a", spot=spot_ten())])
    config = world.write_config([world.account("a-spot", sim, "a", max_positions=8)])
    events: list[EnforcerEvent] = []

    report = run_cycle(world, config, events)

    assert report.ok, report.errors
    sold = sorted(o.symbol for o in sim.exchange.orders if o.accepted)
    assert sold == ["DOGE/USDT", "XRP/USDT"]  # the two smallest (6.4 and 6.0 USDT)
    assert all(o.side == "sell" and o.type == "market" for o in sim.exchange.orders)
    balances = sim.exchange.balances("a")
    assert "XRP" not in balances and "DOGE" not in balances
    assert "BTC" in balances and "AVAX" in balances
    # the next cycle sees 8/8 and does nothing
    sim.exchange.clear_order_log()
    again = run_cycle(world, config)
    assert again.snapshots["a-spot"].position_count == 8
    assert sim.exchange.orders == []
    filled = [e for e in events if isinstance(e, OrderFilled)]
    assert {e.close.position.symbol for e in filled} == {"DOGE/USDT", "XRP/USDT"}
    kinds = [e.kind for e in StateStore(world.data_dir).entries(limit=500, newest_first=False)]
    for kind in ("cycle_start", "snapshot", "over_cap", "decision", "order_sent",
                 "order_filled", "intervention", "cycle_end"):
        assert kind in kinds


def test_futures_over_cap_closes_long_and_short_reduce_only_never_flipped(world: World) -> None:
    positions = [("BTC/USDT:USDT", "long", 0.01),      # 600
                 ("ETH/USDT:USDT", "short", 0.05),     # 150
                 ("SOL/USDT:USDT", "long", 0.5),       # 75
                 ("XRP/USDT:USDT", "short", 100.0)]    # 60
    sim = world.start_sim([sim_account("f", positions=positions)])
    config = world.write_config(
        [world.account("f-fut", sim, "f", market="swap", max_positions=2)])

    report = run_cycle(world, config)

    assert report.ok, report.errors
    orders = {o.symbol: o for o in sim.exchange.orders if o.accepted}
    assert set(orders) == {"SOL/USDT:USDT", "XRP/USDT:USDT"}
    assert orders["XRP/USDT:USDT"].side == "buy"  # a short is closed with a buy
    assert orders["SOL/USDT:USDT"].side == "sell"
    assert all(o.reduce_only for o in orders.values())
    left = {p["symbol"]: p for p in sim.exchange.positions("f")}
    assert set(left) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert left["ETH/USDT:USDT"]["side"] == "short"
    assert left["ETH/USDT:USDT"]["contracts"] == pytest.approx(0.05)


def test_forced_unwind_closes_every_account_of_the_user_only(world: World) -> None:
    sim = world.start_sim([
        sim_account("al", spot={"USDT": 100, "BTC": 0.001, "SOL": 0.1}),
        sim_account("af", positions=[("ETH/USDT:USDT", "short", 0.05)]),
        sim_account("bo", spot={"USDT": 100, "ETH": 0.01}),
    ])
    config = world.write_config([
        world.account("al-spot", sim, "al", user="alice"),
        world.account("al-fut", sim, "af", user="alice", market="swap"),
        world.account("bo-spot", sim, "bo", user="bob"),
    ])
    StateStore(world.data_dir).set_forced_unwind("alice", True, by="test", reason="bad day")
    events: list[EnforcerEvent] = []

    report = run_cycle(world, config, events)

    assert report.ok, report.errors
    assert set(sim.exchange.balances("al")) == {"USDT"}
    assert sim.exchange.positions("af") == []
    assert "ETH" in sim.exchange.balances("bo")  # bob is untouched
    progress = [e for e in events if isinstance(e, UnwindProgress)]
    assert [(p.user, p.closed, p.total) for p in progress] == [("alice", 3, 3)]


def test_failing_account_does_not_stop_another_and_is_retried_next_cycle(world: World) -> None:
    broken = world.start_sim([sim_account("x", spot={"USDT": 10, "BTC": 0.001, "ETH": 0.01})])
    healthy = world.start_sim([sim_account("y", spot=spot_ten())])
    config = world.write_config([
        world.account("x-spot", broken, "x", user="xavier", max_positions=1),
        world.account("y-spot", healthy, "y", user="yara", max_positions=8),
    ])
    broken.exchange.inject_fault("/api/", 503)

    report = run_cycle(world, config)

    assert "x-spot" in report.errors and "retrying" in report.errors["x-spot"]
    assert "y-spot" not in report.errors
    assert len([o for o in healthy.exchange.orders if o.accepted]) == 2
    assert broken.exchange.orders == []

    broken.exchange.clear_faults()
    second = run_cycle(world, config)
    assert second.ok, second.errors
    assert [o.symbol for o in broken.exchange.orders if o.accepted] == ["ETH/USDT"]


def test_dropped_and_hanging_exchanges_do_not_delay_another_account(world: World) -> None:
    dropping = world.start_sim([sim_account("x", spot={"USDT": 10, "BTC": 0.001})])
    hanging = world.start_sim([sim_account("z", spot={"USDT": 10, "BTC": 0.001})])
    healthy = world.start_sim([sim_account("y", spot=spot_ten())])
    config = world.write_config([
        world.account("x-spot", dropping, "x", user="xavier"),
        world.account("z-spot", hanging, "z", user="zoe"),  # ccxt timeout is 3 s
        world.account("y-spot", healthy, "y", user="yara", max_positions=9),
    ])
    dropping.exchange.inject_fault("/api/", kind="drop")
    hanging.exchange.inject_fault("/api/", kind="latency", delay=8)
    events: list[EnforcerEvent] = []

    report = run_cycle(world, config, events)

    assert "unreachable" in report.errors["x-spot"] and "retrying" in report.errors["x-spot"]
    assert "retrying" in report.errors["z-spot"]
    filled = [e.ts for e in events if isinstance(e, OrderFilled)]
    timed_out = next(e.ts for e in events if isinstance(e, AccountError) and e.account_id == "z-spot")
    # the healthy account was read and enforced while the hanging one was still waiting
    assert len(filled) == 1 and filled[0] < timed_out
    assert [o.symbol for o in healthy.exchange.orders if o.accepted] == ["XRP/USDT"]


def test_locked_balances_are_freed_and_closed_dust_untouched(world: World) -> None:
    acc = sim_account(
        "l", spot={"USDT": 100, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "TRX": 1.0},
        orders=[{"symbol": "SOL/USDT", "side": "sell", "amount": 0.1, "price": 300.0}],
    )
    sim = world.start_sim([acc])
    config = world.write_config([world.account("l-spot", sim, "l", max_positions=2)])
    assert sim.exchange.balances("l")["SOL"]["locked"] == pytest.approx(0.1)

    report = run_cycle(world, config)

    assert report.ok, report.errors
    snap = report.snapshots["l-spot"]
    assert [h.symbol for h in snap.dust] == ["TRX/USDT"]  # 0.12 USDT
    assert "SOL" not in sim.exchange.balances("l")
    assert sim.exchange.open_orders("l") == []
    assert sim.exchange.balances("l")["TRX"]["total"] == pytest.approx(1.0)
    assert all(o.symbol != "TRX/USDT" for o in sim.exchange.orders)


def test_wrong_key_needs_the_user_and_others_proceed(world: World) -> None:
    sim = world.start_sim([sim_account("good", spot=spot_ten()),
                           sim_account("bad", spot={"USDT": 1, "BTC": 0.001})])
    good = world.account("good-spot", sim, "good", user="gina")
    bad = world.account("bad-spot", sim, "bad", user="ben", store_keys=False)
    from guard_app.core.secrets import ApiKeys

    world.secrets.set("bad-spot", ApiKeys("bad-apikey-0123456789", "wrong-secret"))
    config = world.write_config([good, bad])
    events: list[EnforcerEvent] = []

    report = run_cycle(world, config, events)

    errors = [e for e in events if isinstance(e, AccountError)]
    assert [(e.account_id, e.kind) for e in errors] == [("bad-spot", "needs_user")]
    assert "needs you" in errors[0].message
    assert "good-spot" in report.snapshots
    assert len([o for o in sim.exchange.orders if o.accepted]) == 2


def test_missing_keys_are_reported_and_skipped(world: World) -> None:
    sim = world.start_sim([sim_account("k", spot=spot_ten())])
    config = world.write_config([world.account("nokeys-spot", sim, "k", store_keys=False)])
    events: list[EnforcerEvent] = []

    report = run_cycle(world, config, events)

    assert "keys set nokeys-spot" in report.errors["nokeys-spot"]
    assert [e.kind for e in events if isinstance(e, AccountError)] == ["no_keys"]


def test_dry_run_plans_but_sends_nothing(world: World) -> None:
    sim = world.start_sim([sim_account("d", spot=spot_ten())])
    config = world.write_config([world.account("d-spot", sim, "d")], dry_run=True)

    report = run_cycle(world, config)

    assert [pc.position.symbol for pc in report.planned] == ["XRP/USDT", "DOGE/USDT"]
    assert sim.exchange.orders == []
    decisions = StateStore(world.data_dir).entries(kinds=["decision"])
    assert len(decisions) == 2 and all("dry run" in d.message for d in decisions)


def test_user_cap_closes_smallest_across_accounts(world: World) -> None:
    sim = world.start_sim([
        sim_account("u1", spot={"USDT": 10, "BTC": 0.001, "XRP": 10}),   # 60, 6
        sim_account("u2", spot={"USDT": 10, "ETH": 0.01, "DOGE": 40}),   # 30, 6.4
    ])
    config = world.write_config(
        [world.account("u1-spot", sim, "u1"), world.account("u2-spot", sim, "u2")],
        users={"alice": {"max_positions": 2}},
    )

    report = run_cycle(world, config)

    assert report.ok, report.errors
    assert sorted(o.symbol for o in sim.exchange.orders if o.accepted) == ["DOGE/USDT", "XRP/USDT"]


def test_rate_limit_is_honoured_for_that_exchange(world: World) -> None:
    sim = world.start_sim([sim_account("r", spot=spot_ten())])
    config = world.write_config([world.account("r-spot", sim, "r")])
    sim.exchange.inject_fault("/api/v3/account", 429, retry_after=120, count=1)
    events: list[EnforcerEvent] = []

    async def go():
        enforcer = Enforcer(config, world.data_dir, world.secrets, events.append,
                            broker_factory=make_broker)
        try:
            first = await enforcer.run_cycle()
            requests_after_first = sim.exchange.requests_served
            second = await enforcer.run_cycle()
            return first, second, requests_after_first, sim.exchange.requests_served
        finally:
            await enforcer.aclose()

    _first, second, served_before, served_after = asyncio.run(go())
    kinds = [e.kind for e in events if isinstance(e, AccountError)]
    assert kinds == ["rate_limited", "rate_limited"]
    assert "slow down" in second.errors["r-spot"]
    assert served_after == served_before  # the parked exchange was not asked again
    assert sim.exchange.orders == []


def test_flag_set_by_another_process_wakes_a_running_enforcer(world: World) -> None:
    sim = world.start_sim([sim_account("w", spot={"USDT": 10, "BTC": 0.001, "ETH": 0.01})])
    world.write_config([world.account("w-spot", sim, "w")], interval=3600)
    events: list[EnforcerEvent] = []
    unwound = threading.Event()

    def observe(event: EnforcerEvent) -> None:
        events.append(event)
        if isinstance(event, UnwindProgress) and event.closed == 2:
            unwound.set()

    from guard_app.core.config import load_config

    enforcer = Enforcer(load_config(world.config_path), world.data_dir, world.secrets, observe,
                        broker_factory=make_broker)
    thread = threading.Thread(target=lambda: asyncio.run(enforcer.run()), daemon=True)
    thread.start()
    try:
        # first cycle done (nothing to close) -> now the enforcer sleeps for an hour
        deadline = time.monotonic() + 20
        while not any(isinstance(e, AccountRead) for e in events):
            assert time.monotonic() < deadline, "first cycle never ran"
            time.sleep(0.02)
        started = time.monotonic()
        result = world.cli("unwind", "alice", "--yes")
        assert result.returncode == 0, result.stderr
        assert unwound.wait(15), "the running enforcer did not pick up the flag"
        assert time.monotonic() - started < 15
        assert any(isinstance(e, FlagsChanged) and e.active_users == ("alice",) for e in events)
        assert set(sim.exchange.balances("w")) == {"USDT"}
    finally:
        enforcer.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_no_key_material_in_logs_journal_or_errors(world: World, caplog) -> None:
    good = sim_account("s", spot=spot_ten())
    sim = world.start_sim([good, sim_account("t", spot={"USDT": 1})])
    from guard_app.core.secrets import ApiKeys

    bad_keys = ApiKeys("t-apikey-0123456789", "not-the-secret-xyz")
    config = world.write_config([
        world.account("s-spot", sim, "s"),
        world.account("t-spot", sim, "t", user="tom", store_keys=False),
    ])
    world.secrets.set("t-spot", bad_keys)
    caplog.set_level(logging.DEBUG)
    events: list[EnforcerEvent] = []

    report = run_cycle(world, config, events)

    secrets = [good["api_key"], good["secret"], bad_keys.api_key, bad_keys.secret]
    journal = "\n".join(
        f"{e.message} {e.data}" for e in StateStore(world.data_dir).entries(limit=1000)
    )
    texts = [caplog.text, journal, repr(report), repr(events)]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "t-spot" in report.errors  # the bad key did fail, so its error text was checked


def test_loop_survives_an_observer_that_raises(world: World, tmp_path: Path) -> None:
    sim = world.start_sim([sim_account("o", spot=spot_ten())])
    config = world.write_config([world.account("o-spot", sim, "o")])

    def broken_observer(event: EnforcerEvent) -> None:
        raise RuntimeError("observer bug")

    async def go():
        enforcer = Enforcer(config, world.data_dir, world.secrets, broken_observer,
                            broker_factory=make_broker)
        try:
            return await enforcer.run_cycle()
        finally:
            await enforcer.aclose()

    report = asyncio.run(go())
    assert len(report.orders) == 2
