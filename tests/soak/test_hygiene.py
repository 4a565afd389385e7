"""Clock and rate-limit hygiene against the simulator (real ccxt over HTTP).

* The exchange's clock off by more than recvWindow (Binance -1021): the account fails
  one cycle with a clock message and is enforced again in the next one (the broker
  switches ccxt to ``adjustForTimeDifference`` and reloads).
* HTTP 429/418 with ``Retry-After``: that exchange gets no request at all until the
  time is up, while another exchange keeps being enforced; afterwards it is enforced.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from guard_app.core.enforcer import CycleReport, Enforcer
from guard_app.exchanges import make_broker
from tests.fixtures.world import World, sim_account

THREE = {"USDT": 100, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1}  # 60, 30, 15 USDT


@pytest.mark.parametrize("skew_ms", [-90_000, 90_000], ids=["exchange-behind", "exchange-ahead"])
def test_clock_skew_recovers_in_the_next_cycle(world: World, skew_ms: int) -> None:
    sim = world.start_sim([sim_account("c", spot=THREE)])
    config = world.write_config([world.account("c-spot", sim, "c", max_positions=2)])
    sim.exchange.set_clock_skew(skew_ms)

    async def go() -> tuple[CycleReport, CycleReport]:
        enforcer = Enforcer(config, world.data_dir, world.secrets, broker_factory=make_broker)
        try:
            return await enforcer.run_cycle(), await enforcer.run_cycle()
        finally:
            await enforcer.aclose()

    first, second = asyncio.run(go())

    assert "clock out of sync" in first.errors["c-spot"], first.errors
    assert second.ok, second.errors
    closes = [o for o in sim.exchange.orders if o.accepted]
    assert [o.symbol for o in closes] == ["SOL/USDT"]
    assert closes[0].client_order_id.startswith(f"ga{second.cycle_id}n")  # sent by cycle 2


@pytest.mark.parametrize("status", [429, 418])
def test_retry_after_parks_only_that_exchange_and_sends_nothing_meanwhile(
    world: World, status: int
) -> None:
    slow = world.start_sim([sim_account("a", spot=THREE)])
    other = world.start_sim([sim_account("b", spot=THREE)])
    config = world.write_config([
        world.account("a-spot", slow, "a", user="ann", max_positions=2),
        world.account("b-spot", other, "b", user="bea", max_positions=3),
    ], interval=1)
    retry_after = 2
    slow.exchange.inject_fault("/api/", status, retry_after=retry_after, count=1)

    async def go() -> tuple[list[tuple[float, int, int]], float, float]:
        enforcer = Enforcer(config, world.data_dir, world.secrets, broker_factory=make_broker)
        try:
            t0 = time.monotonic()
            first = await enforcer.run_cycle()
            assert "a-spot" in first.errors and "b-spot" not in first.errors
            assert "rate limited" in first.errors["a-spot"]
            assert slow.requests_received == 1
            # The park began after t0, so it lasts at least until t0 + Retry-After.
            during: list[tuple[float, int, int]] = []
            while time.monotonic() < t0 + retry_after - 0.1:
                before = other.requests_received
                cycle_start = time.monotonic()
                report = await enforcer.run_cycle()
                assert "a-spot" in report.errors and "b-spot" not in report.errors
                during.append((cycle_start, slow.requests_received, other.requests_received - before))
                await asyncio.sleep(0.05)
            # Once the time is up, the parked exchange is enforced again.
            deadline = time.monotonic() + 5
            while not [o for o in slow.exchange.orders if o.accepted]:
                assert time.monotonic() < deadline, "the parked exchange was never retried"
                await asyncio.sleep(0.05)
                await enforcer.run_cycle()
            return during, t0, time.monotonic()
        finally:
            await enforcer.aclose()

    during, t0, resumed = asyncio.run(go())

    assert len(during) >= 2
    assert all(sent_to_slow == 1 for _, sent_to_slow, _ in during)  # nothing after the 429
    assert all(sent_to_other > 0 for _, _, sent_to_other in during)  # the other kept going
    assert resumed - t0 >= retry_after
    assert [o.symbol for o in slow.exchange.orders if o.accepted] == ["SOL/USDT"]
    assert [o.symbol for o in other.exchange.orders if o.accepted] == []
