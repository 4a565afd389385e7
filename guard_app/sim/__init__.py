"""Simulated Binance (spot, USDⓈ-M), OKX v5 and Bybit v5 on 127.0.0.1 for tests, demos and benchmarks.

The real ccxt ``binance``, ``okx`` and ``bybit`` clients (sync and async) run against it
unmodified: point them there with ``ccxt_overrides(base_url, exchange)``. One server
serves all three on one port, routed by path (:mod:`guard_app.sim.server`); each
exchange enforces its published rate limits (:mod:`guard_app.sim.limits`). State comes
from a TOML scenario (:func:`load_scenario`, format in :mod:`guard_app.sim.scenario`);
:class:`SimServer` serves it and ``server.exchange`` drives it while running (prices,
positions, revoked keys, faults, latency). The same controls are JSON endpoints under
``/_sim/`` (see :mod:`guard_app.sim.control`).

The simulator imports nothing of the product (only the standard library and
``guard_app.sim``).
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
