"""The rate limiter that knows each exchange's windows (DESIGN rule 15, issue 11 item 1).

Unit level (a clock passed in): bursts up to the window, waits only when it is spent,
IP budgets shared between accounts on one host, order budgets per account, corrections
from the exchange's usage figures, and a 429's "wait until" that fails fast.
Against the simulator (which enforces the published limits): a burst within the window
gets zero 429s and never waits; past the window the broker waits instead of earning one.
"""

from __future__ import annotations

import pytest

from guard_app.core.models import CloseReason, Market, PlannedClose
from guard_app.exchanges.ratelimit import BudgetBlocked, Charge, RateLimit, RateLimiter, _Registry
from guard_app.sim import parse_scenario
from tests.exchanges.protocol_world import make_broker, run, scenario

LIMITS = [RateLimit("ip_w", 10, 60.0, "ip", "x-used"), RateLimit("orders", 3, 10.0, "account")]


def test_a_burst_up_to_the_window_goes_at_once_and_then_waits_for_the_oldest_to_expire() -> None:
    lim = RateLimiter("ex@host", LIMITS, registry=_Registry())
    for i in range(3):
        assert lim.try_acquire([Charge("orders")], now=100.0 + i * 0.01) == 0.0
    wait = lim.try_acquire([Charge("orders")], now=100.05)
    assert wait == pytest.approx(10.0 - 0.05)  # until the first order leaves the window
    assert lim.used("orders") <= 3
    assert lim.try_acquire([Charge("orders")], now=110.01) == 0.0


def test_all_charges_of_a_request_fit_or_none_is_spent() -> None:
    lim = RateLimiter("ex@host", LIMITS, registry=_Registry())
    assert lim.try_acquire([Charge("ip_w", 9)], now=0.0) == 0.0
    assert lim.try_acquire([Charge("ip_w", 5), Charge("orders", 1)], now=1.0) > 0
    assert lim.try_acquire([Charge("orders", 3)], now=1.0) == 0.0  # the refused one spent nothing


def test_ip_budgets_are_shared_by_accounts_on_one_host_and_order_budgets_are_not() -> None:
    registry = _Registry()
    alice = RateLimiter("binance@h", LIMITS, registry=registry)
    bob = RateLimiter("binance@h", LIMITS, registry=registry)
    other_host = RateLimiter("binance@other", LIMITS, registry=registry)
    assert alice.try_acquire([Charge("ip_w", 8), Charge("orders", 3)], now=0.0) == 0.0
    assert bob.try_acquire([Charge("ip_w", 3)], now=0.1) > 0  # 8 + 3 > 10 on the shared IP
    assert bob.try_acquire([Charge("ip_w", 2), Charge("orders", 3)], now=0.1) == 0.0  # bob's own orders
    assert other_host.try_acquire([Charge("ip_w", 10)], now=0.1) == 0.0


def test_usage_reported_by_the_exchange_corrects_the_count_upwards_only() -> None:
    lim = RateLimiter("ex@host", LIMITS, registry=_Registry())
    lim.try_acquire([Charge("ip_w", 2)])
    lim.observe("ip_w", 9)  # another process on this IP spent weight too
    assert lim.used("ip_w") == pytest.approx(9)
    lim.observe("ip_w", 1)
    assert lim.used("ip_w") == pytest.approx(9)


def test_a_wait_until_from_the_exchange_fails_fast_instead_of_hanging() -> None:
    lim = RateLimiter("ex@host", LIMITS, registry=_Registry())
    lim.block(120.0)
    with pytest.raises(BudgetBlocked) as info:
        lim.try_acquire([Charge("ip_w")])
    assert info.value.told_by_exchange and 110 < info.value.retry_after <= 120
    assert lim.try_acquire([Charge("orders")]) == 0.0  # account budgets aren't blocked by an IP ban


def test_published_limits_replace_the_defaults() -> None:
    lim = RateLimiter("ex@host", LIMITS, registry=_Registry())
    lim.set_limits([RateLimit("orders", 1, 10.0, "account")])
    assert lim.try_acquire([Charge("orders")], now=0.0) == 0.0
    assert lim.try_acquire([Charge("orders")], now=0.1) > 0


# -- against the simulator ----------------------------------------------------------------


def _positions(symbols: list[str]) -> list[dict]:
    size = {"BTC/USDT:USDT": 0.01, "ETH/USDT:USDT": 0.2, "SOL/USDT:USDT": 2, "XRP/USDT:USDT": 1000,
            "DOGE/USDT:USDT": 10000}
    return [{"symbol": s, "side": side, "contracts": size[s]} for s in symbols for side in ("long", "short")]


ALL = ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT", "DOGE/USDT:USDT"]


@pytest.mark.parametrize(("exchange", "limits", "first", "then"), [
    # Binance publishes the figure in exchangeInfo.rateLimits: the limiter reads it there.
    ("binance", {"binance.futures_orders_10s": 6}, 6, 4),
    # Bybit reports the quota in X-Bapi-Limit with every order answer.
    ("bybit", {"bybit.order_linear_1s": 4}, 4, 6),
])
def test_a_burst_within_the_window_never_waits_and_past_it_waits_instead_of_a_429(
    exchange, limits, first, then, sim_factory
) -> None:
    server = sim_factory(parse_scenario(scenario("z", exchange, hedge=True, positions=_positions(ALL),
                                                 limits=limits), "t"))

    async def go(broker):
        snap = await broker.snapshot()
        closes = [(PlannedClose(broker.account_id, "u", p, CloseReason.FORCED_UNWIND), f"ga{i}x9")
                  for i, p in enumerate(snap.positions)]
        burst = await broker.close_many(closes[:first])
        waits_after_burst = broker.limiter.waits
        rest = await broker.close_many(closes[first:first + then])
        return burst, waits_after_burst, rest, broker.limiter.waits

    burst, waits_after_burst, rest, waits = run(go, make_broker(server, "z", exchange, Market.SWAP))
    assert server.rate_limit_stats.total() == 0, server.rate_limit_stats.snapshot()
    assert all(not isinstance(r, Exception) and r is not None for r in burst + rest), burst + rest
    assert waits_after_burst == 0
    assert waits > 0  # the second group waited for the window instead of being refused


def test_accounts_on_one_host_share_the_ip_weight_and_read_the_usage_header(sim_factory) -> None:
    doc = scenario("p", "binance", spot={"USDT": 100, "BTC": 0.01})
    doc["accounts"].append({**scenario("q", "binance", spot={"USDT": 100, "ETH": 0.1})["accounts"][0]})
    server = sim_factory(parse_scenario(doc, "t"))

    async def go(p, q):
        await p.snapshot()
        used_by_p = p.limiter.used("spot_weight_1m")
        await q.snapshot()
        return used_by_p, q.limiter.used("spot_weight_1m"), p.limiter.used("spot_weight_1m")

    used_by_p, used_seen_by_q, used_seen_by_p = run(
        go, make_broker(server, "p", "binance", Market.SPOT), make_broker(server, "q", "binance", Market.SPOT))
    assert used_by_p > 0
    assert used_seen_by_q >= 2 * used_by_p - 1e-9  # one budget for both accounts
    assert used_seen_by_p == used_seen_by_q


def test_a_429_that_still_arrives_is_honoured_and_nothing_else_is_sent_to_that_ip_meanwhile(sim_factory) -> None:
    from guard_app.core.errors import RateLimitedError

    doc = scenario("p", "binance", spot={"USDT": 100, "BTC": 0.01})
    doc["accounts"].append({**scenario("q", "binance", spot={"USDT": 100, "ETH": 0.1})["accounts"][0]})
    server = sim_factory(parse_scenario(doc, "t"))

    async def go(p, q):
        await p.load_markets()
        await q.load_markets()
        server.exchange.inject_fault("/api/v3/account", 429, retry_after=120, count=1)
        errors = []
        sent = []
        for broker in (p, q):  # q shares the IP with p: it must not knock either
            before = broker.requests_sent
            try:
                await broker.snapshot()
            except RateLimitedError as exc:
                errors.append(exc)
            sent.append(broker.requests_sent - before)
        return errors, sent

    errors, sent = run(
        go, make_broker(server, "p", "binance", Market.SPOT), make_broker(server, "q", "binance", Market.SPOT))
    assert len(errors) == 2
    assert errors[0].retry_after == 120.0  # Binance's Retry-After
    assert 100 < (errors[1].retry_after or 0) <= 120  # q: the rest of the same back-off
    assert sent == [1, 0]  # p's account read got the 429; q sent nothing at all
