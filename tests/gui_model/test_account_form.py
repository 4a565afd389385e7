"""The accounts form model without widgets: text -> account table, error keys -> fields."""

from __future__ import annotations

import pytest

from guard_app.core.config import AccountConfig
from guard_app.core.errors import TemporaryBrokerError
from guard_app.gui.model.account_form import (
    ConnectionTestTimeout,
    connection_test_timeout,
    describe_test_failure,
    field_for_key,
    form_to_account,
    number_or_text,
)

TYPED = {"id": " a1 ", "user": "alice", "exchange": "binance", "market": "spot",
         "quote": "", "max_positions": "3", "max_notional": "1500.5",
         "min_position_value": "", "ignore_assets": "bnb, , fdusd", "ccxt": "",
         "user_max_positions": "12"}


def test_the_form_becomes_the_table_the_loader_checks_without_defaults_it_did_not_have() -> None:
    data, user_cap, local = form_to_account(TYPED, sandbox=False, existing={})
    assert data == {"id": "a1", "user": "alice", "exchange": "binance", "max_positions": 3,
                    "max_notional": 1500.5, "ignore_assets": ["bnb", "fdusd"]}
    assert user_cap == 12 and local == {}
    # an edited account keeps the keys its file had, even at their default value
    data, _, _ = form_to_account(TYPED, sandbox=False, existing={"sandbox": False})
    assert data["sandbox"] is False


def test_bad_text_is_kept_for_the_loader_and_bad_json_is_named_with_its_line() -> None:
    typed = {**TYPED, "max_positions": "many", "ccxt": '{"timeout": }'}
    data, _, local = form_to_account(typed, sandbox=True, existing={})
    assert data["max_positions"] == "many" and data["sandbox"] is True
    assert local["ccxt"].startswith("not valid JSON (line 1)")
    assert number_or_text("") is None and number_or_text("7") == 7


@pytest.mark.parametrize(("key", "field"), [
    ("accounts[2].max_positions", ("max_positions", "")),
    ("ccxt.apiKey", ("ccxt", "apiKey")),
    ("users.alice.max_positions", ("user_max_positions", "")),
    ("users.alice", ("user", "")),
    ("enforcer.interval_seconds", (None, "enforcer.interval_seconds")),
])
def test_a_config_error_key_marks_its_field(key: str, field: tuple[str | None, str]) -> None:
    assert field_for_key(key) == field


def test_a_connection_test_ends_within_the_clients_timeout_and_says_why() -> None:
    account = AccountConfig("a1", "alice", "binance", 3, ccxt={"timeout": 2500})
    assert connection_test_timeout(account) == 2.5
    assert connection_test_timeout(AccountConfig("a1", "alice", "binance", 3)) == 10.0
    assert describe_test_failure(ConnectionTestTimeout(2.5)).startswith(
        "exchange unreachable: no answer within 2 s")
    assert describe_test_failure(TemporaryBrokerError("a1", "exchange unreachable: GET x")) == \
        "exchange unreachable: GET x"
