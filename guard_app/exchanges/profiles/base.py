"""The generic exchange profile: what guard-app does on any ccxt exchange.

A profile holds what differs between exchanges, as data and small functions, so the
broker (:mod:`guard_app.exchanges.broker`) stays one generic piece of code (the idea of
freqtrade's ``exchange/<name>.py`` classes and hummingbot's ``RATE_LIMITS`` tables).

The generic profile is built only on ccxt's unified fields — a position's ``hedged``,
``side``, ``marginMode`` and ``contractSize``, an order's ``reduceOnly`` — and keeps
ccxt's own throttle, because guard-app knows no published limits for that exchange.
Binance, OKX and Bybit override what their APIs do differently.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from guard_app.core.models import Market
from guard_app.exchanges.ratelimit import Charge, RateLimit

if TYPE_CHECKING:
    from guard_app.exchanges.broker import Broker

@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An open order as the kill switch needs it. ``conditional``: an algo / stop order
    the exchange lists and cancels apart (OKX algo, Bybit StopOrder)."""

    symbol: str
    id: str
    conditional: bool = False
    market_id: str = ""


def header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """A header's value, whatever case the server or aiohttp gave its name."""
    if not headers:
        return None
    name = name.lower()
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value)
    return None


def request_params(url: str, body: Any) -> dict[str, Any]:
    """The parameters of a request as ccxt sent it: query string, then the body
    (form-encoded for Binance, JSON for OKX and Bybit). A JSON list body (OKX batch
    endpoints) is returned under ``"__rows__"``."""
    params: dict[str, Any] = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if body:
        text = body.decode() if isinstance(body, bytes) else str(body)
        try:
            data = json.loads(text)
        except ValueError:
            params.update(parse_qsl(text, keep_blank_values=True))
        else:
            if isinstance(data, dict):
                params.update(data)
            elif isinstance(data, list):
                params["__rows__"] = data
    return params


def _symbol_required(client: Any, market: Market) -> bool:
    """Whether ccxt says this exchange lists open orders only per symbol."""
    features = (client.features or {}).get(market.value) or {}
    if market is not Market.SPOT and isinstance(features, Mapping):
        features = features.get("linear") or {}
    listing = features.get("fetchOpenOrders") if isinstance(features, Mapping) else None
    return bool(isinstance(listing, Mapping) and listing.get("symbolRequired"))


class Profile:
    """What guard-app needs to know about one exchange. This class is the generic one."""

    #: ccxt exchange id this profile is for ("generic" for any other).
    id = "generic"
    #: Client order id rule: allowed characters (a character class) and maximum length.
    client_id_chars = r"A-Za-z0-9_-"
    client_id_max = 32
    #: Published rate limits; empty means "keep ccxt's throttle" (we know no better).
    RATE_LIMITS: tuple[RateLimit, ...] = ()
    #: Orders per batch request, by market type; 1 means no batch endpoint is used.
    BATCH: Mapping[Market, int] = {}
    #: (pattern, replacement) pairs of exchange text that may echo a credential, on top
    #: of the ones every exchange gets (:data:`guard_app.exchanges.scrub.ECHOES`).
    ECHOES: tuple[tuple[re.Pattern[str], str], ...] = ()

    # -- client order ids --------------------------------------------------------------

    def client_id(self, client_order_id: str) -> str:
        """``client_order_id`` as this exchange accepts it.

        The core generates ids every profile accepts; an id that breaks the rule (an old
        journal, a hand-written id) is adapted — disallowed characters dropped, cut to the
        maximum — rather than sent to be refused order by order.
        """
        cleaned = re.sub(f"[^{self.client_id_chars}]", "", client_order_id)[: self.client_id_max]
        return cleaned or "ga"

    def client_id_ok(self, client_order_id: str) -> bool:
        return bool(re.fullmatch(f"[{self.client_id_chars}]{{1,{self.client_id_max}}}", client_order_id))

    # -- ccxt construction -------------------------------------------------------------

    def ccxt_options(self, market: Market) -> dict[str, Any]:
        """ccxt ``options`` that make this account's ``load_markets`` cheap and its calls right.

        Generic: the market type, and no warning instead of a symbol-less open-orders
        read on the classes that raise one (ccxt's option name; ignored elsewhere).
        """
        return {"defaultType": market.value, "warnOnFetchOpenOrdersWithoutSymbol": False}

    @property
    def owns_rate_limit(self) -> bool:
        """True when this profile's limiter replaces ccxt's throttle."""
        return bool(self.RATE_LIMITS)

    def rate_limits(self, market: Market) -> list[RateLimit]:
        return list(self.RATE_LIMITS)

    def ip_key(self, url: str) -> str:
        """Which IP budgets a request uses: the exchange and the API host it goes to."""
        return f"{self.id}@{urlsplit(url).netloc}"

    def charges(self, method: str, path: str, params: Mapping[str, Any], market: Market) -> list[Charge]:
        """What a request costs against :attr:`RATE_LIMITS`."""
        return []

    def observe(self, limiter: Any, method: str, path: str, status: int, headers: Mapping[str, Any] | None,
                body: Any, params: Mapping[str, Any]) -> None:
        """Correct the limiter from an answer's usage headers (and published limits)."""

    def retry_after(self, headers: Mapping[str, Any] | None, body: Any) -> float | None:
        """How long the exchange told us to wait, in seconds (``Retry-After``)."""
        value = header(headers, "retry-after")
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None

    async def prime(self, broker: Broker) -> None:
        """Once, before the first kill: whatever ccxt would otherwise look up in the
        middle of the first close (Bybit: the account type)."""

    # -- errors ------------------------------------------------------------------------

    def error_detail(self, body: Any) -> tuple[str, str] | None:
        """(code, message) from an error answer's JSON body, in the exchange's own words."""
        if isinstance(body, Mapping):
            for code_key, msg_key in (("code", "msg"), ("code", "message"), ("retCode", "retMsg")):
                if body.get(code_key) not in (None, "", 0, "0") and body.get(msg_key):
                    return str(body[code_key]), str(body[msg_key])
        return None

    # -- positions and closes ----------------------------------------------------------

    async def fetch_positions(self, broker: Broker) -> list[dict[str, Any]]:
        """Every open derivative position of the account (ccxt's unified structure)."""
        return list(await broker.call(broker.client.fetch_positions))

    def hedge_leg(self, position: Mapping[str, Any]) -> str | None:
        """"long"/"short" when the position is one leg of a hedge-mode pair, else None."""
        if position.get("hedged"):
            side = position.get("side")
            return str(side) if side in ("long", "short") else None
        return None

    def close_params(self, position: Mapping[str, Any]) -> dict[str, Any]:
        """Order params that close exactly this position and can never open or flip one."""
        params: dict[str, Any] = {"reduceOnly": True}
        if self.hedge_leg(position):
            params["hedged"] = True  # ccxt's unified flag where an exchange knows legs
        if position.get("marginMode") == "isolated":
            params["marginMode"] = "isolated"
        return params

    def batch_size(self, market: Market) -> int:
        return self.BATCH.get(market, 1)

    def batch_cap(self, limiter: Any, market: Market) -> int | None:
        """The most orders one batch may hold under the account's order quota, if any."""
        return None

    def batch_ok(self, client: Any) -> bool:
        return bool(client.has.get("createOrders"))

    # -- open orders -------------------------------------------------------------------

    def open_orders_params(self, market: Market) -> dict[str, Any]:
        """Params for one account-wide ``fetch_open_orders`` (no symbol): ccxt's unified
        ``type``, so a derivatives account doesn't read the spot book."""
        return {} if market is Market.SPOT else {"type": market.value}

    def account_wide_read(self, symbols: Sequence[str], market: Market) -> bool:
        """Read open orders once for the account (True) or once per symbol (False)."""
        return True

    async def list_open_orders(
        self, broker: Broker, symbols: Sequence[str] | None, *, conditional: bool = False
    ) -> list[OpenOrder]:
        """Open orders of the account (only on ``symbols`` when given). ``conditional``:
        also the conditional / algo orders where the exchange lists them apart."""
        client, market = broker.client, broker.market
        if not client.has.get("fetchOpenOrders"):
            return []
        if symbols is None or (self.account_wide_read(symbols, market) and not _symbol_required(client, market)):
            raw = await broker.call(client.fetch_open_orders, None, None, None, self.open_orders_params(market))
        else:
            lists = await asyncio.gather(
                *(broker.call(client.fetch_open_orders, s, symbol=s) for s in symbols)
            )
            raw = [o for orders in lists for o in orders]
        wanted = set(symbols) if symbols is not None else None
        return [
            OpenOrder(str(o.get("symbol")), str(o.get("id")))
            for o in raw
            if wanted is None or o.get("symbol") in wanted
        ]

    async def cancel_orders(self, broker: Broker, orders: Sequence[OpenOrder]) -> None:
        """Cancel these orders: one ``cancelAllOrders`` per symbol where ccxt has it
        (Binance: one request per symbol), else one cancel per order, all concurrent."""
        client = broker.client
        by_symbol: dict[str, list[OpenOrder]] = {}
        for order in orders:
            by_symbol.setdefault(order.symbol, []).append(order)
        if not by_symbol:
            return
        if client.has.get("cancelAllOrders"):
            params = self.open_orders_params(broker.market)
            await asyncio.gather(
                *(broker.call(client.cancel_all_orders, s, params, symbol=s) for s in by_symbol)
            )
        else:
            await asyncio.gather(
                *(broker.call(client.cancel_order, o.id, o.symbol, symbol=o.symbol) for o in orders)
            )

    async def cancel_all_orders(self, broker: Broker) -> int:
        """Kill switch: cancel every open order of the account. Returns how many.

        Generic: one symbol-less open-orders read, then :meth:`cancel_orders`.
        """
        orders = await self.list_open_orders(broker, None, conditional=True)
        await self.cancel_orders(broker, orders)
        return len(orders)
