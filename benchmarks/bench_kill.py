"""Kill latency as a user gets it (issue 11, item 7 and "Targets").

Everything is a real process on this machine, so one clock (``time.time()``) serves
both sides:

* the simulator (``python -m guard_app.sim``) answers every request after 50 ms and
  enforces Binance's published limits (weights, order counts, 429, then 418 bans);
* ``guard-app run --api`` (interval 3600 s: nothing happens until the kill) with one
  user, alice, holding 2 Binance spot accounts and 1 Binance USDⓈ-M account of N
  positions each; its keys are stored with ``guard-app keys set`` in the real OS
  keyring, so the benchmark needs a Secret Service (``scripts/with-keyring.sh``);
* once the enforcer has journaled its first ``cycle_end``, the kill goes in the way a
  user does it: ``guard-app unwind alice --yes`` (CLI row) or ``POST
  /api/v1/users/alice/forced_unwind`` (API row).

Measured:

* kill latency: from the command's return (the POST's answer) to the last fill, the
  fill times being the simulator's order log timestamps. ``guard-app unwind`` writes
  the flag before it exits (Python start-up is most of its run time) and the enforcer
  starts at once (the command's return can even come after the last fill), so the rows
  are judged on "flag written -> last fill" (the journal's ``unwind_on`` time), the
  stricter figure; the time from the return is given beside it. The physical floor is three
  round trips (cancel + read, closes, re-read): 0.15 s at 50 ms.
* 429/418 answers over the whole run, from the simulator's ``/_sim/limits``.
* the enforcer's own view: from the last fill until ``GET /api/v1/status`` (what the
  window shows too) reports 0 positions on every account, polled every 25 ms.
* a position opened during the active unwind (the accounts already flat): from the
  simulator's control API opening it to its close's fill, futures and spot.
* the same kill on the code before issue 11 (commit ``f59e716``: ccxt's throttle, one
  close at a time), checked out with ``git worktree add`` into a temporary directory
  and run as ``guard-app run`` with ``PYTHONPATH`` pointing there, against the same
  simulator build. That code has no remote API; its "enforcer view" is not measured.

``scripts/with-keyring.sh python benchmarks/bench_kill.py [--quick]`` prints the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomlkit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simproc import SimProcess, markets, sim_account  # noqa: E402

from guard_app.sim.overrides import ccxt_overrides  # noqa: E402

LATENCY = 0.05
FLOOR = 3 * LATENCY  # cancel-all + first read, the closes, the re-read
BASELINE_COMMIT = "f59e716"  # the last commit before issue 11's work: ccxt throttle, sequential
ACCOUNTS = (("alice-spot-1", "spot"), ("alice-usdm", "swap"), ("alice-spot-2", "spot"))
USER = "alice"




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def baseline_checkout() -> Iterator[Path]:
    """The pre-issue-11 code in a temporary ``git worktree`` (removed afterwards)."""
    where = Path(tempfile.mkdtemp(prefix="guard-bench-baseline-")) / "src"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where),
                    BASELINE_COMMIT], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
                       check=False, capture_output=True)
        shutil.rmtree(where.parent, ignore_errors=True)


class KillRun:
    """One simulator, one ``guard-app run`` of the code at ``code`` and its config."""

    def __init__(self, positions: int, *, code: Path = ROOT, api: bool = True) -> None:
        self.positions = positions
        self.code = code
        self.tmp = Path(tempfile.mkdtemp(prefix="guard-bench-kill-"))
        self.env = {**os.environ, "PYTHONPATH": str(code)}
        scenario = {"sim": {"latency": LATENCY, "futures_wallet": 100_000},
                    "markets": markets(max(positions, 2)),
                    "accounts": [sim_account(a, m, positions) for a, m in ACCOUNTS]}
        self.sim = SimProcess(scenario, self.tmp)
        self.port = free_port() if api else None
        doc = tomlkit.document()
        doc["enforcer"] = {"interval_seconds": 3600, "dry_run": False}
        if self.port:
            doc["api"] = {"listen": f"127.0.0.1:{self.port}"}
        aot = tomlkit.aot()
        for acc_id, market in ACCOUNTS:
            aot.append(tomlkit.item({
                "id": acc_id, "user": USER, "exchange": "binance", "market": market,
                "quote": "USDT", "max_positions": 1000,
                "ccxt": {**ccxt_overrides(self.sim.base_url), "timeout": 10_000}}))
        doc["accounts"] = aot
        self.config = self.tmp / "config.toml"
        self.config.write_text(tomlkit.dumps(doc))
        self.data_dir = self.tmp / "data"
        self.proc: subprocess.Popen[str] | None = None
        self.token: str | None = None

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``guard-app ARGS`` of this run's code, config and data dir."""
        cmd = [sys.executable, "-m", "guard_app", *args, "--config", str(self.config),
               "--data-dir", str(self.data_dir)]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=self.env,
                              cwd=self.tmp, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"guard-app {' '.join(args)} exited {done.returncode}: "
                               f"{done.stderr.strip()[-500:]}")
        return done

    def start(self) -> None:
        """Keys into the keyring, then ``guard-app run``; returns after its first cycle."""
        where = subprocess.run([sys.executable, "-c", "import guard_app; print(guard_app.__file__)"],
                               capture_output=True, text=True, env=self.env, cwd=self.tmp,
                               check=True).stdout.strip()
        if not Path(where).is_relative_to(self.code):
            raise RuntimeError(f"guard-app would run the code in {where}, not {self.code}")
        for acc_id, _ in ACCOUNTS:
            keys = {"apiKey": f"{acc_id}-apikey-0123456789", "secret": f"{acc_id}-secret-abcdefghij"}
            self.cli("keys", "set", acc_id, stdin=json.dumps(keys))
        args = ["run"]
        if self.port:
            self.token = self.cli("api", "token", "--rotate").stdout.strip()
            args.append("--api")
        cmd = [sys.executable, "-m", "guard_app", *args, "--config", str(self.config),
               "--data-dir", str(self.data_dir)]
        self.log = open(self.tmp / "guard-app.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, cwd=self.tmp)
        deadline = time.monotonic() + 60
        while self.journaled("cycle_end") is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"guard-app run never finished its first cycle: "
                                   f"{(self.tmp / 'guard-app.log').read_text()[-800:]}")
            time.sleep(0.05)
        time.sleep(0.5)  # past the cycle's tail: the flag watcher is in its idle wait

    def journaled(self, kind: str) -> float | None:
        """The time of the first journal entry of ``kind`` (read-only, plain SQLite: the
        baseline's state module is another version), or None."""
        db = self.data_dir / "state.sqlite3"
        if not db.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
                row = c.execute("SELECT MIN(ts) FROM journal WHERE kind = ?", (kind,)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None or row[0] is None else float(row[0])

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        assert self.port and self.token
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                         headers={"Authorization": f"Bearer {self.token}",
                                  "Content-Type": "application/json"})
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read() or b"null")
        finally:
            conn.close()

    def fills_after(self, t0: float) -> list[dict[str, Any]]:
        return [o for o in self.sim.orders() if o["accepted"] and o["timestamp"] >= t0]

    def wait_fills(self, t0: float, count: int, timeout: float = 180) -> float:
        """Wait for ``count`` fills after ``t0``; then the last fill's time (a short quiet
        period first, so a straggler is counted)."""
        deadline = time.monotonic() + timeout
        while len(fills := self.fills_after(t0)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(fills)} of {count} closes filled after {timeout:.0f} s")
            time.sleep(0.05)
        time.sleep(0.5)
        return max(o["timestamp"] for o in self.fills_after(t0))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc is not None:
            self.log.close()
        self.sim.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class StatusWatch:
    """Polls ``GET /api/v1/status`` every 25 ms; the first time every account is flat."""

    def __init__(self, run: KillRun) -> None:
        self.run = run
        self.flat_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            status, doc = self.run.api("GET", "/api/v1/status")
            if status == 200 and all(a["position_count"] == 0 for a in doc["accounts"]):
                self.flat_at = time.time()
                return
            self._stop.wait(0.025)

    def wait(self, timeout: float = 30) -> float | None:
        self._thread.join(timeout)
        self._stop.set()
        return self.flat_at


def kill(positions: int, *, via: str, code: Path = ROOT, extras: bool = False) -> dict[str, Any]:
    """One kill of alice's 3 accounts x ``positions`` through ``via`` ("cli" or "api")."""
    baseline = code != ROOT
    run = KillRun(positions, code=code, api=not baseline)
    try:
        run.start()
        watch = None if baseline else StatusWatch(run)
        t_start = time.time()
        if via == "cli":
            run.cli("unwind", USER, "--yes", "--reason", "benchmark")
        else:
            status, _ = run.api("POST", f"/api/v1/users/{USER}/forced_unwind", {"reason": "benchmark"})
            if status != 200:
                raise RuntimeError(f"POST forced_unwind answered {status}")
        t_return = time.time()
        last_fill = run.wait_fills(t_start, 3 * positions)
        flag_at = run.journaled("unwind_on") or t_return
        out: dict[str, Any] = {"latency": last_fill - t_return, "command": t_return - t_start,
                               "from_flag": last_fill - flag_at}
        if watch is not None:
            flat_at = watch.wait()
            out["view_flat"] = None if flat_at is None else flat_at - last_fill
        if extras:
            out["reopened"] = reopen_during_unwind(run)
        out["refusals"] = run.sim.refusals()
        return out
    finally:
        run.close()


def reopen_during_unwind(run: KillRun) -> dict[str, float]:
    """Open one futures position and one spot holding on flat accounts while the unwind
    is on; seconds from the simulator opening each to its close's fill."""
    out = {}
    for label, path, body in (
        ("futures", "/_sim/position", {"account": "alice-usdm", "symbol": "C000/USDT:USDT",
                                       "side": "long", "contracts": 2}),
        ("spot", "/_sim/balance", {"account": "alice-spot-1", "asset": "C000", "amount": 2}),
    ):
        t0 = time.time()
        run.sim.control("POST", path, body)
        out[label] = run.wait_fills(t0, 1, timeout=60) - t0
    return out


def _fmt(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The kill rows for benchmarks/run_all.py. Quick: 3 x 20 on the current code only."""
    if os.environ.get("GUARD_APP_KEYRING_READY") != "1":
        raise RuntimeError("bench_kill stores keys in the real OS keyring: run it under "
                           "scripts/with-keyring.sh (make bench does)")
    rows: list[dict[str, Any]] = []
    sizes = (20,) if quick else (20, 100)
    targets = {20: 0.5, 100: 1.0}
    for n in sizes:
        for via in ("cli", "api"):
            r = kill(n, via=via, extras=(n == 20 and via == "cli"))
            what = "`guard-app unwind alice --yes`" if via == "cli" else "POST forced_unwind"
            # Judged on "flag written -> last fill": the stricter figure, since the CLI
            # writes the flag before its own exit (its return can come after the fill).
            met = r["from_flag"] <= targets[n] and r["refusals"] == 0
            rows.append({"issue": 11, "benchmark": f"kill {'CLI' if via == 'cli' else 'API'}, 3 x {n} "
                         f"positions, 50 ms: {what}: flag written -> last fill",
                         "measured": f"{r['from_flag']:.2f} s, {r['refusals']} x 429/418 "
                                     f"(from the {'command' if via == 'cli' else 'POST'}'s return: "
                                     f"{r['latency']:.2f} s; it took {r['command']:.2f} s)",
                         "floor": f"{FLOOR:.2f} s", "ratio": f"{r['from_flag'] / FLOOR:.1f}x",
                         "target": f"<= {targets[n]} s, 0 x 429/418", "met": met})
            view = r.get("view_flat")
            rows.append({"issue": 11, "benchmark": f"last fill -> API status shows every account "
                         f"flat (kill {via.upper()}, 3 x {n})",
                         "measured": _fmt(view), "target": "<= 1 s",
                         "met": view is not None and view <= 1.0})
            if "reopened" in r:
                for market, secs in r["reopened"].items():
                    rows.append({"issue": 11, "benchmark": f"{market} position opened during an "
                                 "active unwind -> its close filled",
                                 "measured": f"{secs:.2f} s", "target": "<= 3 s", "met": secs <= 3.0})
    if not quick:
        with baseline_checkout() as old:
            for n in sizes:
                try:
                    r = kill(n, via="cli", code=old)
                    measured = (f"{r['from_flag']:.2f} s, {r['refusals']} x 429/418 "
                                f"(from the command's return: {r['latency']:.2f} s)")
                    ratio = f"{r['from_flag'] / FLOOR:.1f}x"
                except RuntimeError as exc:
                    measured, ratio = f"did not finish: {exc}", ""
                rows.append({"issue": 11, "benchmark": f"kill CLI, 3 x {n}, previous code "
                             f"({BASELINE_COMMIT}: ccxt throttle, sequential closes): flag "
                             "written -> last fill",
                             "measured": measured, "floor": f"{FLOOR:.2f} s", "ratio": ratio,
                             "target": "comparison", "met": None})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 x 20 only, no baseline")
    args = parser.parse_args()
    for row in run(args.quick):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
