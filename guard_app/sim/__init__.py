"""A simulated Binance (spot and USDⓈ-M futures) on 127.0.0.1 for tests, demos and benchmarks.

The real ccxt ``binance`` client (sync and async) runs against it unmodified: point it
there with :func:`ccxt_overrides`. State comes from a TOML scenario
(:func:`load_scenario`); :class:`SimServer` serves it and ``server.exchange`` drives it
while running (prices, positions, revoked keys, faults, latency). The same controls are
JSON endpoints under ``/_sim/`` (see :mod:`guard_app.sim.control`).
"""

from guard_app.sim.exchange import ApiError, OrderRecord, SimExchange
from guard_app.sim.faults import Fault
from guard_app.sim.overrides import ccxt_overrides
from guard_app.sim.scenario import (
    Scenario,
    ScenarioError,
    demo_scenario_path,
    load_scenario,
    parse_scenario,
)
from guard_app.sim.server import SimServer
from guard_app.sim.strategy import SimStrategy

__all__ = [
    "ApiError",
    "Fault",
    "OrderRecord",
    "Scenario",
    "ScenarioError",
    "SimExchange",
    "SimServer",
    "SimStrategy",
    "ccxt_overrides",
    "demo_scenario_path",
    "load_scenario",
    "parse_scenario",
]
