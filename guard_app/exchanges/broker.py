"""The broker adapter: the only module that talks to ccxt.

One ``Broker`` per account, created and used inside the enforcer's own event loop
(ccxt async clients must never be shared between loops). It reads an account into an
``AccountSnapshot`` (positions valued in the account's quote currency, dust and unpriced
holdings set apart) and closes positions with market orders.

Every ccxt exception is translated here into guard-app's own types (``errors.py``):

* temporary (network, timeout, exchange down, bad nonce)  -> ``TemporaryBrokerError``
* rate limit or IP ban (HTTP 429/418, -1003)              -> ``RateLimitedError``
* authentication or permission                            -> ``NeedsUserError``
* order refused (funds, filters, reduce-only)              -> ``OrderRejectedError``
* network failure while an order was in flight             -> ``OrderUnknownError``

Exchange-specific settings (only Binance's, so far) also live here and nowhere else.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

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
from guard_app.core.secrets import ApiKeys

log = logging.getLogger(__name__)

# ccxt's DEBUG lines echo request headers, API key included. Secrets never reach a log,
# whatever level the app or a user configures, so ccxt never logs below INFO.
logging.getLogger("ccxt").setLevel(logging.INFO)

T = TypeVar("T")

# ccxt constructor keys that carry credentials: never accepted from the config file.
CREDENTIAL_KEYS = frozenset(
    {"apiKey", "secret", "password", "uid", "login", "privateKey", "walletAddress", "token"}
)

_BINANCE_CODE = re.compile(r'"code"\s*:\s*(-?\d+)\s*,\s*"msg"\s*:\s*"([^"]*)"')


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
    exc: BaseException, body: Mapping[str, Any] | None = None
) -> tuple[str, str | None]:
    """The exchange's own words for an error: (reason, code).

    ccxt messages look like ``binance {"code":-2010,"msg":"Account has insufficient..."}``;
    the code and message are kept because ccxt's class alone can be misleading
    (some futures codes map to a plain ExchangeError on other hosts).
    """
    text = str(exc)
    match = _BINANCE_CODE.search(text)
    if match:
        code, msg = match.group(1), match.group(2)
        return f"{msg} (code {code})", code
    # Some errors are re-raised with the message only; the answer's body still has the code.
    if body and "code" in body and body.get("msg") and str(body["msg"]) in text:
        return f"{body['msg']} (code {body['code']})", str(body["code"])
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    # URLs of signed requests carry a signature in the query: never repeat it.
    text = re.sub(r"\?\S*", "", text)
    # ccxt prefixes its messages with the exchange id; drop it, we name the account.
    text = re.sub(r"^[a-z0-9]+ ", "", text)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{text} ({type(exc).__name__})", None


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def translate_error(
    exc: BaseException,
    account_id: str,
    *,
    ordering: bool = False,
    symbol: str | None = None,
    headers: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
) -> BrokerError:
    """Map a ccxt exception to guard-app's types. ``ordering``: an order was in flight.

    ``headers`` and ``body`` are the failed answer's, when there was one.
    """
    reason, code = exchange_reason(exc, body)
    kw: dict[str, Any] = {"code": code, "symbol": symbol}
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, ccxt.PermissionDenied):
        return PermissionDeniedError(account_id, f"API key lacks a permission: {reason}", **kw)
    if isinstance(exc, ccxt.AuthenticationError):
        return NeedsUserError(account_id, f"API key refused: {reason}", **kw)
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        # A 429/418 answer means the request was refused, so even an order is not in doubt.
        return RateLimitedError(
            account_id, f"rate limited by the exchange: {reason}",
            retry_after=_retry_after(headers), **kw,
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


def _tag_errors_with_their_response(client: Any) -> None:
    """Make every error ccxt raises for an answer carry that answer's headers and body.

    Requests of one account run concurrently, so ccxt's ``last_response_headers`` may
    belong to another request; ``Retry-After`` and the exchange's error code must come
    from the answer that failed.
    """
    original = client.handle_errors

    def handle_errors(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except Exception as exc:
            headers, response = (args[4], args[6]) if len(args) > 6 else (None, None)
            exc.guard_headers = headers  # type: ignore[attr-defined]
            exc.guard_body = response if isinstance(response, Mapping) else None  # type: ignore[attr-defined]
            raise

    client.handle_errors = handle_errors


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """Result of ``Broker.check_connection`` (used by "Test connection" in the GUI)."""

    markets: int
    positions: int
    dust: int


class Broker:
    """One account on one exchange, through ccxt's async client.

    Not thread-safe: create, use and close it on one event loop.
    """

    def __init__(
        self,
        account: AccountConfig,
        keys: ApiKeys,
        *,
        client_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.account = account
        self._config = self.client_config(account, keys)
        factory = client_factory or getattr(ccxt_async, account.exchange)
        self._client: Any = factory(self._config)
        _tag_errors_with_their_response(self._client)
        if account.sandbox:
            try:
                self._client.set_sandbox_mode(True)
            except (ccxt.NotSupported, TypeError):  # some classes raise TypeError, not NotSupported
                raise SandboxUnavailableError(
                    account.id, f"{account.exchange} offers no sandbox/testnet: untick sandbox"
                ) from None
        self._markets_loaded = False
        self._idle_since = time.monotonic()
        # (symbol, side) -> "LONG"/"SHORT" for positions held in hedge mode.
        self._hedge_legs: dict[tuple[str, Side], str] = {}

    # -- construction -------------------------------------------------------------

    @staticmethod
    def client_config(account: AccountConfig, keys: ApiKeys) -> dict[str, Any]:
        """The ccxt constructor config: the user's ``[accounts.ccxt]`` table, with the
        app's own settings (credentials, market type, rate limiting) winning over it."""
        user = {k: v for k, v in account.ccxt.items() if k not in CREDENTIAL_KEYS}
        ours: dict[str, Any] = {
            "enableRateLimit": True,
            "options": {"defaultType": account.market.value},
        }
        if account.exchange == "binance":
            # Load only the markets this account trades: a spot account must keep
            # working while the futures API is down, and the other way round (rule 5).
            # Currencies need a signed /sapi call we don't use.
            types = ["spot"] if account.market is Market.SPOT else ["linear", "inverse"]
            ours["options"].update(
                {
                    "fetchMarkets": {"types": types},
                    "fetchCurrencies": False,
                    "fetchMargins": False,
                    "warnOnFetchOpenOrdersWithoutSymbol": False,
                    "adjustForTimeDifference": False,
                }
            )
        merged = deep_merge(user, ours)
        merged.update(keys.to_ccxt())
        return merged

    # -- plumbing -----------------------------------------------------------------

    @property
    def account_id(self) -> str:
        return self.account.id

    def _credit_idle_time(self) -> None:
        """Give ccxt's rate limiter back the time we spent idle.

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

    async def _call(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        ordering: bool = False,
        symbol: str | None = None,
        **kwargs: Any,
    ) -> T:
        self._credit_idle_time()
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one of our types
            err = translate_error(
                exc, self.account_id, ordering=ordering, symbol=symbol,
                headers=getattr(exc, "guard_headers", None), body=getattr(exc, "guard_body", None),
            )
            if isinstance(exc, ccxt.InvalidNonce):
                self._resync_clock_later()
            raise err from None

    def _resync_clock_later(self) -> None:
        # Next requests correct the timestamp by the measured offset (Binance -1021).
        self._client.options["adjustForTimeDifference"] = True
        self._markets_loaded = False

    async def load_markets(self) -> None:
        if not self._markets_loaded:
            if self._client.options.get("adjustForTimeDifference"):
                await self._call(self._client.load_time_difference)
            await self._call(self._client.load_markets)
            self._markets_loaded = True

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
        balance = await self._call(self._client.fetch_balance)
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
            raw = await self._call(self._client.fetch_last_prices, symbols)
            fields: tuple[str, ...] = ("price",)
        else:
            raw = await self._call(self._client.fetch_tickers, symbols)
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
        raw = await self._call(self._client.fetch_positions)
        markets = self._client.markets or {}
        positions: list[Position] = []
        dust: list[Holding] = []
        unpriced: list[Holding] = []
        self._hedge_legs.clear()
        for item in raw:
            contracts = float(item.get("contracts") or 0.0)
            if contracts == 0:
                continue
            symbol = str(item["symbol"])
            market = markets.get(symbol) or {}
            side = Side.SHORT if (item.get("side") == "short") else Side.LONG
            amount = abs(contracts)
            leg = str((item.get("info") or {}).get("positionSide", "BOTH")).upper()
            if leg in ("LONG", "SHORT"):
                self._hedge_legs[(symbol, side)] = leg
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
        return positions, dust, unpriced

    async def check_connection(self) -> ConnectionCheck:
        """Load markets and read the account once: proves the keys work."""
        await self.load_markets()
        snap = await self.snapshot()
        return ConnectionCheck(len(self._client.markets or {}), snap.position_count, len(snap.dust))

    # -- closing ------------------------------------------------------------------

    async def close_many(
        self, closes: Sequence[tuple[PlannedClose, str]]
    ) -> list[OrderResult | BrokerError | None]:
        """Close positions of this account, each with its client order id.

        For every symbol its open orders are cancelled first (they lock spot balances
        and a resting buy would re-open the position), then one market order closes the
        whole amount just read, rounded down to the market's precision; derivatives are
        closed reduce-only so a close can never open or flip a position. Orders go out
        concurrently; ccxt's rate limiter spaces them.

        Returns, per close in order: the exchange's answer, the error that stopped it,
        or None when nothing sellable was left (dust after rounding): nothing was sent.
        """
        await self.load_markets()
        return list(await asyncio.gather(*(self._close_one(pc, cid) for pc, cid in closes)))

    async def close(self, planned: PlannedClose, client_order_id: str) -> OrderResult | None:
        """Close one position; raises the ``BrokerError`` that stopped it."""
        (outcome,) = await self.close_many([(planned, client_order_id)])
        if isinstance(outcome, BrokerError):
            raise outcome
        return outcome

    async def _close_one(
        self, planned: PlannedClose, client_order_id: str
    ) -> OrderResult | BrokerError | None:
        position = planned.position
        symbol = position.symbol
        try:
            await self.cancel_open_orders(symbol)
            amount = self._sellable_amount(symbol, position.amount)
            market = (self._client.markets or {}).get(symbol) or {}
            min_amount, _ = self._min_limits(market)
            if amount <= 0 or amount < min_amount:
                return None
            params: dict[str, Any] = {"clientOrderId": client_order_id}
            if self.account.market is Market.SPOT:
                side = "sell"
            else:
                side = "sell" if position.side is Side.LONG else "buy"
                leg = self._hedge_legs.get((symbol, position.side))
                if leg:
                    # Hedge mode: positionSide selects the leg; reduceOnly may not be sent.
                    params["positionSide"] = leg
                else:
                    params["reduceOnly"] = True
            order = await self._call(
                self._client.create_order, symbol, "market", side, amount, None, params,
                ordering=True, symbol=symbol,
            )
            return self._order_result(order, client_order_id, side, amount)
        except BrokerError as exc:
            return exc

    async def cancel_open_orders(self, symbol: str) -> int:
        """Cancel every open order on ``symbol``. Returns how many there were."""
        orders = await self._call(self._client.fetch_open_orders, symbol, symbol=symbol)
        await asyncio.gather(
            *(self._call(self._client.cancel_order, o["id"], symbol, symbol=symbol) for o in orders)
        )
        return len(orders)

    async def cancel_all_orders(self) -> int:
        """Cancel every open order of the account, all symbols. Returns how many.

        First version: one symbol-less open-orders read, then one cancel per order. The
        exchange profiles replace this with each exchange's cheapest way (and add the
        conditional / algo orders an exchange lists apart).
        """
        orders = await self._call(self._client.fetch_open_orders)
        await asyncio.gather(
            *(self._call(self._client.cancel_order, o["id"], o.get("symbol"), symbol=o.get("symbol"))
              for o in orders)
        )
        return len(orders)

    async def lookup_order(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """Find an order by its client id (after a lost answer). None when unknown."""
        try:
            order = await self._call(
                self._client.fetch_order, None, symbol, {"clientOrderId": client_order_id},
                symbol=symbol,
            )
        except OrderRejectedError:  # OrderNotFound is an InvalidOrder
            return None
        amount = float(order.get("amount") or 0.0)
        return self._order_result(order, client_order_id, str(order.get("side")), amount)

    def _order_result(
        self, order: Mapping[str, Any], client_order_id: str, side: str, amount: float
    ) -> OrderResult:
        filled = order.get("filled")
        status = str(order.get("status") or "unknown")
        return OrderResult(
            account_id=self.account.id,
            symbol=str(order.get("symbol") or ""),
            client_order_id=str(order.get("clientOrderId") or client_order_id),
            order_id=str(order["id"]) if order.get("id") is not None else None,
            side=side,
            amount=amount,
            filled=float(filled) if filled is not None and not math.isnan(float(filled)) else 0.0,
            status=status,
        )
