"""The config loader: the docs/config.md contract, defaults, and one clear error per mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guard_app.core.config import (
    EXAMPLE_CONFIG,
    AccountConfig,
    AppConfig,
    EnforcerConfig,
    UserConfig,
    load_config,
    parse_config,
    validate_account,
)
from guard_app.core.errors import ConfigError
from guard_app.core.models import Caps, Market
from guard_app.core.paths import default_config_path, default_data_dir

MINIMAL_ACCOUNT = """
[[accounts]]
id = "a1"
user = "alice"
exchange = "binance"
max_positions = 3
"""


def design_example() -> str:
    """The example config exactly as docs/config.md shows it (the user-facing contract)."""
    design = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    text = design.read_text(encoding="utf-8")
    match = re.search(r"```toml\n(.*?)```", text, re.S)
    assert match, "docs/config.md has no toml example"
    return match.group(1)


def test_design_example_parses_to_the_documented_values() -> None:
    cfg = parse_config(design_example(), "docs/config.md")
    assert cfg.enforcer == EnforcerConfig(interval_seconds=60.0, dry_run=False)
    assert cfg.accounts == (
        AccountConfig(
            id="alice-binance-spot",
            user="alice",
            exchange="binance",
            max_positions=8,
            market=Market.SPOT,
            quote="USDT",
            max_notional=25000.0,
            min_position_value=1.0,
            ignore_assets=("BNB",),
            sandbox=False,
            ccxt={},
        ),
    )
    assert cfg.users == {"alice": UserConfig("alice", max_positions=12)}
    assert cfg.source == "docs/config.md"


def test_example_constant_matches_design() -> None:
    assert parse_config(EXAMPLE_CONFIG) == parse_config(design_example())


def test_full_config_round_trips_to_dataclasses() -> None:
    text = """
[enforcer]
interval_seconds = 15
dry_run = true

[[accounts]]
id = "alice-binance-spot"
user = "alice"
exchange = "binance"
market = "spot"
quote = "usdc"
max_positions = 0
max_notional = 1000.5
min_position_value = 0
ignore_assets = ["bnb", "USDT"]
sandbox = true
[accounts.ccxt]
timeout = 5000
options = { defaultType = "spot", nested = { a = 1 } }
urls = { api = { public = "http://127.0.0.1:9000" } }

[[accounts]]
id = "bob_okx.swap"
user = "bob"
exchange = "okx"
market = "swap"
max_positions = 2

[users.alice]
max_positions = 5
max_notional = 2e4

[users.carol]
max_notional = 100
"""
    cfg = parse_config(text, "full.toml")
    alice, bob = cfg.accounts
    assert alice == AccountConfig(
        id="alice-binance-spot",
        user="alice",
        exchange="binance",
        max_positions=0,
        market=Market.SPOT,
        quote="USDC",
        max_notional=1000.5,
        min_position_value=0.0,
        ignore_assets=("BNB", "USDT"),
        sandbox=True,
        ccxt={
            "timeout": 5000,
            "options": {"defaultType": "spot", "nested": {"a": 1}},
            "urls": {"api": {"public": "http://127.0.0.1:9000"}},
        },
    )
    assert bob.market is Market.SWAP and bob.id == "bob_okx.swap"
    assert alice.caps == Caps(0, 1000.5)
    assert cfg.enforcer == EnforcerConfig(interval_seconds=15.0, dry_run=True)
    assert isinstance(cfg.enforcer.interval_seconds, float)
    # A [users.X] table for a user without accounts is kept.
    assert cfg.users == {
        "alice": UserConfig("alice", max_positions=5, max_notional=20000.0),
        "carol": UserConfig("carol", max_positions=None, max_notional=100.0),
    }
    assert cfg.user_names == ["alice", "bob", "carol"]
    assert cfg.account("bob_okx.swap") is bob
    assert cfg.accounts_of("alice") == [alice]


def test_defaults_are_applied() -> None:
    cfg = parse_config(MINIMAL_ACCOUNT)
    (account,) = cfg.accounts
    assert account.market is Market.SPOT
    assert account.quote == "USDT"
    assert account.min_position_value == 1.0
    assert account.max_notional is None
    assert account.ignore_assets == ()
    assert account.sandbox is False
    assert account.ccxt == {}
    assert cfg.enforcer == EnforcerConfig(interval_seconds=60.0, dry_run=False)
    assert cfg.users == {}


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "[enforcer]\n", "accounts = []\n"])
def test_a_config_without_accounts_is_valid(text: str) -> None:
    cfg = parse_config(text)
    assert cfg.accounts == ()
    assert cfg.user_names == []


def account(**fields: object) -> str:
    """An [[accounts]] table: the minimal valid one with ``fields`` replaced (None drops)."""
    base: dict[str, object] = {
        "id": '"a1"',
        "user": '"alice"',
        "exchange": '"binance"',
        "max_positions": "3",
    }
    base.update(fields)
    lines = [f"{k} = {v}" for k, v in base.items() if v is not None]
    return "[[accounts]]\n" + "\n".join(lines) + "\n"


# (case id, config text, expected key, a fragment the problem must contain)
BAD_CONFIGS = [
    ("unknown top key", "acounts = []\n", "acounts", "did you mean accounts?"),
    (
        "unknown account key with suggestion",
        MINIMAL_ACCOUNT + account(id='"a2"') + account(id='"a3"', max_postions="3"),
        "accounts[2].max_postions",
        "unknown key (did you mean max_positions?)",
    ),
    ("unknown enforcer key", "[enforcer]\ninterval = 5\n", "enforcer.interval", "did you mean interval_seconds?"),
    ("unknown user key", "[users.alice]\nmax_position = 5\n", "users.alice.max_position", "did you mean max_positions?"),
    ("wrong type string for int", account(max_positions='"8"'), "accounts[0].max_positions", "whole number"),
    ("bool for int", account(max_positions="true"), "accounts[0].max_positions", "not true"),
    ("float for int", account(max_positions="8.0"), "accounts[0].max_positions", "whole number"),
    ("bool for number", account(max_notional="true"), "accounts[0].max_notional", "must be a number"),
    ("negative count cap", account(max_positions="-1"), "accounts[0].max_positions", "0 or more"),
    ("zero notional cap", account(max_notional="0"), "accounts[0].max_notional", "more than 0"),
    ("negative notional cap", account(max_notional="-5"), "accounts[0].max_notional", "more than 0"),
    ("nan notional cap", account(max_notional="nan"), "accounts[0].max_notional", "finite"),
    ("negative dust threshold", account(min_position_value="-0.1"), "accounts[0].min_position_value", "0 or more"),
    ("user cap negative", "[users.bob]\nmax_positions = -2\n", "users.bob.max_positions", "0 or more"),
    ("user cap bool", "[users.bob]\nmax_notional = false\n", "users.bob.max_notional", "must be a number"),
    ("interval zero", "[enforcer]\ninterval_seconds = 0\n", "enforcer.interval_seconds", "at least 1"),
    ("interval too small", "[enforcer]\ninterval_seconds = 0.2\n", "enforcer.interval_seconds", "at least 1"),
    ("interval string", '[enforcer]\ninterval_seconds = "60"\n', "enforcer.interval_seconds", "number"),
    ("dry_run not bool", "[enforcer]\ndry_run = 1\n", "enforcer.dry_run", "true or false"),
    ("sandbox not bool", account(sandbox='"no"'), "accounts[0].sandbox", "true or false"),
    (
        "duplicate id",
        account() + account(id='"a2"') + account(),
        "accounts[2].id",
        "duplicate account id 'a1' (already used by accounts[0])",
    ),
    ("unknown exchange", account(exchange='"binanse"'), "accounts[0].exchange", "did you mean binance?"),
    ("exchange not a string", account(exchange="1"), "accounts[0].exchange", "string"),
    ("bad market", account(market='"margin"'), "accounts[0].market", "spot, swap, future"),
    ("market wrong case", account(market='"Spot"'), "accounts[0].market", "unknown market"),
    *[
        (
            f"{name} in ccxt table",
            account() + f'[accounts.ccxt]\n{name} = "x"\n',
            f"accounts[0].ccxt.{name}",
            "keys belong in the keyring",
        )
        for name in ("apiKey", "secret", "password", "uid", "privateKey", "api_key", "walletAddress")
    ],
    ("ccxt not a table", account(ccxt='"x"'), "accounts[0].ccxt", "table"),
    *[
        (f"missing {key}", account(**{key: None}), f"accounts[0].{key}", "required key is missing")
        for key in ("id", "user", "exchange", "max_positions")
    ],
    ("empty id", account(id='""'), "accounts[0].id", "must not be empty"),
    ("unsafe id", account(id='"alice/binance"'), "accounts[0].id", "not a valid name"),
    ("id with space", account(id='"alice binance"'), "accounts[0].id", "not a valid name"),
    ("unsafe user name", '[users."a b"]\nmax_positions = 1\n', "users.a b", "not a valid name"),
    ("quote not a code", account(quote='"US DT"'), "accounts[0].quote", "currency code"),
    ("ignore_assets not a list", account(ignore_assets='"BNB"'), "accounts[0].ignore_assets", "list"),
    ("ignore_assets item", account(ignore_assets='["BNB", 3]'), "accounts[0].ignore_assets[1]", "string"),
    ("single [accounts] table", "[accounts]\nid = 'a'\n", "accounts", "[[accounts]]"),
    ("account not a table", "accounts = [1]\n", "accounts[0]", "must be a table"),
    ("users not tables", "users = 3\n", "users", "[users.NAME]"),
    ("user not a table", "[users]\nalice = 3\n", "users.alice", "must be a table"),
    ("enforcer not a table", "enforcer = 1\n", "enforcer", "table"),
]


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [pytest.param(text, key, frag, id=case) for case, text, key, frag in BAD_CONFIGS],
)
def test_bad_config_names_the_key_and_the_problem(text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.toml")
    error = caught.value
    assert error.key == key
    assert fragment in error.problem
    assert error.source == "bad.toml"
    message = str(error)
    assert message == f"bad.toml: {key}: {error.problem}"
    assert "\n" not in message


def test_unknown_key_suggestion_matches_brief_example() -> None:
    text = MINIMAL_ACCOUNT + account(id='"a2"') + account(id='"a3"', max_postions="3")
    with pytest.raises(ConfigError, match=re.escape(
        "accounts[2].max_postions: unknown key (did you mean max_positions?)"
    )):
        parse_config(text)


def test_unknown_key_without_close_match_lists_allowed_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[enforcer]\nzzz = 1\n")
    assert caught.value.key == "enforcer.zzz"
    assert "allowed: interval_seconds, dry_run" in caught.value.problem


def test_keys_in_ccxt_table_never_echo_the_value() -> None:
    text = account() + '[accounts.ccxt]\nsecret = "hunter2-very-secret"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert "hunter2" not in str(caught.value)
    assert "guard-app keys set a1" in str(caught.value)


def test_invalid_toml_is_a_config_error_with_the_position() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[[accounts]\nid = 1\n", "broken.toml")
    assert caught.value.key == ""
    assert str(caught.value).startswith("broken.toml: not valid TOML:")
    assert "line 1" in str(caught.value)


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL_ACCOUNT, encoding="utf-8")
    cfg = load_config(path)
    assert isinstance(cfg, AppConfig)
    assert cfg.source == str(path)
    assert [a.id for a in cfg.accounts] == ["a1"]


def test_load_config_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(account(max_positions="-3"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}: accounts[0].max_positions:")


def test_missing_config_file_says_where_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "config.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "create one" in message and "--config PATH" in message


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_validate_account_is_the_same_rule_set_for_dialogs() -> None:
    good = validate_account(
        {"id": "x", "user": "u", "exchange": "kraken", "max_positions": 1, "quote": "eur"},
        "dialog",
    )
    assert good.quote == "EUR" and good.exchange == "kraken"
    with pytest.raises(ConfigError) as caught:
        validate_account(
            {"id": "x", "user": "u", "exchange": "kraken", "max_positions": True}, "dialog"
        )
    assert caught.value.key == "dialog.max_positions"


def test_ccxt_table_is_copied_not_shared() -> None:
    raw = {"id": "x", "user": "u", "exchange": "binance", "max_positions": 1,
           "ccxt": {"options": {"a": 1}}}
    cfg = validate_account(raw, "accounts[0]")
    raw["ccxt"]["options"]["a"] = 2  # type: ignore[index]
    assert cfg.ccxt == {"options": {"a": 1}}


def test_path_overrides_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GUARD_APP_CONFIG", raising=False)
    monkeypatch.delenv("GUARD_APP_DATA_DIR", raising=False)
    assert default_config_path().name == "config.toml"
    assert "guard-app" in default_config_path().parts[-2]
    assert "guard-app" in default_data_dir().name
    monkeypatch.setenv("GUARD_APP_CONFIG", str(tmp_path / "c.toml"))
    monkeypatch.setenv("GUARD_APP_DATA_DIR", str(tmp_path / "data"))
    assert default_config_path() == tmp_path / "c.toml"
    assert default_data_dir() == tmp_path / "data"
