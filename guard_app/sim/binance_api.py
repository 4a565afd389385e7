"""Binance's REST protocol, the subset ccxt's ``binance`` class uses, on top of :class:`SimExchange`.

Spot lives under ``/api/v3``, USDⓈ-M futures under ``/fapi/v1|v2|v3``, COIN-M
(``/dapi``) answers with an empty market list, and the few signed ``/sapi`` calls that
``load_markets()`` makes answer with the coins and no margin pairs.

Signed endpoints check, in Binance's order: the ``X-MBX-APIKEY`` header (-2014/-2015,
HTTP 401), the timestamp against ``recvWindow`` (-1021) and the HMAC-SHA256 signature
over the query string and body (-1022).

Rate limits (the published ones by default, see :mod:`guard_app.sim.limits`): every
request costs its documented weight (:data:`SPOT_WEIGHTS`, :data:`FUTURES_WEIGHTS`) in
the IP's one-minute window (spot 6,000, USDⓈ-M 2,400); orders count per account
(USDⓈ-M 300 per 10 s and 1,200 per minute, spot 100 per 10 s and 200,000 per day) and
``exchangeInfo.rateLimits`` announces the same numbers. Answers carry
``X-MBX-USED-WEIGHT-1M`` and, on orders, ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` (``-1D``
on spot). Over a limit: HTTP 429 (-1003 weight, -1015 orders) with ``Retry-After``
(seconds to the window's end). An IP that keeps sending before that time is banned:
HTTP 418 with ``Retry-After`` for ``binance.ban_seconds`` (docs "LIMITS": "repeatedly
violating rate limits and/or failing to back off after receiving 429s will result in
an automated IP ban (HTTP status 418)").

USDⓈ-M hedge mode (``GET/POST /fapi/v1/positionSide/dual``) and ``batchOrders``
(≤ 5 orders; the answer is a list with each order's JSON or its ``{"code","msg"}``).

USDⓈ-M conditional orders live in Binance's Algo Service, apart from the others (as
ccxt ≥ 4.5 uses it): ``POST/GET/DELETE /fapi/v1/algoOrder``, ``GET
/fapi/v1/openAlgoOrders``, ``DELETE /fapi/v1/algoOpenOrders``; ``openOrders`` and
``allOpenOrders`` don't see them. Spot stop orders stay ordinary orders.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from guard_app.sim.exchange import (
    BINANCE_ERRORS,
    ApiError,
    SimAccount,
    SimExchange,
    SimMarket,
    SimOrder,
    dec,
    fmt,
)
from guard_app.sim.frontend import ApiRequest, ApiResponse, RateLimitStats
from guard_app.sim.limits import LimitBook

__all__ = ["ApiRequest", "ApiResponse", "BinanceApi"]


Handler = Callable[[ApiRequest, dict[str, str], SimAccount | None], Any]

SPOT_ORDER_PARAMS = {
    "symbol", "side", "type", "quantity", "quoteOrderQty", "price", "timeInForce", "newClientOrderId",
    "newOrderRespType", "timestamp", "recvWindow", "signature", "selfTradePreventionMode",
    "strategyId", "strategyType",
}
FUTURES_ORDER_PARAMS = {
    "symbol", "side", "type", "quantity", "price", "timeInForce", "reduceOnly", "newClientOrderId",
    "newOrderRespType", "positionSide", "timestamp", "recvWindow", "signature", "workingType",
    "priceProtect", "selfTradePreventionMode", "priceMatch", "goodTillDate",
}


# Request weight per endpoint: (with a symbol, without). Spot: "Spot API" endpoint pages
# (e.g. openOrders 6 / 80, ticker/24hr 2 / 80, account 20, exchangeInfo 20, order 1).
SPOT_WEIGHTS: dict[tuple[str, str], tuple[int, int]] = {
    ("GET", "/api/v3/exchangeInfo"): (20, 20), ("GET", "/api/v3/ticker/24hr"): (2, 80),
    ("GET", "/api/v3/ticker/price"): (2, 4), ("GET", "/api/v3/ticker/bookTicker"): (2, 4),
    ("GET", "/api/v3/account"): (20, 20), ("POST", "/api/v3/order"): (1, 1), ("GET", "/api/v3/order"): (4, 4),
    ("DELETE", "/api/v3/order"): (1, 1), ("GET", "/api/v3/openOrders"): (6, 80),
    ("DELETE", "/api/v3/openOrders"): (1, 1),
}
# USDⓈ-M: "USDⓈ-M Futures" endpoint pages (New Order "0 on IP rate limit", batchOrders 5,
# openOrders 1 / 40, ticker/24hr 1 / 40, premiumIndex 1 / 10, account 5, positionRisk 5,
# positionSide/dual GET 30).
FUTURES_WEIGHTS: dict[tuple[str, str], tuple[int, int]] = {
    ("POST", "/fapi/v1/order"): (0, 0), ("POST", "/fapi/v1/batchOrders"): (5, 5),
    ("DELETE", "/fapi/v1/batchOrders"): (1, 1), ("GET", "/fapi/v1/openOrders"): (1, 40),
    ("GET", "/fapi/v1/ticker/24hr"): (1, 40), ("GET", "/fapi/v1/ticker/price"): (1, 2),
    ("GET", "/fapi/v2/ticker/price"): (1, 2), ("GET", "/fapi/v1/ticker/bookTicker"): (2, 5),
    ("GET", "/fapi/v1/premiumIndex"): (1, 10), ("GET", "/fapi/v2/account"): (5, 5), ("GET", "/fapi/v3/account"): (5, 5),
    ("GET", "/fapi/v2/balance"): (5, 5), ("GET", "/fapi/v3/balance"): (5, 5), ("GET", "/fapi/v2/positionRisk"): (5, 5),
    ("GET", "/fapi/v3/positionRisk"): (5, 5), ("GET", "/fapi/v1/positionSide/dual"): (30, 30),
    ("GET", "/fapi/v1/exchangeInfo"): (1, 1), ("POST", "/fapi/v1/algoOrder"): (1, 1),
    ("GET", "/fapi/v1/openAlgoOrders"): (1, 40), ("DELETE", "/fapi/v1/algoOpenOrders"): (1, 1),
}
ALGO_TYPES = {"STOP_MARKET": "MARKET", "TAKE_PROFIT_MARKET": "MARKET", "STOP": "LIMIT", "TAKE_PROFIT": "LIMIT"}
MAX_FUTURES_BATCH = 5  # "Place Multiple Orders": max 5 orders


class _IpState:
    """Per-IP abuse tracking: until when it was told to back off, strikes, ban end."""

    def __init__(self) -> None:
        self.back_off_until = 0.0
        self.strikes = 0
        self.banned_until = 0.0
        self.bans = 0


def _decimals(step: Decimal) -> int:
    exp = step.normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


class BinanceApi:
    """Routes Binance REST paths to handlers; one instance per server."""

    protocol = "binance"

    def __init__(self, exchange: SimExchange, limits: LimitBook | None = None,
                 stats: RateLimitStats | None = None) -> None:
        self.ex = exchange
        self.limits = limits or LimitBook(exchange.scenario.limits)
        self.stats = stats or RateLimitStats()
        self._ips: dict[str, _IpState] = {}
        self._ip_lock = threading.Lock()
        # (method, path) -> (handler, signed, venue)
        self.routes: dict[tuple[str, str], tuple[Handler, bool]] = {}
        r = self._route
        # spot, public
        r("GET", "/api/v3/ping", lambda q, p, a: {})
        r("GET", "/api/v3/time", lambda q, p, a: {"serverTime": self.ex.server_time_ms()})
        r("GET", "/api/v3/exchangeInfo", lambda q, p, a: self._exchange_info("spot"))
        r("GET", "/api/v3/ticker/24hr", lambda q, p, a: self._tickers("spot", p))
        r("GET", "/api/v3/ticker/price", lambda q, p, a: self._prices("spot", p))
        r("GET", "/api/v3/ticker/bookTicker", lambda q, p, a: self._book_tickers("spot", p))
        # spot, signed
        r("GET", "/api/v3/account", self._spot_account, signed=True)
        r("POST", "/api/v3/order", lambda q, p, a: self._new_order("spot", p, a), signed=True)
        r("GET", "/api/v3/order", lambda q, p, a: self._get_order("spot", p, a), signed=True)
        r("DELETE", "/api/v3/order", lambda q, p, a: self._cancel("spot", p, a), signed=True)
        r("GET", "/api/v3/openOrders", lambda q, p, a: self._open_orders("spot", p, a), signed=True)
        r("DELETE", "/api/v3/openOrders", lambda q, p, a: self._cancel_all("spot", p, a), signed=True)
        # USDⓈ-M futures, public
        r("GET", "/fapi/v1/ping", lambda q, p, a: {})
        r("GET", "/fapi/v1/time", lambda q, p, a: {"serverTime": self.ex.server_time_ms()})
        r("GET", "/fapi/v1/exchangeInfo", lambda q, p, a: self._exchange_info("futures"))
        r("GET", "/fapi/v1/ticker/24hr", lambda q, p, a: self._tickers("futures", p))
        r("GET", "/fapi/v1/ticker/price", lambda q, p, a: self._prices("futures", p))
        r("GET", "/fapi/v2/ticker/price", lambda q, p, a: self._prices("futures", p))
        r("GET", "/fapi/v1/ticker/bookTicker", lambda q, p, a: self._book_tickers("futures", p))
        r("GET", "/fapi/v1/premiumIndex", lambda q, p, a: self._premium_index(p))
        # USDⓈ-M futures, signed
        for version in ("v2", "v3"):
            r("GET", f"/fapi/{version}/account", self._futures_account, signed=True)
            r("GET", f"/fapi/{version}/balance", self._futures_balance, signed=True)
            r("GET", f"/fapi/{version}/positionRisk", self._position_risk, signed=True)
        r("GET", "/fapi/v1/leverageBracket", self._leverage_brackets, signed=True)
        r("GET", "/fapi/v1/positionSide/dual", lambda q, p, a: {"dualSidePosition": bool(a and a.hedge)}, signed=True)
        r("POST", "/fapi/v1/positionSide/dual", self._set_dual, signed=True)
        r("POST", "/fapi/v1/batchOrders", self._batch_orders, signed=True)
        r("DELETE", "/fapi/v1/batchOrders", self._cancel_batch, signed=True)
        r("POST", "/fapi/v1/algoOrder", self._new_algo, signed=True)
        r("GET", "/fapi/v1/algoOrder", self._get_algo, signed=True)
        r("DELETE", "/fapi/v1/algoOrder", self._cancel_algo, signed=True)
        r("GET", "/fapi/v1/openAlgoOrders", self._open_algos, signed=True)
        r("DELETE", "/fapi/v1/algoOpenOrders", self._cancel_algos, signed=True)
        r("GET", "/fapi/v1/multiAssetsMargin", lambda q, p, a: {"multiAssetsMargin": False}, signed=True)
        r("POST", "/fapi/v1/leverage", self._set_leverage, signed=True)
        r("POST", "/fapi/v1/order", lambda q, p, a: self._new_order("futures", p, a), signed=True)
        r("GET", "/fapi/v1/order", lambda q, p, a: self._get_order("futures", p, a), signed=True)
        r("DELETE", "/fapi/v1/order", lambda q, p, a: self._cancel("futures", p, a), signed=True)
        r("GET", "/fapi/v1/openOrders", lambda q, p, a: self._open_orders("futures", p, a), signed=True)
        r("DELETE", "/fapi/v1/allOpenOrders", lambda q, p, a: self._cancel_all("futures", p, a), signed=True)
        # COIN-M: no markets are simulated, but load_markets() asks by default.
        r("GET", "/dapi/v1/ping", lambda q, p, a: {})
        r("GET", "/dapi/v1/time", lambda q, p, a: {"serverTime": self.ex.server_time_ms()})
        r("GET", "/dapi/v1/exchangeInfo", lambda q, p, a: self._empty_exchange_info())
        # sapi calls load_markets() makes when keys are set (fetchCurrencies, fetchMargins).
        r("GET", "/sapi/v1/capital/config/getall", self._coins, signed=True)
        r("GET", "/sapi/v1/margin/allPairs", lambda q, p, a: [], signed=True)
        r("GET", "/sapi/v1/margin/isolated/allPairs", lambda q, p, a: [], signed=True)
        r("GET", "/sapi/v1/system/status", lambda q, p, a: {"status": 0, "msg": "normal"})

    def _route(self, method: str, path: str, handler: Handler, signed: bool = False) -> None:
        self.routes[(method, path)] = (handler, signed)

    # --- dispatch ----------------------------------------------------------------------

    def known(self, method: str, path: str) -> bool:
        return (method, path) in self.routes

    def is_order_request(self, method: str, path: str) -> bool:
        return method == "POST" and path in ("/api/v3/order", "/fapi/v1/order", "/fapi/v1/batchOrders",
                                             "/fapi/v1/algoOrder")

    def handle(self, req: ApiRequest) -> ApiResponse:
        """Answer one request (the caller has already checked that the route exists)."""
        handler, signed = self.routes[(req.method, req.path)]
        params = req.params
        venue = "spot" if req.path.startswith("/api/") else "futures"
        refused, headers = self._charge_weight(req, params, venue)
        if refused is not None:
            return refused
        account: SimAccount | None = None
        try:
            if signed:
                account = self._authenticate(req, params)
            if account is not None and self.is_order_request(req.method, req.path):
                refused = self._charge_orders(req, params, venue, account, headers)
                if refused is not None:
                    return refused
            body = handler(req, params, account)
            status = 200
            if venue == "spot" and account is not None and self.is_order_request(req.method, req.path) \
                    and isinstance(body, dict) and body.get("status") == "FILLED":
                # Spot "Unfilled Order Count": an order that fills at once is taken back off.
                for name, seconds, label in (("binance.spot_orders_10s", 10.0, "10s"),
                                             ("binance.spot_orders_1d", 86400.0, "1d")):
                    window = self.limits.refund(name, seconds, venue, account.name)
                    headers[f"x-mbx-order-count-{label}"] = str(int(window.used))
        except ApiError as err:
            if self.is_order_request(req.method, req.path) and account is None:
                self.ex.record_rejection(None, venue, params, err)
            status, body = err.http_status, {"code": err.code, "msg": err.msg}
        return ApiResponse(status, body, headers)

    # --- rate limits -------------------------------------------------------------------

    def _ip(self, client: str) -> _IpState:
        with self._ip_lock:
            return self._ips.setdefault(client, _IpState())

    def _too_many(self, ip: _IpState, client: str, code: int, msg: str, until: float,
                  headers: dict[str, str]) -> ApiResponse:
        """A 429, or a 418 ban when the IP keeps going after being told to back off."""
        now = time.time()
        with self._ip_lock:
            if now < ip.back_off_until:
                ip.strikes += 1
            ip.back_off_until = max(ip.back_off_until, until)
            if ip.strikes >= self.limits.limit("binance.ban_after_429s"):
                self._ban(ip, now)
                ip.strikes = 0
        if ip.banned_until > now:
            return self._banned(ip, client, headers)
        self.stats.note("binance", "429")
        return ApiResponse(429, {"code": code, "msg": msg},
                           {**headers, "Retry-After": str(max(1, int(until - now + 0.999)))})

    def _ban(self, ip: _IpState, now: float) -> None:
        """Ban an IP; "the ban duration scales from 2 minutes to 3 days for repeat offenders"."""
        ip.bans += 1
        ip.banned_until = now + min(self.limits.limit("binance.ban_seconds") * 2 ** (ip.bans - 1), 3 * 86400)

    def _banned(self, ip: _IpState, client: str, headers: dict[str, str]) -> ApiResponse:
        self.stats.note("binance", "418")
        until_ms = int(ip.banned_until * 1000)
        return ApiResponse(418, {"code": -1003, "msg": f"Way too many requests; IP({client}) banned until {until_ms}. "
                                                      "Please use the websocket for live updates to avoid bans."},
                           {**headers, "Retry-After": str(max(1, int(ip.banned_until - time.time() + 0.999)))})

    def _charge_weight(self, req: ApiRequest, params: dict[str, str],
                       venue: str) -> tuple[ApiResponse | None, dict[str, str]]:
        ip = self._ip(req.client)
        now = time.time()
        if ip.banned_until > now:
            return self._banned(ip, req.client, {}), {}
        table = SPOT_WEIGHTS if venue == "spot" else FUTURES_WEIGHTS
        with_symbol, without = table.get((req.method, req.path), (1, 1))
        weight = with_symbol if params.get("symbol") else without
        if req.path.startswith(("/sapi/", "/dapi/")):
            weight, venue = 1, "spot"
        name = "binance.spot_weight_1m" if venue == "spot" else "binance.futures_weight_1m"
        allowed, window = self.limits.charge(name, 60.0, venue, req.client, cost=weight)
        self.ex.count_weight(weight)
        headers = {"x-mbx-used-weight-1m": fmt(Decimal(window.used)), "x-mbx-used-weight": fmt(Decimal(window.used))}
        if allowed and now < ip.back_off_until:
            # Still inside the back-off period it was given: that is what earns a ban.
            with self._ip_lock:
                ip.strikes += 1
                if ip.strikes >= self.limits.limit("binance.ban_after_429s"):
                    self._ban(ip, now)
                    ip.strikes = 0
                    return self._banned(ip, req.client, headers), headers
        if not allowed:
            limit = int(window.limit)
            return self._too_many(ip, req.client, -1003,
                                  f"Too many requests; current limit of IP({req.client}) is {limit} requests per "
                                  "minute. Please use WebSocket Streams for live updates to avoid polling the API.",
                                  window.reset_at(), headers), headers
        return None, headers

    def _charge_orders(self, req: ApiRequest, params: dict[str, str], venue: str, acc: SimAccount,
                       headers: dict[str, str]) -> ApiResponse | None:
        """Count orders per account ("Order Rate Limits"); a batch counts each order."""
        count = 1
        if req.path.endswith("batchOrders"):
            try:
                count = max(1, len(json.loads(params.get("batchOrders", "[]"))))
            except ValueError:
                count = 1
        if venue == "spot":
            windows = [("binance.spot_orders_10s", 10.0, "10S"), ("binance.spot_orders_1d", 86400.0, "1D")]
        else:
            windows = [("binance.futures_orders_10s", 10.0, "10S"), ("binance.futures_orders_1m", 60.0, "1M")]
        for name, seconds, label in windows:
            allowed, window = self.limits.charge(name, seconds, venue, acc.name, cost=count)
            headers[f"x-mbx-order-count-{label.lower()}"] = str(int(window.used))
            if not allowed:
                unit = {"10S": "10 SECOND", "1M": "1 MINUTE", "1D": "1 DAY"}[label]
                return self._too_many(self._ip(req.client), req.client, -1015,
                                      f"Too many new orders; current limit is {int(window.limit)} orders per {unit}.",
                                      window.reset_at(), headers)
        return None

    def _authenticate(self, req: ApiRequest, params: dict[str, str]) -> SimAccount:
        api_key = req.headers.get("x-mbx-apikey")
        if not api_key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        account = self.ex.account_for_key(api_key, "binance")
        if account is None:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if "timestamp" not in params:
            raise ApiError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        try:
            timestamp = int(params["timestamp"])
            recv_window = int(params.get("recvWindow", "5000"))
        except ValueError:
            raise ApiError(-1100, "Illegal characters found in parameter 'timestamp'.") from None
        if recv_window > 60000:
            raise ApiError(-1131, "recvWindow must be less than 60000")
        now = self.ex.server_time_ms()
        if timestamp >= now + 1000 or now - timestamp > recv_window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
        signature = params.get("signature")
        if not signature:
            raise ApiError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        # Binance signs the query string followed by the body, without the signature itself.
        payload = _strip_signature(req.query) + _strip_signature(req.body)
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(-1022, "Signature for this request is not valid.")
        return account

    # --- market data -------------------------------------------------------------------

    def _table(self, venue: str) -> dict[str, SimMarket]:
        return self.ex.spot_markets if venue == "spot" else self.ex.swap_markets

    def _selected(self, venue: str, p: dict[str, str]) -> list[SimMarket] | SimMarket:
        table = self._table(venue)
        if "symbol" in p:
            if p["symbol"] not in table:
                raise ApiError(-1121, "Invalid symbol.")
            return table[p["symbol"]]
        if "symbols" in p:
            try:
                ids = json.loads(p["symbols"])
            except ValueError:
                raise ApiError(-1100, "Illegal characters found in parameter 'symbols'.") from None
            missing = [i for i in ids if i not in table]
            if missing:
                raise ApiError(-1121, "Invalid symbol.")
            return [table[i] for i in ids]
        return list(table.values())

    def _exchange_info(self, venue: str) -> dict[str, Any]:
        now = self.ex.server_time_ms()
        if venue == "spot":
            lim = self.limits.limit
            limits = [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": int(lim("binance.spot_weight_1m"))},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": int(lim("binance.spot_orders_10s"))},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
                 "limit": int(lim("binance.spot_orders_1d"))},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ]
            symbols = [self._spot_symbol(m) for m in self.ex.spot_markets.values()]
        else:
            lim = self.limits.limit
            limits = [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": int(lim("binance.futures_weight_1m"))},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                 "limit": int(lim("binance.futures_orders_1m"))},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": int(lim("binance.futures_orders_10s"))},
            ]
            symbols = [self._futures_symbol(m) for m in self.ex.swap_markets.values()]
        info: dict[str, Any] = {
            "timezone": "UTC", "serverTime": now, "rateLimits": limits, "exchangeFilters": [], "symbols": symbols,
        }
        if venue == "futures":
            info["assets"] = [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}]
        return info

    def _empty_exchange_info(self) -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": self.ex.server_time_ms(), "rateLimits": [],
                "exchangeFilters": [], "symbols": []}

    @staticmethod
    def _spot_symbol(m: SimMarket) -> dict[str, Any]:
        s = m.spec
        return {
            "symbol": m.id, "status": "TRADING", "baseAsset": s.base, "baseAssetPrecision": 8,
            "quoteAsset": s.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True, "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt(s.tick_size, 8), "maxPrice": "1000000.00000000",
                 "tickSize": fmt(s.tick_size, 8)},
                {"filterType": "LOT_SIZE", "minQty": fmt(s.min_qty, 8), "maxQty": fmt(s.max_qty, 8),
                 "stepSize": fmt(s.step_size, 8)},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": fmt(s.max_qty, 8),
                 "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                 "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
                 "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": fmt(s.min_notional, 8), "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    @staticmethod
    def _futures_symbol(m: SimMarket) -> dict[str, Any]:
        s = m.spec
        return {
            "symbol": m.id, "pair": m.id, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": s.base, "quoteAsset": s.quote,
            "marginAsset": s.quote, "pricePrecision": _decimals(s.tick_size),
            "quantityPrecision": _decimals(s.step_size), "baseAssetPrecision": 8, "quotePrecision": 8,
            "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
            "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt(s.tick_size), "maxPrice": "1000000",
                 "tickSize": fmt(s.tick_size)},
                {"filterType": "LOT_SIZE", "minQty": fmt(s.min_qty), "maxQty": fmt(s.max_qty),
                 "stepSize": fmt(s.step_size)},
                {"filterType": "MARKET_LOT_SIZE", "minQty": fmt(s.min_qty), "maxQty": fmt(s.max_qty),
                 "stepSize": fmt(s.step_size)},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": fmt(s.min_notional)},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    def _ticker(self, m: SimMarket, venue: str) -> dict[str, Any]:
        now = self.ex.server_time_ms()
        price = m.price
        places = 8 if venue == "spot" else None
        t = {
            "symbol": m.id, "priceChange": "0", "priceChangePercent": "0.000",
            "weightedAvgPrice": fmt(price, places), "lastPrice": fmt(price, places),
            "lastQty": fmt(m.spec.min_qty, places), "openPrice": fmt(price, places),
            "highPrice": fmt(price, places), "lowPrice": fmt(price, places),
            "volume": "1000.00000000", "quoteVolume": fmt(price * 1000, places),
            "openTime": now - 86_400_000, "closeTime": now, "firstId": 1, "lastId": 1000, "count": 1000,
        }
        if venue == "spot":
            t.update({"prevClosePrice": fmt(price, 8), "bidPrice": fmt(price, 8), "bidQty": "1.00000000",
                      "askPrice": fmt(price, 8), "askQty": "1.00000000"})
        return t

    def _tickers(self, venue: str, p: dict[str, str]) -> Any:
        sel = self._selected(venue, p)
        if isinstance(sel, SimMarket):
            return self._ticker(sel, venue)
        return [self._ticker(m, venue) for m in sel]

    def _prices(self, venue: str, p: dict[str, str]) -> Any:
        sel = self._selected(venue, p)
        now = self.ex.server_time_ms()

        def row(m: SimMarket) -> dict[str, Any]:
            r: dict[str, Any] = {"symbol": m.id, "price": fmt(m.price, 8 if venue == "spot" else None)}
            if venue == "futures":
                r["time"] = now
            return r

        return row(sel) if isinstance(sel, SimMarket) else [row(m) for m in sel]

    def _book_tickers(self, venue: str, p: dict[str, str]) -> Any:
        sel = self._selected(venue, p)

        def row(m: SimMarket) -> dict[str, Any]:
            return {"symbol": m.id, "bidPrice": fmt(m.price), "bidQty": "1", "askPrice": fmt(m.price),
                    "askQty": "1", "time": self.ex.server_time_ms()}

        return row(sel) if isinstance(sel, SimMarket) else [row(m) for m in sel]

    def _premium_index(self, p: dict[str, str]) -> Any:
        sel = self._selected("futures", p)
        now = self.ex.server_time_ms()

        def row(m: SimMarket) -> dict[str, Any]:
            return {"symbol": m.id, "markPrice": fmt(m.price), "indexPrice": fmt(m.price),
                    "estimatedSettlePrice": fmt(m.price), "lastFundingRate": "0.00010000",
                    "interestRate": "0.00010000", "nextFundingTime": (now // 28_800_000 + 1) * 28_800_000,
                    "time": now}

        return row(sel) if isinstance(sel, SimMarket) else [row(m) for m in sel]

    def _coins(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        balances = {a: (f, lk) for a, f, lk in self.ex.spot_rows(acc)} if acc else {}
        coins = []
        for asset in self.ex.all_assets():
            free, locked = balances.get(asset, (Decimal(0), Decimal(0)))
            coins.append({
                "coin": asset, "name": asset, "depositAllEnable": True, "withdrawAllEnable": True,
                "free": fmt(free, 8), "locked": fmt(locked, 8), "freeze": "0", "withdrawing": "0",
                "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": False, "trading": True,
                "networkList": [{
                    "network": asset, "coin": asset, "name": asset, "isDefault": True,
                    "depositEnable": True, "withdrawEnable": True, "withdrawFee": "0.1",
                    "withdrawMin": "1", "withdrawMax": "10000000", "withdrawIntegerMultiple": "0.00000001",
                    "minConfirm": 1, "unLockConfirm": 0, "sameAddress": False, "busy": False,
                    "depositDesc": "", "withdrawDesc": "", "specialTips": "",
                }],
            })
        return coins

    # --- accounts ----------------------------------------------------------------------

    def _spot_account(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        rows = self.ex.spot_rows(acc)
        if p.get("omitZeroBalances", "false").lower() == "true":
            rows = [r for r in rows if r[1] or r[2]]
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": acc.update_time,
            "accountType": "SPOT",
            "balances": [{"asset": a, "free": fmt(f, 8), "locked": fmt(lk, 8)} for a, f, lk in rows],
            "permissions": ["SPOT"], "uid": zlib.crc32(acc.name.encode()),
        }

    def _position_row(self, acc: SimAccount, m: SimMarket, amt: Decimal, entry: Decimal, v3: bool,
                      margin_mode: str = "cross", leg: str = "net") -> dict[str, Any]:
        notional = amt * m.price
        leverage = self.ex.leverage_of(acc, m)
        initial = abs(notional) / leverage
        isolated = fmt(initial) if margin_mode == "isolated" else "0"
        row: dict[str, Any] = {
            "symbol": m.id, "positionSide": "BOTH" if leg == "net" else leg.upper(), "positionAmt": fmt(amt),
            "entryPrice": fmt(entry), "breakEvenPrice": fmt(entry), "markPrice": fmt(m.price),
            "unRealizedProfit": fmt(amt * (m.price - entry)), "liquidationPrice": "0",
            "isolatedMargin": isolated, "notional": fmt(notional), "marginAsset": m.spec.quote,
            "isolatedWallet": isolated, "initialMargin": fmt(initial), "maintMargin": fmt(abs(notional) * Decimal("0.004")),
            "positionInitialMargin": fmt(initial), "openOrderInitialMargin": "0", "adl": 1,
            "bidNotional": "0", "askNotional": "0", "updateTime": acc.update_time,
        }
        if not v3:
            row.update({"leverage": str(leverage), "marginType": margin_mode, "isAutoAddMargin": "false",
                        "maxNotionalValue": "1000000"})
        return row

    def _position_risk(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - signed route
        v3 = req.path.startswith("/fapi/v3/")
        rows = [self._position_row(acc, m, amt, entry, v3, mm, leg) for m, mm, leg, amt, entry in self.ex.position_legs(acc)]
        if "symbol" in p:
            if p["symbol"] not in self.ex.swap_markets:
                raise ApiError(-1121, "Invalid symbol.")
            rows = [r for r in rows if r["symbol"] == p["symbol"]]
        return rows

    def _futures_asset(self, acc: SimAccount) -> dict[str, Any]:
        f = self.ex.futures_figures(acc)
        return {
            "asset": "USDT", "walletBalance": fmt(f["wallet"]), "unrealizedProfit": fmt(f["unrealized"]),
            "marginBalance": fmt(f["margin_balance"]), "maintMargin": "0",
            "initialMargin": fmt(f["initial_margin"] + f["open_order_margin"]),
            "positionInitialMargin": fmt(f["initial_margin"]), "openOrderInitialMargin": fmt(f["open_order_margin"]),
            "crossWalletBalance": fmt(f["wallet"]), "crossUnPnl": fmt(f["unrealized"]),
            "availableBalance": fmt(f["available"]), "maxWithdrawAmount": fmt(max(f["available"], Decimal(0))),
            "updateTime": acc.update_time or 1,
        }

    def _futures_account(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        f = self.ex.futures_figures(acc)
        asset = self._futures_asset(acc)
        positions = []
        for m, mm, leg, amt, entry in self.ex.position_legs(acc):
            row = self._position_row(acc, m, amt, entry, True, mm, leg)
            positions.append({k: row[k] for k in ("symbol", "positionSide", "positionAmt", "unRealizedProfit",
                                                  "isolatedMargin", "notional", "isolatedWallet",
                                                  "initialMargin", "maintMargin", "updateTime")})
            if not req.path.startswith("/fapi/v3/"):
                positions[-1].update({"entryPrice": row["entryPrice"], "leverage": str(self.ex.leverage_of(acc, m)),
                                      "isolated": mm == "isolated", "positionInitialMargin": row["positionInitialMargin"],
                                      "openOrderInitialMargin": "0", "maxNotional": "1000000"})
        return {
            "totalInitialMargin": asset["initialMargin"], "totalMaintMargin": "0",
            "totalWalletBalance": fmt(f["wallet"]), "totalUnrealizedProfit": fmt(f["unrealized"]),
            "totalMarginBalance": fmt(f["margin_balance"]), "totalPositionInitialMargin": fmt(f["initial_margin"]),
            "totalOpenOrderInitialMargin": fmt(f["open_order_margin"]), "totalCrossWalletBalance": fmt(f["wallet"]),
            "totalCrossUnPnl": fmt(f["unrealized"]), "availableBalance": fmt(f["available"]),
            "maxWithdrawAmount": asset["maxWithdrawAmount"], "assets": [asset], "positions": positions,
            "canTrade": True, "canDeposit": True, "canWithdraw": True, "feeTier": 0, "multiAssetsMargin": False,
            "updateTime": 0,
        }

    def _futures_balance(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - signed route
        a = self._futures_asset(acc)
        return [{"accountAlias": "SgsR", "asset": "USDT", "balance": a["walletBalance"],
                 "crossWalletBalance": a["walletBalance"], "crossUnPnl": a["unrealizedProfit"],
                 "availableBalance": a["availableBalance"], "maxWithdrawAmount": a["maxWithdrawAmount"],
                 "marginAvailable": True, "updateTime": a["updateTime"]}]

    def _leverage_brackets(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> Any:
        def row(m: SimMarket) -> dict[str, Any]:
            return {"symbol": m.id, "notionalCoef": 1.0, "brackets": [
                {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
                 "maintMarginRatio": 0.004, "cum": 0.0},
                {"bracket": 2, "initialLeverage": 100, "notionalCap": 600000, "notionalFloor": 50000,
                 "maintMarginRatio": 0.005, "cum": 50.0},
                {"bracket": 3, "initialLeverage": 20, "notionalCap": 100000000, "notionalFloor": 600000,
                 "maintMarginRatio": 0.025, "cum": 12050.0},
            ]}

        if "symbol" in p:
            m = self.ex.swap_markets.get(p["symbol"])
            if m is None:
                raise ApiError(-1121, "Invalid symbol.")
            return [row(m)]
        return [row(m) for m in self.ex.swap_markets.values()]

    def _set_leverage(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        m = self.ex.swap_markets.get(p.get("symbol", ""))
        if m is None:
            raise ApiError(-1121, "Invalid symbol.")
        try:
            leverage = int(p.get("leverage", ""))
        except ValueError:
            raise ApiError(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.") from None
        self.ex.set_leverage(acc, m, leverage)
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": m.id}

    # --- orders ------------------------------------------------------------------------

    def _order_json(self, o: SimOrder, venue: str, query: bool = False, fills: bool = False) -> dict[str, Any]:
        if venue == "spot":
            d: dict[str, Any] = {
                "symbol": o.market.id, "orderId": o.order_id, "orderListId": -1,
                "clientOrderId": o.client_order_id, "price": fmt(o.price, 8), "origQty": fmt(o.orig_qty, 8),
                "executedQty": fmt(o.executed_qty, 8), "cummulativeQuoteQty": fmt(o.cum_quote, 8),
                "status": o.status, "timeInForce": o.time_in_force, "type": o.type, "side": o.side,
                "workingTime": o.time, "selfTradePreventionMode": "EXPIRE_MAKER",
            }
            if query:
                d.update({"stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": o.time,
                          "updateTime": o.update_time, "isWorking": True, "origQuoteOrderQty": "0.00000000"})
            else:
                d["transactTime"] = o.update_time
            if fills:
                d["fills"] = ([{"price": fmt(o.avg_price, 8), "qty": fmt(o.executed_qty, 8), "commission": "0.00000000",
                                "commissionAsset": o.market.spec.quote, "tradeId": o.order_id}]
                              if o.executed_qty else [])
            return d
        return {
            "orderId": o.order_id, "symbol": o.market.id, "status": o.status, "clientOrderId": o.client_order_id,
            "price": fmt(o.price), "avgPrice": fmt(o.avg_price), "origQty": fmt(o.orig_qty),
            "executedQty": fmt(o.executed_qty), "cumQty": fmt(o.executed_qty), "cumQuote": fmt(o.cum_quote),
            "timeInForce": o.time_in_force, "type": o.type, "reduceOnly": o.reduce_only, "closePosition": False,
            "side": o.side, "positionSide": o.leg.upper() if o.leg != "net" else "BOTH",
            "stopPrice": fmt(o.trigger_price) if o.trigger_price else "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": o.type, "priceMatch": "NONE", "selfTradePreventionMode": "NONE",
            "goodTillDate": 0, "time": o.time, "updateTime": o.update_time,
        }

    def _new_order(self, venue: str, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        allowed = SPOT_ORDER_PARAMS if venue == "spot" else FUTURES_ORDER_PARAMS
        unknown = [k for k in p if k not in allowed]
        if unknown:
            err = ApiError(-1104, f"Not all sent parameters were read; read '{len(p) - len(unknown)}' "
                                  f"parameter(s) but was sent '{len(p)}'.")
            self.ex.record_rejection(acc.name, venue, p, err)
            raise err
        order = self.ex.new_order(acc, venue, p)
        resp_type = p.get("newOrderRespType", "FULL" if venue == "spot" else "ACK").upper()
        body = self._order_json(order, venue, fills=resp_type == "FULL")
        if venue == "spot" and resp_type == "ACK":
            body = {k: body[k] for k in ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")}
        return body

    def _set_dual(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        """"Change Position Mode": only without open positions or orders (-4068 / -4067)."""
        assert acc is not None  # noqa: S101 - signed route
        wanted = p.get("dualSidePosition", "").lower()
        if wanted not in ("true", "false"):
            raise ApiError(-1102, "Mandatory parameter 'dualSidePosition' was not sent, was empty/null, or malformed.")
        if (wanted == "true") == acc.hedge:
            raise ApiError(-4059, "No need to change position side.")
        if self.ex.position_legs(acc):
            raise ApiError(-4068, "Position side cannot be changed if there exists position.")
        if self.ex.list_open_orders(acc, "futures", None, conditional=None):
            raise ApiError(-4067, "Position side cannot be changed if there exists open orders.")
        acc.hedge = wanted == "true"
        return {"code": 200, "msg": "success"}

    def _batch_orders(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        """"Place Multiple Orders": ≤ 5; each entry is the order's JSON or its own error."""
        assert acc is not None  # noqa: S101 - signed route
        try:
            rows = json.loads(p.get("batchOrders", ""))
        except ValueError:
            raise ApiError(-1102, "Mandatory parameter 'batchOrders' was not sent, was empty/null, or malformed.") from None
        if not isinstance(rows, list) or not rows:
            raise ApiError(-1102, "Mandatory parameter 'batchOrders' was not sent, was empty/null, or malformed.")
        if len(rows) > MAX_FUTURES_BATCH:
            raise ApiError(-4079, f"Invalid orderList length. Max length is {MAX_FUTURES_BATCH}.")
        out: list[dict[str, Any]] = []
        for row in rows:
            try:
                if not isinstance(row, dict):
                    raise ApiError(-1130, "Data sent for parameter 'batchOrders' is not valid.")
                out.append(self._new_order("futures", {k: str(v) for k, v in row.items()}, acc))
            except ApiError as err:
                out.append({"code": err.code, "msg": err.msg})
        return out

    def _cancel_batch(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        """"Cancel Multiple Orders": orderIdList or origClientOrderIdList (≤ 10)."""
        assert acc is not None  # noqa: S101 - signed route
        key, name = ("orderId", "orderIdList") if "orderIdList" in p else ("origClientOrderId", "origClientOrderIdList")
        try:
            ids = json.loads(p.get(name, ""))
        except ValueError:
            raise ApiError(-1102, "Mandatory parameter 'orderIdList' was not sent, was empty/null, or malformed.") from None
        if not isinstance(ids, list) or not 0 < len(ids) <= 10:
            raise ApiError(-4080, "Invalid orderIdList length. Max length is 10.")
        out: list[dict[str, Any]] = []
        for one in ids:
            try:
                out.append(self._cancel("futures", {"symbol": p.get("symbol", ""), key: str(one)}, acc))
            except ApiError as err:
                out.append({"code": err.code, "msg": err.msg})
        return out

    # --- USDⓈ-M Algo Service (conditional orders) ----------------------------------------

    def _algo_json(self, o: SimOrder) -> dict[str, Any]:
        status = "NEW" if o.is_open else ("CANCELED" if o.status == "CANCELED" else "FINISHED")
        return {
            "algoId": o.order_id, "clientAlgoId": o.client_order_id, "algoType": "CONDITIONAL",
            "orderType": o.trigger_type or ("STOP_MARKET" if o.type == "MARKET" else "STOP"), "symbol": o.market.id,
            "side": o.side, "positionSide": o.leg.upper() if o.leg != "net" else "BOTH",
            "timeInForce": o.time_in_force, "quantity": fmt(o.orig_qty), "algoStatus": status,
            "triggerPrice": fmt(o.trigger_price), "price": fmt(o.price), "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE", "priceMatch": "NONE",
            "closePosition": False, "priceProtect": False, "reduceOnly": o.reduce_only, "createTime": o.time,
            "updateTime": o.update_time, "triggerTime": 0, "goodTillDate": 0,
        }

    def _new_algo(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        """"New Algo Order" (algoType CONDITIONAL): rests until cancelled; never triggers here."""
        assert acc is not None  # noqa: S101 - signed route
        if p.get("algoType") != "CONDITIONAL":
            raise ApiError(-1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        kind = p.get("type", "").upper()
        if kind not in ALGO_TYPES:
            raise ApiError(-1116, "Invalid orderType.")
        market = self.ex.swap_markets.get(p.get("symbol", ""))
        if market is None:
            raise ApiError(-1121, "Invalid symbol.")
        side = p.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        if "triggerPrice" not in p:
            raise ApiError(-1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.")
        trigger = _dec(p["triggerPrice"], "triggerPrice")
        qty = _dec(p.get("quantity", ""), "quantity")
        price = _dec(p["price"], "price") if ALGO_TYPES[kind] == "LIMIT" and "price" in p else market.price
        position_side = p.get("positionSide", "BOTH").upper()
        if acc.hedge != (position_side in ("LONG", "SHORT")):
            raise ApiError(-4061, "Order's position side does not match user's setting.")
        leg = position_side.lower() if acc.hedge else "net"
        order = self.ex.place(acc, market, side, ALGO_TYPES[kind], qty, price,
                              reduce_only=p.get("reduceOnly", "false").lower() == "true",
                              client_order_id=p.get("clientAlgoId"), margin_mode=self.ex.margin_mode_of(acc, market, leg),
                              leg=leg, errors=BINANCE_ERRORS, trigger_price=trigger,
                              time_in_force=p.get("timeInForce", "GTC"))
        order.trigger_type = kind
        return self._algo_json(order)

    def _algo(self, acc: SimAccount, p: dict[str, str]) -> SimOrder:
        order = None
        if p.get("algoId"):
            try:
                order = self.ex.order_by_id(acc, order_id=int(p["algoId"]))
            except ValueError:
                raise ApiError(-1100, "Illegal characters found in parameter 'algoId'.") from None
        elif p.get("clientAlgoId"):
            order = self.ex.order_by_id(acc, client_order_id=p["clientAlgoId"])
        else:
            raise ApiError(-1102, "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!")
        if order is None or not order.conditional or order.market.is_spot:
            raise ApiError(-2013, "Order does not exist.")
        return order

    def _get_algo(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        return self._algo_json(self._algo(acc, p))

    def _cancel_algo(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        order = self._algo(acc, p)
        if not self.ex.cancel(acc, order):
            raise ApiError(-2011, "Unknown order sent.")
        return {"algoId": order.order_id, "clientAlgoId": order.client_order_id, "code": "200", "msg": "success"}

    def _open_algos(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - signed route
        return [self._algo_json(o) for o in self.ex.list_open_orders(acc, "futures", p.get("symbol"), conditional=True)]

    def _cancel_algos(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        if not p.get("symbol"):
            raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        self.ex.cancel_all(acc, "futures", p["symbol"], conditional=True)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _get_order(self, venue: str, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        return self._order_json(self.ex.find_order(acc, venue, p), venue, query=True)

    def _cancel(self, venue: str, p: dict[str, str], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - signed route
        order = self.ex.cancel_order(acc, venue, p)
        body = self._order_json(order, venue)
        if venue == "spot":
            body["origClientOrderId"] = order.client_order_id
            body["clientOrderId"] = p.get("newClientOrderId", "cancel" + str(order.order_id))
        return body

    def _cancel_all(self, venue: str, p: dict[str, str], acc: SimAccount | None) -> Any:
        assert acc is not None  # noqa: S101 - signed route
        if not p.get("symbol"):
            raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        cancelled = self.ex.cancel_all(acc, venue, p["symbol"], conditional=None if venue == "spot" else False)
        if venue == "futures":
            return {"code": 200, "msg": "The operation of cancel all open order is done."}
        if not cancelled:
            raise ApiError(-2011, "Unknown order sent.")
        out = []
        for o in cancelled:
            body = self._order_json(o, venue)
            body["origClientOrderId"] = o.client_order_id
            body["clientOrderId"] = "cancel" + str(o.order_id)
            out.append(body)
        return out

    def _open_orders(self, venue: str, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - signed route
        # Spot lists stop orders with the resting ones; USDⓈ-M keeps them in the Algo Service.
        orders = self.ex.list_open_orders(acc, venue, p.get("symbol"), conditional=None if venue == "spot" else False)
        return [self._order_json(o, venue, query=True) for o in orders]


def _dec(value: str, name: str) -> Decimal:
    if value == "":
        raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return dec(value, name)


def _strip_signature(text: str) -> str:
    """``text`` without its ``signature=...`` parameter (ccxt always puts it last)."""
    if not text:
        return ""
    parts = [part for part in text.split("&") if not part.startswith("signature=")]
    return "&".join(parts)
