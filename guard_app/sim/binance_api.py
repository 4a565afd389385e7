"""Binance's REST protocol, the subset ccxt's ``binance`` class uses, on top of :class:`SimExchange`.

Spot lives under ``/api/v3``, USDⓈ-M futures under ``/fapi/v1|v2|v3``, COIN-M
(``/dapi``) answers with an empty market list, and the few signed ``/sapi`` calls that
``load_markets()`` makes answer with the coins and no margin pairs.

Signed endpoints check, in Binance's order: the ``X-MBX-APIKEY`` header (-2014/-2015,
HTTP 401), the timestamp against ``recvWindow`` (-1021) and the HMAC-SHA256 signature
over the query string and body (-1022).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from guard_app.sim.exchange import ApiError, SimAccount, SimExchange, SimMarket, SimOrder, fmt

__all__ = ["ApiRequest", "ApiResponse", "BinanceApi"]


@dataclass
class ApiRequest:
    """An incoming HTTP request, already read off the socket."""

    method: str
    path: str
    query: str
    body: str
    headers: dict[str, str]  # lower-case names

    @property
    def params(self) -> dict[str, str]:
        params = dict(parse_qsl(self.query, keep_blank_values=True))
        params.update(parse_qsl(self.body, keep_blank_values=True))
        return params


@dataclass
class ApiResponse:
    """What to send back: HTTP status, JSON body and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


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


def _decimals(step: Decimal) -> int:
    exp = step.normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


class BinanceApi:
    """Routes Binance REST paths to handlers; one instance per server."""

    def __init__(self, exchange: SimExchange) -> None:
        self.ex = exchange
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
        r("GET", "/fapi/v1/positionSide/dual", lambda q, p, a: {"dualSidePosition": False}, signed=True)
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
        return method == "POST" and path in ("/api/v3/order", "/fapi/v1/order")

    def handle(self, req: ApiRequest) -> ApiResponse:
        """Answer one request (the caller has already checked that the route exists)."""
        handler, signed = self.routes[(req.method, req.path)]
        weight = self.ex.count_weight(1)
        headers = {"x-mbx-used-weight-1m": str(weight), "x-mbx-used-weight": str(weight)}
        params = req.params
        venue = "spot" if req.path.startswith("/api/") else "futures"
        account: SimAccount | None = None
        try:
            if signed:
                account = self._authenticate(req, params)
            body = handler(req, params, account)
            status = 200
        except ApiError as err:
            if self.is_order_request(req.method, req.path) and account is None:
                self.ex.record_rejection(None, venue, params, err)
            status, body = err.http_status, {"code": err.code, "msg": err.msg}
        return ApiResponse(status, body, headers)

    def _authenticate(self, req: ApiRequest, params: dict[str, str]) -> SimAccount:
        api_key = req.headers.get("x-mbx-apikey")
        if not api_key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        account = self.ex.account_for_key(api_key)
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
            limits = [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            ]
            symbols = [self._spot_symbol(m) for m in self.ex.spot_markets.values()]
        else:
            limits = [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
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

    def _position_row(self, acc: SimAccount, m: SimMarket, amt: Decimal, entry: Decimal, v3: bool) -> dict[str, Any]:
        notional = amt * m.price
        leverage = self.ex.leverage_of(acc, m)
        initial = abs(notional) / leverage
        row: dict[str, Any] = {
            "symbol": m.id, "positionSide": "BOTH", "positionAmt": fmt(amt), "entryPrice": fmt(entry),
            "breakEvenPrice": fmt(entry), "markPrice": fmt(m.price),
            "unRealizedProfit": fmt(amt * (m.price - entry)), "liquidationPrice": "0",
            "isolatedMargin": "0", "notional": fmt(notional), "marginAsset": m.spec.quote,
            "isolatedWallet": "0", "initialMargin": fmt(initial), "maintMargin": fmt(abs(notional) * Decimal("0.004")),
            "positionInitialMargin": fmt(initial), "openOrderInitialMargin": "0", "adl": 1,
            "bidNotional": "0", "askNotional": "0", "updateTime": acc.update_time,
        }
        if not v3:
            row.update({"leverage": str(leverage), "marginType": "cross", "isAutoAddMargin": "false",
                        "maxNotionalValue": "1000000"})
        return row

    def _position_risk(self, req: ApiRequest, p: dict[str, str], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - signed route
        v3 = req.path.startswith("/fapi/v3/")
        rows = [self._position_row(acc, m, amt, entry, v3) for m, amt, entry in self.ex.position_rows(acc)]
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
        for m, amt, entry in self.ex.position_rows(acc):
            row = self._position_row(acc, m, amt, entry, v3=True)
            positions.append({k: row[k] for k in ("symbol", "positionSide", "positionAmt", "unRealizedProfit",
                                                  "isolatedMargin", "notional", "isolatedWallet",
                                                  "initialMargin", "maintMargin", "updateTime")})
            if not req.path.startswith("/fapi/v3/"):
                positions[-1].update({"entryPrice": row["entryPrice"], "leverage": str(self.ex.leverage_of(acc, m)),
                                      "isolated": False, "positionInitialMargin": row["positionInitialMargin"],
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
            "side": o.side, "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
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
        cancelled = self.ex.cancel_all(acc, venue, p["symbol"])
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
        orders = self.ex.list_open_orders(acc, venue, p.get("symbol"))
        return [self._order_json(o, venue, query=True) for o in orders]


def _strip_signature(text: str) -> str:
    """``text`` without its ``signature=...`` parameter (ccxt always puts it last)."""
    if not text:
        return ""
    parts = [part for part in text.split("&") if not part.startswith("signature=")]
    return "&".join(parts)
