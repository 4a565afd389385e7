"""The broker adapter: ccxt error mapping (table-driven) and reads/closes over real HTTP."""

from __future__ import annotations

import asyncio
import time

import ccxt
import pytest

from guard_app.core.config import AccountConfig
from guard_app.core.errors import (
    NeedsUserError,
    OrderRejectedError,
    OrderUnknownError,
    PermissionDeniedError,
    RateLimitedError,
    TemporaryBrokerError,
)
from guard_app.core.models import CloseReason, Market, PlannedClose, Position, Side
from guard_app.core.secrets import ApiKeys
from guard_app.exchanges.broker import Broker, deep_merge, exchange_reason, translate_error
from guard_app.exchanges.profiles import Profile
from guard_app.sim import ccxt_overrides
from tests.fixtures.world import World, keys_of, sim_account

BINANCE = 'binance {"code":%s,"msg":"%s"}'

# ccxt class, its message, whether an order was in flight -> our type, retried next cycle?
ERROR_TABLE = [
    (ccxt.AuthenticationError, BINANCE % (-2015, "Invalid API-key, IP, or permissions for action."), False, NeedsUserError, False),
    (ccxt.PermissionDenied, "binance permission denied", False, PermissionDeniedError, False),
    (ccxt.AccountSuspended, "binance account suspended", True, NeedsUserError, False),
    (ccxt.DDoSProtection, BINANCE % (-1003, "Too many requests"), False, RateLimitedError, True),
    (ccxt.RateLimitExceeded, BINANCE % (-1003, "Too many requests"), True, RateLimitedError, True),
    (ccxt.InvalidNonce, BINANCE % (-1021, "Timestamp for this request is outside of the recvWindow."), False, TemporaryBrokerError, True),
    (ccxt.RequestTimeout, "binance GET http://x/api/v3/account?signature=abc timed out", False, TemporaryBrokerError, True),
    (ccxt.RequestTimeout, "binance POST http://x/api/v3/order timed out", True, OrderUnknownError, True),
    (ccxt.ExchangeNotAvailable, "binance GET http://x/api/v3/exchangeInfo", False, TemporaryBrokerError, True),
    (ccxt.ExchangeNotAvailable, "binance POST http://x/fapi/v1/order", True, OrderUnknownError, True),
    (ccxt.OnMaintenance, "binance system maintenance", False, TemporaryBrokerError, True),
    (ccxt.NetworkError, "connection reset", True, OrderUnknownError, True),
    (ccxt.InsufficientFunds, BINANCE % (-2010, "Account has insufficient balance for requested action."), True, OrderRejectedError, True),
    (ccxt.InvalidOrder, BINANCE % (-1013, "Filter failure: LOT_SIZE"), True, OrderRejectedError, True),
    (ccxt.BadRequest, BINANCE % (-1013, "Filter failure: NOTIONAL"), True, OrderRejectedError, True),
    (ccxt.ExchangeError, BINANCE % (-2022, "ReduceOnly Order is rejected."), True, OrderRejectedError, True),
    (ccxt.ExchangeError, "binance unknown failure", False, TemporaryBrokerError, True),
    (ccxt.BadResponse, "binance garbled answer", False, TemporaryBrokerError, True),
    (RuntimeError, "a bug", False, TemporaryBrokerError, True),
]


@pytest.mark.parametrize(("ccxt_cls", "message", "ordering", "ours", "retried"), ERROR_TABLE)
def test_every_ccxt_error_maps_to_our_type(ccxt_cls, message, ordering, ours, retried) -> None:
    err = translate_error(ccxt_cls(message), "acc-1", ordering=ordering, symbol="BTC/USDT")
    assert type(err) is ours
    assert err.account_id == "acc-1"
    assert isinstance(err, TemporaryBrokerError | OrderRejectedError) == retried
    assert "signature" not in err.reason  # signed query strings are never repeated


def test_exchange_code_and_message_are_kept() -> None:
    reason, code = exchange_reason(ccxt.ExchangeError(BINANCE % (-2022, "ReduceOnly Order is rejected.")))
    assert code == "-2022"
    assert reason == "ReduceOnly Order is rejected. (code -2022)"


def test_retry_after_header_is_read() -> None:
    err = translate_error(ccxt.DDoSProtection("binance 418"), "a", headers={"Retry-After": "120"})
    assert isinstance(err, RateLimitedError) and err.retry_after == 120.0


def test_app_settings_win_over_the_user_ccxt_table_and_keys_are_never_taken_from_it() -> None:
    account = AccountConfig(
        id="a", user="u", exchange="binance", max_positions=3, market=Market.SWAP,
        ccxt={"enableRateLimit": False, "options": {"defaultType": "spot", "foo": 1},
              "timeout": 1234, "apiKey": "smuggled"},
    )
    cfg = Broker.client_config(account, ApiKeys("real-key", "real-secret"))
    # Binance's own limiter replaces ccxt's throttle: the user's False stands either way.
    assert cfg["enableRateLimit"] is False
    assert cfg["options"]["defaultType"] == "swap"
    assert cfg["options"]["foo"] == 1 and cfg["timeout"] == 1234
    assert cfg["apiKey"] == "real-key" and cfg["secret"] == "real-secret"


def test_deep_merge_recurses_and_copies() -> None:
    base = {"a": {"b": 1, "c": [1]}, "d": 1}
    merged = deep_merge(base, {"a": {"b": 2}, "e": 3})
    assert merged == {"a": {"b": 2, "c": [1]}, "d": 1, "e": 3}
    merged["a"]["c"].append(2)
    assert base["a"]["c"] == [1]


def _broker(world: World, sim, name: str, market: Market, profile=None, **kw) -> Broker:
    account = AccountConfig(
        id=f"{name}-{market.value}", user="u", exchange="binance", max_positions=10,
        market=market, ccxt={**ccxt_overrides(sim.base_url), "timeout": 3000}, **kw,
    )
    return Broker(account, keys_of(world.sim_accounts[name]), profile=profile)


def test_spot_snapshot_values_positions_and_sets_dust_and_unpriced_apart(world: World) -> None:
    sim = world.start_sim([sim_account("s", spot={"USDT": 50, "BTC": 0.001, "TRX": 1.0,
                                                   "BNB": 0.1, "XYZ": 3})])

    async def go():
        broker = _broker(world, sim, "s", Market.SPOT, ignore_assets=("BNB",))
        try:
            return await broker.snapshot()
        finally:
            await broker.aclose()

    snap = asyncio.run(go())
    assert [(p.symbol, p.value) for p in snap.positions] == [("BTC/USDT", pytest.approx(60.0))]
    assert [h.symbol for h in snap.dust] == ["TRX/USDT"]
    assert "min_position_value" in snap.dust[0].reason
    assert [h.symbol for h in snap.unpriced] == ["XYZ/USDT"]


def test_futures_snapshot_reads_long_and_short_at_mark_price(world: World) -> None:
    sim = world.start_sim([sim_account("f", positions=[("BTC/USDT:USDT", "long", 0.01),
                                                        ("ETH/USDT:USDT", "short", 0.1)])])
    sim.exchange.set_price("ETH/USDT:USDT", 3100)

    async def go():
        broker = _broker(world, sim, "f", Market.SWAP)
        try:
            return await broker.snapshot()
        finally:
            await broker.aclose()

    snap = asyncio.run(go())
    by_symbol = {p.symbol: p for p in snap.positions}
    assert by_symbol["BTC/USDT:USDT"].side is Side.LONG
    assert by_symbol["BTC/USDT:USDT"].value == pytest.approx(600.0)
    assert by_symbol["ETH/USDT:USDT"].side is Side.SHORT
    assert by_symbol["ETH/USDT:USDT"].value == pytest.approx(310.0)


def test_a_rejected_close_says_why_and_the_others_still_go_out(world: World) -> None:
    sim = world.start_sim([sim_account("r", spot={"USDT": 10, "BTC": 0.001, "ETH": 0.01})])

    async def go():
        broker = _broker(world, sim, "r", Market.SPOT)
        try:
            await broker.snapshot()
            closes = [
                # more BTC than the account holds: the exchange refuses it
                (PlannedClose("r-spot", "u", Position("BTC/USDT", 0.5, 30000.0), CloseReason.COUNT_CAP), "cid-1"),
                (PlannedClose("r-spot", "u", Position("ETH/USDT", 0.01, 30.0), CloseReason.COUNT_CAP), "cid-2"),
            ]
            return await broker.close_many(closes)
        finally:
            await broker.aclose()

    rejected, filled = asyncio.run(go())
    assert isinstance(rejected, OrderRejectedError)
    assert "insufficient balance" in rejected.reason and "-2010" in rejected.reason
    assert filled is not None and not isinstance(filled, Exception) and filled.status == "closed"
    assert filled.client_order_id == "cid-2"


def test_amount_below_the_market_minimum_is_never_sent(world: World) -> None:
    sim = world.start_sim([sim_account("m", spot={"USDT": 10, "BTC": 0.001})])

    async def go():
        broker = _broker(world, sim, "m", Market.SPOT)
        try:
            await broker.snapshot()
            tiny = PlannedClose("m-spot", "u", Position("BTC/USDT", 0.000001, 0.06), CloseReason.COUNT_CAP)
            return await broker.close(tiny, "cid-tiny")
        finally:
            await broker.aclose()

    assert asyncio.run(go()) is None
    assert sim.exchange.orders == []


def test_lookup_order_by_client_id(world: World) -> None:
    sim = world.start_sim([sim_account("o", spot={"USDT": 10, "ETH": 0.01})])

    async def go():
        broker = _broker(world, sim, "o", Market.SPOT)
        try:
            await broker.snapshot()
            pc = PlannedClose("o-spot", "u", Position("ETH/USDT", 0.01, 30.0), CloseReason.FORCED_UNWIND)
            await broker.close(pc, "ga-lookup-1")
            return (await broker.lookup_order("ETH/USDT", "ga-lookup-1"),
                    await broker.lookup_order("ETH/USDT", "ga-never-sent"))
        finally:
            await broker.aclose()

    found, missing = asyncio.run(go())
    assert found is not None and found.client_order_id == "ga-lookup-1" and found.filled == pytest.approx(0.01)
    assert missing is None


def test_idle_time_is_credited_to_the_rate_limiter(world: World) -> None:
    """On the generic profile (ccxt's throttle): ccxt's async bucket forgets idle time; a
    wake after a quiet period must not pay the previous cycle's rate-limit debt."""
    sim = world.start_sim([sim_account("t", spot={"USDT": 10, "BTC": 0.001})])

    async def go() -> tuple[float, float]:
        broker = _broker(world, sim, "t", Market.SPOT, profile=Profile())
        assert broker.limiter is None
        try:
            await broker.snapshot()
            bucket = broker._client.throttler.config
            bucket["tokens"] = -20.0  # as after an expensive request: 1 s of debt at 50 ms
            await asyncio.sleep(1.1)  # an idle period longer than the debt
            started = time.monotonic()
            await broker.snapshot()
            return time.monotonic() - started, bucket["capacity"]
        finally:
            await broker.aclose()

    elapsed, capacity = asyncio.run(go())
    assert capacity == 1  # never credited beyond the bucket
    assert elapsed < 0.6  # without the credit the debt alone is ~1 s
