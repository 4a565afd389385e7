"""GUI benchmark: start-up time, resident memory with the demo, GUI-thread stalls.

Prints a markdown table; ``run(quick)`` returns the rows for a runner.

* **window visible**: wall time from spawning ``python -m guard_app demo`` to the
  app printing that its window was shown (hidden ``GUARD_APP_EXIT_AFTER_SHOWN`` hook);
  target < 2 s.
* **RSS with the demo**: resident memory of ``guard-app demo`` after ~20 s running.
* **longest GUI-thread stall**: the full app (window, model, tray) in this process
  over 50 accounts on one simulator, interval 1 s, a strategy changing positions;
  the largest gap between ticks of a 5 ms QTimer on the GUI thread; target < 50 ms.

Offscreen Qt is used unless ``QT_QPA_PLATFORM`` is set. Usage::

    .venv/bin/python benchmarks/bench_gui.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ACCOUNTS = 50
STARTUP_TARGET_S = 2.0
STALL_TARGET_MS = 50.0

_MARKETS: list[dict[str, Any]] = [
    {"symbol": f"{base}/USDT", "price": price, "step_size": step, "min_notional": 5,
     "tick_size": 0.0001, "type": "spot"}
    for base, price, step in [
        ("BTC", 60000.0, 0.00001), ("ETH", 3000.0, 0.0001), ("SOL", 150.0, 0.001),
        ("BNB", 600.0, 0.001), ("XRP", 0.6, 0.1), ("DOGE", 0.16, 1.0), ("ADA", 0.45, 0.1),
        ("LINK", 15.0, 0.01), ("DOT", 7.0, 0.01), ("LTC", 80.0, 0.001),
        ("AVAX", 35.0, 0.01), ("TRX", 0.12, 0.1),
    ]
]


def _app_env(tmp: str) -> dict[str, str]:
    return dict(os.environ, QT_QPA_PLATFORM=os.environ["QT_QPA_PLATFORM"],
                XDG_CONFIG_HOME=str(Path(tmp) / "config"), PYTHONPATH=str(REPO))


def measure_startup(runs: int) -> list[float]:
    """Seconds from spawning ``guard-app demo`` to its window being shown."""
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        env = _app_env(tmp)
        env["GUARD_APP_EXIT_AFTER_SHOWN"] = "1"
        for _ in range(runs):
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "guard_app", "demo"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True)
            assert proc.stdout is not None
            shown = None
            for line in proc.stdout:
                if line.startswith("GUARD_APP_SHOWN"):
                    shown = time.monotonic() - started
                    break
            proc.wait(timeout=60)
            if shown is None:
                raise RuntimeError("guard-app demo exited without showing its window")
            times.append(shown)
    return times


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def measure_rss(seconds: float) -> float:
    """Resident memory (MiB) of ``guard-app demo`` after running ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "guard_app", "demo"], env=_app_env(tmp),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"guard-app demo exited early ({proc.returncode})")
                time.sleep(0.5)
            return _rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# What holds the demo's memory: resident MiB after each import, in start-up order.
_IMPORT_STEPS = (
    ("python", "pass"),
    ("PySide6 widgets + QApplication",
     "from PySide6.QtWidgets import QApplication; _app = QApplication([])"),
    ("numpy", "import numpy"),
    ("pyqtgraph", "import pyqtgraph"),
    ("ccxt.async_support", "import ccxt.async_support"),
    ("aiohttp, qasync, keyring", "import aiohttp, qasync, keyring"),
    ("guard_app.gui.app (all of the app)", "import guard_app.gui.app"),
)


def measure_import_rss() -> list[tuple[str, float]]:
    """(step, MiB added) for each import of the start-up path, in one fresh process."""
    code = "\n".join([
        "import os",
        "def rss():",
        "    for line in open('/proc/self/status'):",
        "        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024",
        *[f"{stmt}\nprint({name!r}, rss(), flush=True)" for name, stmt in _IMPORT_STEPS],
    ])
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    steps: list[tuple[str, float]] = []
    last = 0.0
    for line in out.splitlines():
        name, _, value = line.rpartition(" ")
        mib = float(value)
        steps.append((name.strip("'\""), mib - last))
        last = mib
    return steps


def measure_gui_stall(seconds: float) -> dict[str, float]:
    """Longest gap between 5 ms GUI-thread timer ticks while 50 accounts update."""
    import tomlkit
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication
    from simproc import SimProcess

    from guard_app.core.config import load_config
    from guard_app.core.events import CycleFinished
    from guard_app.core.secrets import ApiKeys, MemorySecretStore
    from guard_app.gui.app import build_app
    from guard_app.sim import ccxt_overrides

    app = QApplication.instance() or QApplication([])
    logging.getLogger("guard_app").setLevel(logging.ERROR)  # keep the table readable
    names = [f"acct{i:02d}" for i in range(ACCOUNTS)]
    spot = {"USDT": 2000, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "LINK": 1.0}
    scenario = {"markets": _MARKETS, "accounts": [
        {"name": n, "api_key": f"{n}-apikey-0123456789", "secret": f"{n}-secret-abcdefghij",
         "spot": dict(spot)} for n in names]}
    parts = None
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        # The exchange is another process, as it is another machine in real use: its
        # HTTP threads must not compete with the GUI thread for the GIL here.
        server = SimProcess(scenario, Path(tmp), strategy_interval=1.0, seed=3)
        try:
            doc = tomlkit.document()
            doc["enforcer"] = {"interval_seconds": 1.0, "dry_run": False}
            aot = tomlkit.aot()
            for i, n in enumerate(names):
                aot.append(tomlkit.item({
                    "id": f"{n}-spot", "user": f"user{i % 10}", "exchange": "binance",
                    "market": "spot", "quote": "USDT", "max_positions": 5,
                    "ccxt": {**ccxt_overrides(server.base_url), "timeout": 5000}}))
            doc["accounts"] = aot
            config_path = Path(tmp) / "config.toml"
            config_path.write_text(tomlkit.dumps(doc), encoding="utf-8")
            keys = MemorySecretStore({f"{n}-spot": ApiKeys(f"{n}-apikey-0123456789",
                                                       f"{n}-secret-abcdefghij") for n in names})
            parts = build_app(load_config(config_path), Path(tmp) / "data", keys,
                              config_path=config_path)
            parts.window.show()
            cycles: list[float] = []
            parts.host.enforcer_event.connect(
                lambda e: cycles.append(e.duration) if isinstance(e, CycleFinished) else None)
            # Warm-up: the first cycle (markets load for 50 ccxt clients) is start-up work.
            deadline = time.monotonic() + 60
            while not cycles and time.monotonic() < deadline:
                app.processEvents()
                time.sleep(0.005)
            # ...and the window's first drawing of 50 filled panels (a one-off 40-80 ms
            # layout pass, also start-up work): let it finish before measuring.
            settle = time.monotonic() + 1.0
            while time.monotonic() < settle:
                app.processEvents()
                time.sleep(0.005)

            gaps: list[float] = []
            stamps: list[float] = []
            clock = QElapsedTimer()
            clock.start()
            last = [clock.nsecsElapsed()]

            def tick() -> None:
                now = clock.nsecsElapsed()
                gaps.append((now - last[0]) / 1e6)
                stamps.append(now / 1e9)
                last[0] = now

            ticker = QTimer()
            ticker.setTimerType(ticker.timerType().PreciseTimer)
            ticker.timeout.connect(tick)
            ticker.start(5)
            first_cycle = len(cycles)
            QTimer.singleShot(int(seconds * 1000), app.quit)
            app.exec()
            ticker.stop()
            return {
                "max_ms": max(gaps),
                "max_at_s": stamps[gaps.index(max(gaps))],
                "p99_ms": statistics.quantiles(gaps, n=100)[98],
                "cycles": float(len(cycles) - first_cycle),
                "orders": float(sum(1 for o in server.orders() if o["accepted"])),
            }
        finally:
            if parts is not None:
                parts.shutdown(timeout=15)
                parts.window.close()
                parts.window.deleteLater()
                if parts.tray is not None:
                    parts.tray.deleteLater()
                parts = None
                app.processEvents()
                gc.collect()
            server.close()


def run(quick: bool) -> list[dict[str, Any]]:
    """Run every measurement; each row: metric, value, unit, target, ok, detail."""
    rows: list[dict[str, Any]] = []
    startup = measure_startup(1 if quick else 3)
    rows.append({"metric": "window visible after start (median)",
                 "value": round(statistics.median(startup), 3), "unit": "s",
                 "target": f"< {STARTUP_TARGET_S} s",
                 "ok": statistics.median(startup) < STARTUP_TARGET_S,
                 "detail": "runs: " + ", ".join(f"{t:.2f}" for t in startup)})
    rss_seconds = 5.0 if quick else 20.0
    rss = measure_rss(rss_seconds)
    imports = measure_import_rss()
    held = "; ".join(f"{name} +{mib:.0f}" for name, mib in imports)
    rows.append({"metric": f"RSS, demo running {rss_seconds:.0f} s", "value": round(rss, 1),
                 "unit": "MiB", "target": "report (goal <= 200 MiB)", "ok": True,
                 "detail": f"VmRSS; imports (MiB): {held}; the rest is the running "
                           "demo (3 ccxt clients with market tables, widgets, threads)"})
    stall = measure_gui_stall(5.0 if quick else 15.0)
    rows.append({"metric": f"longest GUI-thread stall, {ACCOUNTS} accounts, interval 1 s",
                 "value": round(stall["max_ms"], 1), "unit": "ms",
                 "target": f"< {STALL_TARGET_MS:.0f} ms",
                 "ok": stall["max_ms"] < STALL_TARGET_MS,
                 "detail": (f"p99 {stall['p99_ms']:.1f} ms; worst at {stall['max_at_s']:.1f} s; "
                            f"{stall['cycles']:.0f} cycles, "
                            f"{stall['orders']:.0f} closes")})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| metric | value | target | ok | detail |", "|---|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['value']} {r['unit']} | {r['target']} | "
                     f"{'yes' if r['ok'] else 'NO'} | {r['detail']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about 20 s)")
    args = parser.parse_args()
    print(markdown(run(args.quick)), flush=True)
    # PySide6 can crash while garbage-collecting Qt wrappers at interpreter exit
    # ("bool_dealloc" in finalisation) after the in-process app run; everything is
    # already shut down and printed, so skip finalisation.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
