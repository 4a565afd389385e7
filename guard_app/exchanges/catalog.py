"""Exchange facts as plain data, for the config loader, the CLI and the GUI.

No ccxt type leaks out of here. ccxt is imported lazily: importing it takes about half
a second, and the window must not wait for it on the GUI thread.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@functools.lru_cache(maxsize=1)
def exchange_ids() -> tuple[str, ...]:
    """Every exchange id ccxt knows, sorted."""
    import ccxt

    return tuple(sorted(ccxt.exchanges))


@functools.lru_cache(maxsize=256)
def _exchange_facts(exchange_id: str) -> tuple[bool, bool]:
    """(needs a passphrase, offers a sandbox) for a ccxt exchange id.

    Constructing a ccxt client costs a few milliseconds, hence the cache.
    """
    if exchange_id not in exchange_ids():
        return False, True
    import ccxt

    try:
        client = getattr(ccxt, exchange_id)()
    except Exception:  # noqa: BLE001 - a broken exchange class must not break a caller
        return False, True
    needs_password = bool(client.requiredCredentials.get("password"))
    offers_sandbox = bool(client.urls.get("test"))
    return needs_password, offers_sandbox


def needs_passphrase(exchange_id: str) -> bool:
    """Whether this exchange needs a passphrase besides key and secret (OKX does)."""
    return _exchange_facts(exchange_id)[0]


def sandbox_offered(exchange_id: str) -> bool:
    """Whether ccxt knows a sandbox/testnet URL for this exchange."""
    return _exchange_facts(exchange_id)[1]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What guard-app can do on one exchange and market type, as plain data.

    ``reduce_only`` is None when ccxt doesn't say. ``profile`` is "binance", "okx",
    "bybit" (tested end to end) or "generic". ``problems`` are sentences for a trader:
    what guard-app cannot do there; ``blocking`` is the one that makes the account
    unusable (a config error), if any.
    """

    exchange: str
    market: str
    profile: str
    fetch_positions: bool
    reduce_only: bool | None
    create_orders: bool
    cancel_all_orders: bool
    fetch_open_orders: bool
    own_rate_limits: bool
    problems: tuple[str, ...] = ()
    blocking: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


@functools.lru_cache(maxsize=512)
def describe_capabilities(exchange_id: str, market: str = "spot") -> Capabilities:
    """What ``exchange_id`` offers guard-app on ``market`` (spot | swap | future).

    Used by "Test connection" and ``guard-app status`` to say plainly what an exchange
    cannot do, and by the config check (a swap account needs ``fetchPositions``).
    """
    from guard_app.exchanges.profiles import profile_for, profiled_exchanges

    if exchange_id not in exchange_ids():
        return Capabilities(exchange_id, market, "generic", False, None, False, False, False, False,
                            (f"{exchange_id!r} is not a ccxt exchange id",),
                            f"unknown exchange {exchange_id!r}: not a ccxt exchange id")
    import ccxt

    client = getattr(ccxt, exchange_id)()
    has = client.has
    derivative = market != "spot"
    features = (client.features or {}).get("swap" if market == "swap" else market) or {}
    linear = features.get("linear") if isinstance(features, dict) else None
    reduce_only: bool | None
    if exchange_id in profiled_exchanges():
        reduce_only = True
    elif has.get("createReduceOnlyOrder") is True or (derivative and isinstance(linear, dict) and linear.get("createOrder")):
        reduce_only = True
    else:
        reduce_only = None
    problems: list[str] = []
    blocking = None
    if derivative and not has.get(market):
        blocking = f"{exchange_id} has no {market} markets in ccxt: use market = \"spot\" or another exchange"
    elif derivative and not has.get("fetchPositions"):
        blocking = (f"{exchange_id} cannot list open positions through ccxt (no fetchPositions), so guard-app "
                    f"could neither count nor close {market} positions there")
    if blocking:
        problems.append(blocking)
    if derivative and reduce_only is None:
        problems.append(f"ccxt doesn't say that {exchange_id} supports reduce-only orders: a close could "
                        "open a position the other way if the position changed meanwhile")
    if not has.get("fetchOpenOrders"):
        problems.append(f"{exchange_id} cannot list open orders through ccxt: the kill switch can't cancel them")
    profile = profile_for(exchange_id)
    return Capabilities(
        exchange=exchange_id,
        market=market,
        profile=profile.id,
        fetch_positions=bool(has.get("fetchPositions")),
        reduce_only=reduce_only,
        create_orders=bool(has.get("createOrders")),
        cancel_all_orders=bool(has.get("cancelAllOrders")) or exchange_id in profiled_exchanges(),
        fetch_open_orders=bool(has.get("fetchOpenOrders")),
        own_rate_limits=profile.owns_rate_limit,
        problems=tuple(problems),
        blocking=blocking,
    )


def market_problem(exchange_id: str, market: str) -> str | None:
    """Why an account of this exchange and market type can't work (a config error), or None."""
    return describe_capabilities(exchange_id, market).blocking
