"""Kill latency through the remote API (issue 13): the "API" row of the kill benchmark.

Same world as ``bench_enforcer.bench_kill_latency`` (one user, 3 accounts x 20 positions,
50 ms simulator latency, the enforcer idling with a 1 h interval), but the forced unwind
is turned on the way a risk manager's script would: an HTTP ``POST
/api/v1/users/alice/forced_unwind`` with the bearer token, served by the API on the
enforcer's own loop. Measured: POST sent -> every close acknowledged (the last fill).
The floor is the same as the CLI row's, so the two ratios compare directly.

``python benchmarks/bench_api.py`` prints the row; ``bench_api_kill_latency()`` returns
it for the lead's kill benchmark table.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import sys
import threading
import time
from typing import Any

from bench_enforcer import LATENCY, CostMeter, World, markdown

from guard_app.api import ApiService
from guard_app.api.auth import new_token
from guard_app.core.config import parse_config
from guard_app.core.enforcer import Enforcer
from guard_app.core.events import EnforcerEvent, OrderFilled, OrderRejected
from guard_app.core.state import StateStore

N_CLOSES = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_api_kill_latency() -> dict[str, Any]:
    layout = [("k-spot1", "alice", "spot", 20, 100), ("k-fut", "alice", "futures", 20, 100),
              ("k-spot2", "alice", "spot", 20, 100)]
    world = World(layout)
    port = _free_port()
    config = parse_config((world.tmp / "config.toml").read_text()
                          + f'\n[api]\nlisten = "127.0.0.1:{port}"\n')
    token = new_token()
    service = ApiService(config, world.data_dir, lambda: token, token, [])
    meter = CostMeter()
    done = threading.Event()
    acked: list[float] = []
    rejected: list[str] = []

    def observer(event: EnforcerEvent) -> None:
        if isinstance(event, OrderFilled):
            acked.append(time.monotonic())
            if len(acked) == N_CLOSES:
                done.set()
        elif isinstance(event, OrderRejected):
            rejected.append(event.reason)

    enforcer = Enforcer(config, world.data_dir, world.secrets, observer,
                        observers=service.observers, broker_factory=meter.factory)
    service.bind(enforcer)

    async def serve() -> None:
        await service.start()
        try:
            await enforcer.run()
        finally:
            await service.stop()

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    try:
        StateStore(world.data_dir).close()
        runner.start()
        deadline = time.monotonic() + 60
        while True:  # idle: the first cycle (markets loaded, nothing to close) is over
            with StateStore(world.data_dir) as st:
                if st.entries(kinds={"cycle_end"}, limit=1):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the enforcer never finished its first cycle")
            time.sleep(0.05)
        time.sleep(0.5)  # let the flag watcher settle into its idle poll
        meter.on = True
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.connect()  # the script's connection exists before the clock starts
        t0 = time.monotonic()
        conn.request("POST", "/api/v1/users/alice/forced_unwind", body=b'{"reason": "bench"}',
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        answered = time.monotonic() - t0
        conn.close()
        if answer.status != 200:
            raise RuntimeError(f"the API answered {answer.status}")
        if not done.wait(120):
            raise RuntimeError(f"only {len(acked)} of {N_CLOSES} closes acknowledged; "
                               f"rejected: {rejected[:3]}")
        measured = max(acked) - t0
    finally:
        enforcer.stop()
        runner.join(timeout=10)
        world.close()
    floors = {a: meter.costs[a] * meter.rate_limit[a] / 1000 + LATENCY for a in meter.costs}
    floor = max(floors.values())
    return {"measured_s": measured, "floor_s": floor, "ratio": measured / floor,
            "post_answered_s": answered, "requests": dict(meter.requests)}


def bench_rotation_lockout() -> float:
    """Seconds from ``set_api_token`` (what ``api token --rotate`` does) to the first 401
    for the old token, on a running API (in-memory keyring: the cadence, not D-Bus)."""
    layout = [("r-spot", "alice", "spot", 1, 100)]
    world = World(layout)
    port = _free_port()
    config = parse_config((world.tmp / "config.toml").read_text()
                          + f'\n[api]\nlisten = "127.0.0.1:{port}"\n')
    old = new_token()
    world.secrets.set_api_token(old)
    service = ApiService(config, world.data_dir, world.secrets.get_api_token, old, [])
    enforcer = Enforcer(config, world.data_dir, world.secrets, observers=service.observers,
                        broker_factory=CostMeter().factory)
    service.bind(enforcer)

    async def serve() -> None:
        await service.start()
        try:
            await enforcer.run()
        finally:
            await service.stop()

    def status(token: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
            answer = conn.getresponse()
            answer.read()
            return answer.status
        finally:
            conn.close()

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    try:
        runner.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                if status(old) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API never answered")
            time.sleep(0.05)
        t0 = time.monotonic()
        world.secrets.set_api_token(new_token())
        while status(old) != 401:
            if time.monotonic() - t0 > 10:
                raise RuntimeError("the old token still works after 10 s")
            time.sleep(0.01)
        return time.monotonic() - t0
    finally:
        enforcer.stop()
        runner.join(timeout=10)
        world.close()


def rotation_row() -> dict[str, Any]:
    lockout = bench_rotation_lockout()
    return {"benchmark": "API token rotation: old token refused after",
            "measured": f"{lockout:.2f} s", "target": "< 1 s", "met": lockout < 1.0,
            "value": lockout, "issue": 13}


def row() -> dict[str, Any]:
    """The kill benchmark's "API" row."""
    kill = bench_api_kill_latency()
    return {"benchmark": "kill latency, API: POST -> last fill (3 accounts x 20 positions, "
                         "50 ms latency)",
            "measured": f"{kill['measured_s']:.2f} s (POST answered in "
                        f"{kill['post_answered_s'] * 1000:.0f} ms)",
            "floor": f"{kill['floor_s']:.2f} s", "ratio": f"{kill['ratio']:.2f}x",
            "target": "<= 1.5x floor", "met": kill["ratio"] <= 1.5,
            "value": kill["ratio"], "issue": 13}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The API's rows for benchmarks/run_all.py (the same in quick and full runs)."""
    return [row(), rotation_row()]


def main() -> int:
    print(markdown(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
