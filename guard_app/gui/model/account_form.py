"""The accounts form without widgets: form text <-> an [[accounts]] table, and its words.

Qt-free, so it is tested without a QApplication (tests/gui_model/test_account_form.py):
:func:`form_to_account` turns what the trader typed into the table the config loader
validates (the loader's own rules decide, see ``ConfigDocument``), :func:`field_for_key`
maps a ConfigError's key back to the field to mark, and :func:`describe_test_failure`
says in one line why a connection test failed (never with key material).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from guard_app.core.config import AccountConfig
from guard_app.core.errors import (
    BrokerError,
    NeedsUserError,
    PermissionDeniedError,
    RateLimitedError,
    SandboxUnavailableError,
    SecretStoreError,
    TemporaryBrokerError,
)

__all__ = [
    "CCXT_DEFAULT_TIMEOUT_MS",
    "FIELDS",
    "TEXT_FIELDS",
    "ConnectionTestTimeout",
    "connection_test_timeout",
    "describe_test_failure",
    "field_for_key",
    "form_to_account",
    "number_or_text",
]

FIELDS = (
    "id", "user", "exchange", "market", "quote", "max_positions", "max_notional",
    "user_max_positions", "min_position_value", "ignore_assets", "sandbox", "ccxt",
    "api_key", "secret", "password",
)
#: The fields read as text (all but the sandbox tick box).
TEXT_FIELDS = tuple(f for f in FIELDS if f != "sandbox")


#: ccxt's own default request timeout (``Exchange.timeout = 10000`` ms in
#: ccxt/base/exchange.py), used when the account's ``ccxt`` options set none.
CCXT_DEFAULT_TIMEOUT_MS = 10_000


def connection_test_timeout(account: AccountConfig) -> float:
    """Seconds a connection test may take: the exchange client's request timeout."""
    try:
        ms = float(account.ccxt.get("timeout", CCXT_DEFAULT_TIMEOUT_MS))
    except (TypeError, ValueError):
        ms = CCXT_DEFAULT_TIMEOUT_MS
    return max(1.0, ms / 1000.0)


class ConnectionTestTimeout(Exception):
    """The exchange did not answer the whole connection test within the client's timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:.0f} s")
        self.seconds = seconds


def describe_test_failure(exc: BaseException) -> str:
    """One plain line for a failed connection test. Never contains key material."""
    if isinstance(exc, ConnectionTestTimeout):
        return (f"exchange unreachable: no answer within {exc.seconds:.0f} s "
                "(check the network, or whether the exchange is down)")
    if isinstance(exc, SandboxUnavailableError):
        return "sandbox not offered by this exchange: untick 'Sandbox / testnet'"
    if isinstance(exc, NeedsUserError):
        if isinstance(exc, PermissionDeniedError):  # the key itself was accepted
            return (f"no permission: the key was accepted but may not read this account "
                    f"({exc.reason}); enable reading in the exchange's API settings")
        return f"wrong key or secret: the exchange refused them ({exc.reason})"
    if isinstance(exc, RateLimitedError):
        return "the exchange is rate limiting this address: wait a minute and test again"
    if isinstance(exc, TemporaryBrokerError):
        reason = exc.reason
        return reason if reason.startswith("exchange unreachable") \
            else f"exchange unreachable: {reason}"
    if isinstance(exc, BrokerError):
        return f"test failed: {exc.reason}"
    if isinstance(exc, SecretStoreError):
        return f"can't read the stored keys: {exc}"
    return f"test failed: unexpected {type(exc).__name__}"


def number_or_text(text: str) -> Any:
    """A number when the text is one; otherwise the text, so the loader names the problem."""
    value = text.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def form_to_account(texts: Mapping[str, str], *, sandbox: bool,
                    existing: Mapping[str, Any]) -> tuple[dict[str, Any], Any, dict[str, str]]:
    """(account table, user cap, errors found before the loader can look) for a form.

    ``texts`` are the fields as typed; ``existing`` the account's table in the file
    when it is being edited: defaults are written only where it already had the key.
    """
    local: dict[str, str] = {}

    def text(key: str) -> str:
        return texts.get(key, "").strip()

    data: dict[str, Any] = {
        "id": text("id") or None,
        "user": text("user") or None,
        "exchange": text("exchange") or None,
        "market": text("market"),
        "quote": text("quote") or None,
        "max_positions": number_or_text(text("max_positions")),
        "max_notional": number_or_text(text("max_notional")),
        "min_position_value": number_or_text(text("min_position_value")),
    }
    data["ignore_assets"] = [a.strip() for a in text("ignore_assets").split(",") if a.strip()]
    data["sandbox"] = sandbox
    raw_ccxt = text("ccxt")
    if raw_ccxt:
        try:
            data["ccxt"] = json.loads(raw_ccxt)
        except ValueError as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if line else ""
            msg = getattr(exc, "msg", "")
            local["ccxt"] = f"not valid JSON{where}: {msg}".rstrip(": ")
    defaults: dict[str, Any] = {"market": "spot", "quote": None, "min_position_value": None,
                                "ignore_assets": [], "sandbox": False}
    for key, default in defaults.items():
        if data.get(key) == default and key not in existing:
            data.pop(key, None)
    return data, number_or_text(text("user_max_positions")), local


def field_for_key(key: str) -> tuple[str | None, str]:
    """The form field a ConfigError key belongs to, and the rest of the key."""
    if re.fullmatch(r"users\.[^.]+\.(max_positions|max_notional)", key):
        return "user_max_positions", ""
    if re.fullmatch(r"users\.[^.]+", key):
        return "user", ""
    match = re.fullmatch(r"(?:accounts\[\d+\]\.)?([A-Za-z_]+)(.*)", key)
    if match and match.group(1) in FIELDS:
        rest = match.group(2)
        # ccxt.apiKey -> "apiKey"; ignore_assets[2] needs no prefix: the problem
        # quotes the bad value.
        return match.group(1), rest[1:] if rest.startswith(".") else ""
    return None, key
