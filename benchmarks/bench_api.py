"""Remote API benchmark (issue 13): how soon a rotated API token stops working.

``api token --rotate`` stores a new token; a running API must refuse the old one
within a second. Measured on a running API (in-memory keyring: the cadence, not
D-Bus): ``set_api_token`` -> the first 401 for the old token. The kill through the API
(``POST /api/v1/users/alice/forced_unwind`` on ``guard-app run --api``) is a row of
``bench_kill.py``, next to the CLI's.

``python benchmarks/bench_api.py`` prints the row.
"""

from __future__ import annotations

import asyncio
import http.client
import sys
import threading
import time
from typing import Any

from bench_enforcer import World, markdown
from bench_kill import free_port

from guard_app.api import ApiService
from guard_app.api.auth import new_token
from guard_app.core.config import parse_config
from guard_app.core.enforcer import Enforcer
from guard_app.exchanges import make_broker


def bench_rotation_lockout() -> float:
    """Seconds from ``set_api_token`` (what ``api token --rotate`` does) to the first 401
    for the old token, on a running API (in-memory keyring: the cadence, not D-Bus)."""
    layout = [("r-spot", "alice", "spot", 1, 100)]
    world = World(layout)
    port = free_port()
    config = parse_config((world.tmp / "config.toml").read_text()
                          + f'\n[api]\nlisten = "127.0.0.1:{port}"\n')
    old = new_token()
    world.secrets.set_api_token(old)
    service = ApiService(config, world.data_dir, world.secrets.get_api_token, old, [])
    enforcer = Enforcer(config, world.data_dir, world.secrets, observers=service.observers,
                        broker_factory=make_broker)
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


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The API's rows for benchmarks/run_all.py (the same in quick and full runs)."""
    return [rotation_row()]


def main() -> int:
    print(markdown(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
