"""``guard-app sim`` / ``python -m guard_app.sim``: run the exchange simulator standalone.

Serves a scenario on 127.0.0.1 until SIGINT/SIGTERM, optionally with the simulated
strategy opening new positions. A bad scenario file or a port in use prints one line to
stderr and exits 2.
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

from guard_app.sim.overrides import ccxt_overrides
from guard_app.sim.scenario import ScenarioError, demo_scenario_path, load_scenario
from guard_app.sim.server import SimServer
from guard_app.sim.strategy import SimStrategy

__all__ = ["add_sim_arguments", "main", "run_sim"]

DEFAULT_PORT = 8765


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options (``--port``, ``--scenario``, ``--strategy``) to a parser."""
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--scenario", type=Path, default=None,
                        help="scenario TOML file (default: the built-in demo scenario)")
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
        print(f"Simulated Binance serving {scenario_path} on {server.base_url}", flush=True)
        print("Accounts: " + ", ".join(a.name for a in scenario.accounts)
              + f" (their fake API keys are in {Path(scenario_path).name})", flush=True)
        print("Point guard-app at it: add this to each simulated account in config.toml:", flush=True)
        print(f"  [accounts.ccxt]\n  {_urls_toml(server.base_url)}", flush=True)
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


def _urls_toml(base_url: str) -> str:
    """The ``urls`` line of an ``[accounts.ccxt]`` table pointing ccxt at ``base_url``."""
    api = ccxt_overrides(base_url)["urls"]["api"]
    return "urls = { api = { " + ", ".join(f'{k} = "{v}"' for k, v in api.items()) + " } }"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guard_app.sim", description="Run guard-app's exchange simulator.")
    add_sim_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return run_sim(parser.parse_args(argv))
