"""The exchange simulator in its own process, for benchmarks.

In real use the exchange is another machine; running the simulator inside the
measured process would charge its HTTP threads (and their share of the GIL) to
guard-app.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import tomlkit

ROOT = Path(__file__).resolve().parents[1]


class SimProcess:
    """``python -m guard_app.sim`` on a free port with a generated scenario."""

    def __init__(self, scenario: dict[str, Any], workdir: Path,
                 *, strategy_interval: float | None = None, seed: int = 0) -> None:
        path = workdir / "scenario.toml"
        path.write_text(tomlkit.dumps(scenario))
        cmd = [sys.executable, "-m", "guard_app.sim", "--port", "0", "--scenario", str(path),
               "--seed", str(seed)]
        if strategy_interval:
            cmd += ["--strategy", "--strategy-interval", str(strategy_interval)]
        else:
            cmd += ["--no-strategy"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if " on http" not in line:
            self.close()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.base_url = line.rsplit(" on ", 1)[1].strip()

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call to the simulator's control API (``/_sim/...``), its JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the simulator on loopback
            f"{self.base_url}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return json.load(answer)

    def orders(self) -> list[dict[str, Any]]:
        """The simulator's order log (every order request, with its arrival time.time())."""
        data = self.control("GET", "/_sim/orders")
        return list(data["orders"] if isinstance(data, dict) else data)

    def refusals(self) -> int:
        """How many 429/418-type answers the simulator has sent (``/_sim/limits``)."""
        return sum(int(v) for v in self.control("GET", "/_sim/limits").values())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# Scenario pieces the enforcer and kill benchmarks share: n markets, every holding a
# position (1 to 3 units of a 10-40 USDT coin, none is dust).

def markets(n: int) -> list[dict[str, Any]]:
    """``n`` coins, each with a spot market and a USDⓈ-M perpetual (10 to 10+n USDT)."""
    out = []
    for i in range(n):
        common = {"price": 10.0 + i, "step_size": 0.01, "min_notional": 5, "tick_size": 0.001}
        out.append({"symbol": f"C{i:03d}/USDT", "type": "spot", **common})
        out.append({"symbol": f"C{i:03d}/USDT:USDT", "type": "swap", **common})
    return out


def sim_account(name: str, market: str, positions: int) -> dict[str, Any]:
    """A simulator account holding ``positions`` positions (1 to 3 units, none is dust)."""
    acc: dict[str, Any] = {"name": name, "api_key": f"{name}-apikey-0123456789",
                           "secret": f"{name}-secret-abcdefghij", "spot": {"USDT": 1000}}
    if market == "spot":
        acc["spot"].update({f"C{i:03d}": 1.0 + (i % 3) for i in range(positions)})
    else:
        acc["futures_wallet"] = 100_000
        acc["positions"] = [{"symbol": f"C{i:03d}/USDT:USDT", "side": "long" if i % 2 else "short",
                             "contracts": 1.0 + (i % 3)} for i in range(positions)]
    return acc
