"""The config file (TOML): what accounts exist, their caps, the enforcer's schedule.

The dataclasses below are what the rest of the app uses; the loader turns a TOML
document into them and rejects anything unknown or wrong with a ConfigError naming
the key and the problem. Keys (API secrets) never live here: see secrets.py.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard_app.core.errors import ConfigError
from guard_app.core.models import Caps, Market
from guard_app.core.secrets import is_credential_key


@dataclass(frozen=True, slots=True)
class EnforcerConfig:
    """``[enforcer]``: the cycle period, the fast re-read cadence, dry run.

    ``fast_interval_seconds`` is how often an account is re-read while its user's
    forced unwind is on, and for one normal interval after it was last over a cap
    (DESIGN rule 14); never slower than ``interval_seconds``.
    """

    interval_seconds: float = 60.0
    dry_run: bool = False
    fast_interval_seconds: float = 2.0

    @property
    def fast_interval(self) -> float:
        """The fast cadence actually used (no slower than the normal one)."""
        return min(self.fast_interval_seconds, self.interval_seconds)


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


# --------------------------------------------------------------------------------------
# The loader: TOML text -> AppConfig, rejecting anything unknown or wrong.
#
# Every check raises ConfigError(key, problem, source) where ``key`` is the dotted path
# of the offending value (``accounts[2].max_positions``; account indices count from 0
# in file order) so the one-line message tells a person exactly what to fix.
# --------------------------------------------------------------------------------------

EXAMPLE_CONFIG = """\
[enforcer]
interval_seconds = 60        # cycle period
dry_run = false              # plan and log, place no orders
fast_interval_seconds = 2    # re-read period during a forced unwind / after an over-cap

[[accounts]]
id = "alice-binance-spot"    # unique; also the keyring username
user = "alice"
exchange = "binance"         # any ccxt exchange id
market = "spot"              # spot | swap | future
quote = "USDT"
max_positions = 8
max_notional = 25000         # optional
min_position_value = 1.0     # dust threshold, in quote
ignore_assets = ["BNB"]      # optional: balances never treated as positions
sandbox = false              # ccxt set_sandbox_mode
[accounts.ccxt]              # optional, free-form: deep-merged into the ccxt
                             # constructor config (urls, options, timeout, ...)

[users.alice]                # optional per-user caps across her accounts
max_positions = 12
"""
"""A complete, valid config file (the one in DESIGN.md), for docs and first-run help."""

MIN_INTERVAL_SECONDS = 1.0
# Binance spot: a read costs about 24 of 6,000 weight per minute; at 1 s per account
# that is 24 % of the IP's budget, which is as fast as we let anyone go.
MIN_FAST_INTERVAL_SECONDS = 1.0

_TOP_KEYS = ("enforcer", "accounts", "users")
_ENFORCER_KEYS = ("interval_seconds", "dry_run", "fast_interval_seconds")
_ACCOUNT_KEYS = (
    "id",
    "user",
    "exchange",
    "market",
    "quote",
    "max_positions",
    "max_notional",
    "min_position_value",
    "ignore_assets",
    "sandbox",
    "ccxt",
)
_ACCOUNT_REQUIRED = ("id", "user", "exchange", "max_positions")
_USER_KEYS = ("max_positions", "max_notional")


# Account ids are keyring usernames, file names and CLI arguments: keep them plain.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SAFE_NAME_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit, at most 64"
_ASSET_CODE = re.compile(r"[A-Za-z0-9._-]{1,32}")


def load_config(path: Path) -> AppConfig:
    """Read and validate the config file at ``path``.

    A missing or unreadable file, bad TOML or a bad value raises ConfigError.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "",
            "no config file here: create one listing your accounts and caps "
            "(see 'Config file' in the docs for an example) or pass --config PATH",
            source,
        ) from None
    except IsADirectoryError:
        raise ConfigError("", "is a directory, not a config file", source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 text ({exc.reason} at byte {exc.start})", source) from None
    except OSError as exc:
        raise ConfigError("", f"can't read the config file: {exc.strerror or exc}", source) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<config>") -> AppConfig:
    """Validate a TOML document and turn it into an AppConfig.

    An empty document is valid: no accounts, default enforcer settings.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", source) from None
    try:
        return _parse_document(data, source)
    except ConfigError as exc:
        if exc.source == source:
            raise
        # Errors from the shared helpers are raised without a source; add it here.
        raise ConfigError(exc.key, exc.problem, source) from None


def validate_account(data: Mapping[str, Any], index_or_path: str) -> AccountConfig:
    """Validate one account table (as read from TOML) and build its AccountConfig.

    ``index_or_path`` prefixes the keys named in errors (``accounts[2]``). The config
    loader and the GUI's accounts dialog both use this: one set of rules.
    Uniqueness of the id across accounts is checked by the caller (parse_config).
    """
    prefix = index_or_path
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"must be a table, not {_type_name(data)}")
    _reject_unknown(data, _ACCOUNT_KEYS, prefix)
    for key in _ACCOUNT_REQUIRED:
        if key not in data:
            raise ConfigError(_join(prefix, key), "required key is missing")

    account_id = _safe_name(data["id"], _join(prefix, "id"))
    user = _safe_name(data["user"], _join(prefix, "user"))
    exchange = _exchange_id(data["exchange"], _join(prefix, "exchange"))
    market = _market(data.get("market", Market.SPOT.value), _join(prefix, "market"))
    quote = _asset_code(data.get("quote", "USDT"), _join(prefix, "quote"))
    max_positions = _count(data["max_positions"], _join(prefix, "max_positions"))
    max_notional = _optional_positive(data.get("max_notional"), _join(prefix, "max_notional"))
    min_value = _non_negative(
        data.get("min_position_value", 1.0), _join(prefix, "min_position_value")
    )
    ignore = _asset_list(data.get("ignore_assets", []), _join(prefix, "ignore_assets"))
    sandbox = _bool(data.get("sandbox", False), _join(prefix, "sandbox"))
    ccxt_overrides = _ccxt_table(data.get("ccxt", {}), _join(prefix, "ccxt"), account_id)

    return AccountConfig(
        id=account_id,
        user=user,
        exchange=exchange,
        max_positions=max_positions,
        market=market,
        quote=quote,
        max_notional=max_notional,
        min_position_value=min_value,
        ignore_assets=ignore,
        sandbox=sandbox,
        ccxt=ccxt_overrides,
    )


def validate_user(name: str, data: Mapping[str, Any], path: str | None = None) -> UserConfig:
    """Validate one ``[users.NAME]`` table (per-user caps across that user's accounts)."""
    prefix = path or f"users.{name}"
    _safe_name(name, prefix)
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"must be a table, not {_type_name(data)}")
    _reject_unknown(data, _USER_KEYS, prefix)
    max_positions = data.get("max_positions")
    return UserConfig(
        name=name,
        max_positions=(
            None if max_positions is None
            else _count(max_positions, _join(prefix, "max_positions"))
        ),
        max_notional=_optional_positive(data.get("max_notional"), _join(prefix, "max_notional")),
    )


def _parse_document(data: Mapping[str, Any], source: str) -> AppConfig:
    _reject_unknown(data, _TOP_KEYS, "")

    enforcer_data = data.get("enforcer", {})
    if not isinstance(enforcer_data, Mapping):
        raise ConfigError("enforcer", f"must be a table [enforcer], not {_type_name(enforcer_data)}")
    _reject_unknown(enforcer_data, _ENFORCER_KEYS, "enforcer")
    interval = _number(enforcer_data.get("interval_seconds", 60.0), "enforcer.interval_seconds")
    if interval < MIN_INTERVAL_SECONDS:
        raise ConfigError(
            "enforcer.interval_seconds",
            f"must be at least {MIN_INTERVAL_SECONDS:g} second, got {interval:g}",
        )
    fast = _number(enforcer_data.get("fast_interval_seconds", 2.0),
                   "enforcer.fast_interval_seconds")
    if fast < MIN_FAST_INTERVAL_SECONDS:
        raise ConfigError(
            "enforcer.fast_interval_seconds",
            f"must be at least {MIN_FAST_INTERVAL_SECONDS:g} second (each re-read costs "
            f"exchange rate-limit weight), got {fast:g}",
        )
    enforcer = EnforcerConfig(
        interval_seconds=interval,
        dry_run=_bool(enforcer_data.get("dry_run", False), "enforcer.dry_run"),
        fast_interval_seconds=fast,
    )

    raw_accounts = data.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise ConfigError(
            "accounts",
            "must be a list of [[accounts]] tables (write [[accounts]], with double brackets)",
        )
    accounts: list[AccountConfig] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_accounts):
        account = validate_account(raw, f"accounts[{index}]")
        if account.id in first_index:
            raise ConfigError(
                f"accounts[{index}].id",
                f"duplicate account id {account.id!r} (already used by "
                f"accounts[{first_index[account.id]}]); ids must be unique",
            )
        first_index[account.id] = index
        accounts.append(account)

    raw_users = data.get("users", {})
    if not isinstance(raw_users, Mapping):
        raise ConfigError("users", f"must be tables [users.NAME], not {_type_name(raw_users)}")
    users = {name: validate_user(name, table) for name, table in raw_users.items()}

    return AppConfig(enforcer=enforcer, accounts=tuple(accounts), users=users, source=source)


# ---- value checks: each returns the clean value or raises ConfigError(key, ...) ----


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _type_name(value: object) -> str:
    """How a wrong value reads in an error: the value itself when short, else its kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


def _reject_unknown(data: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in data:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key).lower(), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else f" (allowed: {', '.join(allowed)})"
        raise ConfigError(_join(prefix, str(key)), f"unknown key{hint}")


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, not {_type_name(value)}")
    if not value.strip():
        raise ConfigError(key, "must not be empty")
    return value


def _safe_name(value: object, key: str) -> str:
    text = _string(value, key)
    if not _SAFE_NAME.fullmatch(text):
        raise ConfigError(key, f"{text!r} is not a valid name: use {_SAFE_NAME_RULE} characters")
    return text


def _asset_code(value: object, key: str) -> str:
    text = _string(value, key).strip()
    if not _ASSET_CODE.fullmatch(text):
        raise ConfigError(key, f"{text!r} is not a currency code (like USDT)")
    return text.upper()


def _asset_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of currency codes, not {_type_name(value)}")
    return tuple(_asset_code(item, f"{key}[{i}]") for i, item in enumerate(value))


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, not {_type_name(value)}")
    return value


def _count(value: object, key: str) -> int:
    # bool is a subclass of int in Python; `max_positions = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be a whole number, not {_type_name(value)}")
    if value < 0:
        raise ConfigError(key, f"must be 0 or more, got {value}")
    return value


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(key, f"must be a finite number, got {value}")
    return number


def _non_negative(value: object, key: str) -> float:
    number = _number(value, key)
    if number < 0:
        raise ConfigError(key, f"must be 0 or more, got {value}")
    return number


def _optional_positive(value: object, key: str) -> float | None:
    if value is None:
        return None
    number = _number(value, key)
    if number <= 0:
        raise ConfigError(key, f"must be more than 0, got {value} (leave it out for no cap)")
    return number


def _market(value: object, key: str) -> Market:
    text = _string(value, key)
    try:
        return Market(text)
    except ValueError:
        allowed = ", ".join(m.value for m in Market)
        raise ConfigError(key, f"unknown market {text!r}: use one of {allowed}") from None


ExchangeCatalog = Callable[[], Collection[str]]
_exchange_catalog: ExchangeCatalog | None = None


def use_exchange_catalog(catalog: ExchangeCatalog) -> None:
    """Check exchange ids against ``catalog()`` (``guard_app.exchanges`` registers ccxt's
    list when it is imported; the core itself never imports ccxt)."""
    global _exchange_catalog
    _exchange_catalog = catalog


def _exchange_id(value: object, key: str) -> str:
    text = _string(value, key)
    if _exchange_catalog is None:
        return text  # no catalog wired in (a bare core): any id is accepted here
    known = _exchange_catalog()
    if text not in known:
        close = difflib.get_close_matches(text.lower(), sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(key, f"unknown exchange {text!r}: not a ccxt exchange id{hint}")
    return text


def _ccxt_table(value: object, key: str, account_id: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a table [accounts.ccxt], not {_type_name(value)}")
    for name in value:
        if is_credential_key(name):  # ``api_key`` and ``APIKEY`` are caught too
            raise ConfigError(
                _join(key, str(name)),
                f"keys belong in the keyring, not the config file: remove it and use "
                f"'guard-app keys set {account_id}'",
            )
    return copy.deepcopy(dict(value))
