"""Between cycles the enforcer keeps each account's client warm (issue 11: the first
kill after a quiet hour is as fast as the tenth), without ever holding the account."""

from __future__ import annotations

import asyncio

import pytest

import guard_app.core.enforcer as enforcer_module
from guard_app.core.enforcer import Enforcer
from guard_app.exchanges import make_broker
from tests.fixtures.world import World, sim_account


def test_idle_accounts_are_kept_warm_between_cycles(world: World,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enforcer_module, "KEEP_WARM_SECONDS", 0.05)
    sim = world.start_sim([sim_account("w", spot={"USDT": 100, "BTC": 0.001})])
    config = world.write_config([world.account("w-spot", sim, "w")], interval=3600)
    warmed = asyncio.Event()
    locked_while_warming: list[bool] = []

    def factory(account, keys):
        broker = make_broker(account, keys)
        real_warm = broker.warm

        async def warm() -> None:
            runtime = enforcer._accounts[account.id]  # noqa: SLF001 - the test's own probe
            locked_while_warming.append(runtime.lock.locked())
            await real_warm(idle=0.0)  # make the keep-alive request now
            warmed.set()

        broker.warm = warm  # type: ignore[method-assign]
        return broker

    enforcer = Enforcer(config, world.data_dir, world.secrets, broker_factory=factory)

    async def go() -> None:
        task = asyncio.create_task(enforcer.run())
        try:
            await asyncio.wait_for(warmed.wait(), timeout=15)
        finally:
            enforcer.stop()
            await task

    asyncio.run(go())  # TimeoutError: the idle account's client was never kept warm
    assert warmed.is_set()
    assert locked_while_warming and not any(locked_while_warming)  # never holds the account
