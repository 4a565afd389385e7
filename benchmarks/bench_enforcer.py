"""Enforcer benchmarks (issue 3 targets): cycle time and CPU, and how they scale.

The simulator runs in its own process (``python -m guard_app.sim``) so the CPU figures
are the enforcer's alone; it answers every request after 50 ms of latency and enforces
Binance's published limits (request weight per minute per IP, shared by every account
here since they all come from 127.0.0.1). Keys come from an in-memory keyring backend
behind the real ``SecretStore``: these rows measure the enforcer's loop, not D-Bus.
(The kill latency, with a real keyring and real processes, is ``bench_kill.py``.)

* full cycle: 50 accounts x 30 positions, nothing to close: wall and CPU time.
* scaling: cycle wall/CPU time with 1/10/50/100 accounts. 100 accounts read through
  one IP at one cycle a second spend Binance's weight a minute within a few cycles
  (the default interval, 60 s, is far inside it): the limiter then parks the accounts
  whose next request would wait longer than it waits (they are read when the window
  frees) instead of drawing 429s. The row says from which cycle, with the 429/418
  answers the simulator sent; its times come from the cycles that read every account.

``python benchmarks/bench_enforcer.py [--quick]`` prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import keyring.backend
import tomlkit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simproc import SimProcess, markets, sim_account  # noqa: E402

from guard_app.core.config import load_config  # noqa: E402
from guard_app.core.enforcer import Enforcer  # noqa: E402
from guard_app.core.secrets import ApiKeys, SecretStore  # noqa: E402
from guard_app.exchanges import make_broker  # noqa: E402
from guard_app.sim.overrides import ccxt_overrides  # noqa: E402

LATENCY = 0.05
N_MARKETS = 30


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend in memory: the benchmark measures the enforcer, not D-Bus."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.data.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.data[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.data.pop((service, username), None)




class World:
    """A simulator process, a config, a data dir and in-memory keys."""

    def __init__(self, layout: list[tuple[str, str, str, int, int]]) -> None:
        # layout: (account id, user, market, positions, max_positions)
        self.tmp = Path(tempfile.mkdtemp(prefix="guard-bench-"))
        self.layout = layout
        scenario = {"sim": {"latency": LATENCY, "futures_wallet": 100_000},
                    "markets": markets(N_MARKETS),
                    "accounts": [sim_account(a, m, n) for a, _, m, n, _ in layout]}
        self.sim = SimProcess(scenario, self.tmp)
        self.base_url = self.sim.base_url
        self.keyring = MemoryKeyring()
        self.secrets = SecretStore(backend=self.keyring)
        accounts = []
        for acc_id, user, market, _, cap in layout:
            self.secrets.set(acc_id, ApiKeys(f"{acc_id}-apikey-0123456789",
                                             f"{acc_id}-secret-abcdefghij"))
            accounts.append({"id": acc_id, "user": user, "exchange": "binance",
                             "market": "spot" if market == "spot" else "swap", "quote": "USDT",
                             "max_positions": cap, "ccxt": {**ccxt_overrides(self.base_url),
                                                            "timeout": 10_000}})
        doc = tomlkit.document()
        doc["enforcer"] = {"interval_seconds": 3600, "dry_run": False}
        aot = tomlkit.aot()
        for a in accounts:
            aot.append(tomlkit.item(a))
        doc["accounts"] = aot
        (self.tmp / "config.toml").write_text(tomlkit.dumps(doc))
        self.config = load_config(self.tmp / "config.toml")
        self.data_dir = self.tmp / "data"

    def close(self) -> None:
        self.sim.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _parked(error: str) -> bool:
    """The enforcer's words for an account waiting out a rate-limit window (spent on this
    cycle, or still running from an earlier one)."""
    return error.startswith("rate limited") or "asked us to slow down" in error


def _cycle_times(layout: list[tuple[str, str, str, int, int]], cycles: int) -> dict[str, Any]:
    world = World(layout)
    try:
        async def go() -> list[tuple[float, float, int, list[str]]]:
            enforcer = Enforcer(world.config, world.data_dir, world.secrets, broker_factory=make_broker)
            try:
                await enforcer.run_cycle()  # warm-up: markets loaded, connections opened
                out = []
                for _ in range(cycles):
                    # As in the app, cycles are at least 1 s apart (the shortest interval).
                    await asyncio.sleep(1.0)
                    w0, c0 = time.perf_counter(), time.process_time()
                    report = await enforcer.run_cycle()
                    out.append((time.perf_counter() - w0, time.process_time() - c0,
                                len(report.orders), list(report.errors.values())))
                return out
            finally:
                await enforcer.aclose()

        results = asyncio.run(go())
        refusals = world.sim.refusals()
    finally:
        world.close()
    # An account whose IP weight budget is spent for longer than the limiter waits is
    # parked until the window frees ("rate limited: ..."): reported, not a failure of the
    # benchmark. Anything else (an order, another error) means the world is wrong.
    parked = [sum(1 for e in errors if _parked(e)) for *_, errors in results]
    other = [e for *_, errors in results for e in errors if not _parked(e)]
    if any(orders for _, _, orders, _ in results) or other:
        raise RuntimeError(f"a benchmark cycle had orders or errors ({other[:2]}); "
                           "it must have nothing to close")
    # A cycle with parked accounts is short for the wrong reason: times come from the
    # cycles that read every account.
    whole = [r for r, p in zip(results, parked, strict=True) if not p] or results
    return {"wall_s": statistics.median(r[0] for r in whole),
            "cpu_s": statistics.median(r[1] for r in whole), "refusals": refusals,
            "parked": max(parked), "first_parked": next((i + 1 for i, p in enumerate(parked) if p), None),
            "cycles": len(results)}


def _layout(n: int, positions: int) -> list[tuple[str, str, str, int, int]]:
    return [(f"acc{i:03d}", f"user{i % 10}", "spot" if i % 2 == 0 else "futures", positions, 100)
            for i in range(n)]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run the enforcer benchmarks; one dict per row of the table."""
    rows: list[dict[str, Any]] = []
    cycles = 2 if quick else 5
    full = _cycle_times(_layout(50, 30), cycles)
    rows.append({"benchmark": "full cycle, 50 accounts x 30 positions: wall",
                 "measured": f"{full['wall_s']:.3f} s", "target": "< 1 s",
                 "met": full["wall_s"] < 1.0, "value": full["wall_s"], "issue": 3})
    rows.append({"benchmark": "full cycle, 50 accounts x 30 positions: CPU",
                 "measured": f"{full['cpu_s']:.3f} s", "target": "< 0.5 s",
                 "met": full["cpu_s"] < 0.5, "value": full["cpu_s"], "issue": 3})
    for n in ((1, 10, 50) if quick else (1, 10, 50, 100)):
        r = full if n == 50 else _cycle_times(_layout(n, 30), cycles)
        rows.append({"benchmark": f"cycle scaling: {n} accounts x 30 positions",
                     "measured": f"{r['wall_s']:.3f} s wall, {r['cpu_s']:.3f} s CPU, "
                                 f"{r['refusals']} x 429/418"
                                 + (f"; from cycle {r['first_parked']} of {r['cycles']} (1 s apart) "
                                    f"up to {r['parked']} accounts parked by the limiter: one IP's "
                                    "weight budget spent (times from the whole cycles)"
                                    if r["parked"] else ""),
                     "target": "0 x 429/418", "met": r["refusals"] == 0, "value": r["wall_s"],
                     "issue": 3})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | measured | target | met |", "|---|---|---|---|"]
    for r in rows:
        met = "n/a" if r.get("met") is None else ("yes" if r["met"] else "NO")
        lines.append(f"| {r['benchmark']} | {r['measured']} | {r['target']} | {met} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cycles and sizes")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    rows = run(args.quick)
    print(markdown(rows))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
