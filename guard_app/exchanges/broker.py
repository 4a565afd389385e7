"""The broker adapter: the generic ccxt broker, with one exchange profile for what differs.

One ``Broker`` per account, created and used inside the enforcer's own event loop
(ccxt async clients must never be shared between loops). It reads an account into an
``AccountSnapshot`` (positions valued in the account's quote currency: contracts ×
contract size × mark, dust and unpriced holdings set apart) and closes positions with
market orders — reduce-only, on the position's own leg and margin mode, in batches
where the exchange has them.

What differs between exchanges lives in :mod:`guard_app.exchanges.profiles` (client-id
rules, hedge legs, margin mode, settle coins, batch sizes, open/algo orders, error
payloads, rate limits). Where a profile knows the exchange's published limits, its
:class:`~guard_app.exchanges.ratelimit.RateLimiter` replaces ccxt's throttle: it is
called before every request ccxt signs (a wrapper of ``client.fetch2``) and reads
every answer's usage headers (a wrapper of ``client.handle_errors``, which ccxt calls
with each answer's status, headers and body).

Every ccxt exception is translated here into guard-app's own types (``errors.py``):

* temporary (network, timeout, exchange down, bad nonce)  -> ``TemporaryBrokerError``
* rate limit or IP ban (HTTP 429/418, -1003, 50011, 10006) -> ``RateLimitedError``
* authentication or permission                            -> ``NeedsUserError``
* order refused (funds, filters, reduce-only)              -> ``OrderRejectedError``
* network failure while an order was in flight             -> ``OrderUnknownError``

and every reason carries the exchange's own code and words, with the account's
credentials scrubbed out (:mod:`guard_app.exchanges.scrub`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async

from guard_app.core.config import AccountConfig
from guard_app.core.errors import (
    BrokerError,
    NeedsUserError,
    OrderRejectedError,
    OrderUnknownError,
    PermissionDeniedError,
    RateLimitedError,
    SandboxUnavailableError,
    TemporaryBrokerError,
)
from guard_app.core.models import (
    AccountSnapshot,
    Holding,
    Market,
    OrderResult,
    PlannedClose,
    Position,
    Side,
)
from guard_app.core.secrets import ApiKeys, is_credential_key
from guard_app.exchanges.profiles import Profile, profile_for
from guard_app.exchanges.profiles.base import request_params
from guard_app.exchanges.ratelimit import BudgetBlocked, RateLimiter
from guard_app.exchanges.scrub import scrub

log = logging.getLogger(__name__)

# ccxt's DEBUG lines echo request headers, API key included. Secrets never reach a log,
# whatever level the app or a user configures, so ccxt never logs below INFO.
logging.getLogger("ccxt").setLevel(logging.INFO)

T = TypeVar("T")

# An idle keep-alive connection is kept this long (aiohttp's default is 15 s), so the
# first kill after a quiet minute doesn't pay a new TCP (and TLS) handshake.
KEEPALIVE_SECONDS = 300.0
# After cancel_all_orders, the closes that follow at once skip their open-orders read.
ORDERS_CLEARED_FRESH = 2.0

_CODE_MSG = re.compile(r'"code"\s*:\s*(-?\d+)\s*,\s*"msg"\s*:\s*"([^"]*)"')
_JSON_TAIL = re.compile(r"^[a-z0-9]+ (\{.*\})\s*$", re.DOTALL)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in, recursing into nested dicts."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def exchange_reason(
    exc: BaseException, body: Mapping[str, Any] | None = None, profile: Profile | None = None
) -> tuple[str, str | None]:
    """The exchange's own words for an error: (reason, code).

    ccxt messages look like ``okx {"code":"1","data":[{"sCode":"51000",...}]}``; the
    profile finds the real code and message in the answer (OKX's ``sCode``/``sMsg``
    inside ``data``, Bybit's ``retCode``/``retMsg``, Binance's ``code``/``msg``), because
    ccxt's class alone can be misleading and its message may be only "All operations
    failed".
    """
    profile = profile or Profile()
    text = str(exc)
    payload: Any = body
    if payload is None:
        match = _JSON_TAIL.match(text.strip())
        if match:
            try:
                payload = json.loads(match.group(1))
            except ValueError:
                payload = None
    detail = profile.error_detail(payload) if payload is not None else None
    if detail is None:
        match = _CODE_MSG.search(text)
        if match:
            detail = match.group(1), match.group(2)
    if detail is not None:
        code, msg = detail
        return f"{msg.strip() or 'no message'} (code {code})", code
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    # ccxt prefixes its messages with the exchange id; drop it, we name the account.
    text = re.sub(r"^[a-z0-9]+ ", "", text)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{text} ({type(exc).__name__})", None


def translate_error(
    exc: BaseException,
    account_id: str,
    *,
    ordering: bool = False,
    symbol: str | None = None,
    headers: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
    profile: Profile | None = None,
    secrets: Sequence[str | None] = (),
) -> BrokerError:
    """Map a ccxt exception to guard-app's types. ``ordering``: an order was in flight.

    ``headers`` and ``body`` are the failed answer's, when there was one. ``secrets``
    (the account's key, secret, passphrase) never appear in the reason.
    """
    if isinstance(exc, BrokerError):
        return exc
    profile = profile or Profile()
    reason, code = exchange_reason(exc, body, profile)
    reason = scrub(reason, secrets, profile.ECHOES)
    kw: dict[str, Any] = {"code": code, "symbol": symbol}
    if isinstance(exc, ccxt.PermissionDenied):
        return PermissionDeniedError(account_id, f"API key lacks a permission: {reason}", **kw)
    if isinstance(exc, ccxt.AuthenticationError):
        return NeedsUserError(account_id, f"API key refused: {reason}", **kw)
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        # A 429/418 answer means the request was refused, so even an order is not in doubt.
        return RateLimitedError(
            account_id, f"rate limited by the exchange: {reason}",
            retry_after=profile.retry_after(headers, body), **kw,
        )
    if isinstance(exc, ccxt.InvalidNonce):
        return TemporaryBrokerError(account_id, f"clock out of sync with the exchange: {reason}", **kw)
    if isinstance(exc, ccxt.NetworkError):  # timeouts, unreachable, maintenance
        if ordering:
            return OrderUnknownError(
                account_id, f"no answer to the close order, it may have executed: {reason}", **kw
            )
        return TemporaryBrokerError(account_id, f"exchange unreachable: {reason}", **kw)
    if isinstance(exc, ccxt.InsufficientFunds | ccxt.InvalidOrder):
        return OrderRejectedError(account_id, f"order rejected: {reason}", **kw)
    if isinstance(exc, ccxt.ExchangeError) and ordering:
        return OrderRejectedError(account_id, f"order rejected: {reason}", **kw)
    if isinstance(exc, ccxt.BaseError):
        return TemporaryBrokerError(account_id, f"exchange error: {reason}", **kw)
    return TemporaryBrokerError(account_id, f"unexpected error: {reason}", **kw)


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """Result of ``Broker.check_connection`` (used by "Test connection" in the GUI)."""

    markets: int
    positions: int
    dust: int
    problems: tuple[str, ...] = ()  # what guard-app cannot do on this exchange (plain words)
    profile: str = "generic"  # "binance", "okx", "bybit" (tested end to end) or "generic"


@dataclass(slots=True)
class _Order:
    """One close order about to be sent."""

    index: int
    symbol: str
    side: str
    amount: float
    params: dict[str, Any]
    client_id: str


class Broker:
    """One account on one exchange, through ccxt's async client and the exchange's profile.

    Not thread-safe: create, use and close it on one event loop.
    """

    def __init__(
        self,
        account: AccountConfig,
        keys: ApiKeys,
        *,
        client_factory: Callable[[dict[str, Any]], Any] | None = None,
        profile: Profile | None = None,
    ) -> None:
        self.account = account
        self.profile = profile or profile_for(account.exchange)
        self._secrets = (keys.api_key, keys.secret, keys.password)
        self._config = self.client_config(account, keys, self.profile)
        factory = client_factory or getattr(ccxt_async, account.exchange)
        self._client: Any = factory(self._config)
        if account.sandbox:
            try:
                self._client.set_sandbox_mode(True)
            except (ccxt.NotSupported, TypeError):  # some classes raise TypeError, not NotSupported
                raise SandboxUnavailableError(
                    account.id, f"{account.exchange} offers no sandbox/testnet: untick sandbox"
                ) from None
        self.requests_sent = 0  # HTTP requests this broker made (benchmarks, tests)
        # The profile's limiter replaces ccxt's throttle (DESIGN rule 15). A user who asks
        # for ccxt's spacing in [accounts.ccxt] (enableRateLimit = true, or a rateLimit)
        # gets it on top: the limiter still keeps the exchange's windows.
        self.limiter: RateLimiter | None = None
        if self.profile.owns_rate_limit:
            self.limiter = RateLimiter(self.profile.ip_key(_api_url(self._client)),
                                       self.profile.rate_limits(account.market))
        self._instrument(self._client)
        self._markets_loaded = False
        self._primed = False
        self._idle_since = time.monotonic()
        self._last_request = 0.0
        # (symbol, side) -> order params that close exactly that position.
        self._close_params: dict[tuple[str, Side], dict[str, Any]] = {}
        self._orders_cleared_at = -math.inf

    # -- construction -------------------------------------------------------------

    @staticmethod
    def client_config(account: AccountConfig, keys: ApiKeys, profile: Profile | None = None) -> dict[str, Any]:
        """The ccxt constructor config: the user's ``[accounts.ccxt]`` table, with the
        app's own settings (credentials, market type, rate limiting) winning over it.

        ccxt's throttle is switched off where the profile's limiter knows the exchange's
        limits; a user who sets ``enableRateLimit = true`` or a ``rateLimit`` gets ccxt's
        throttle back, on top of the limiter.
        """
        profile = profile or profile_for(account.exchange)
        # The config loader refuses credentials in [accounts.ccxt]; never trust that alone.
        user = {k: v for k, v in account.ccxt.items() if not is_credential_key(k)}
        ours: dict[str, Any] = {
            "enableRateLimit": not profile.owns_rate_limit,
            "options": profile.ccxt_options(account.market),
        }
        if profile.owns_rate_limit and (user.get("enableRateLimit") is True or "rateLimit" in user):
            ours["enableRateLimit"] = True
        merged = deep_merge(user, ours)
        merged.update(keys.to_ccxt())
        return merged

    def _instrument(self, client: Any) -> None:
        """Wrap three of ccxt's methods on this client:

        * ``fetch2``: the limiter waits before every request is signed;
        * ``fetch``: counts what goes out, notes when (for ``warm``);
        * ``handle_errors`` (called with every answer): usage headers correct the limiter,
          and an error keeps the headers and body of the answer that failed — requests of
          one account run concurrently, so ccxt's ``last_response_headers`` may belong to
          another request.
        """
        original_fetch = client.fetch
        original_fetch2 = client.fetch2
        original_handle = client.handle_errors
        profile, market = self.profile, self.account.market

        async def fetch2(path: Any, api: Any = "public", method: str = "GET", params: Any = None,
                         *args: Any, **kwargs: Any) -> Any:
            # Wait here, before ccxt signs: a request that waited for its window must not
            # leave with a stale timestamp (Bybit 10002, Binance -1021). The URL and body
            # come from a trial signature (an HMAC, microseconds).
            if self.limiter is not None:
                trial = client.sign(path, api, method, copy.copy(params) if params is not None else {})
                url = str(trial.get("url", ""))
                charges = profile.charges(method, urlsplit(url).path, request_params(url, trial.get("body")), market)
                if charges:
                    await self.limiter.acquire(charges)
            return await original_fetch2(path, api, method, {} if params is None else params, *args, **kwargs)

        async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            self._last_request = time.monotonic()
            self.requests_sent += 1
            return await original_fetch(url, method, headers, body)

        def handle_errors(*args: Any, **kwargs: Any) -> Any:
            status, _text, url, method, headers = args[:5]
            response = args[6] if len(args) > 6 else None
            if self.limiter is not None:
                try:
                    params = request_params(url, args[8] if len(args) > 8 else None)
                    profile.observe(self.limiter, method, urlsplit(url).path, int(status or 0), headers,
                                    response, params)
                except Exception:  # noqa: BLE001 - a header we can't read must not fail the request
                    log.debug("%s: could not read the rate-limit headers", self.account_id, exc_info=True)
            try:
                return original_handle(*args, **kwargs)
            except Exception as exc:
                exc.guard_headers = headers  # type: ignore[attr-defined]
                exc.guard_body = response if isinstance(response, Mapping) else None  # type: ignore[attr-defined]
                raise

        client.fetch2 = fetch2
        client.fetch = fetch
        client.handle_errors = handle_errors

    # -- plumbing -----------------------------------------------------------------

    @property
    def account_id(self) -> str:
        return self.account.id

    @property
    def client(self) -> Any:
        """The ccxt client (for the profiles)."""
        return self._client

    @property
    def market(self) -> Market:
        return self.account.market

    def _credit_idle_time(self) -> None:
        """Give ccxt's rate limiter back the time we spent idle (generic profile only).

        ccxt's async leaky bucket only refills while requests are queued: after a quiet
        minute the next request still pays for the previous cycle's last request (up to
        a second on Binance). A forced unwind must not wait for debt that time has
        already paid. Only the idle time is credited, never above the bucket's capacity,
        so the exchange's limit is still respected.
        """
        throttler = getattr(self._client, "throttler", None)
        now = time.monotonic()
        idle, self._idle_since = now - self._idle_since, now
        if throttler is None or getattr(throttler, "running", True) or idle <= 0:
            return
        bucket = throttler.config
        refilled = bucket["tokens"] + idle * 1000 * bucket["refillRate"]
        bucket["tokens"] = min(refilled, bucket["capacity"])

    async def _ensure_session(self) -> None:
        """Open ccxt's HTTP session with long-lived keep-alive connections."""
        c = self._client
        if c.session is not None or not getattr(c, "own_session", True):
            return
        c.open()  # ccxt's own SSL context, loop and proxies
        created: Any = getattr(c, "session", None)  # open() just set it (mypy can't know)
        connector: Any = getattr(c, "tcp_connector", None)
        c.tcp_connector = aiohttp.TCPConnector(
            ssl=c.ssl_context, enable_cleanup_closed=True, keepalive_timeout=KEEPALIVE_SECONDS,
        )
        c.session = aiohttp.ClientSession(connector=c.tcp_connector, trust_env=c.aiohttp_trust_env)
        if created is not None:
            await created.close()
        if connector is not None:
            await connector.close()

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        ordering: bool = False,
        symbol: str | None = None,
        keep_cause: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run one ccxt call; every failure becomes one of guard-app's error types.

        ``keep_cause``: the error keeps the failed answer's body as ``guard_body`` (for a
        batch whose rows each carry their own reason)."""
        self._credit_idle_time()
        try:
            await self._ensure_session()
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BudgetBlocked as exc:
            # Nothing was sent, so even an order is not in doubt.
            raise RateLimitedError(
                self.account_id, f"rate limited: {exc}", retry_after=exc.retry_after, symbol=symbol,
            ) from None
        except Exception as exc:  # noqa: BLE001 - every failure becomes one of our types
            err = self.translate(exc, ordering=ordering, symbol=symbol)
            if keep_cause:
                err.guard_body = getattr(exc, "guard_body", None)  # type: ignore[attr-defined]
            if isinstance(exc, ccxt.InvalidNonce):
                self._resync_clock_later()
            raise err from None

    _call = call  # the name the first version used

    def translate(self, exc: BaseException, *, ordering: bool = False, symbol: str | None = None) -> BrokerError:
        """``translate_error`` with this account's profile and credentials."""
        return translate_error(
            exc, self.account_id, ordering=ordering, symbol=symbol,
            headers=getattr(exc, "guard_headers", None), body=getattr(exc, "guard_body", None),
            profile=self.profile, secrets=self._secrets,
        )

    def _refusal(self, symbol: str, code: str, message: str) -> OrderRejectedError:
        """A per-order refusal found inside a batch answer, in the exchange's words."""
        reason = scrub(f"{message.strip() or 'no message'} (code {code})", self._secrets, self.profile.ECHOES)
        return OrderRejectedError(self.account_id, f"order rejected: {reason}", code=code, symbol=symbol)

    def _resync_clock_later(self) -> None:
        # Next requests correct the timestamp by the measured offset (Binance -1021).
        self._client.options["adjustForTimeDifference"] = True
        self._markets_loaded = False

    async def load_markets(self) -> None:
        if not self._markets_loaded:
            if self._client.options.get("adjustForTimeDifference"):
                await self.call(self._client.load_time_difference)
            await self.call(self._client.load_markets)
            self._markets_loaded = True

    async def warm(self, idle: float = 20.0) -> None:
        """Keep the account ready for a kill: markets loaded, and a connection open (one
        cheap public request when nothing went out for ``idle`` seconds), so the first
        close after a quiet hour is as fast as the tenth."""
        await self.load_markets()
        if not self._primed:
            await self.profile.prime(self)
            self._primed = True
        elif time.monotonic() - self._last_request >= idle and self._client.has.get("fetchTime"):
            await self.call(self._client.fetch_time)

    async def aclose(self) -> None:
        """Release the HTTP session. Safe to call twice."""
        try:
            await self._client.close()
        except Exception:  # noqa: BLE001,S110 - closing must never raise at shutdown
            pass

    # -- reading ------------------------------------------------------------------

    async def snapshot(self) -> AccountSnapshot:
        """Read every position of the account, valued in its quote currency."""
        await self.load_markets()
        if self.account.market is Market.SPOT:
            positions, dust, unpriced = await self._spot_positions()
        else:
            positions, dust, unpriced = await self._derivative_positions()
        return AccountSnapshot(
            account_id=self.account.id,
            user=self.account.user,
            quote=self.account.quote,
            positions=tuple(sorted(positions, key=lambda p: (p.value, p.symbol))),
            dust=tuple(dust),
            unpriced=tuple(unpriced),
            taken_at=time.time(),
        )

    def _min_limits(self, market: Mapping[str, Any]) -> tuple[float, float]:
        limits = market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min") or 0.0
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        return float(min_amount), float(min_cost)

    def _sellable_amount(self, symbol: str, amount: float) -> float:
        """``amount`` rounded down to the market's precision (0.0 when nothing is left)."""
        try:
            return float(self._client.amount_to_precision(symbol, amount))
        except ccxt.BaseError:
            return 0.0  # ccxt raises when the amount truncates below the precision

    def _dust_reason(
        self, symbol: str, amount: float, value: float, market: Mapping[str, Any], *, cost_applies: bool
    ) -> str | None:
        if value < self.account.min_position_value:
            return f"below min_position_value {self.account.min_position_value:g} {self.account.quote}"
        rounded = self._sellable_amount(symbol, amount)
        min_amount, min_cost = self._min_limits(market)
        if rounded <= 0 or rounded < min_amount:
            return "below the market's minimum order size"
        price = value / amount if amount else 0.0
        if cost_applies and min_cost and rounded * price < min_cost:
            return f"below the market's minimum order value {min_cost:g} {self.account.quote}"
        return None

    async def _spot_positions(self) -> tuple[list[Position], list[Holding], list[Holding]]:
        balance = await self.call(self._client.fetch_balance)
        quote = self.account.quote
        ignored = {a.upper() for a in self.account.ignore_assets} | {quote}
        totals: dict[str, float] = {}
        for asset, amount in (balance.get("total") or {}).items():
            if amount and float(amount) > 0 and asset.upper() not in ignored:
                totals[asset] = float(amount)
        markets = self._client.markets or {}
        priced_symbols = []
        unpriced: list[Holding] = []
        for asset, amount in sorted(totals.items()):
            symbol = f"{asset}/{quote}"
            market = markets.get(symbol)
            if market is None or market.get("active") is False:
                unpriced.append(Holding(symbol, amount, None, f"no {symbol} market to value or sell it"))
            else:
                priced_symbols.append(symbol)
        prices = await self._last_prices(priced_symbols) if priced_symbols else {}
        positions: list[Position] = []
        dust: list[Holding] = []
        for symbol in priced_symbols:
            amount = totals[symbol.split("/")[0]]
            if symbol not in prices:
                unpriced.append(Holding(symbol, amount, None, "the exchange gave no price"))
                continue
            value = amount * prices[symbol]
            reason = self._dust_reason(symbol, amount, value, markets[symbol], cost_applies=True)
            if reason:
                dust.append(Holding(symbol, amount, value, reason))
            else:
                positions.append(Position(symbol, amount, value, Side.LONG, prices[symbol]))
        return positions, dust, unpriced

    async def _last_prices(self, symbols: list[str]) -> dict[str, float]:
        """Last traded prices. Prefers the exchange's light "last prices" endpoint: full
        tickers for many symbols cost Binance's rate limit 20 times as much."""
        if self._client.has.get("fetchLastPrices"):
            raw = await self.call(self._client.fetch_last_prices, symbols)
            fields: tuple[str, ...] = ("price",)
        else:
            raw = await self.call(self._client.fetch_tickers, symbols)
            fields = ("last", "close", "bid")
        prices: dict[str, float] = {}
        for symbol in symbols:
            entry = raw.get(symbol) or {}
            price = next((entry[f] for f in fields if entry.get(f)), None)
            if price:
                prices[symbol] = float(price)
        return prices

    async def _derivative_positions(
        self,
    ) -> tuple[list[Position], list[Holding], list[Holding]]:
        raw = await self.profile.fetch_positions(self)
        markets = self._client.markets or {}
        positions: list[Position] = []
        dust: list[Holding] = []
        unpriced: list[Holding] = []
        close_params: dict[tuple[str, Side], dict[str, Any]] = {}
        for item in raw:
            contracts = float(item.get("contracts") or 0.0)
            if contracts == 0:
                continue
            symbol = str(item["symbol"])
            market = markets.get(symbol) or {}
            side = Side.SHORT if (item.get("side") == "short") else Side.LONG
            amount = abs(contracts)
            close_params[(symbol, side)] = self.profile.close_params(item)
            # Value = contracts × contract size × mark (OKX BTC-USDT-SWAP: 0.01 BTC a contract).
            contract_size = float(item.get("contractSize") or market.get("contractSize") or 1.0)
            price = item.get("markPrice") or item.get("lastPrice")
            if price:
                value = amount * contract_size * float(price)
            elif item.get("notional"):
                value = abs(float(item["notional"]))
                price = value / (amount * contract_size)
            else:
                unpriced.append(Holding(symbol, amount, None, "the exchange gave no mark price"))
                continue
            # Reduce-only closes are exempt from the minimum order value on Binance.
            reason = self._dust_reason(symbol, amount, value, market, cost_applies=False)
            if reason:
                dust.append(Holding(symbol, amount, value, reason))
            else:
                positions.append(Position(symbol, amount, value, side, float(price)))
        self._close_params = close_params
        return positions, dust, unpriced

    async def check_connection(self) -> ConnectionCheck:
        """Load markets and read the account once: proves the keys work."""
        from guard_app.exchanges.catalog import describe_capabilities

        await self.load_markets()
        snap = await self.snapshot()
        caps = describe_capabilities(self.account.exchange, self.account.market.value)
        return ConnectionCheck(len(self._client.markets or {}), snap.position_count, len(snap.dust),
                               caps.problems, self.profile.id)

    # -- closing ------------------------------------------------------------------

    async def close_many(
        self, closes: Sequence[tuple[PlannedClose, str]]
    ) -> list[OrderResult | BrokerError | None]:
        """Close positions of this account, each with its client order id.

        First the open orders on the symbols being closed are cancelled (they lock spot
        balances, and a resting buy would re-open the position): one read for the whole
        account where that is cheaper than one per symbol, and none right after
        ``cancel_all_orders``. Then one market order per position for the whole amount
        just read, rounded down to the market's precision; derivatives are closed
        reduce-only on their own leg and margin mode, so a close can never open or flip
        a position. Orders go out at once, in batches of the exchange's maximum where it
        has a batch endpoint; the limiter lets the burst through as far as the
        exchange's windows allow.

        Returns, per close in order: the exchange's answer, the error that stopped it,
        or None when nothing sellable was left (dust after rounding): nothing was sent.
        """
        if not closes:
            return []
        results: list[OrderResult | BrokerError | None] = [None] * len(closes)
        try:
            await self.load_markets()
            await self._cancel_before_closing(sorted({pc.position.symbol for pc, _ in closes}))
        except BrokerError as exc:
            return [exc] * len(closes)
        orders = []
        for index, (planned, client_order_id) in enumerate(closes):
            order = self._prepare(index, planned, client_order_id)
            if order is not None:
                orders.append(order)
        size = self.profile.batch_size(self.account.market)
        cap = self.profile.batch_cap(self.limiter, self.account.market) if self.limiter else None
        size = max(1, min(size, cap)) if cap else size
        chunks: list[list[_Order]] = []
        singles: list[_Order] = orders
        if size > 1 and len(orders) > 1 and self.profile.batch_ok(self._client):
            groups = [orders[i : i + size] for i in range(0, len(orders), size)]
            if self.profile.singles_have_own_quota():
                # Every other group goes out as single orders, on their own quota.
                chunks, singles = groups[0::2], [o for g in groups[1::2] for o in g]
            else:
                chunks, singles = groups, []
        answers = await asyncio.gather(
            asyncio.gather(*(self._send_batch(chunk) for chunk in chunks)),
            asyncio.gather(*(self._send_one(o) for o in singles)),
        )
        for chunk_results in answers[0]:
            for index, outcome in chunk_results:
                results[index] = outcome
        for order, outcome in zip(singles, answers[1], strict=True):
            results[order.index] = outcome
        return results

    async def close(self, planned: PlannedClose, client_order_id: str) -> OrderResult | None:
        """Close one position; raises the ``BrokerError`` that stopped it."""
        (outcome,) = await self.close_many([(planned, client_order_id)])
        if isinstance(outcome, BrokerError):
            raise outcome
        return outcome

    async def _cancel_before_closing(self, symbols: Sequence[str]) -> None:
        if time.monotonic() - self._orders_cleared_at < ORDERS_CLEARED_FRESH:
            return  # cancel_all_orders has just emptied the account
        orders = await self.profile.list_open_orders(self, symbols)
        if orders:
            await self.profile.cancel_orders(self, orders)

    def _prepare(self, index: int, planned: PlannedClose, client_order_id: str) -> _Order | None:
        position = planned.position
        symbol = position.symbol
        amount = self._sellable_amount(symbol, position.amount)
        market = (self._client.markets or {}).get(symbol) or {}
        min_amount, _ = self._min_limits(market)
        if amount <= 0 or amount < min_amount:
            return None
        client_id = self.profile.client_id(client_order_id)
        params: dict[str, Any] = {"clientOrderId": client_id}
        if self.account.market is Market.SPOT:
            side = "sell"
        else:
            side = "sell" if position.side is Side.LONG else "buy"
            known = self._close_params.get((symbol, position.side))
            params.update(known if known is not None else self.profile.close_params({"side": position.side.value}))
        return _Order(index, symbol, side, amount, params, client_id)

    async def _send_one(self, order: _Order) -> OrderResult | BrokerError:
        try:
            answer = await self.call(
                self._client.create_order, order.symbol, "market", order.side, order.amount, None, order.params,
                ordering=True, symbol=order.symbol,
            )
        except BrokerError as exc:
            return exc
        return self._order_result(answer, order.client_id, order.side, order.amount, order.symbol)

    async def _send_batch(self, chunk: Sequence[_Order]) -> list[tuple[int, OrderResult | BrokerError]]:
        """One batch request. ccxt's createOrders returns the orders in its own order
        (refused ones first): answers are matched by client order id, and refused rows
        without one (Binance) to the requests left, in the order they were sent."""
        requests = [
            {"symbol": o.symbol, "type": "market", "side": o.side, "amount": o.amount, "price": None, "params": o.params}
            for o in chunk
        ]
        try:
            answers = await self.call(self._client.create_orders, requests, ordering=True, keep_cause=True)
        except BrokerError as exc:
            rows = _rows_by_client_id(getattr(exc, "guard_body", None))
            if rows:
                # Every order refused (OKX code "1"): each row has its own reason.
                return [(o.index, self._refusal(o.symbol, *rows[o.client_id]) if o.client_id in rows
                         else _with_symbol(exc, o.symbol)) for o in chunk]
            return [(o.index, _with_symbol(exc, o.symbol)) for o in chunk]
        by_id = {o.client_id: o for o in chunk}
        out: list[tuple[int, OrderResult | BrokerError]] = []
        anonymous: list[Mapping[str, Any]] = []
        for answer in answers:
            cid = _client_id_of(answer)
            order = by_id.pop(cid, None) if cid else None
            if order is None:
                anonymous.append(answer)
                continue
            out.append((order.index, self._batch_outcome(answer, order)))
        for order, answer in zip(list(by_id.values()), anonymous, strict=False):
            out.append((order.index, self._batch_outcome(answer, order)))
            by_id.pop(order.client_id)
        for order in by_id.values():  # no answer at all for it: its fate is unknown
            out.append((order.index, OrderUnknownError(
                self.account_id, "the batch answer didn't mention this order; it may have executed",
                symbol=order.symbol)))
        return out

    def _batch_outcome(self, answer: Mapping[str, Any], order: _Order) -> OrderResult | BrokerError:
        refusal = _refusal_of(answer)
        if refusal is not None:
            return self._refusal(order.symbol, *refusal)
        return self._order_result(answer, order.client_id, order.side, order.amount, order.symbol)

    # -- open orders --------------------------------------------------------------

    async def cancel_all_orders(self) -> int:
        """Kill switch: cancel every open order of the account, on every symbol, including
        the conditional / algo orders an exchange keeps apart. Returns how many.

        Each profile does it its cheapest way (Binance: one symbol-less read and one
        cancel per symbol with orders; OKX: pending + algo reads, batch cancels; Bybit:
        cancel-all per settle coin, no read at all).
        """
        await self.load_markets()
        count = await self.profile.cancel_all_orders(self)
        self._orders_cleared_at = time.monotonic()
        return count

    async def lookup_order(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """Find an order by its client id (after a lost answer). None when unknown."""
        client_id = self.profile.client_id(client_order_id)
        order = await self.profile.find_order(self, symbol, client_id)
        if order is None:
            return None
        amount = float(order.get("amount") or 0.0)
        return self._order_result(order, client_id, str(order.get("side")), amount, symbol)

    def _order_result(
        self, order: Mapping[str, Any], client_order_id: str, side: str, amount: float, symbol: str
    ) -> OrderResult:
        """Our record of an accepted order. OKX and Bybit answer an order with its ids
        only: its status is then "accepted" (the re-read after the closes shows the fill)."""
        filled = order.get("filled")
        status = str(order.get("status") or ("accepted" if order.get("id") else "unknown"))
        return OrderResult(
            account_id=self.account.id,
            symbol=symbol,
            client_order_id=str(order.get("clientOrderId") or client_order_id),
            order_id=str(order["id"]) if order.get("id") not in (None, "") else None,
            side=side,
            amount=amount,
            filled=float(filled) if filled is not None and not math.isnan(float(filled)) else 0.0,
            status=status,
        )


def _api_url(client: Any) -> str:
    """One of the client's API URLs: which host (real, testnet, a local server) it talks to."""
    api = (client.urls or {}).get("api")
    while isinstance(api, Mapping) and api:
        api = next(iter(api.values()))
    url = str(api or "")
    try:
        return str(client.implode_hostname(url))  # OKX and Bybit template the host name
    except Exception:  # noqa: BLE001 - a class without host templating
        return url


def _with_symbol(exc: BrokerError, symbol: str) -> BrokerError:
    """The same error, naming the symbol of one order of a failed batch."""
    clone = type(exc).__new__(type(exc))  # copy.copy can't: BrokerError.__init__ takes arguments
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    clone.symbol = symbol
    return clone


def _rows_by_client_id(body: Any) -> dict[str, tuple[str, str]]:
    """client id -> (code, message) of each refused row of a failed batch answer (OKX)."""
    rows: dict[str, tuple[str, str]] = {}
    if isinstance(body, Mapping):
        for row in body.get("data") or []:
            if isinstance(row, Mapping) and row.get("clOrdId") and str(row.get("sCode", "0")) != "0":
                rows[str(row["clOrdId"])] = (str(row["sCode"]), str(row.get("sMsg") or ""))
    return rows


def _client_id_of(order: Mapping[str, Any]) -> str | None:
    info = order.get("info") or {}
    for value in (order.get("clientOrderId"), info.get("clOrdId"), info.get("orderLinkId"), info.get("clientOrderId")):
        if value:
            return str(value)
    return None


def _refusal_of(order: Mapping[str, Any]) -> tuple[str, str] | None:
    """(code, message) when a batch answer row is a refusal: OKX ``sCode``/``sMsg``,
    Bybit's ``code``/``msg`` from ``retExtInfo``, Binance's ``code``/``msg``."""
    info = order.get("info") or {}
    if str(info.get("sCode", "0")) not in ("0", ""):
        return str(info["sCode"]), str(info.get("sMsg") or "")
    if info.get("code") not in (None, 0, "0", "") and info.get("msg") is not None:
        return str(info["code"]), str(info.get("msg") or "")
    if order.get("status") == "rejected":
        return "rejected", str(info or "refused")
    return None
