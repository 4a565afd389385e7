"""``guard-app sim`` / ``python -m guard_app.sim``: run the exchange simulator standalone.

Serves a scenario on 127.0.0.1 until SIGINT/SIGTERM, optionally with the simulated
strategy opening new positions. A bad scenario file or a port in use prints one line to
stderr and exits 2.

One port speaks all three protocols, routed by path: OKX v5 under ``/api/v5/``, Bybit
v5 under ``/v5/``, Binance everywhere else (``/api/v3``, ``/fapi``, ``/sapi`` ...), and
the control API under ``/_sim/``. Each scenario account says which exchange its key
belongs to (``exchange = "okx"``); the banner prints the ``[accounts.ccxt]`` URL
override for each protocol the scenario uses (the ``exchanges.toml`` scenario shipped
with the simulator has accounts on all three).
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from guard_app.sim.overrides import EXCHANGE_API_PATHS, ccxt_overrides
from guard_app.sim.scenario import ScenarioError, demo_scenario_path, load_scenario
from guard_app.sim.server import SimServer
from guard_app.sim.strategy import SimStrategy

__all__ = ["SIM_DESCRIPTION", "add_sim_arguments", "main", "run_sim"]

DEFAULT_PORT = 8765

SIM_DESCRIPTION = (
    "Run guard-app's exchange simulator: simulated Binance, OKX (v5) and Bybit (v5, unified account) "
    "on one port of 127.0.0.1, routed by path (OKX /api/v5/..., Bybit /v5/..., Binance /api/v3, /fapi, "
    "/sapi ...; control API /_sim/...). Each scenario account names its exchange; the banner prints the "
    "ccxt URL override for each. Built-in scenarios: demo.toml (Binance) and exchanges.toml (all three)."
)


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options (``--port``, ``--scenario``, ``--strategy``) to a parser
    (and its description, so ``guard-app sim --help`` says how the three exchanges are served)."""
    parser.description = SIM_DESCRIPTION
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--scenario", type=Path, default=None,
                        help="scenario TOML file, or the name of a built-in one: demo (Binance, the default) "
                             "or exchanges (Binance, OKX and Bybit accounts)")
    parser.add_argument("--strategy", action=argparse.BooleanOptionalAction, default=False,
                        help="run a simulated strategy that keeps opening small positions")
    parser.add_argument("--strategy-interval", type=float, default=5.0,
                        help="seconds between the strategy's trades (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for faults and the strategy")


def run_sim(args: argparse.Namespace, stop_event: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop_event``); returns the exit code.

    ``stop_event`` lets tests and embedding code stop it without a signal.
    """
    scenario_path = args.scenario or demo_scenario_path()
    if str(scenario_path) in ("demo", "exchanges"):
        scenario_path = demo_scenario_path().with_name(f"{scenario_path}.toml")
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        print(f"guard-app sim: bad scenario: {exc}", file=sys.stderr)
        return 2
    server = SimServer(scenario, port=args.port, seed=getattr(args, "seed", 0))
    try:
        server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            problem = f"port {args.port} on 127.0.0.1 is already in use (pick another with --port)"
        else:
            problem = f"can't listen on 127.0.0.1:{args.port} ({exc.strerror or exc})"
        print(f"guard-app sim: {problem}", file=sys.stderr)
        return 2
    stop = stop_event or threading.Event()
    strategy = None
    if getattr(args, "strategy", False):
        strategy = SimStrategy(server.exchange, interval=getattr(args, "strategy_interval", 5.0),
                               seed=getattr(args, "seed", 0)).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        protocols = [p for p in EXCHANGE_API_PATHS if any(a.exchange == p for a in scenario.accounts)] or ["binance"]
        print(f"Simulated {', '.join(p.capitalize() if p != 'okx' else 'OKX' for p in protocols)} serving "
              f"{scenario_path} on {server.base_url}", flush=True)
        print("Accounts: " + ", ".join(f"{a.name} ({a.exchange})" for a in scenario.accounts)
              + f" (their fake API keys are in {Path(scenario_path).name})", flush=True)
        print("Point guard-app at it: add this to each simulated account in config.toml:", flush=True)
        for protocol in protocols:
            print(f"  {protocol} accounts:\n  [accounts.ccxt]\n  {_urls_toml(server.base_url, protocol)}", flush=True)
        print(f"Control API: {server.base_url}/_sim/state (see guard_app/sim/control.py). "
              "Stop with Ctrl+C.", flush=True)
        if strategy is not None:
            print(f"Simulated strategy: a new position per account every {strategy.interval:g} s", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        if strategy is not None:
            strategy.stop()
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Simulator stopped.", flush=True)
    return 0


def _urls_toml(base_url: str, exchange: str = "binance") -> str:
    """The ``urls`` line of an ``[accounts.ccxt]`` table pointing ccxt at ``base_url``."""
    api = ccxt_overrides(base_url, exchange)["urls"]["api"]
    return "urls = { api = { " + ", ".join(f'{k} = "{v}"' for k, v in api.items()) + " } }"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guard_app.sim", description=SIM_DESCRIPTION)
    add_sim_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return run_sim(parser.parse_args(argv))
