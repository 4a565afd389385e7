"""The demo world: the simulator, a strategy that keeps buying, and a config pointing at it.

``guard-app demo`` (window or headless) and the screenshot script use this. Nothing
here touches a real exchange or the OS keyring: the demo's keys are the simulator's
fake ones, held in a ``MemorySecretStore`` so the demo runs on machines without a
keyring too. Real keys never go through it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from guard_app.core.config import AppConfig, load_config
from guard_app.core.secrets import ApiKeys, MemorySecretStore
from guard_app.sim.overrides import ccxt_overrides
from guard_app.sim.scenario import demo_scenario_path, load_scenario
from guard_app.sim.server import SimServer
from guard_app.sim.strategy import SimStrategy

log = logging.getLogger("guard_app.demo")

# (account id, user, scenario account, market, caps and extras)
DEMO_ACCOUNTS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("alice-binance-spot", "alice", "alice", "spot", {"max_positions": 8}),
    ("alice-binance-futures", "alice", "alice", "swap", {"max_positions": 3,
                                                          "max_notional": 1500}),
    ("bob-binance-spot", "bob", "bob", "spot", {"max_positions": 5, "max_notional": 1200}),
]
DEMO_USERS = {"alice": {"max_positions": 10}}


@dataclass
class DemoWorld:
    """A running simulator with its strategy, config file and data dir."""

    server: SimServer
    strategy: SimStrategy | None
    config_path: Path
    data_dir: Path
    keys: MemorySecretStore
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def config(self) -> AppConfig:
        return load_config(self.config_path)

    def stop(self) -> None:
        if self.strategy is not None:
            self.strategy.stop()
        self.server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def write_demo_config(path: Path, base_url: str, interval: float) -> None:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("guard-app demo: every account points at the local simulator"))
    doc["enforcer"] = {"interval_seconds": interval, "dry_run": False}
    accounts = tomlkit.aot()
    for account_id, user, _sim_name, market, extra in DEMO_ACCOUNTS:
        table: dict[str, Any] = {
            "id": account_id, "user": user, "exchange": "binance", "market": market,
            "quote": "USDT", **extra, "min_position_value": 1.0,
            "ccxt": {**ccxt_overrides(base_url), "timeout": 5000},
        }
        accounts.append(tomlkit.item(table))
    doc["accounts"] = accounts
    doc["users"] = DEMO_USERS
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


def start_demo(
    base_dir: Path | None = None,
    *,
    interval: float = 10.0,
    strategy_interval: float | None = 6.0,
    port: int = 0,
) -> DemoWorld:
    """Start the simulator on the demo scenario and write a config for it.

    ``base_dir`` holds config.toml and data/; a temporary directory when None.
    ``strategy_interval`` None means no simulated strategy.
    """
    tmp = None
    if base_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="guard-app-demo-")
        base_dir = Path(tmp.name)
    base_dir.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(demo_scenario_path())
    server = SimServer(scenario, port=port).start()
    strategy = None
    if strategy_interval:
        strategy = SimStrategy(server.exchange, interval=strategy_interval, seed=7)
        strategy.start()
    config_path = base_dir / "config.toml"
    write_demo_config(config_path, server.base_url, interval)
    keys = MemorySecretStore({
        account_id: ApiKeys(scenario.account(sim_name).api_key, scenario.account(sim_name).secret)
        for account_id, _user, sim_name, _market, _extra in DEMO_ACCOUNTS
    })
    return DemoWorld(server, strategy, config_path, base_dir / "data", keys, tmp)


def run_headless_demo(args: argparse.Namespace) -> int:
    """``guard-app demo`` without a window: the enforcer's log on the terminal."""
    import asyncio

    from guard_app.core.enforcer import Enforcer
    from guard_app.exchanges import make_broker

    world = start_demo(interval=10.0)
    log.info("demo: simulated exchange at %s; a simulated strategy keeps opening positions",
             world.server.base_url)
    log.info("demo: config %s; press Ctrl-C to stop", world.config_path)
    enforcer = Enforcer(world.config, world.data_dir, world.keys, broker_factory=make_broker,
                        source="demo")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, enforcer.stop)
        await enforcer.run()

    try:
        asyncio.run(main())
    finally:
        world.stop()
    return 0
