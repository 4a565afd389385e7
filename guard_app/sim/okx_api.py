"""OKX's v5 REST protocol, the subset ccxt's ``okx`` class uses, on top of :class:`SimExchange`.

Everything lives under ``/api/v5/`` (https://www.okx.com/docs-v5/en/). Answers are
``{"code": "0", "msg": "", "data": [...]}`` with numbers as strings. Names:
spot ``BTC-USDT`` (``instType`` SPOT), perpetuals ``BTC-USDT-SWAP`` (SWAP) whose size is
in contracts of ``ctVal`` base units (BTC 0.01, ETH 0.1: the scenario's
``contract_size``). The account is OKX's unified trading account: ``account/balance``
holds the coins and is the swaps' margin.

Authentication ("REST Authentication" in the docs): ``OK-ACCESS-KEY``,
``OK-ACCESS-PASSPHRASE``, ``OK-ACCESS-TIMESTAMP`` (ISO 8601 UTC with ms, within 30 s of
the server clock) and ``OK-ACCESS-SIGN`` = base64(HMAC-SHA256(secret, timestamp +
METHOD + requestPath(+?query) + body)). Failures answer HTTP 401 with OKX's codes:
50103/50104/50106/50107 (header missing), 50111 (invalid key), 50105 (wrong
passphrase), 50112 (bad timestamp), 50102 (timestamp expired), 50113 (invalid sign).

Orders ("Trade" → "Place order", "Place multiple orders"): per-order refusals come in
HTTP 200 as ``{"code": "1", "msg": "All operations failed", "data": [{"sCode", "sMsg",
...}]}`` (``"2"`` when a batch partly succeeded). Rules enforced: ``clOrdId`` 1–32
letters and digits (51000 Parameter clOrdId error); ``tdMode`` ``cash`` on spot,
``cross``/``isolated`` on swaps (51000); ``posSide`` ``long``/``short`` required in
``long_short_mode`` and refused in ``net_mode`` (51000 Parameter posSide error); a
reduce-only (or long/short close) order finds its position by instrument + ``tdMode`` +
``posSide`` and is refused with 51169 when there is none; batch ≤ 20 orders.

Conditional orders (``trade/order-algo``) are algo orders: listed only by
``trade/orders-algo-pending`` and cancelled only by ``trade/cancel-algos``.

Rate limits ("Rate Limit" line of each endpoint; see :mod:`guard_app.sim.limits`):
over → HTTP 429 ``{"code": "50011", "msg": "Too Many Requests"}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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
from guard_app.sim.limits import LimitBook

__all__ = ["OkxApi", "okx_id"]

PREFIX = "/api/v5/"
CLORDID = re.compile(r"^[A-Za-z0-9]{1,32}$")  # "Place order": clOrdId, 1-32 letters and digits
MAX_BATCH = 20  # "Place multiple orders": up to 20 orders per request
MAX_CANCEL_ALGOS = 10  # "Cancel algo order": up to 10 per request

# Per-order refusals (docs "Error Code" → "Trade").
OKX_ERRORS = OrderErrors(
    nothing_to_reduce=ApiError("51169", "Order failed because you don't have any positions in this direction that can be closed."),
    reduce_too_large=None,  # OKX trims a reduce-only order to the position
    insufficient_balance=ApiError("51008", "Order failed. Insufficient USDT balance in account."),
    margin_insufficient=ApiError("51008", "Order failed. Insufficient USDT margin in account."),
)

Handler = Callable[[ApiRequest, dict[str, Any], SimAccount | None], Any]


def okx_id(market: SimMarket) -> str:
    """OKX's instrument id: ``BTC-USDT`` (spot), ``BTC-USDT-SWAP`` (perpetual)."""
    s = market.spec
    return f"{s.base}-{s.quote}" if market.is_spot else f"{s.base}-{s.quote}-SWAP"


def _param_error(name: str) -> ApiError:
    return ApiError("51000", f"Parameter {name} error")


class OkxApi:
    """Routes OKX v5 paths to handlers; one instance per server."""

    protocol = "okx"

    def __init__(self, exchange: SimExchange, limits: LimitBook, stats: RateLimitStats) -> None:
        self.ex = exchange
        self.limits = limits
        self.stats = stats
        # (method, path) -> (handler, private, limit name, limit key kind: ip | user | inst)
        self.routes: dict[tuple[str, str], tuple[Handler, bool, str, str]] = {}
        r = self._route
        r("GET", "public/time", lambda q, p, a: [{"ts": str(self.ex.server_time_ms())}], False, "okx.public_2s", "ip")
        r("GET", "public/instruments", self._instruments, False, "okx.public_2s", "ip")
        r("GET", "public/underlying", lambda q, p, a: [[]], False, "okx.public_2s", "ip")
        r("GET", "public/mark-price", self._mark_price, False, "okx.public_2s", "ip")
        r("GET", "market/tickers", self._tickers, False, "okx.public_2s", "ip")
        r("GET", "market/ticker", self._tickers, False, "okx.public_2s", "ip")
        r("GET", "asset/currencies", self._currencies, True, "okx.account_2s", "user")
        r("GET", "account/config", self._config, True, "okx.account_2s", "user")
        r("POST", "account/set-position-mode", self._set_position_mode, True, "okx.account_2s", "user")
        r("GET", "account/balance", self._balance, True, "okx.account_2s", "user")
        r("GET", "account/positions", self._positions, True, "okx.account_2s", "user")
        r("POST", "trade/order", self._place_one, True, "okx.order_per_inst_2s", "inst")
        r("POST", "trade/batch-orders", self._place_batch, True, "okx.batch_orders_per_inst_2s", "inst")
        r("POST", "trade/cancel-order", self._cancel_one, True, "okx.cancel_per_inst_2s", "inst")
        r("POST", "trade/cancel-batch-orders", self._cancel_batch, True, "okx.cancel_batch_per_inst_2s", "inst")
        r("GET", "trade/order", self._get_order, True, "okx.read_orders_2s", "user")
        r("GET", "trade/orders-pending", self._orders_pending, True, "okx.read_orders_2s", "user")
        r("POST", "trade/order-algo", self._place_algo, True, "okx.algo_2s", "user")
        r("GET", "trade/orders-algo-pending", self._algo_pending, True, "okx.algo_2s", "user")
        r("POST", "trade/cancel-algos", self._cancel_algos, True, "okx.algo_2s", "user")
        r("POST", "trade/close-position", self._close_position, True, "okx.close_position_2s", "inst")

    def _route(self, method: str, path: str, handler: Handler, private: bool, limit: str, key: str) -> None:
        self.routes[(method, PREFIX + path)] = (handler, private, limit, key)

    # --- dispatch ----------------------------------------------------------------------

    def known(self, method: str, path: str) -> bool:
        return (method, path) in self.routes

    def handle(self, req: ApiRequest) -> ApiResponse:
        handler, private, limit, key_kind = self.routes[(req.method, req.path)]
        try:
            params: Any = json.loads(req.body) if req.body else {}
        except ValueError:
            return self._error(400, "50002", "Json data format error")
        if not req.body:
            params = req.params
        account: SimAccount | None = None
        try:
            if private:
                account = self._authenticate(req)
            refused = self._charge(req, params, account, limit, key_kind)
            if refused is not None:
                return refused
            data = handler(req, params, account)
        except ApiError as err:
            return self._error(err.http_status if err.http_status != 400 else 200, str(err.code), err.msg)
        if isinstance(data, ApiResponse):
            return data
        return ApiResponse(200, {"code": "0", "msg": "", "data": data})

    @staticmethod
    def _error(status: int, code: str, msg: str) -> ApiResponse:
        return ApiResponse(status, {"code": code, "msg": msg, "data": []})

    def _charge(self, req: ApiRequest, params: Any, acc: SimAccount | None, limit: str, kind: str) -> ApiResponse | None:
        """Charge the endpoint's documented limit; HTTP 429 / 50011 when it is spent."""
        if kind == "ip":
            keys = [(req.client, 1)]
        elif kind == "user" or acc is None:
            keys = [(acc.name if acc else req.client, 1)]
        else:
            # "Rate limit rule: User ID + Instrument ID"; a batch charges each order to its instrument.
            rows = params if isinstance(params, list) else [params]
            per_inst: dict[str, int] = {}
            for row in rows:
                inst = str(row.get("instId", "")) if isinstance(row, dict) else ""
                per_inst[inst] = per_inst.get(inst, 0) + 1
            batch = req.path.endswith(("batch-orders", "cancel-batch-orders"))
            keys = [(f"{acc.name}/{inst}", n if batch else 1) for inst, n in per_inst.items()]
        for key, cost in keys:
            allowed, _w = self.limits.charge(limit, 2.0, key, cost=cost)
            if not allowed:
                self.stats.note("okx", "429 50011")
                return self._error(429, "50011", "Too Many Requests")
        return None

    def _authenticate(self, req: ApiRequest) -> SimAccount:
        h = req.headers
        key = h.get("ok-access-key")
        if not key:
            raise ApiError("50103", 'Request header "OK-ACCESS-KEY" cannot be empty.', 401)
        if not h.get("ok-access-passphrase"):
            raise ApiError("50104", 'Request header "OK-ACCESS-PASSPHRASE" cannot be empty.', 401)
        if not h.get("ok-access-sign"):
            raise ApiError("50106", 'Request header "OK-ACCESS-SIGN" cannot be empty.', 401)
        stamp = h.get("ok-access-timestamp")
        if not stamp:
            raise ApiError("50107", 'Request header "OK-ACCESS-TIMESTAMP" cannot be empty.', 401)
        acc = self.ex.account_for_key(key, "okx")
        if acc is None:
            raise ApiError("50111", "Invalid OK-ACCESS-KEY", 401)
        if not hmac.compare_digest(h["ok-access-passphrase"], acc.passphrase):
            raise ApiError("50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect', 401)
        try:
            sent_ms = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000
        except ValueError:
            raise ApiError("50112", "Invalid OK-ACCESS-TIMESTAMP", 401) from None
        if abs(self.ex.server_time_ms() - sent_ms) > 30_000:
            raise ApiError("50102", "Timestamp request expired", 401)
        path = req.path + ("?" + req.query if req.query else "")
        payload = stamp + req.method + path + req.body
        expected = base64.b64encode(hmac.new(acc.secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, h["ok-access-sign"]):
            raise ApiError("50113", "Invalid signature", 401)
        return acc

    # --- market data -------------------------------------------------------------------

    def _markets(self, inst_type: str | None) -> list[SimMarket]:
        spot = [m for m in self.ex.spot_markets.values()]
        swap = [m for m in self.ex.swap_markets.values()]
        if inst_type == "SPOT":
            return spot
        if inst_type == "SWAP":
            return swap
        if inst_type in ("FUTURES", "OPTION", "MARGIN"):
            return []
        return spot + swap

    def _market(self, inst_id: Any) -> SimMarket:
        for m in self._markets(None):
            if okx_id(m) == inst_id:
                return m
        raise ApiError("51001", "Instrument ID does not exist")

    def _known_market(self, row: Any) -> SimMarket | None:
        try:
            return self._market(row.get("instId")) if isinstance(row, dict) else None
        except ApiError:
            return None

    def _instruments(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> list[dict[str, Any]]:
        inst_type = p.get("instType")
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            raise ApiError("51000", "Parameter instType error")
        rows = []
        for m in self._markets(inst_type):
            s = m.spec
            swap = not m.is_spot
            cs = s.contract_size if swap else Decimal(1)
            rows.append({
                "alias": "", "baseCcy": "" if swap else s.base, "category": "1", "ctMult": "1" if swap else "",
                "ctType": "linear" if swap else "", "ctVal": fmt(cs) if swap else "", "ctValCcy": s.base if swap else "",
                "expTime": "", "instFamily": f"{s.base}-{s.quote}" if swap else "", "instId": okx_id(m),
                "instType": "SWAP" if swap else "SPOT", "lever": "100" if swap else "10",
                "listTime": "1606468572000", "lotSz": fmt(self._lot(m)), "maxIcebergSz": "100000000",
                "maxLmtAmt": "20000000", "maxLmtSz": "100000000", "maxMktAmt": "1000000",
                "maxMktSz": "100000000" if not swap else "10000", "maxStopSz": "10000", "maxTriggerSz": "100000000",
                "maxTwapSz": "100000000", "minSz": fmt(self._min_sz(m)), "optType": "", "quoteCcy": "" if swap else s.quote,
                "settleCcy": s.settle if swap else "", "state": "live", "stk": "", "tickSz": fmt(s.tick_size),
                "uly": f"{s.base}-{s.quote}" if swap else "", "ruleType": "normal",
            })
        return rows

    @staticmethod
    def _lot(m: SimMarket) -> Decimal:
        # Swap sizes are contracts: the scenario's base-unit step expressed in contracts.
        return m.spec.step_size if m.is_spot else max(m.spec.step_size / m.spec.contract_size, Decimal("0.01"))

    @staticmethod
    def _min_sz(m: SimMarket) -> Decimal:
        return m.spec.min_qty if m.is_spot else max(m.spec.min_qty / m.spec.contract_size, Decimal("0.01"))

    def _tickers(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> list[dict[str, Any]]:
        if "instId" in p:
            markets = [self._market(p["instId"])]
        else:
            if p.get("instType") not in ("SPOT", "SWAP", "FUTURES", "OPTION"):
                raise ApiError("51000", "Parameter instType error")
            markets = self._markets(p["instType"])
        now = str(self.ex.server_time_ms())
        return [{
            "instType": "SPOT" if m.is_spot else "SWAP", "instId": okx_id(m), "last": fmt(m.price), "lastSz": "1",
            "askPx": fmt(m.price), "askSz": "10", "bidPx": fmt(m.price), "bidSz": "10", "open24h": fmt(m.price),
            "high24h": fmt(m.price), "low24h": fmt(m.price), "volCcy24h": "1000", "vol24h": "1000",
            "sodUtc0": fmt(m.price), "sodUtc8": fmt(m.price), "ts": now,
        } for m in markets]

    def _mark_price(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> list[dict[str, Any]]:
        if "instId" in p:
            markets = [self._market(p["instId"])]
        else:
            markets = [m for m in self._markets(p.get("instType") or "SWAP") if not m.is_spot]
        now = str(self.ex.server_time_ms())
        return [{"instType": "SWAP", "instId": okx_id(m), "markPx": fmt(m.price), "ts": now} for m in markets]

    def _currencies(self, req: ApiRequest, p: dict[str, Any], a: SimAccount | None) -> list[dict[str, Any]]:
        return [{
            "ccy": c, "name": c, "chain": f"{c}-{c}", "canDep": True, "canWd": True, "canInternal": True,
            "minWd": "0.001", "maxWd": "1000000", "wdTickSz": "8", "minFee": "0.0001", "maxFee": "0.001",
            "mainNet": True, "logoLink": "", "minDep": "0.00000001", "wdQuota": "10000000", "usedWdQuota": "0",
        } for c in self.ex.all_assets()]

    # --- account -----------------------------------------------------------------------

    @staticmethod
    def _pos_mode(acc: SimAccount) -> str:
        return "long_short_mode" if acc.hedge else "net_mode"

    def _config(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - private route
        uid = str(zlib.crc32(acc.name.encode()))
        # "Get account configuration": acctLv 2 = Spot and futures mode (the unified trading account).
        return [{"acctLv": "2", "autoLoan": False, "ctIsoMode": "automatic", "greeksType": "PA", "level": "Lv1",
                 "levelTmp": "", "mgnIsoMode": "automatic", "posMode": self._pos_mode(acc), "spotOffsetType": "",
                 "uid": uid, "mainUid": uid, "label": acc.name, "roleType": "0", "traderInsts": [],
                 "spotRoleType": "0", "spotTraderInsts": [], "opAuth": "0", "kycLv": "2", "ip": "",
                 "perm": "read_only,trade", "liquidationGear": "-1", "enableSpotBorrow": False,
                 "spotBorrowAutoRepay": False, "type": "0"}]

    def _set_position_mode(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - private route
        mode = p.get("posMode")
        if mode not in ("long_short_mode", "net_mode"):
            raise _param_error("posMode")
        if self.ex.position_legs(acc) or self.ex.list_open_orders(acc, "futures", None, conditional=None):
            # "Set position mode": not allowed with open positions or orders.
            raise ApiError("51070", "You do not meet the requirements for switching to this position mode.")
        acc.hedge = mode == "long_short_mode"
        return [{"posMode": mode}]

    def _balance(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - private route
        now = str(self.ex.server_time_ms())
        wanted = set(str(p["ccy"]).split(",")) if p.get("ccy") else None
        details = []
        total_usd = Decimal(0)
        for ccy, free, locked in self.ex.spot_rows(acc):
            if (wanted and ccy not in wanted) or (not free and not locked):
                continue
            f = self.ex.futures_figures(acc, ccy)
            upl = f["unrealized"]
            eq = free + locked + upl
            avail = free - f["initial_margin"] - f["open_order_margin"]
            usd = eq * self._usd_price(ccy)
            total_usd += usd
            details.append({
                "availBal": fmt(avail), "availEq": fmt(avail + upl), "borrowFroz": "", "cashBal": fmt(free + locked),
                "ccy": ccy, "crossLiab": "", "disEq": fmt(usd), "eq": fmt(eq), "eqUsd": fmt(usd),
                "fixedBal": "0", "frozenBal": fmt(locked + f["initial_margin"] + f["open_order_margin"]),
                "imr": fmt(f["initial_margin"]), "interest": "", "isoEq": "0", "isoLiab": "", "isoUpl": "0",
                "liab": "", "maxLoan": "", "mgnRatio": "", "mmr": "0", "notionalLever": "",
                "ordFrozen": fmt(locked + f["open_order_margin"]), "rewardBal": "0", "spotInUseAmt": "",
                "clSpotInUseAmt": "", "maxSpotInUse": "", "spotIsoBal": "0", "stgyEq": "0", "twap": "0",
                "uTime": now, "upl": fmt(upl), "uplLiab": "", "spotBal": "", "openAvgPx": "", "accAvgPx": "",
                "spotUpl": "", "spotUplRatio": "", "totalPnl": "", "totalPnlRatio": "",
            })
        return [{"adjEq": fmt(total_usd), "borrowFroz": "", "details": details, "imr": "0", "isoEq": "0",
                 "mgnRatio": "", "mmr": "0", "notionalUsd": "0", "ordFroz": "0", "totalEq": fmt(total_usd),
                 "uTime": now, "upl": "0"}]

    def _usd_price(self, ccy: str) -> Decimal:
        if ccy in ("USDT", "USDC", "USD"):
            return Decimal(1)
        for m in self.ex.spot_markets.values():
            if m.spec.base == ccy and m.spec.quote in ("USDT", "USDC"):
                return m.price
        return Decimal(0)

    def _positions(self, req: ApiRequest, p: dict[str, Any], acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - private route
        if p.get("instType") not in (None, "", "SWAP", "MARGIN", "FUTURES", "OPTION"):
            raise ApiError("51000", "Parameter instType error")
        wanted = set(str(p["instId"]).split(",")) if p.get("instId") else None
        if wanted:
            for inst in wanted:
                self._market(inst)
        rows = []
        for m, mgn_mode, leg, amt, entry in self.ex.position_legs(acc):
            if wanted and okx_id(m) not in wanted or p.get("instType") not in (None, "", "SWAP"):
                continue
            cs = m.spec.contract_size
            lever = self.ex.leverage_of(acc, m)
            notional = abs(amt) * cs * m.price
            upl = amt * cs * (m.price - entry)
            margin = notional / lever
            pos_id = str(zlib.crc32(f"{acc.name}/{m.id}/{mgn_mode}/{leg}".encode()))
            rows.append({
                "adl": "1", "availPos": fmt(abs(amt)) if leg != "net" else "", "avgPx": fmt(entry),
                "cTime": str(acc.update_time), "ccy": m.spec.settle, "deltaBS": "", "deltaPA": "", "gammaBS": "",
                "gammaPA": "", "imr": fmt(margin) if mgn_mode == "cross" else "", "instId": okx_id(m),
                "instType": "SWAP", "interest": "", "idxPx": fmt(m.price), "last": fmt(m.price),
                "usdPx": "", "bePx": fmt(entry), "lever": str(lever), "liab": "", "liabCcy": "", "liqPx": "",
                "markPx": fmt(m.price), "margin": fmt(margin) if mgn_mode == "isolated" else "",
                "mgnMode": mgn_mode, "mgnRatio": "", "mmr": fmt(notional * Decimal("0.004")),
                "notionalUsd": fmt(notional), "optVal": "", "pendingCloseOrdLiabVal": "", "pnl": "0",
                "pos": fmt(amt if leg == "net" else abs(amt)), "posCcy": "", "posId": pos_id,
                "posSide": leg, "quoteBal": "", "baseBal": "", "spotInUseAmt": "", "spotInUseCcy": "",
                "thetaBS": "", "thetaPA": "", "tradeId": "1", "bizRefId": "", "bizRefType": "",
                "uTime": str(acc.update_time), "upl": fmt(upl), "uplLastPx": fmt(upl),
                "uplRatio": fmt((upl / margin).quantize(Decimal("0.0001"))) if margin else "0",
                "uplRatioLastPx": "0", "vegaBS": "", "vegaPA": "", "realizedPnl": "0", "fee": "0",
                "fundingFee": "0", "liqPenalty": "0", "closeOrderAlgo": [],
            })
        return rows

    # --- orders ------------------------------------------------------------------------

    def _validate(self, acc: SimAccount, row: Any) -> tuple[SimMarket, dict[str, Any]]:
        """Check one order row the way "Place order" does; returns the market and parsed fields."""
        if not isinstance(row, dict):
            raise ApiError("50002", "Json data format error")
        clordid = row.get("clOrdId")
        if clordid is not None and clordid != "" and not CLORDID.match(str(clordid)):
            raise _param_error("clOrdId")
        market = self._market(row.get("instId"))
        side = row.get("side")
        if side not in ("buy", "sell"):
            raise _param_error("side")
        ord_type = row.get("ordType")
        if ord_type not in ("market", "limit", "post_only", "fok", "ioc", "optimal_limit_ioc"):
            raise _param_error("ordType")
        td_mode = row.get("tdMode")
        if market.is_spot:
            if td_mode != "cash":
                # Spot margin (tdMode cross/isolated on SPOT) is not simulated: only cash spot.
                raise _param_error("tdMode")
        elif td_mode not in ("cross", "isolated"):
            raise _param_error("tdMode")
        pos_side = row.get("posSide")
        leg = "net"
        if not market.is_spot:
            if acc.hedge:
                if pos_side not in ("long", "short"):
                    raise _param_error("posSide")
                leg = pos_side
            elif pos_side not in (None, "", "net"):
                raise _param_error("posSide")
        try:
            sz = Decimal(str(row.get("sz")))
            px = Decimal(str(row["px"])) if ord_type != "market" and row.get("px") not in (None, "") else None
        except (InvalidOperation, ValueError):
            raise _param_error("sz") from None
        if not sz.is_finite() or sz <= 0:
            raise _param_error("sz")
        if ord_type != "market" and px is None:
            raise _param_error("px")
        if px is not None and (px <= 0 or px % market.spec.tick_size != 0):
            raise ApiError("51006", "Order price is not within the price limit")
        price = px if px is not None else market.price
        if market.is_spot and ord_type == "market" and side == "buy" and row.get("tgtCcy", "quote_ccy") == "quote_ccy":
            sz = market.round_down(sz / price)  # spot market buys size in the quote currency by default
        lot = self._lot(market)
        if sz % lot != 0:
            raise ApiError("51121", f"Order quantity must be a multiple of the lot size ({fmt(lot)}).")
        if sz < self._min_sz(market):
            raise ApiError("51020", "Your order should meet or exceed the minimum order amount.")
        reduce_only = str(row.get("reduceOnly", "false")).lower() == "true"
        if reduce_only and market.is_spot:
            raise _param_error("reduceOnly")
        if clordid and any(o.client_order_id == clordid for o in self.ex.list_open_orders(acc, None, None, None)):
            raise ApiError("51016", "Duplicated clOrdId")
        return market, {"side": side.upper(), "otype": "MARKET" if ord_type in ("market", "optimal_limit_ioc") else "LIMIT",
                        "qty": sz, "price": price, "reduce_only": reduce_only, "coid": clordid or None,
                        "margin_mode": td_mode if not market.is_spot else "cash", "leg": leg,
                        "tag": row.get("tag", "")}

    def _submit(self, acc: SimAccount, row: Any) -> dict[str, Any]:
        """Place one order row; the per-order result (``sCode`` "0" or the refusal)."""
        now = str(self.ex.server_time_ms())
        clordid = row.get("clOrdId", "") if isinstance(row, dict) else ""
        tag = row.get("tag", "") if isinstance(row, dict) else ""
        try:
            market, f = self._validate(acc, row)
        except ApiError as err:
            # Refused before the matching engine: still goes into the order log.
            self.ex.record_refusal(acc.name, self._known_market(row), row.get("side") if isinstance(row, dict) else None, None,
                                   False, clordid or None, err)
            return {"clOrdId": clordid, "ordId": "", "sCode": str(err.code), "sMsg": err.msg, "tag": tag, "ts": now}
        try:
            order = self.ex.place(
                acc, market, f["side"], f["otype"], f["qty"], f["price"], reduce_only=f["reduce_only"],
                client_order_id=f["coid"], margin_mode=f["margin_mode"] if f["margin_mode"] != "cash" else "cross",
                leg=f["leg"], errors=OKX_ERRORS,
            )
        except ApiError as err:  # the engine refused it (and logged it)
            return {"clOrdId": clordid, "ordId": "", "sCode": str(err.code), "sMsg": err.msg, "tag": tag, "ts": now}
        return {"clOrdId": clordid, "ordId": str(order.order_id), "sCode": "0", "sMsg": "Order placed",
                "tag": tag, "ts": now}

    def _envelope(self, results: list[dict[str, Any]]) -> ApiResponse:
        failed = sum(1 for r in results if r["sCode"] != "0")
        now = str(int(time.time() * 1_000_000))
        if failed == 0:
            code, msg = "0", ""
        elif failed == len(results):
            code, msg = "1", "All operations failed"
        else:
            code, msg = "2", "Batch operation partially succeeded"
        return ApiResponse(200, {"code": code, "data": results, "inTime": now, "msg": msg, "outTime": now})

    def _place_one(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        return self._envelope([self._submit(acc, p)])

    def _place_batch(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        if not isinstance(p, list) or not p:
            raise ApiError("50002", "Json data format error")
        if len(p) > MAX_BATCH:
            raise ApiError("51004", f"The number of orders in a batch cannot exceed {MAX_BATCH}.")  # noqa: E501
        return self._envelope([self._submit(acc, row) for row in p])

    def _find(self, acc: SimAccount, row: Any) -> SimOrder:
        market = self._market(row.get("instId"))
        order = None
        if row.get("ordId"):
            try:
                order = self.ex.order_by_id(acc, order_id=int(row["ordId"]))
            except ValueError:
                raise _param_error("ordId") from None
        elif row.get("clOrdId"):
            order = self.ex.order_by_id(acc, client_order_id=str(row["clOrdId"]))
        else:
            raise ApiError("51000", "Parameter ordId error")
        if order is None or order.market is not market or order.conditional:
            raise ApiError("51603", "Order does not exist")
        return order

    def _cancel_row(self, acc: SimAccount, row: Any) -> dict[str, Any]:
        now = str(self.ex.server_time_ms())
        clordid = row.get("clOrdId", "") if isinstance(row, dict) else ""
        try:
            order = self._find(acc, row)
        except ApiError as err:
            code, msg = (str(err.code), err.msg) if str(err.code) != "51603" else (
                "51400", "Order cancellation failed as the order has been filled, canceled or does not exist.")
            return {"clOrdId": clordid, "ordId": row.get("ordId", ""), "sCode": code, "sMsg": msg, "ts": now}
        if not self.ex.cancel(acc, order):
            return {"clOrdId": order.client_order_id, "ordId": str(order.order_id), "sCode": "51400",
                    "sMsg": "Order cancellation failed as the order has been filled, canceled or does not exist.",
                    "ts": now}
        return {"clOrdId": order.client_order_id, "ordId": str(order.order_id), "sCode": "0", "sMsg": "", "ts": now}

    def _cancel_one(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        return self._envelope([self._cancel_row(acc, p)])

    def _cancel_batch(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        if not isinstance(p, list) or not p:
            raise ApiError("50002", "Json data format error")
        if len(p) > MAX_BATCH:
            raise ApiError("51004", f"The number of orders in a batch cannot exceed {MAX_BATCH}.")
        return self._envelope([self._cancel_row(acc, row) for row in p])

    def _order_json(self, acc: SimAccount, o: SimOrder) -> dict[str, Any]:
        state = {"NEW": "live", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled",
                 "CANCELED": "canceled", "EXPIRED": "canceled"}[o.status]
        return {
            "accFillSz": fmt(o.executed_qty), "algoClOrdId": "", "algoId": "", "attachAlgoClOrdId": "",
            "attachAlgoOrds": [], "avgPx": fmt(o.avg_price) if o.executed_qty else "", "cTime": str(o.time),
            "cancelSource": "", "cancelSourceReason": "", "category": "normal", "ccy": "", "clOrdId": o.client_order_id,
            "fee": "0", "feeCcy": o.market.spec.quote, "fillPx": fmt(o.avg_price) if o.executed_qty else "",
            "fillSz": fmt(o.executed_qty), "fillTime": str(o.update_time) if o.executed_qty else "",
            "instId": okx_id(o.market), "instType": "SPOT" if o.market.is_spot else "SWAP", "isTpLimit": "false",
            "lever": "" if o.market.is_spot else str(self.ex.leverage_of(acc, o.market)), "linkedAlgoOrd": {"algoId": ""},
            "ordId": str(o.order_id), "ordType": o.type.lower(), "pnl": "0",
            "posSide": "" if o.market.is_spot else o.leg, "px": fmt(o.price) if o.type == "LIMIT" else "",
            "pxType": "", "pxUsd": "", "pxVol": "", "quickMgnType": "", "rebate": "0", "rebateCcy": o.market.spec.quote,
            "reduceOnly": "true" if o.reduce_only else "false", "side": o.side.lower(), "slOrdPx": "",
            "slTriggerPx": "", "slTriggerPxType": "", "source": "", "state": state, "stpId": "", "stpMode": "",
            "sz": fmt(o.orig_qty), "tag": "", "tdMode": "cash" if o.market.is_spot else o.margin_mode,
            "tgtCcy": "", "tpOrdPx": "", "tpTriggerPx": "", "tpTriggerPxType": "", "tradeId": "",
            "uTime": str(o.update_time),
        }

    def _get_order(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - private route
        return [self._order_json(acc, self._find(acc, p))]

    def _orders_pending(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - private route
        inst_type = p.get("instType")
        inst_id = p.get("instId")
        rows = []
        for o in self.ex.list_open_orders(acc, None, None, conditional=False):
            if inst_id and okx_id(o.market) != inst_id:
                continue
            if inst_type and inst_type != ("SPOT" if o.market.is_spot else "SWAP"):
                continue
            rows.append(self._order_json(acc, o))
        return sorted(rows, key=lambda r: -int(r["ordId"]))  # newest first, as OKX lists them

    # --- algo (conditional) orders -----------------------------------------------------

    def _place_algo(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        client_id = p.get("algoClOrdId") or p.get("clOrdId") or ""
        try:
            if p.get("ordType") not in ("trigger", "conditional"):
                raise _param_error("ordType")
            trigger = p.get("triggerPx") or p.get("slTriggerPx") or p.get("tpTriggerPx")
            if not trigger:
                raise _param_error("triggerPx")
            # "Place algo order": trigger orders price with orderPx, conditional (TP/SL) ones with
            # tpOrdPx / slOrdPx; -1 means market.
            px = p.get("orderPx") or p.get("slOrdPx") or p.get("tpOrdPx")
            row = dict(p, ordType="market" if px in (None, "", "-1") else "limit", px=px)
            row.pop("clOrdId", None)
            if row.get("sz") in (None, "") and str(p.get("closeFraction", "")) == "1":
                # closeFraction=1 (reduce-only TP/SL): the whole position, so no sz is sent.
                row["sz"] = self._position_size(acc, row)
            market, f = self._validate(acc, row)
            order = self.ex.place(
                acc, market, f["side"], f["otype"], f["qty"], f["price"], reduce_only=f["reduce_only"],
                client_order_id=client_id or None,
                margin_mode=f["margin_mode"] if f["margin_mode"] != "cash" else "cross",
                leg=f["leg"], errors=OKX_ERRORS, trigger_price=Decimal(str(trigger)),
            )
        except ApiError as err:
            return self._envelope([{"algoClOrdId": client_id, "algoId": "", "clOrdId": client_id,
                                    "sCode": str(err.code), "sMsg": err.msg, "tag": p.get("tag", "")}])
        return self._envelope([{"algoClOrdId": order.client_order_id, "algoId": str(order.order_id),
                                "clOrdId": order.client_order_id, "sCode": "0", "sMsg": "", "tag": p.get("tag", "")}])

    def _position_size(self, acc: SimAccount, row: dict[str, Any]) -> str:
        market = self._market(row.get("instId"))
        leg = row.get("posSide") or "net"
        for m, mm, lg, amt, _e in self.ex.position_legs(acc):
            if m is market and mm == row.get("tdMode") and lg == leg:
                return fmt(abs(amt))
        raise OKX_ERRORS.nothing_to_reduce

    def _algo_pending(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> list[dict[str, Any]]:
        assert acc is not None  # noqa: S101 - private route
        if not p.get("ordType"):
            raise ApiError("50014", "Parameter ordType can not be empty.")
        kinds = set(str(p["ordType"]).split(","))
        if not kinds & {"trigger", "conditional", "oco"}:
            return []
        rows = []
        for o in self.ex.list_open_orders(acc, None, None, conditional=True):
            if p.get("instId") and okx_id(o.market) != p["instId"]:
                continue
            rows.append({
                "activePx": "", "actualPx": "", "actualSide": "", "actualSz": "0", "algoClOrdId": o.client_order_id,
                "algoId": str(o.order_id), "amendPxOnTriggerType": "0", "attachAlgoOrds": [], "cTime": str(o.time),
                "callbackRatio": "", "callbackSpread": "", "ccy": "", "clOrdId": "", "closeFraction": "",
                "failCode": "", "instId": okx_id(o.market), "instType": "SPOT" if o.market.is_spot else "SWAP",
                "last": fmt(o.market.price), "lever": "" if o.market.is_spot else str(self.ex.leverage_of(acc, o.market)),
                "moveTriggerPx": "", "ordId": "", "ordIdList": [], "ordPx": fmt(o.price) if o.type == "LIMIT" else "-1",
                "ordType": "trigger", "posSide": "" if o.market.is_spot else o.leg, "pxLimit": "", "pxSpread": "",
                "pxVar": "", "quickMgnType": "", "reduceOnly": "true" if o.reduce_only else "false",
                "side": o.side.lower(), "slOrdPx": "", "slTriggerPx": "", "slTriggerPxType": "", "state": "live",
                "sz": fmt(o.orig_qty), "szLimit": "", "tag": "", "tdMode": "cash" if o.market.is_spot else o.margin_mode,
                "tgtCcy": "", "timeInterval": "", "tpOrdPx": "", "tpTriggerPx": "", "tpTriggerPxType": "",
                "triggerPx": fmt(o.trigger_price), "triggerPxType": "last", "triggerTime": "", "uTime": str(o.update_time),
            })
        return rows

    def _cancel_algos(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> ApiResponse:
        assert acc is not None  # noqa: S101 - private route
        if not isinstance(p, list) or not p:
            raise ApiError("50002", "Json data format error")
        if len(p) > MAX_CANCEL_ALGOS:
            raise ApiError("51004", f"The number of orders in a batch cannot exceed {MAX_CANCEL_ALGOS}.")
        results = []
        for row in p:
            order = None
            try:
                order = self.ex.order_by_id(acc, order_id=int(row.get("algoId", "")))
            except (ValueError, AttributeError):
                pass
            ok = order is not None and order.conditional and okx_id(order.market) == row.get("instId") \
                and self.ex.cancel(acc, order)
            results.append({"algoClOrdId": order.client_order_id if order else "", "algoId": str(row.get("algoId", "")),
                            "clOrdId": "", "sCode": "0" if ok else "51000",
                            "sMsg": "" if ok else "Parameter algoId error", "tag": ""})
        return self._envelope(results)

    def _close_position(self, req: ApiRequest, p: Any, acc: SimAccount | None) -> list[dict[str, Any]]:
        """"Close positions": market-closes the position of instId + mgnMode (+ posSide)."""
        assert acc is not None  # noqa: S101 - private route
        market = self._market(p.get("instId"))
        mgn_mode = p.get("mgnMode")
        if mgn_mode not in ("cross", "isolated"):
            raise _param_error("mgnMode")
        leg = p.get("posSide") or "net"
        if acc.hedge != (leg in ("long", "short")):
            raise _param_error("posSide")
        rows = [r for r in self.ex.position_legs(acc) if r[0] is market and r[1] == mgn_mode and r[2] == leg]
        if not rows:
            raise ApiError("51023", "Position does not exist.")
        amt = rows[0][3]
        self.ex.place(acc, market, "SELL" if amt > 0 else "BUY", "MARKET", abs(amt), market.price, reduce_only=True,
                      client_order_id=p.get("clOrdId"), margin_mode=mgn_mode, leg=leg, errors=OKX_ERRORS)
        return [{"clOrdId": p.get("clOrdId", ""), "instId": okx_id(market), "posSide": leg, "tag": ""}]
