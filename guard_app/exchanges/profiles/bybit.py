"""Bybit (v5 API, unified trading account): every settle coin, hedge-mode position
index, per-endpoint limits with their ``X-Bapi-Limit-*`` headers, and the API key that
a bad signature echoes back.

Sources, https://bybit-exchange.github.io/docs/v5/ :

* "Get Position Info" (``position/list``): linear needs ``symbol`` or ``settleCoin``;
  ccxt asks only ``settleCoin=USDT``, so USDC perpetuals are read with a second request.
* "Place Order": ``orderLinkId`` "max 36 characters ... numbers, letters, '-' and '_'";
  ``positionIdx`` 0 one-way, 1 hedge-mode Buy side, 2 hedge-mode Sell side.
* "Batch Place Order": up to 20 orders (linear) / 10 (spot) per request.
* "Cancel All Orders" (https://bybit-exchange.github.io/docs/v5/order/cancel-all): linear
  needs one of symbol / baseCoin / settleCoin (all order kinds when ``orderFilter`` is not
  passed) and cancels at most 500 orders a request (the kill switch's re-read round
  catches the rest); spot needs nothing, by ``orderFilter`` Order / tpslOrder / StopOrder
  (Order by default).
* "Rate Limit" (rate-limit): 600 requests per 5 s per IP (HTTP 403 for 10 minutes over
  it); per UID and endpoint per second: order create / cancel 10 (linear) and 20 (spot),
  batch endpoints count each order, position / wallet / order reads 50. Answers carry
  ``X-Bapi-Limit`` (the limit), ``X-Bapi-Limit-Status`` (remaining) and
  ``X-Bapi-Limit-Reset-Timestamp`` (ms); over a limit: retCode 10006, no ``Retry-After``.
* Errors: HTTP 200 with ``retCode`` != 0 and ``retMsg``; a bad signature answers
  ``10004 error sign! origin_string[<timestamp><api key><recv window><params>]``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from guard_app.core.models import Market
from guard_app.exchanges.profiles.base import OpenOrder, Profile, header
from guard_app.exchanges.ratelimit import Charge, RateLimit

if TYPE_CHECKING:
    from guard_app.exchanges.broker import Broker

SETTLE_COINS = ("USDT", "USDC")
# "Cancel All Orders" for spot cancels one kind at a time.
SPOT_ORDER_FILTERS = ("Order", "StopOrder", "tpslOrder")

RATE_LIMITS = (
    RateLimit("ip_5s", 600, 5.0, "ip"),
    RateLimit("order_linear_1s", 10, 1.0, "account"),
    RateLimit("order_spot_1s", 20, 1.0, "account"),
    RateLimit("read_1s", 50, 1.0, "account"),
)
_ORDER_ENDPOINTS = ("/v5/order/create", "/v5/order/create-batch", "/v5/order/cancel",
                    "/v5/order/cancel-batch", "/v5/order/cancel-all", "/v5/order/amend")
_PUBLIC = "/v5/market/"


def _category(params: Mapping[str, Any], market: Market) -> str:
    category = params.get("category")
    if category:
        return str(category)
    return "spot" if market is Market.SPOT else "linear"


class BybitProfile(Profile):
    """Bybit spot and linear perpetuals, USDT- and USDC-settled (``ccxt.bybit``)."""

    id = "bybit"
    client_id_chars = r"A-Za-z0-9_-"
    client_id_max = 36
    RATE_LIMITS = RATE_LIMITS
    # Linear batches may hold 20, but the per-UID budget of 10 orders a second counts
    # each order of a batch: a batch of 20 could never pass, so 10.
    BATCH = {Market.SPOT: 10, Market.SWAP: 10, Market.FUTURE: 10}
    # The signed string Bybit echoes holds the API key (scrub.ECHOES drops it on every
    # exchange); "sign!" answers may also quote the expected signature.
    ECHOES = ((re.compile(r"(expected|sign)\s*[:=]\s*[0-9a-fA-F]{16,}"), r"\1 [...]"),)

    def ccxt_options(self, market: Market) -> dict[str, Any]:
        # Three requests for load_markets instead of about twelve (every category and
        # the signed coin list).
        types = ["spot"] if market is Market.SPOT else ["linear"]
        return {"defaultType": market.value, "fetchMarkets": {"types": types}, "fetchCurrencies": False}

    def batch_cap(self, limiter: Any, market: Market) -> int | None:
        """A batch counts each order against the per-second order quota: never more."""
        lim = limiter.limits.get("order_spot_1s" if market is Market.SPOT else "order_linear_1s")
        return int(lim.limit) if lim is not None else None

    async def prime(self, broker: Broker) -> None:
        # ccxt asks whether the account is unified (two requests) before its first order;
        # ask now, so the first kill doesn't wait for it.
        await broker.call(broker.client.is_unified_enabled)

    def _uid_charge(self, method: str, path: str, params: Mapping[str, Any], market: Market) -> Charge | None:
        if path.startswith(_PUBLIC) or not path.startswith("/v5/"):
            return None
        if path in _ORDER_ENDPOINTS:
            category = _category(params, market)
            limit_id = "order_spot_1s" if category == "spot" else "order_linear_1s"
            cost = 1
            if path.endswith("-batch") and isinstance(params.get("request"), list):
                cost = max(1, len(params["request"]))  # a batch counts each order
            return Charge(limit_id, cost, key=f"{path}/{category}")
        return Charge("read_1s", 1, key=path)

    def charges(self, method: str, path: str, params: Mapping[str, Any], market: Market) -> list[Charge]:
        if not path.startswith("/v5/"):
            return []
        out = [Charge("ip_5s", 1)]
        uid = self._uid_charge(method, path, params, market)
        if uid is not None:
            out.append(uid)
        return out

    def observe(self, limiter: Any, method: str, path: str, status: int, headers: Mapping[str, Any] | None,
                body: Any, params: Mapping[str, Any]) -> None:
        uid = self._uid_charge(method, path, params, Market.SPOT if params.get("category") == "spot" else Market.SWAP)
        limit, remaining = header(headers, "x-bapi-limit"), header(headers, "x-bapi-limit-status")
        if uid is not None and limit is not None and remaining is not None:
            try:
                known = limiter.limits.get(uid.limit_id)
                if known is not None and float(limit) != known.limit:
                    # The account's real quota (VIP levels raise it): believe the exchange.
                    limiter.set_limits([RateLimit(known.id, float(limit), known.seconds, known.scope)])
                limiter.observe(uid.limit_id, float(limit) - float(remaining), key=uid.key)
            except ValueError:
                pass
        if status == 403:
            # Over the IP limit: "the IP is banned for 10 minutes".
            limiter.block(600.0)

    @staticmethod
    def _reset_in(headers: Mapping[str, Any] | None) -> float | None:
        reset = header(headers, "x-bapi-limit-reset-timestamp")
        try:
            return max(0.0, float(reset) / 1000.0 - time.time()) if reset else None
        except ValueError:
            return None

    def retry_after(self, headers: Mapping[str, Any] | None, body: Any) -> float | None:
        wait = self._reset_in(headers)
        if wait is not None and isinstance(body, Mapping) and str(body.get("retCode")) == "10006":
            return wait
        return super().retry_after(headers, body) if wait is None else wait

    def error_detail(self, body: Any) -> tuple[str, str] | None:
        if isinstance(body, Mapping) and str(body.get("retCode", "0")) != "0":
            return str(body["retCode"]), str(body.get("retMsg") or "")
        return None

    # -- positions and closes ----------------------------------------------------------

    async def fetch_positions(self, broker: Broker) -> list[dict[str, Any]]:
        """Every settle coin: ccxt alone reads only the USDT-settled positions."""
        client = broker.client
        answers = await asyncio.gather(
            *(broker.call(client.fetch_positions, None, {"settleCoin": coin}) for coin in SETTLE_COINS)
        )
        return [p for positions in answers for p in positions]

    def hedge_leg(self, position: Mapping[str, Any]) -> str | None:
        idx = str((position.get("info") or {}).get("positionIdx", "0"))
        if idx in ("1", "2"):
            return "long" if idx == "1" else "short"
        return super().hedge_leg(position)

    def close_params(self, position: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"reduceOnly": True}
        leg = self.hedge_leg(position)
        if leg:
            # Hedge mode: the order names the leg it reduces.
            params["positionIdx"] = 1 if leg == "long" else 2
        return params

    # -- open orders -------------------------------------------------------------------

    def _scopes(self, market: Market) -> list[dict[str, Any]]:
        if market is Market.SPOT:
            return [{"category": "spot"}]
        return [{"category": "linear", "settleCoin": coin} for coin in SETTLE_COINS]

    async def list_open_orders(
        self, broker: Broker, symbols: Sequence[str] | None, *, conditional: bool = False
    ) -> list[OpenOrder]:
        """One order/realtime read per category and settle coin."""
        client = broker.client
        scopes = self._scopes(broker.market)
        if broker.market is Market.SPOT and conditional:
            scopes = scopes + [{"category": "spot", "orderFilter": "StopOrder"}]
        answers = await asyncio.gather(*(broker.call(client.privateGetV5OrderRealtime, s) for s in scopes))
        wanted = set(symbols) if symbols is not None else None
        out: list[OpenOrder] = []
        for scope, answer in zip(scopes, answers, strict=True):
            for row in (answer.get("result") or {}).get("list") or []:
                market_type = "spot" if scope["category"] == "spot" else "swap"
                symbol = client.safe_symbol(str(row.get("symbol")), None, None, market_type)
                if wanted is None or symbol in wanted:
                    stop = bool(row.get("stopOrderType")) or scope.get("orderFilter") == "StopOrder"
                    out.append(OpenOrder(symbol, str(row.get("orderId")), stop, str(row.get("symbol"))))
        return out

    async def cancel_orders(self, broker: Broker, orders: Sequence[OpenOrder]) -> None:
        """One cancel-all per symbol (and per order kind on spot)."""
        client = broker.client
        requests = []
        seen: set[tuple[str, bool]] = set()
        for o in orders:
            kind = (o.market_id, o.conditional and broker.market is Market.SPOT)
            if kind in seen:
                continue
            seen.add(kind)
            req: dict[str, Any] = {"category": "spot" if broker.market is Market.SPOT else "linear",
                                   "symbol": o.market_id}
            if kind[1]:
                req["orderFilter"] = "StopOrder"
            requests.append(broker.call(client.privatePostV5OrderCancelAll, req, symbol=o.symbol))
        await asyncio.gather(*requests)

    async def cancel_all_orders(self, broker: Broker) -> int:
        """No read at all: cancel-all per settle coin (linear: every order kind), or per
        order kind on spot; the answers list what was cancelled."""
        client = broker.client
        if broker.market is Market.SPOT:
            scopes = [{"category": "spot", "orderFilter": f} for f in SPOT_ORDER_FILTERS]
        else:
            scopes = self._scopes(broker.market)
        answers = await asyncio.gather(*(broker.call(client.privatePostV5OrderCancelAll, s) for s in scopes))
        return sum(len((a.get("result") or {}).get("list") or []) for a in answers)
