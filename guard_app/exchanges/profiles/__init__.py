"""Exchange profiles: what differs between exchanges, one small class each.

``profile_for(exchange_id)`` returns the profile of an exchange guard-app knows
(Binance, OKX, Bybit) or the generic one built on ccxt's unified fields.
"""

from __future__ import annotations

from guard_app.exchanges.profiles.base import OpenOrder, Profile
from guard_app.exchanges.profiles.binance import BinanceProfile
from guard_app.exchanges.profiles.bybit import BybitProfile
from guard_app.exchanges.profiles.okx import OkxProfile

_PROFILES: dict[str, type[Profile]] = {"binance": BinanceProfile, "okx": OkxProfile, "bybit": BybitProfile}


def profile_for(exchange_id: str) -> Profile:
    """The profile for ``exchange_id`` (the generic one for any other ccxt exchange)."""
    return _PROFILES.get(exchange_id, Profile)()


def profiled_exchanges() -> tuple[str, ...]:
    """Exchanges with their own profile (tested end to end)."""
    return tuple(_PROFILES)


__all__ = ["BinanceProfile", "BybitProfile", "OkxProfile", "OpenOrder", "Profile", "profile_for", "profiled_exchanges"]
