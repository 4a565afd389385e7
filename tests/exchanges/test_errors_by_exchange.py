"""Error mapping per exchange, table-driven, from the exceptions the real ccxt raises.

Each row feeds an exchange's real error answer to ccxt's own ``handle_errors`` (the code
that runs on every HTTP answer), and the exception it raises to ``translate_error`` with
that exchange's profile: the type must be right and the reason must carry the
exchange's own code and words — OKX's per-order ``sCode``/``sMsg`` rather than "All
operations failed", Bybit's ``retCode``/``retMsg`` — and never a credential.
"""

from __future__ import annotations

import json
import time
from typing import Any

import ccxt
import pytest

from guard_app.core.errors import (
    BrokerError,
    NeedsUserError,
    OrderRejectedError,
    RateLimitedError,
)
from guard_app.exchanges.broker import translate_error
from guard_app.exchanges.profiles import profile_for

KEY, SECRET, PASSPHRASE = "AbCdEfKEY1234567890", "SeCrEt0987654321xyz", "MyPassPhrase42"


def _okx_batch(code: str, msg: str) -> dict[str, Any]:
    return {"code": "1", "msg": "All operations failed",
            "data": [{"clOrdId": "ga1x", "ordId": "", "sCode": code, "sMsg": msg, "tag": ""}]}


def _bybit(code: int, msg: str) -> dict[str, Any]:
    return {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": 1700000000000}


RESET_MS = str(int((time.time() + 30) * 1000))

# exchange, HTTP status, headers, body, an order in flight, our type, the exchange's code, words
TABLE = [
    ("okx", 200, {}, _okx_batch("51008", "Order failed. Insufficient USDT balance in account."), True,
     OrderRejectedError, "51008", "Insufficient USDT balance"),
    ("okx", 200, {}, _okx_batch("51169", "Order failed because you don't have any positions in this direction "
                                          "for this contract to reduce or close."), True,
     OrderRejectedError, "51169", "any positions in this direction"),
    ("okx", 200, {}, _okx_batch("51000", "Parameter clOrdId error"), True,
     OrderRejectedError, "51000", "Parameter clOrdId error"),
    ("okx", 401, {}, {"code": "50113", "msg": "Invalid Sign", "data": []}, False,
     NeedsUserError, "50113", "Invalid Sign"),
    ("okx", 401, {}, {"code": "50105", "msg": 'Request header "OK-ACCESS-PASSPHRASE" incorrect', "data": []}, False,
     NeedsUserError, "50105", "PASSPHRASE"),
    ("okx", 429, {}, {"code": "50011", "msg": "Too Many Requests", "data": []}, True,
     RateLimitedError, "50011", "Too Many Requests"),
    ("bybit", 200, {}, _bybit(10004, f"error sign! origin_string[1700000000000{KEY}5000category=linear]"), False,
     NeedsUserError, "10004", "error sign!"),
    ("bybit", 200, {}, _bybit(110017, "current position is zero, cannot fix reduce-only order qty"), True,
     OrderRejectedError, "110017", "reduce-only"),
    ("bybit", 200, {}, _bybit(10001, "position idx not match position mode"), True,
     OrderRejectedError, "10001", "position idx not match position mode"),
    ("bybit", 200, {}, _bybit(170131, "Insufficient balance."), True,
     OrderRejectedError, "170131", "Insufficient balance"),
    ("bybit", 200, {"X-Bapi-Limit": "10", "X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": RESET_MS},
     _bybit(10006, "Too many visits!"), True, RateLimitedError, "10006", "Too many visits"),
    ("binance", 400, {}, {"code": -2010, "msg": "Account has insufficient balance for requested action."}, True,
     OrderRejectedError, "-2010", "insufficient balance"),
    ("binance", 400, {}, {"code": -2022, "msg": "ReduceOnly Order is rejected."}, True,
     OrderRejectedError, "-2022", "ReduceOnly Order is rejected."),
    ("binance", 401, {}, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, False,
     NeedsUserError, "-2015", "Invalid API-key"),
]


def _raise_like_ccxt(exchange: str, status: int, headers: dict[str, str], body: dict[str, Any]) -> Exception:
    client = getattr(ccxt, exchange)()
    text = json.dumps(body)
    url = "https://example.invalid/api/v5/trade/batch-orders" if exchange == "okx" else \
        "https://example.invalid/v5/order/create" if exchange == "bybit" else "https://example.invalid/fapi/v1/order"
    try:
        client.handle_errors(status, "", url, "POST", headers, text, body, {}, "")
        client.handle_http_status_code(status, "", url, "POST", text)
    except Exception as exc:  # noqa: BLE001 - the exception under test
        return exc
    raise AssertionError(f"ccxt raised nothing for {body}")


@pytest.mark.parametrize(("exchange", "status", "headers", "body", "ordering", "ours", "code", "words"), TABLE)
@pytest.mark.parametrize("with_body", [True, False], ids=["answer-kept", "message-only"])
def test_each_exchange_error_keeps_its_code_and_words(
    exchange, status, headers, body, ordering, ours, code, words, with_body
) -> None:
    exc = _raise_like_ccxt(exchange, status, headers, body)
    if not with_body and code not in str(exc):
        # ccxt re-raised with the words only; the broker keeps the failed answer's body.
        assert words.lower() in str(exc).lower()
        return
    err = translate_error(
        exc, "acc", ordering=ordering, symbol="BTC/USDT:USDT", profile=profile_for(exchange),
        headers=headers, body=body if with_body else None, secrets=(KEY, SECRET, PASSPHRASE),
    )
    assert isinstance(err, ours), (type(exc), err)
    assert err.code == code
    assert words.lower() in err.reason.lower() and f"code {code}" in err.reason
    assert "All operations failed" not in err.reason
    for secret in (KEY, SECRET, PASSPHRASE):
        assert secret not in err.reason and secret not in err.describe()


def test_each_exchange_says_how_long_to_wait_in_its_own_way() -> None:
    okx = translate_error(_raise_like_ccxt("okx", 429, {}, TABLE[5][3]), "a", profile=profile_for("okx"),
                          body=TABLE[5][3])
    bybit_headers = TABLE[10][2]
    bybit = translate_error(_raise_like_ccxt("bybit", 200, bybit_headers, TABLE[10][3]), "a",
                            profile=profile_for("bybit"), headers=bybit_headers, body=TABLE[10][3])
    binance = translate_error(ccxt.DDoSProtection("binance 429"), "a", profile=profile_for("binance"),
                              headers={"Retry-After": "7"})
    assert isinstance(okx, RateLimitedError) and okx.retry_after == 2.0  # one OKX window
    assert isinstance(bybit, RateLimitedError) and 0 < (bybit.retry_after or 0) <= 30
    assert isinstance(binance, RateLimitedError) and binance.retry_after == 7.0


def test_a_credential_echoed_anywhere_in_exchange_text_is_scrubbed() -> None:
    from guard_app.exchanges.scrub import scrub

    text = f"bybit error sign! origin_string[17000{KEY}5000] key={KEY} pw={PASSPHRASE} s={SECRET}%2B"
    clean = scrub(text, (KEY, SECRET, PASSPHRASE))
    assert KEY not in clean and SECRET not in clean and PASSPHRASE not in clean
    assert "origin_string[...]" in clean
    assert isinstance(translate_error(ccxt.ExchangeError(text), "a", secrets=(KEY,)), BrokerError)
