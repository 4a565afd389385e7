"""A desk on PostgreSQL (issue 14): how fast a flag travels, how fast a standby takes over.

Starts a throwaway PostgreSQL cluster (the tests' fixture, Debian's ``postgresql``
package) and measures, with the default lease settings:

- flag hop: ``set_forced_unwind`` returns in one store -> another store's
  ``data_version`` (what the enforcer polls every 50 ms) has changed (LISTEN/NOTIFY);
- takeover: a holder stops renewing at a random moment -> a standby renewing every
  ``lease_seconds / 3`` holds the account (the lease part of the 5 s promise; the
  end-to-end figure with two ``guard-app run`` processes is checked in tests/desk).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guard_app.core.config import StateConfig  # noqa: E402
from guard_app.core.state.leases import LeaseKeeper  # noqa: E402
from guard_app.core.state.postgres import PostgresStateStore  # noqa: E402
from tests.fixtures.postgres_fixtures import PASSWORD, PostgresServer  # noqa: E402


def _flag_hops(url: str, n: int) -> list[float]:
    a = PostgresStateStore(url, password=PASSWORD)
    b = PostgresStateStore(url, password=PASSWORD)
    hops = []
    try:
        for i in range(n):
            before = b.data_version()
            a.set_forced_unwind("alice", i % 2 == 0, by="bench")
            returned = time.perf_counter()
            while b.data_version() == before:
                time.sleep(0.0005)
            hops.append(time.perf_counter() - returned)
    finally:
        a.close()
        b.close()
    return hops


def _takeovers(url: str, n: int) -> list[float]:
    lease = StateConfig().lease_seconds
    store = PostgresStateStore(url, password=PASSWORD)
    results = []
    try:
        for i in range(n):
            account = f"acct{i}"
            holder = LeaseKeeper(lease, holder=f"holder:{i}")
            standby = LeaseKeeper(lease, holder=f"standby:{i}")
            holder.renew(store, [account])
            # The holder renews on schedule for a while, then dies at a random moment.
            dies_at = time.monotonic() + random.uniform(0.5, 2.0)  # noqa: S311 - timing jitter
            next_standby = time.monotonic() + random.uniform(0, holder.renew_seconds)  # noqa: S311
            next_holder = time.monotonic() + holder.renew_seconds
            died: float | None = None
            while True:
                now = time.monotonic()
                if died is None and now >= dies_at:
                    died = now
                if died is None and now >= next_holder:
                    holder.renew(store, [account])
                    next_holder += holder.renew_seconds
                if now >= next_standby:
                    next_standby += standby.renew_seconds
                    if standby.renew(store, [account]):
                        assert died is not None, "a healthy holder lost its account"
                        results.append(time.monotonic() - died)
                        break
                time.sleep(0.005)
    finally:
        store.close()
    return results


def run(quick: bool = False) -> list[dict[str, Any]]:
    server = PostgresServer()
    try:
        hops = _flag_hops(server.create_database(), 10 if quick else 50)
        takeovers = _takeovers(server.create_database(), 2 if quick else 6)
    finally:
        server.destroy()
    median_ms = statistics.median(hops) * 1000
    worst_ms = max(hops) * 1000
    worst_takeover = max(takeovers)
    return [
        {"benchmark": "desk: flag hop between two PostgreSQL stores (LISTEN/NOTIFY)",
         "measured": f"median {median_ms:.1f} ms, worst {worst_ms:.1f} ms ({len(hops)} flips)",
         "target": "well under 1 s (the enforcer adds a 50 ms poll and its reads)",
         "met": worst_ms < 1000, "value": worst_ms, "issue": 14},
        {"benchmark": "desk: lease takeover after the holder dies (default 3 s lease)",
         "measured": f"worst {worst_takeover:.2f} s, mean {statistics.mean(takeovers):.2f} s "
                     f"({len(takeovers)} deaths)",
         "target": "< 5 s", "met": worst_takeover < 5.0, "value": worst_takeover, "issue": 14},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['benchmark']}: {row['measured']} (target {row['target']}, met {row['met']})")
