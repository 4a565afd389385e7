"""The config file (TOML): what accounts exist, their caps, the enforcer's schedule.

The dataclasses below are what the rest of the app uses; the loader turns a TOML
document into them and rejects anything unknown or wrong with a ConfigError naming
the key and the problem. Keys (API secrets) never live here: see secrets.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from guard_app.core.models import Caps, Market


@dataclass(frozen=True, slots=True)
class EnforcerConfig:
    interval_seconds: float = 60.0
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class AccountConfig:
    id: str
    user: str
    exchange: str
    max_positions: int
    market: Market = Market.SPOT
    quote: str = "USDT"
    max_notional: float | None = None
    min_position_value: float = 1.0
    ignore_assets: tuple[str, ...] = ()
    sandbox: bool = False
    ccxt: dict[str, Any] = field(default_factory=dict)

    @property
    def caps(self) -> Caps:
        return Caps(self.max_positions, self.max_notional)


@dataclass(frozen=True, slots=True)
class UserConfig:
    name: str
    max_positions: int | None = None
    max_notional: float | None = None

    @property
    def caps(self) -> Caps:
        return Caps(self.max_positions, self.max_notional)


@dataclass(frozen=True, slots=True)
class AppConfig:
    enforcer: EnforcerConfig
    accounts: tuple[AccountConfig, ...]
    users: dict[str, UserConfig] = field(default_factory=dict)
    source: str = ""

    @property
    def user_names(self) -> list[str]:
        """Every user named by an account or a [users.X] table, sorted."""
        return sorted({a.user for a in self.accounts} | set(self.users))

    def account(self, account_id: str) -> AccountConfig:
        for a in self.accounts:
            if a.id == account_id:
                return a
        raise KeyError(account_id)

    def accounts_of(self, user: str) -> list[AccountConfig]:
        return [a for a in self.accounts if a.user == user]
