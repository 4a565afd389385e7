"""Bybit's v5 REST protocol (unified trading account), the subset ccxt's ``bybit`` uses.

Everything lives under ``/v5/`` (https://bybit-exchange.github.io/docs/v5/intro).
Answers are HTTP 200 ``{"retCode": 0, "retMsg": "OK", "result": {...}, "retExtInfo": {},
"time": ms}`` with numbers as strings; a refusal is the same envelope with
``retCode`` ≠ 0. Names: spot ``BTCUSDT`` (category ``spot``), USDT perpetuals
``BTCUSDT`` and USDC perpetuals ``BTCPERP`` (category ``linear``, ccxt
``BTC/USDC:USDC``). The account is UNIFIED: ``account/wallet-balance`` holds the coins,
which are also the perpetuals' margin.

Authentication ("Integration Guidance" → "Authentication"): ``X-BAPI-API-KEY``,
``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW`` (default 5000) and ``X-BAPI-SIGN`` =
hex(HMAC-SHA256(secret, timestamp + apiKey + recvWindow + (queryString | body))).
Failures: 10003 "API key is invalid.", 10002 (timestamp outside the recv window),
10004 ``error sign! origin_string[...]`` — the echoed origin string contains the API key,
exactly as real Bybit does, so a client must scrub it.

Orders ("Trade" → "Place Order"): ``orderLinkId`` ≤ 36 of ``[A-Za-z0-9_-]``
(10001); position mode per account: one-way ``positionIdx`` 0, hedge 1 (long leg) and 2
(short leg) on USDT perpetuals only — a mismatch answers 10001 "position idx not match
position mode"; reduce-only with nothing to reduce 110017; batch ≤ 20 linear / ≤ 10
spot orders, per-order results in ``retExtInfo.list``. ``order/realtime`` lists every
kind of open order of a unified account unless ``orderFilter`` narrows it
(``Order`` resting, ``StopOrder`` conditional); conditional orders show
``orderStatus`` ``Untriggered``.

Rate limits ("Rate Limit Rules"): per IP 600 requests / 5 s, beyond which the IP gets
HTTP 403 "access too frequent" for ``bybit.ip_ban_seconds`` (10 minutes); per UID and endpoint
(order/create 10/s linear, 20/s spot; create-batch counts the orders; reads 50/s):
``retCode`` 10006 "Too many visits!". Private answers carry ``X-Bapi-Limit``,
``X-Bapi-Limit-Status`` (remaining) and ``X-Bapi-Limit-Reset-Timestamp`` (ms: when the
window reopens after a refusal, else the server time); there is no ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import zlib
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from guard_app.sim.exchange import (
    ApiError,
    OrderErrors,
    SimAccount,
    SimExchange,
    SimMarket,
    SimOrder,
    fmt,
)
from guard_app.sim.frontend import ApiRequest, ApiResponse, RateLimitStats
from guard_app.sim.limits import LimitBook, Window

__all__ = ["BybitApi", "bybit_id"]

ORDER_LINK_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
MAX_BATCH = {"linear": 20, "spot": 10}  # "Batch Place Order"

BYBIT_ERRORS = OrderErrors(
    nothing_to_reduce=ApiError(110017, "current position is zero, cannot fix reduce-only order qty"),
    reduce_too_large=None,  # Bybit trims a reduce-only order to the position size
    insufficient_balance=ApiError(170131, "Insufficient balance."),
    margin_insufficient=ApiError(110007, "ab not enough for new order"),
)

Handler = Callable[[ApiRequest, dict[str, Any], SimAccount | None], Any]


def bybit_id(market: SimMarket) -> str:
    """Bybit's symbol: ``BTCUSDT`` (spot and USDT perpetual), ``BTCPERP`` (USDC perpetual)."""
    s = market.spec
    if not market.is_spot and s.settle == "USDC":
        return f"{s.base}PERP"
    return s.base + s.quote


def _params_error(msg: str) -> ApiError:
    return ApiError(10001, msg)


class BybitApi:
    """Routes Bybit v5 paths to handlers; one instance per server."""

    protocol = "bybit"

    def __init__(self, exchange: SimExchange, limits: LimitBook, stats: RateLimitStats) -> None:
        self.ex = exchange
        self.limits = limits
        self.stats = stats
        self._ip_banned_until: dict[str, float] = {}
        # (method, path) -> (handler, private, per-UID limit name or "")
        self.routes: dict[tuple[str, str], tuple[Handler, bool, str]] = {}
        r = self._route
        r("GET", "market/time", self._time, False, "")
        r("GET", "market/instruments-info", self._instruments, False, "")
        r("GET", "market/tickers", self._tickers, False, "")
        r("GET", "asset/coin/query-info", self._coins, True, "bybit.read_1s")
        r("GET", "user/query-api", self._query_api, True, "bybit.read_1s")
        r("GET", "account/info", self._account_info, True, "bybit.read_1s")
        r("GET", "account/wallet-balance", self._wallet_balance, True, "bybit.read_1s")
        r("GET", "position/list", self._positions, True, "bybit.read_1s")
        r("POST", "position/switch-mode", self._switch_mode, True, "bybit.read_1s")
        r("POST", "order/create", self._create, True, "order")
        r("POST", "order/create-batch", self._create_batch, True, "order")
        r("POST", "order/cancel", self._cancel, True, "order")
        r("POST", "order/cancel-batch", self._cancel_batch, True, "order")
        r("POST", "order/cancel-all", self._cancel_all, True, "order")
        r("GET", "order/realtime", self._realtime, True, "bybit.read_1s")
        r("GET", "order/history", self._history, True, "bybit.read_1s")

    def _route(self, method: str, path: str, handler: Handler, private: bool, limit: str) -> None:
        self.routes[(method, "/v5/" + path)] = (handler, private, limit)

    # --- dispatch ----------------------------------------------------------------------

    def known(self, method: str, path: str) -> bool:
        return (method, path) in self.routes

    def handle(self, req: ApiRequest) -> ApiResponse:
        handler, private, limit = self.routes[(req.method, req.path)]
        banned = self._charge_ip(req.client)
        if banned is not None:
            return banned
        if req.method == "GET":
            params: Any = dict(parse_qsl(req.query, keep_blank_values=True))
        else:
            try:
                params = json.loads(req.body) if req.body else {}
            except ValueError:
                return self._answer(_params_error("request body is not valid json"))
            if not isinstance(params, dict):
                return self._answer(_params_error("request body must be a json object"))
        headers: dict[str, str] = {}
        acc: SimAccount | None = None
        try:
            if private:
                acc = self._authenticate(req)
                if limit:
                    refused = self._charge_uid(acc, req, params, limit, headers)
                    if refused is not None:
                        return refused
            result = handler(req, params, acc)
        except ApiError as err:
            return self._answer(err, headers)
        if isinstance(result, ApiResponse):
            result.headers.update(headers)
            return result
        return self._ok(result, headers=headers)

    def _ok(self, result: Any, ext: Any = None, headers: dict[str, str] | None = None) -> ApiResponse:
        return ApiResponse(200, {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": ext or {},
                                 "time": self.ex.server_time_ms()}, headers or {})

    def _answer(self, err: ApiError, headers: dict[str, str] | None = None) -> ApiResponse:
        return ApiResponse(200, {"retCode": int(err.code), "retMsg": err.msg, "result": {}, "retExtInfo": {},
                                 "time": self.ex.server_time_ms()}, headers or {})

    # --- limits ------------------------------------------------------------------------

    def _charge_ip(self, client: str) -> ApiResponse | None:
        now = time.time()
        if self._ip_banned_until.get(client, 0) > now:
            self.stats.note("bybit", "403")
            return ApiResponse(403, {"retCode": 403, "retMsg": "access too frequent", "result": {},
                                     "retExtInfo": {}, "time": self.ex.server_time_ms()})
        allowed, _w = self.limits.charge("bybit.ip_5s", 5.0, client)
        if not allowed:
            # "Rate Limit Rules": over 600 requests in 5 s → 403 and the IP is blocked for 10 minutes.
            self._ip_banned_until[client] = now + self.limits.limit("bybit.ip_ban_seconds")
            self.stats.note("bybit", "403")
            return ApiResponse(403, {"retCode": 403, "retMsg": "access too frequent", "result": {},
                                     "retExtInfo": {}, "time": self.ex.server_time_ms()})
        return None

    def _charge_uid(self, acc: SimAccount, req: ApiRequest, params: dict[str, Any], limit: str,
                    headers: dict[str, str]) -> ApiResponse | None:
        cost = 1
        if limit == "order":
            category = params.get("category")
            limit = "bybit.order_spot_1s" if category == "spot" else "bybit.order_linear_1s"
            if req.path.endswith("create-batch") and isinstance(params.get("request"), list):
                cost = max(1, len(params["request"]))  # a batch is charged per order
        allowed, window = self.limits.charge(limit, 1.0, acc.name, req.path, cost=cost)
        self._limit_headers(window, headers, exceeded=not allowed)
        if not allowed:
            self.stats.note("bybit", "10006")
            return self._answer(ApiError(10006, "Too many visits!"), headers)
        return None

    def _limit_headers(self, window: Window, headers: dict[str, str], exceeded: bool) -> None:
        # "Rate Limit Rules": the reset timestamp is when the next window opens if the limit
        # was exceeded, otherwise just the current server time (ms).
        headers["X-Bapi-Limit"] = str(int(window.limit))
        headers["X-Bapi-Limit-Status"] = str(max(0, int(window.limit - window.used)))
        reset = int(window.reset_at() * 1000) if exceeded else self.ex.server_time_ms()
        headers["X-Bapi-Limit-Reset-Timestamp"] = str(reset)

    def _authenticate(self, req: ApiRequest) -> SimAccount:
        h = req.headers
        key = h.get("x-bapi-api-key", "")
        acc = self.ex.account_for_key(key, "bybit") if key else None
        if acc is None:
            raise ApiError(10003, "API key is invalid.")
        stamp = h.get("x-bapi-timestamp", "")
        recv = h.get("x-bapi-recv-window", "5000")
        try:
            ts, window = int(stamp), int(recv)
        except ValueError:
            raise _params_error("invalid timestamp or recv_window") from None
        now = self.ex.server_time_ms()
        # "server_time - recv_window <= timestamp < server_time + 1000"
        if not now - window <= ts < now + 1000:
            raise ApiError(10002, f"invalid request, please check your server timestamp or recv_window param. "
                                  f"req_timestamp[{ts}],server_timestamp[{now}],recv_window[{window}]")
        payload = stamp + key + recv + (req.query if req.method == "GET" else req.body)
        expected = hmac.new(acc.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, h.get("x-bapi-sign", "").lower()):
            # Real Bybit echoes the string it signed, API key included.
            raise ApiError(10004, f"error sign! origin_string[{payload}]")
        return acc

    # --- market data -------------------------------------------------------------------

    def _time(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> dict[str, Any]:
        now = self.ex.server_time_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _category_markets(self, category: Any) -> list[SimMarket]:
        if category == "spot":
            return list(self.ex.spot_markets.values())
        if category == "linear":
            return list(self.ex.swap_markets.values())
        if category in ("inverse", "option"):
            return []
        raise _params_error("Illegal category")

    def _market(self, category: Any, symbol: Any) -> SimMarket:
        for m in self._category_markets(category):
            if bybit_id(m) == symbol:
                return m
        raise _params_error("symbol invalid" if category != "spot" else "Not supported symbols")

    def _instruments(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> dict[str, Any]:
        category = p.get("category")
        rows: list[dict[str, Any]] = []
        for m in self._category_markets(category):
            if p.get("symbol") and bybit_id(m) != p["symbol"]:
                continue
            s = m.spec
            if m.is_spot:
                rows.append({
                    "symbol": bybit_id(m), "baseCoin": s.base, "quoteCoin": s.quote, "innovation": "0",
                    "status": "Trading", "marginTrading": "utaOnly", "stTag": "0",
                    "lotSizeFilter": {"basePrecision": fmt(s.step_size), "quotePrecision": "0.00000001",
                                      "minOrderQty": fmt(s.min_qty), "maxOrderQty": fmt(s.max_qty),
                                      "minOrderAmt": fmt(s.min_notional), "maxOrderAmt": "2000000"},
                    "priceFilter": {"tickSize": fmt(s.tick_size)},
                    "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
                })
            else:
                rows.append({
                    "symbol": bybit_id(m), "contractType": "LinearPerpetual", "status": "Trading",
                    "baseCoin": s.base, "quoteCoin": s.quote, "launchTime": "1584230400000", "deliveryTime": "0",
                    "deliveryFeeRate": "", "priceScale": str(max(0, -int(s.tick_size.normalize().as_tuple().exponent))),
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": fmt(s.tick_size), "maxPrice": "1999999.80", "tickSize": fmt(s.tick_size)},
                    "lotSizeFilter": {"maxOrderQty": fmt(s.max_qty), "minOrderQty": fmt(s.min_qty),
                                      "qtyStep": fmt(s.step_size), "postOnlyMaxOrderQty": fmt(s.max_qty),
                                      "maxMktOrderQty": fmt(s.max_qty), "minNotionalValue": fmt(s.min_notional)},
                    "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": s.settle,
                    "copyTrading": "both", "upperFundingRate": "0.00375", "lowerFundingRate": "-0.00375",
                    "isPreListing": False, "preListingInfo": None, "riskParameters": {
                        "priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"}, "displayName": "",
                })
        return {"category": category, "list": rows, "nextPageCursor": ""}

    def _tickers(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> dict[str, Any]:
        category = p.get("category")
        markets = [self._market(category, p["symbol"])] if p.get("symbol") else self._category_markets(category)
        rows = []
        for m in markets:
            px = fmt(m.price)
            row = {"symbol": bybit_id(m), "bid1Price": px, "bid1Size": "1", "ask1Price": px, "ask1Size": "1",
                   "lastPrice": px, "prevPrice24h": px, "price24hPcnt": "0", "highPrice24h": px, "lowPrice24h": px,
                   "turnover24h": fmt(m.price * 1000), "volume24h": "1000"}
            if m.is_spot:
                row["usdIndexPrice"] = px
            else:
                row.update({"indexPrice": px, "markPrice": px, "prevPrice1h": px, "openInterest": "1000",
                            "openInterestValue": fmt(m.price * 1000), "fundingRate": "0.0001",
                            "nextFundingTime": str((self.ex.server_time_ms() // 28_800_000 + 1) * 28_800_000),
                            "predictedDeliveryPrice": "", "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0",
                            "basis": ""})
            rows.append(row)
        return {"category": category, "list": rows}

    def _coins(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> dict[str, Any]:
        return {"rows": [{"name": c, "coin": c, "remainAmount": "1000000", "chains": [{
            "chainType": c, "confirmation": "1", "withdrawFee": "0.1", "depositMin": "0", "withdrawMin": "1",
            "chain": c, "chainDeposit": "1", "chainWithdraw": "1", "minAccuracy": "8", "withdrawPercentageFee": "0",
            "contractAddress": "", "safeConfirmNumber": "1"}]} for c in self.ex.all_assets()]}

    # --- account -----------------------------------------------------------------------

    def _query_api(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - private route
        uid = str(zlib.crc32(acc.name.encode()))
        # The key's id and permissions; the "apiKey" field is the key itself, as Bybit answers.
        answer: dict[str, Any] = {"id": uid, "note": acc.name, "apiKey": acc.api_key, "readOnly": 0, "secret": "",
                "permissions": {"ContractTrade": ["Order", "Position"], "Spot": ["SpotTrade"], "Wallet": [],
                                "Options": [], "Derivatives": [], "CopyTrading": [], "BlockTrade": [],
                                "Exchange": [], "NFT": [], "Affiliate": []},
                "ips": ["*"], "type": 1, "deadlineDay": 90, "expiredAt": "", "createdAt": "2024-01-01T00:00:00Z",
                "unified": 0, "uta": 1, "userID": int(uid), "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0",
                "affiliateID": 0, "rsaPublicKey": "", "isMaster": True, "parentUid": "0", "kycLevel": "LEVEL_1",
                "kycRegion": ""}
        return answer

    def _account_info(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        # unifiedMarginStatus 5/6: a unified trading account (UTA 2.0).
        return {"unifiedMarginStatus": 6, "marginMode": "REGULAR_MARGIN", "isMasterTrader": False,
                "spotHedgingStatus": "OFF", "updatedTime": str(self.ex.server_time_ms()), "dcpStatus": "OFF",
                "timeWindow": 10, "smpGroup": 0}

    def _wallet_balance(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - private route
        if p.get("accountType") != "UNIFIED":
            raise ApiError(10001, "accountType only support UNIFIED.")
        wanted = set(str(p["coin"]).split(",")) if p.get("coin") else None
        coins = []
        total = Decimal(0)
        for ccy, free, locked in self.ex.spot_rows(acc):
            if (wanted and ccy not in wanted) or (not free and not locked):
                continue
            f = self.ex.futures_figures(acc, ccy)
            equity = free + locked + f["unrealized"]
            usd = equity * self._usd_price(ccy)
            total += usd
            coins.append({
                "availableToBorrow": "", "bonus": "0", "accruedInterest": "0", "availableToWithdraw": "",
                "totalOrderIM": fmt(f["open_order_margin"]), "equity": fmt(equity), "totalPositionMM": "0",
                "usdValue": fmt(usd), "spotHedgingQty": "0", "unrealisedPnl": fmt(f["unrealized"]),
                "collateralSwitch": True, "borrowAmount": "0", "totalPositionIM": fmt(f["initial_margin"]),
                "walletBalance": fmt(free + locked), "cumRealisedPnl": "0", "locked": fmt(locked),
                "marginCollateral": True, "coin": ccy,
            })
        return {"list": [{
            "totalEquity": fmt(total), "accountIMRate": "0", "totalMarginBalance": fmt(total),
            "totalInitialMargin": "0", "accountType": "UNIFIED", "totalAvailableBalance": fmt(total),
            "accountMMRate": "0", "totalPerpUPL": "0", "totalWalletBalance": fmt(total), "accountLTV": "0",
            "totalMaintenanceMargin": "0", "coin": coins,
        }]}

    def _usd_price(self, ccy: str) -> Decimal:
        if ccy in ("USDT", "USDC", "USD"):
            return Decimal(1)
        for m in self.ex.spot_markets.values():
            if m.spec.base == ccy and m.spec.quote in ("USDT", "USDC"):
                return m.price
        return Decimal(0)

    @staticmethod
    def _hedge_applies(acc: SimAccount, m: SimMarket) -> bool:
        # Hedge mode is for USDT perpetuals only ("Switch Position Mode").
        return acc.hedge and m.spec.settle == "USDT"

    def _positions(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - private route
        category = p.get("category")
        if category != "linear":
            if category in ("inverse", "option"):
                return {"category": category, "list": [], "nextPageCursor": ""}
            raise _params_error("Illegal category")
        symbol, settle = p.get("symbol"), p.get("settleCoin")
        if not symbol and not settle and not p.get("baseCoin"):
            raise _params_error("Missing some parameters that must be filled in, symbol or settleCoin")
        rows = []
        now = str(self.ex.server_time_ms())
        for m, mm, leg, amt, entry in self.ex.position_legs(acc):
            if symbol and bybit_id(m) != symbol or settle and m.spec.settle != settle:
                continue
            if p.get("baseCoin") and m.spec.base != p["baseCoin"]:
                continue
            lever = self.ex.leverage_of(acc, m)
            value = abs(amt) * entry
            im = abs(amt) * m.price / lever
            rows.append({
                "positionIdx": {"net": 0, "long": 1, "short": 2}[leg], "riskId": 1, "riskLimitValue": "2000000",
                "symbol": bybit_id(m), "side": "Buy" if amt > 0 else "Sell", "size": fmt(abs(amt)),
                "avgPrice": fmt(entry), "positionValue": fmt(value), "tradeMode": 1 if mm == "isolated" else 0,
                "autoAddMargin": 0, "positionStatus": "Normal", "leverage": str(lever), "markPrice": fmt(m.price),
                "liqPrice": "", "bustPrice": "", "positionIM": fmt(im), "positionMM": fmt(im / 10),
                "positionBalance": fmt(im) if mm == "isolated" else "0", "tpslMode": "Full", "takeProfit": "0",
                "stopLoss": "0", "trailingStop": "0", "sessionAvgPrice": "",
                "unrealisedPnl": fmt(amt * (m.price - entry)), "curRealisedPnl": "0", "cumRealisedPnl": "0",
                "adlRankIndicator": 2, "createdTime": str(acc.update_time), "updatedTime": now, "seq": 1,
                "isReduceOnly": False, "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "",
            })
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def _switch_mode(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        """"Switch Position Mode": mode 0 one-way, 3 hedge (USDT perpetuals)."""
        assert acc is not None  # noqa: S101 - private route
        mode = p.get("mode")
        if mode not in (0, 3, "0", "3"):
            raise _params_error("params error: mode")
        hedge = str(mode) == "3"
        if hedge == acc.hedge:
            raise ApiError(110025, "Position mode is not modified")
        if self.ex.position_legs(acc) or self.ex.list_open_orders(acc, "futures", None, conditional=None):
            raise ApiError(110024, "You have an existing position, so position mode cannot be switched")
        acc.hedge = hedge
        return {}

    # --- orders ------------------------------------------------------------------------

    def _validate(self, acc: SimAccount, category: Any, row: Any) -> tuple[SimMarket, dict[str, Any]]:
        if not isinstance(row, dict):
            raise _params_error("params error")
        if category not in ("spot", "linear"):
            raise _params_error("Illegal category")
        link = row.get("orderLinkId")
        if link not in (None, "") and not ORDER_LINK_ID.match(str(link)):
            raise _params_error("params error: orderLinkId")
        market = self._market(category, row.get("symbol"))
        side = row.get("side")
        if side not in ("Buy", "Sell"):
            raise _params_error("params error: side invalid")
        otype = row.get("orderType")
        if otype not in ("Market", "Limit"):
            raise _params_error("params error: orderType invalid")
        try:
            qty = Decimal(str(row.get("qty")))
            price = Decimal(str(row["price"])) if otype == "Limit" and row.get("price") not in (None, "") else None
        except (InvalidOperation, ValueError):
            raise _params_error("params error: qty invalid") from None
        if not qty.is_finite() or qty <= 0:
            raise _params_error("params error: qty invalid")
        if otype == "Limit" and price is None:
            raise _params_error("params error: price invalid")
        if price is not None and (price <= 0 or price % market.spec.tick_size != 0):
            raise ApiError(170134 if market.is_spot else 10001, "Order price decimal too long.")
        exec_price = price if price is not None else market.price
        if market.is_spot and otype == "Market" and \
                row.get("marketUnit", "quoteCoin" if side == "Buy" else "baseCoin") == "quoteCoin":
            # "Place Order" marketUnit: spot market buys are sized in the quote coin by default,
            # sells in the base coin; either may say otherwise.
            qty = market.round_down(qty / exec_price)
        spec = market.spec
        if (qty - spec.min_qty) % spec.step_size != 0 or qty < spec.min_qty:
            raise ApiError(170137 if market.is_spot else 10001, "Order quantity has too many decimals."
                           if market.is_spot else "Qty invalid")
        reduce_only = bool(row.get("reduceOnly")) and str(row.get("reduceOnly")).lower() != "false"
        leg = "net"
        if not market.is_spot:
            try:
                idx = int(row.get("positionIdx", 0))
            except (TypeError, ValueError):
                raise _params_error("position idx not match position mode") from None
            if self._hedge_applies(acc, market):
                if idx not in (1, 2):
                    raise _params_error("position idx not match position mode")
                leg = "long" if idx == 1 else "short"
            elif idx != 0:
                raise _params_error("position idx not match position mode")
        elif reduce_only:
            raise _params_error("params error: reduceOnly is not supported for spot")
        if link and any(o.client_order_id == link for o in self.ex.list_open_orders(acc, None, None, None)):
            raise ApiError(110072, "OrderLinkedID is duplicate")
        trigger = row.get("triggerPrice")
        return market, {"side": side.upper(), "otype": otype.upper(), "qty": qty, "price": exec_price,
                        "reduce_only": reduce_only, "link": link or None, "leg": leg,
                        "trigger": Decimal(str(trigger)) if trigger not in (None, "") else None}

    def _submit(self, acc: SimAccount, category: Any, row: Any) -> SimOrder:
        try:
            market, f = self._validate(acc, category, row)
        except ApiError as err:
            # Refused before the matching engine: still goes into the order log.
            known = None
            if isinstance(row, dict):
                try:
                    known = self._market(category, row.get("symbol"))
                except ApiError:
                    known = None
            self.ex.record_refusal(acc.name, known, row.get("side") if isinstance(row, dict) else None, None,
                                   False, row.get("orderLinkId") if isinstance(row, dict) else None, err)
            raise
        return self.ex.place(acc, market, f["side"], f["otype"], f["qty"], f["price"], reduce_only=f["reduce_only"],
                             client_order_id=f["link"], margin_mode=self.ex.margin_mode_of(acc, market, f["leg"]),
                             leg=f["leg"],
                             errors=BYBIT_ERRORS, trigger_price=f["trigger"],
                             time_in_force=str(row.get("timeInForce", "GTC")))

    def _create(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - private route
        order = self._submit(acc, p.get("category"), p)
        return {"orderId": str(order.order_id), "orderLinkId": order.client_order_id}

    def _create_batch(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        category = p.get("category")
        rows = p.get("request")
        if category not in MAX_BATCH:
            raise _params_error("Illegal category")
        if not isinstance(rows, list) or not rows:
            raise _params_error("params error: request")
        if len(rows) > MAX_BATCH[category]:
            raise _params_error(f"params error: the number of orders in a batch exceeds {MAX_BATCH[category]}")
        results, ext = [], []
        now = str(self.ex.server_time_ms())
        for row in rows:
            try:
                order = self._submit(acc, category, row)
            except ApiError as err:
                results.append({"category": category, "symbol": row.get("symbol", "") if isinstance(row, dict) else "",
                                "orderId": "", "orderLinkId": row.get("orderLinkId", "") if isinstance(row, dict) else "",
                                "createAt": ""})
                ext.append({"code": int(err.code), "msg": err.msg})
                continue
            results.append({"category": category, "symbol": bybit_id(order.market), "orderId": str(order.order_id),
                            "orderLinkId": order.client_order_id, "createAt": now})
            ext.append({"code": 0, "msg": "OK"})
        return self._ok({"list": results}, {"list": ext})

    def _find(self, acc: SimAccount, category: Any, row: dict[str, Any]) -> SimOrder:
        market = self._market(category, row.get("symbol"))
        order = None
        if row.get("orderId"):
            try:
                order = self.ex.order_by_id(acc, order_id=int(row["orderId"]))
            except ValueError:
                order = None
        elif row.get("orderLinkId"):
            order = self.ex.order_by_id(acc, client_order_id=str(row["orderLinkId"]))
        else:
            raise _params_error("orderId or orderLinkId is required")
        if order is None or order.market is not market or not order.is_open:
            raise ApiError(110001, "Order does not exist.")
        return order

    def _cancel(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - private route
        order = self._find(acc, p.get("category"), p)
        self.ex.cancel(acc, order)
        return {"orderId": str(order.order_id), "orderLinkId": order.client_order_id}

    def _cancel_batch(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        category = p.get("category")
        rows = p.get("request")
        if category not in MAX_BATCH or not isinstance(rows, list) or not rows:
            raise _params_error("params error: request")
        if len(rows) > MAX_BATCH[category]:
            raise _params_error(f"params error: the number of orders in a batch exceeds {MAX_BATCH[category]}")
        results, ext = [], []
        for row in rows:
            try:
                order = self._find(acc, category, row if isinstance(row, dict) else {})
                self.ex.cancel(acc, order)
                results.append({"category": category, "symbol": bybit_id(order.market), "orderId": str(order.order_id),
                                "orderLinkId": order.client_order_id})
                ext.append({"code": 0, "msg": "OK"})
            except ApiError as err:
                results.append({"category": category, "symbol": row.get("symbol", "") if isinstance(row, dict) else "",
                                "orderId": row.get("orderId", "") if isinstance(row, dict) else "",
                                "orderLinkId": row.get("orderLinkId", "") if isinstance(row, dict) else ""})
                ext.append({"code": int(err.code), "msg": err.msg})
        return self._ok({"list": results}, {"list": ext})

    def _selected(self, acc: SimAccount, p: dict[str, Any], require_scope: bool) -> list[SimOrder]:
        category = p.get("category")
        markets = self._category_markets(category)
        if category == "linear" and require_scope and not (p.get("symbol") or p.get("settleCoin") or p.get("baseCoin")):
            raise _params_error("Missing some parameters that must be filled in, symbol or settleCoin or baseCoin")
        flt = p.get("orderFilter")
        out = []
        for o in self.ex.list_open_orders(acc, None, None, conditional=None):
            if o.market not in markets:
                continue
            if p.get("symbol") and bybit_id(o.market) != p["symbol"]:
                continue
            if p.get("settleCoin") and o.market.spec.settle != p["settleCoin"]:
                continue
            if p.get("baseCoin") and o.market.spec.base != p["baseCoin"]:
                continue
            if flt == "Order" and o.conditional or flt == "StopOrder" and not o.conditional:
                continue
            if flt in ("tpslOrder", "OcoOrder", "BidirectionalTpslOrder"):
                continue
            if p.get("orderId") and str(o.order_id) != str(p["orderId"]):
                continue
            if p.get("orderLinkId") and o.client_order_id != p["orderLinkId"]:
                continue
            out.append(o)
        return out

    def _cancel_all(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        """"Cancel All Orders": linear needs symbol, baseCoin or settleCoin; ``orderFilter`` narrows."""
        assert acc is not None  # noqa: S101 - private route
        cancelled = []
        for o in self._selected(acc, p, require_scope=True):
            if self.ex.cancel(acc, o):
                cancelled.append({"orderId": str(o.order_id), "orderLinkId": o.client_order_id})
        return {"list": cancelled, "success": "1"}

    def _order_json(self, acc: SimAccount, o: SimOrder) -> dict[str, Any]:
        status = {"NEW": "New", "PARTIALLY_FILLED": "PartiallyFilled", "FILLED": "Filled",
                  "CANCELED": "Cancelled", "EXPIRED": "Cancelled"}[o.status]
        if o.conditional and o.is_open:
            status = "Untriggered"
        leaves = o.orig_qty - o.executed_qty if o.is_open else Decimal(0)
        return {
            "orderId": str(o.order_id), "orderLinkId": o.client_order_id, "blockTradeId": "",
            "symbol": bybit_id(o.market), "price": fmt(o.price), "qty": fmt(o.orig_qty), "side": o.side.capitalize(),
            "isLeverage": "", "positionIdx": {"net": 0, "long": 1, "short": 2}[o.leg], "orderStatus": status,
            "cancelType": "UNKNOWN", "rejectReason": "EC_NoError", "avgPrice": fmt(o.avg_price) if o.executed_qty else "",
            "leavesQty": fmt(leaves), "leavesValue": fmt(leaves * o.price), "cumExecQty": fmt(o.executed_qty),
            "cumExecValue": fmt(o.cum_quote), "cumExecFee": "0", "timeInForce": o.time_in_force if o.type == "LIMIT" else "IOC",
            "orderType": o.type.capitalize(), "stopOrderType": "Stop" if o.conditional else "", "orderIv": "",
            "triggerPrice": fmt(o.trigger_price) if o.trigger_price else "0", "takeProfit": "0", "stopLoss": "0",
            "tpTriggerBy": "", "slTriggerBy": "", "triggerDirection": 0, "triggerBy": "LastPrice" if o.conditional else "",
            "lastPriceOnCreated": fmt(o.market.price), "reduceOnly": o.reduce_only, "closeOnTrigger": False,
            "smpType": "None", "smpGroup": 0, "smpOrderId": "", "tpslMode": "", "tpLimitPrice": "", "slLimitPrice": "",
            "placeType": "", "createdTime": str(o.time), "updatedTime": str(o.update_time),
        }

    def _order_row(self, acc: SimAccount, o: SimOrder) -> dict[str, Any]:
        row = self._order_json(acc, o)
        if o.market.is_spot:
            # Spot rows have no contract fields; ccxt tells spot from linear (same id,
            # e.g. ETHUSDT) by whether ``tpslMode`` is present.
            for key in ("tpslMode", "positionIdx"):
                row.pop(key, None)
        return row

    def _realtime(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        assert acc is not None  # noqa: S101 - private route
        rows = [self._order_row(acc, o) for o in self._selected(acc, p, require_scope=True)]
        rows.sort(key=lambda r: -int(r["orderId"]))
        return {"category": p.get("category"), "list": rows, "nextPageCursor": ""}

    def _history(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> dict[str, Any]:
        """"Get Order History": closed orders too (by orderId / orderLinkId)."""
        assert acc is not None  # noqa: S101 - private route
        order = None
        if p.get("orderId"):
            try:
                order = self.ex.order_by_id(acc, order_id=int(p["orderId"]))
            except ValueError:
                order = None
        elif p.get("orderLinkId"):
            order = self.ex.order_by_id(acc, client_order_id=str(p["orderLinkId"]))
        rows = [self._order_row(acc, order)] if order is not None else []
        return {"category": p.get("category"), "list": rows, "nextPageCursor": ""}
