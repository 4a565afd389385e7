"""Broker kill benchmark (issue 11): cancel_all_orders + close_many for one account.

For each protocol (Binance USDⓈ-M, OKX, Bybit) one hedge-mode account holds N positions
and one resting order; the simulator answers every request after 50 ms. Measured, after
``warm()``: wall time of ``cancel_all_orders()`` then ``close_many()`` of every position,
the requests sent, the limiter's waits, and the 429/418 (or 50011/10006) answers. The
"ccxt throttle" row is the generic profile (ccxt's leaky bucket, one order per request)
on the same account, for comparison. The simulator runs in this process (threads).

``python benchmarks/bench_close_many.py [N]`` prints a markdown table (N defaults to 20);
``run()`` gives benchmarks/run_all.py its rows (in RESULTS.md with the others).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guard_app.core.models import CloseReason, Market, PlannedClose  # noqa: E402
from guard_app.core.secrets import ApiKeys  # noqa: E402
from guard_app.exchanges.broker import Broker  # noqa: E402
from guard_app.exchanges.profiles import Profile  # noqa: E402
from guard_app.exchanges.ratelimit import reset_shared_budgets  # noqa: E402
from guard_app.sim import SimServer, parse_scenario  # noqa: E402
from tests.exchanges.protocol_world import (  # noqa: E402
    MARKETS,
    OKX_CT_VAL,
    contract_size,
    credentials,
    make_broker,
    scenario,
)

LATENCY = 0.05


def _markets(n: int) -> list[dict]:
    """``n`` perpetuals (cycling through the test markets' prices under new names)."""
    swaps = [m for m in MARKETS if m["type"] == "swap" and m["symbol"].endswith(":USDT")]
    out = [dict(m) for m in MARKETS if m["type"] == "spot"]
    for i in range(n):
        base = swaps[i % len(swaps)]
        coin = f"C{i}X"
        out.append({**base, "symbol": f"{coin}/USDT:USDT"})
        OKX_CT_VAL.setdefault(f"{coin}/USDT:USDT", OKX_CT_VAL[base["symbol"]])
    return out


async def _kill(broker: Broker) -> tuple[float, int, int, int]:
    await broker.warm()
    snap = await broker.snapshot()
    sent = broker.requests_sent
    started = time.perf_counter()
    await broker.cancel_all_orders()
    results = await broker.close_many([
        (PlannedClose(broker.account_id, "u", p, CloseReason.FORCED_UNWIND), f"ga1n{i}rbench")
        for i, p in enumerate(snap.positions)
    ])
    elapsed = time.perf_counter() - started
    failed = sum(1 for r in results if isinstance(r, Exception) or r is None)
    waits = broker.limiter.waits if broker.limiter else 0
    return elapsed, broker.requests_sent - sent, waits, failed


def kill_one(exchange: str, n: int, generic: bool) -> tuple[float, int, int, int, int]:
    markets = _markets(n)
    positions = [{"symbol": m["symbol"], "side": "long",
                  "contracts": m["step_size"] * 10 * (1 if exchange != "okx" else 1)}
                 for m in markets if m["type"] == "swap"]
    doc = scenario("b", exchange, hedge=True, positions=positions, markets=markets, orders=[
        {"symbol": positions[0]["symbol"], "side": "buy", "amount": contract_size(exchange, "BTC/USDT:USDT"),
         "price": 1}])
    if exchange == "okx":
        for m in doc["markets"]:
            if m["type"] == "swap":
                m["contract_size"] = OKX_CT_VAL[m["symbol"]]
    server = SimServer(parse_scenario(doc, "bench")).start()
    server.exchange.set_latency(LATENCY)
    reset_shared_budgets()
    try:
        broker = make_broker(server, "b", exchange, Market.SWAP)
        if generic:
            creds = credentials("b", exchange)
            profiled = broker
            broker = Broker(profiled.account, ApiKeys(creds["api_key"], creds["secret"], creds.get("passphrase")),
                            profile=Profile())

        async def go() -> tuple[float, int, int, int]:
            try:
                return await _kill(broker)
            finally:
                await broker.aclose()
                if generic:
                    await profiled.aclose()

        elapsed, requests, waits, failed = asyncio.run(go())
        return elapsed, requests, waits, failed, server.rate_limit_stats.total()
    finally:
        server.stop()


# Why a row is slower than a round trip or two: what the exchange itself allows.
_NOTES = {"bybit": "Bybit: 10 linear orders/s per UID and endpoint, so 100 closes take >= 5 s "
                   "whatever the client does; the limiter waits instead of drawing 10006"}


def run(quick: bool = False) -> list[dict]:
    """Rows for benchmarks/run_all.py: per protocol, the profile + limiter path and the
    generic ccxt-throttle path on the same account (quick: N = 20, the profile path only:
    the generic one is the slow comparison)."""
    rows = []
    for n in ((20,) if quick else (20, 100)):
        for exchange in ("binance", "okx", "bybit"):
            for generic in ((False,) if quick else (False, True)):
                elapsed, requests, waits, failed, refused = kill_one(exchange, n, generic)
                path = "ccxt throttle (generic profile)" if generic else "profile + limiter"
                note = f"; {_NOTES[exchange]}" if exchange in _NOTES and n >= 100 and not generic else ""
                rows.append({
                    "issue": 11,
                    "benchmark": f"broker kill, one {exchange} account, {n} positions + 1 resting "
                                 f"order, 50 ms: cancel_all_orders + close_many, {path}",
                    "measured": f"{elapsed:.3f} s, {requests} requests, {waits} limiter waits, "
                                f"{failed} failed, {refused} x 429-type{note}",
                    "target": "comparison" if generic else "0 failed, 0 x 429-type",
                    "met": None if generic else (failed == 0 and refused == 0)})
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(f"Kill of one account, {n} positions + 1 resting order, {LATENCY * 1000:.0f} ms per answer\n")
    print("| exchange | path | cancel + close (s) | requests | limiter waits | failed | 429-type answers |")
    print("|---|---|---|---|---|---|---|")
    for exchange in ("binance", "okx", "bybit"):
        for generic in (False, True):
            elapsed, requests, waits, failed, refused = kill_one(exchange, n, generic)
            path = "ccxt throttle (generic)" if generic else "profile + limiter"
            print(f"| {exchange} | {path} | {elapsed:.3f} | {requests} | {waits} | {failed} | {refused} |")


if __name__ == "__main__":
    main()
