"""OKX (v5 API): passphrase, clOrdId rule, long/short legs, margin mode on every close,
per-order errors inside ``data``, algo orders listed and cancelled apart.

Sources, https://www.okx.com/docs-v5/en/ :

* "Place order": ``clOrdId`` "A combination of case-sensitive alphanumerics, all numbers,
  or all letters of up to 32 characters"; ``tdMode`` cross / isolated / cash; ``posSide``
  long / short "required in long/short mode"; ``reduceOnly`` applies in net mode.
* "Place multiple orders": at most 20 orders per request; "Cancel multiple orders": 20.
* "Cancel algo order": at most 10 per request; "Get algo order list": ``ordType``
  conditional and oco may be combined with a comma, other algo types one per request.
* Rate limits ("Rate Limits" and each endpoint's "Rate Limit" line), all per 2 s: place
  order 60 per instrument, batch orders 300 orders per instrument, cancel 60 / 300,
  pending orders 60, balance and positions 10, account config 5, public data 20 per IP,
  algo orders 20, close position 20; a sub-account may place 1,000 orders per 2 s.
  Over a limit: HTTP 429 ``{"code":"50011","msg":"Too Many Requests"}``; OKX sends no
  usage headers and no time to come back, so the limiter waits out one 2 s window.
* Errors: HTTP 200 with ``code`` "1" (all failed) or "2" (some failed) and the reason of
  each order in ``data[i].sCode`` / ``sMsg``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from guard_app.core.models import Market
from guard_app.exchanges.profiles.base import OpenOrder, Profile
from guard_app.exchanges.ratelimit import Charge, RateLimit

if TYPE_CHECKING:
    from guard_app.exchanges.broker import Broker

WINDOW = 2.0
BACK_OFF_50011 = 2.0  # one whole rate-limit window: OKX gives no reset time

_PREFIX = "/api/v5/"
# path -> (limit id, charged per order of a batch, keyed by instrument)
_ENDPOINTS: dict[str, tuple[str, bool, bool]] = {
    "trade/order": ("order_2s", False, True),
    "trade/batch-orders": ("batch_2s", True, True),
    "trade/cancel-order": ("cancel_2s", False, True),
    "trade/cancel-batch-orders": ("cancel_batch_2s", True, True),
    "trade/orders-pending": ("pending_2s", False, False),
    "trade/orders-algo-pending": ("algo_2s", False, False),
    "trade/cancel-algos": ("cancel_algos_2s", False, False),
    "trade/order-algo": ("place_algo_2s", False, False),
    "trade/close-position": ("close_position_2s", False, True),
    "account/balance": ("balance_2s", False, False),
    "account/positions": ("positions_2s", False, False),
    "account/config": ("config_2s", False, False),
}
_ORDER_PATHS = {"trade/order", "trade/batch-orders"}

RATE_LIMITS = (
    RateLimit("public_2s", 20, WINDOW, "ip"),
    RateLimit("order_2s", 60, WINDOW, "account"),
    RateLimit("batch_2s", 300, WINDOW, "account"),
    RateLimit("cancel_2s", 60, WINDOW, "account"),
    RateLimit("cancel_batch_2s", 300, WINDOW, "account"),
    RateLimit("pending_2s", 60, WINDOW, "account"),
    RateLimit("algo_2s", 20, WINDOW, "account"),
    RateLimit("cancel_algos_2s", 20, WINDOW, "account"),
    RateLimit("place_algo_2s", 20, WINDOW, "account"),
    RateLimit("close_position_2s", 20, WINDOW, "account"),
    RateLimit("balance_2s", 10, WINDOW, "account"),
    RateLimit("positions_2s", 10, WINDOW, "account"),
    RateLimit("config_2s", 5, WINDOW, "account"),
    RateLimit("account_orders_2s", 1000, WINDOW, "account"),
)

MAX_CANCEL_BATCH = 20
MAX_CANCEL_ALGOS = 10
# One request per group: OKX lists conditional+oco together, other algo types alone.
ALGO_TYPES = ("conditional,oco", "trigger", "move_order_stop")


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class OkxProfile(Profile):
    """OKX spot and perpetual swaps (``ccxt.okx``)."""

    id = "okx"
    client_id_chars = r"A-Za-z0-9"
    client_id_max = 32
    RATE_LIMITS = RATE_LIMITS
    BATCH = {Market.SPOT: 20, Market.SWAP: 20, Market.FUTURE: 20}

    def ccxt_options(self, market: Market) -> dict[str, Any]:
        # One instruments request instead of four (spot, futures, swap, option), and no
        # signed currencies call at all.
        types = ["spot"] if market is Market.SPOT else [market.value]
        return {"defaultType": market.value, "fetchMarkets": {"types": types}, "fetchCurrencies": False}

    def charges(self, method: str, path: str, params: Mapping[str, Any], market: Market) -> list[Charge]:
        if not path.startswith(_PREFIX):
            return []
        name = path[len(_PREFIX):]
        if name.startswith(("public/", "market/")):
            # Every public endpoint has its own 20 / 2 s per IP.
            return [Charge("public_2s", 1, key=name)]
        spec = _ENDPOINTS.get(name)
        if spec is None:
            return []
        limit_id, per_order, per_inst = spec
        rows = params.get("__rows__") or [params]
        out: list[Charge] = []
        if per_inst:
            per: dict[str, int] = {}
            for row in rows:
                inst = str(row.get("instId", "")) if isinstance(row, Mapping) else ""
                per[inst] = per.get(inst, 0) + 1
            out += [Charge(limit_id, n if per_order else 1, key=inst) for inst, n in per.items()]
        else:
            out.append(Charge(limit_id, 1, key=name))
        if name in _ORDER_PATHS:
            out.append(Charge("account_orders_2s", len(rows)))
        return out

    def observe(self, limiter: Any, method: str, path: str, status: int, headers: Mapping[str, Any] | None,
                body: Any, params: Mapping[str, Any]) -> None:
        if self._is_50011(body) or status == 429:
            charges = self.charges(method, path, params, Market.SPOT)
            for charge in charges:
                limiter.block(BACK_OFF_50011, [charge.limit_id], key=charge.key)

    @staticmethod
    def _is_50011(body: Any) -> bool:
        if not isinstance(body, Mapping):
            return False
        if str(body.get("code")) == "50011":
            return True
        return any(isinstance(r, Mapping) and str(r.get("sCode")) == "50011" for r in body.get("data") or [])

    def retry_after(self, headers: Mapping[str, Any] | None, body: Any) -> float | None:
        if self._is_50011(body):
            return BACK_OFF_50011
        return super().retry_after(headers, body)

    def error_detail(self, body: Any) -> tuple[str, str] | None:
        """The per-order ``sCode``/``sMsg`` when the envelope only says "1"/"2"."""
        if not isinstance(body, Mapping):
            return None
        code = str(body.get("code", ""))
        if code in ("1", "2"):
            for row in body.get("data") or []:
                if isinstance(row, Mapping) and str(row.get("sCode", "0")) != "0":
                    return str(row["sCode"]), str(row.get("sMsg") or "")
        if code not in ("", "0"):
            return code, str(body.get("msg") or "")
        return None

    # -- positions and closes ----------------------------------------------------------

    def hedge_leg(self, position: Mapping[str, Any]) -> str | None:
        leg = str((position.get("info") or {}).get("posSide", "net"))
        if leg in ("long", "short"):
            return leg
        return super().hedge_leg(position)

    def close_params(self, position: Mapping[str, Any]) -> dict[str, Any]:
        # The position's own margin mode: a cross reduce-only order finds no isolated
        # position (51169). ccxt turns marginMode into tdMode.
        mode = str(position.get("marginMode") or (position.get("info") or {}).get("mgnMode") or "cross")
        params: dict[str, Any] = {"marginMode": mode}
        leg = self.hedge_leg(position)
        if leg:
            params["posSide"] = leg  # long/short mode: closing a leg can only reduce it
        else:
            params["reduceOnly"] = True
        return params

    # -- open orders -------------------------------------------------------------------

    async def list_open_orders(
        self, broker: Broker, symbols: Sequence[str] | None, *, conditional: bool = False
    ) -> list[OpenOrder]:
        """One orders-pending read for the whole account, plus the algo lists."""
        client = broker.client
        reads = [broker.call(client.privateGetTradeOrdersPending, {})]
        if conditional:
            reads += [broker.call(client.privateGetTradeOrdersAlgoPending, {"ordType": t}) for t in ALGO_TYPES]
        answers = await asyncio.gather(*reads)
        wanted = set(symbols) if symbols is not None else None
        out: list[OpenOrder] = []
        seen: set[tuple[bool, str]] = set()
        for i, answer in enumerate(answers):
            for row in answer.get("data") or []:
                inst = str(row.get("instId", ""))
                symbol = client.safe_symbol(inst)
                if wanted is not None and symbol not in wanted:
                    continue
                order = OpenOrder(symbol, str(row.get("ordId" if i == 0 else "algoId")), i > 0, inst)
                if (order.conditional, order.id) not in seen:  # one order, listed under two types
                    seen.add((order.conditional, order.id))
                    out.append(order)
        return out

    async def cancel_orders(self, broker: Broker, orders: Sequence[OpenOrder]) -> None:
        """cancel-batch-orders (20 a request, any instruments) and cancel-algos (10)."""
        client = broker.client
        plain = [{"instId": o.market_id, "ordId": o.id} for o in orders if not o.conditional]
        algos = [{"instId": o.market_id, "algoId": o.id} for o in orders if o.conditional]
        await asyncio.gather(
            *(broker.call(client.privatePostTradeCancelBatchOrders, list(c)) for c in _chunks(plain, MAX_CANCEL_BATCH)),
            *(broker.call(client.privatePostTradeCancelAlgos, list(c)) for c in _chunks(algos, MAX_CANCEL_ALGOS)),
        )
