"""Binance (spot and USDⓈ-M futures): the exchange's own limits, hedge legs, batches.

Sources (cited where used):

* Limits: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
  (6,000 request weight per minute per IP, ``X-MBX-USED-WEIGHT-1M``; order counts per
  account, ``X-MBX-ORDER-COUNT-10S`` / ``-1D``; 429 then 418 with ``Retry-After``) and
  https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info
  (2,400 weight per minute per IP; 300 orders per 10 s and 1,200 per minute per account;
  New Order weighs 0 on the IP limit). The figures in force come from
  ``exchangeInfo.rateLimits`` and replace these defaults once markets are loaded.
* Endpoint weights: each endpoint's page ("Weight"), e.g. spot Current Open Orders 6 with
  a symbol / 80 without, USDⓈ-M Current All Open Orders 1 / 40, Place Multiple Orders 5.
* Hedge mode: USDⓈ-M New Order — ``positionSide`` LONG/SHORT is required in hedge mode,
  and ``reduceOnly`` "cannot be sent in Hedge Mode".
* ``newClientOrderId``: "A unique id among open orders ... ^[\\.A-Z\\:/a-z0-9_-]{1,36}$".
* Place Multiple Orders (``batchOrders``): max 5 orders.
* USDⓈ-M conditional orders (STOP_MARKET, TAKE_PROFIT ...) live in the Algo Service:
  "Current All Algo Open Orders" ``GET /fapi/v1/openAlgoOrders`` (weight 1 with a symbol,
  40 without; a list of orders with ``algoId``),
  https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Current-All-Algo-Open-Orders
  and "Cancel All Algo Open Orders" ``DELETE /fapi/v1/algoOpenOrders`` (symbol mandatory); ``openOrders`` and
  ``allOpenOrders`` don't see them. Spot stop orders are ordinary open orders.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from guard_app.core.models import Market
from guard_app.exchanges.profiles.base import OpenOrder, Profile, header
from guard_app.exchanges.ratelimit import Charge, RateLimit

if TYPE_CHECKING:
    from guard_app.exchanges.broker import Broker

# (method, path) -> (weight with a symbol, without).
SPOT_WEIGHTS: dict[tuple[str, str], tuple[float, float]] = {
    ("GET", "/api/v3/exchangeInfo"): (20, 20), ("GET", "/api/v3/ticker/24hr"): (2, 80),
    ("GET", "/api/v3/ticker/price"): (2, 4), ("GET", "/api/v3/ticker/bookTicker"): (2, 4),
    ("GET", "/api/v3/account"): (20, 20), ("POST", "/api/v3/order"): (1, 1), ("GET", "/api/v3/order"): (4, 4),
    ("DELETE", "/api/v3/order"): (1, 1), ("GET", "/api/v3/openOrders"): (6, 80),
    ("DELETE", "/api/v3/openOrders"): (1, 1),
}
FAPI_WEIGHTS: dict[tuple[str, str], tuple[float, float]] = {
    ("POST", "/fapi/v1/order"): (0, 0), ("POST", "/fapi/v1/batchOrders"): (5, 5),
    ("DELETE", "/fapi/v1/batchOrders"): (1, 1), ("DELETE", "/fapi/v1/allOpenOrders"): (1, 1),
    ("GET", "/fapi/v1/openOrders"): (1, 40), ("GET", "/fapi/v1/ticker/24hr"): (1, 40),
    ("GET", "/fapi/v1/ticker/price"): (1, 2), ("GET", "/fapi/v2/ticker/price"): (1, 2),
    ("GET", "/fapi/v1/ticker/bookTicker"): (2, 5), ("GET", "/fapi/v1/premiumIndex"): (1, 10),
    ("GET", "/fapi/v2/account"): (5, 5), ("GET", "/fapi/v3/account"): (5, 5), ("GET", "/fapi/v2/balance"): (5, 5),
    ("GET", "/fapi/v3/balance"): (5, 5), ("GET", "/fapi/v2/positionRisk"): (5, 5),
    ("GET", "/fapi/v3/positionRisk"): (5, 5), ("GET", "/fapi/v1/positionSide/dual"): (30, 30),
    ("GET", "/fapi/v1/exchangeInfo"): (1, 1), ("GET", "/fapi/v1/leverageBracket"): (1, 1),
    ("POST", "/fapi/v1/algoOrder"): (1, 1), ("GET", "/fapi/v1/openAlgoOrders"): (1, 40),
    ("DELETE", "/fapi/v1/algoOpenOrders"): (1, 1), ("DELETE", "/fapi/v1/algoOrder"): (1, 1),
}
ORDER_PATHS = {"/api/v3/order": "spot", "/fapi/v1/order": "fapi", "/fapi/v1/batchOrders": "fapi"}

_UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
_UNIT_LETTER = {"SECOND": "s", "MINUTE": "m", "HOUR": "h", "DAY": "d"}


def _limit(venue: str, kind: str, num: int, unit: str, value: float) -> RateLimit:
    """A limit as exchangeInfo names it: weight per IP, orders per account."""
    span = f"{num}{_UNIT_LETTER[unit]}"
    if kind == "REQUEST_WEIGHT":
        return RateLimit(f"{venue}_weight_{span}", value, num * _UNIT_SECONDS[unit], "ip",
                         f"x-mbx-used-weight-{span}")
    return RateLimit(f"{venue}_orders_{span}", value, num * _UNIT_SECONDS[unit], "account",
                     f"x-mbx-order-count-{span}")


DEFAULT_LIMITS = (
    _limit("spot", "REQUEST_WEIGHT", 1, "MINUTE", 6000),
    _limit("spot", "ORDERS", 10, "SECOND", 100),
    _limit("spot", "ORDERS", 1, "DAY", 200000),
    _limit("fapi", "REQUEST_WEIGHT", 1, "MINUTE", 2400),
    _limit("fapi", "ORDERS", 10, "SECOND", 300),
    _limit("fapi", "ORDERS", 1, "MINUTE", 1200),
)


def _venue(path: str) -> str | None:
    if path.startswith(("/api/", "/sapi/")):
        return "spot"  # /sapi is counted against the spot IP weight
    if path.startswith("/fapi/"):
        return "fapi"
    return None


class BinanceProfile(Profile):
    """Binance spot and USDⓈ-M (``ccxt.binance`` with ``defaultType`` spot or swap)."""

    id = "binance"
    client_id_chars = r".A-Z:/a-z0-9_-"
    client_id_max = 36
    RATE_LIMITS = DEFAULT_LIMITS
    BATCH = {Market.SWAP: 5, Market.FUTURE: 5}

    def ccxt_options(self, market: Market) -> dict[str, Any]:
        # Load only the markets this account trades: a spot account must keep working
        # while the futures API is down, and the other way round (rule 5). Currencies
        # need a signed /sapi call we don't use.
        types = ["spot"] if market is Market.SPOT else ["linear"]
        return {
            "defaultType": market.value,
            "fetchMarkets": {"types": types},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
            "adjustForTimeDifference": False,
        }

    def charges(self, method: str, path: str, params: Mapping[str, Any], market: Market) -> list[Charge]:
        venue = _venue(path)
        if venue is None:
            return []
        table = SPOT_WEIGHTS if venue == "spot" else FAPI_WEIGHTS
        with_symbol, without = table.get((method, path), (1, 1))
        out = [Charge(f"{venue}_weight_1m", with_symbol if params.get("symbol") else without)]
        if method == "POST" and path in ORDER_PATHS:
            count = 1
            if path.endswith("batchOrders"):
                rows = params.get("batchOrders")
                try:
                    count = len(json.loads(rows)) if isinstance(rows, str) else len(rows or [])
                except ValueError:
                    count = 1
            out += [Charge(lim.id, count) for lim in self.RATE_LIMITS
                    if lim.scope == "account" and lim.id.startswith(f"{venue}_orders_")]
        return out

    def observe(self, limiter: Any, method: str, path: str, status: int, headers: Mapping[str, Any] | None,
                body: Any, params: Mapping[str, Any]) -> None:
        venue = _venue(path)
        if venue is None:
            return
        # The figures in force are published in exchangeInfo.rateLimits.
        if path.endswith("/exchangeInfo") and isinstance(body, Mapping):
            found = []
            for item in body.get("rateLimits") or []:
                kind, unit = item.get("rateLimitType"), item.get("interval")
                if kind in ("REQUEST_WEIGHT", "ORDERS") and unit in _UNIT_SECONDS:
                    found.append(_limit(venue, kind, int(item.get("intervalNum", 1)), unit, float(item["limit"])))
            if found:
                limiter.set_limits(found)
        for lim in limiter.limits.values():
            if lim.header and lim.id.startswith(f"{venue}_"):
                value = header(headers, lim.header)
                if value is not None:
                    try:
                        limiter.observe(lim.id, float(value))
                    except ValueError:
                        pass
        if status in (418, 429):
            wait = self.retry_after(headers, body)
            limiter.block(wait if wait is not None else 60.0,
                          [lid for lid, lim in limiter.limits.items() if lim.scope == "ip" and lid.startswith(venue)])

    # -- positions and closes ----------------------------------------------------------

    def hedge_leg(self, position: Mapping[str, Any]) -> str | None:
        leg = str((position.get("info") or {}).get("positionSide", "BOTH")).upper()
        if leg in ("LONG", "SHORT"):
            return leg.lower()
        return super().hedge_leg(position)

    def close_params(self, position: Mapping[str, Any]) -> dict[str, Any]:
        leg = self.hedge_leg(position)
        if leg:
            # Hedge mode: positionSide selects the leg; reduceOnly may not be sent.
            return {"positionSide": leg.upper()}
        return {"reduceOnly": True}

    def batch_ok(self, client: Any) -> bool:
        return True

    # -- open orders -------------------------------------------------------------------

    def open_orders_params(self, market: Market) -> dict[str, Any]:
        # With defaultType swap, ccxt sends a symbol-less read to the spot endpoint
        # unless told the type (FIELD-NOTES).
        return {} if market is Market.SPOT else {"type": market.value}

    def account_wide_read(self, symbols: Sequence[str], market: Market) -> bool:
        # One symbol-less read weighs 80 (spot) / 40 (USDⓈ-M); a per-symbol read 6 / 1.
        per, whole = (6, 80) if market is Market.SPOT else (1, 40)
        return len(symbols) * per >= whole

    async def list_open_orders(
        self, broker: Broker, symbols: Sequence[str] | None, *, conditional: bool = False
    ) -> list[OpenOrder]:
        """openOrders, plus the USDⓈ-M Algo Service's open conditional orders."""
        orders = await super().list_open_orders(broker, symbols, conditional=conditional)
        if conditional and broker.market is not Market.SPOT:
            client = broker.client
            answer = await broker.call(client.fapiPrivateGetOpenAlgoOrders, {})
            rows = answer.get("orders", answer) if isinstance(answer, dict) else answer
            wanted = set(symbols) if symbols is not None else None
            for row in rows or []:
                symbol = client.safe_symbol(str(row.get("symbol")), None, None, "swap")
                if wanted is None or symbol in wanted:
                    orders.append(OpenOrder(symbol, str(row.get("algoId")), True, str(row.get("symbol"))))
        return orders

    async def cancel_orders(self, broker: Broker, orders: Sequence[OpenOrder]) -> None:
        """allOpenOrders per symbol for ordinary orders, algoOpenOrders per symbol for the rest."""
        algo_symbols = sorted({o.market_id for o in orders if o.conditional})
        await asyncio.gather(
            super().cancel_orders(broker, [o for o in orders if not o.conditional]),
            *(broker.call(broker.client.fapiPrivateDeleteAlgoOpenOrders, {"symbol": m}) for m in algo_symbols),
        )
