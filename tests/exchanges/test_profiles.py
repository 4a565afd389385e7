"""Exchange profiles as data: client-id rules, hedge legs, margin mode, batch sizes,
capabilities of other ccxt exchanges and the config check built on them."""

from __future__ import annotations

import pytest

from guard_app.core.config import parse_config
from guard_app.core.errors import ConfigError
from guard_app.core.models import Market
from guard_app.exchanges import describe_capabilities
from guard_app.exchanges.profiles import Profile, profile_for

# Ids the core generates (``ga<cycle>n<index>r<nonce>``) pass unchanged everywhere.
CORE_ID = "ga1207n3r5f2a9c0d1e2f3a4b"


@pytest.mark.parametrize(("exchange", "given", "sent"), [
    ("okx", CORE_ID, CORE_ID),
    ("binance", CORE_ID, CORE_ID),
    ("bybit", CORE_ID, CORE_ID),
    ("okx", "ga-12-0-3fa2b1", "ga1203fa2b1"),          # OKX: letters and digits only
    ("okx", "x" * 40, "x" * 32),                       # OKX: at most 32
    ("binance", "ga-12.0:3/fa_2b1", "ga-12.0:3/fa_2b1"),  # Binance allows . : / _ -
    ("binance", "a" * 40, "a" * 36),
    ("bybit", "ga-12.0:3_x", "ga-1203_x"),             # Bybit: letters, digits, - and _
])
def test_client_ids_are_checked_and_adapted_to_each_exchanges_rule(exchange, given, sent) -> None:
    profile = profile_for(exchange)
    assert profile.client_id(given) == sent
    assert profile.client_id_ok(sent)


@pytest.mark.parametrize(("exchange", "position", "params"), [
    ("binance", {"info": {"positionSide": "BOTH"}, "side": "long"}, {"reduceOnly": True}),
    ("binance", {"info": {"positionSide": "SHORT"}, "side": "short", "hedged": True}, {"positionSide": "SHORT"}),
    ("okx", {"info": {"posSide": "net", "mgnMode": "isolated"}, "marginMode": "isolated"},
     {"marginMode": "isolated", "reduceOnly": True}),
    ("okx", {"info": {"posSide": "long"}, "marginMode": "cross", "hedged": True, "side": "long"},
     {"marginMode": "cross", "posSide": "long"}),
    ("bybit", {"info": {"positionIdx": "0"}}, {"reduceOnly": True}),
    ("bybit", {"info": {"positionIdx": "2"}, "hedged": True, "side": "short"}, {"reduceOnly": True, "positionIdx": 2}),
    # Any other exchange: ccxt's unified fields only.
    ("kucoinfutures", {"hedged": True, "side": "long", "marginMode": "isolated"},
     {"reduceOnly": True, "hedged": True, "marginMode": "isolated"}),
])
def test_a_close_names_the_positions_leg_and_margin_mode_and_can_only_reduce(exchange, position, params) -> None:
    assert profile_for(exchange).close_params(position) == params


def test_batch_sizes_follow_each_exchanges_batch_endpoint() -> None:
    assert profile_for("binance").batch_size(Market.SWAP) == 5
    assert profile_for("binance").batch_size(Market.SPOT) == 1  # spot has no batch orders
    assert profile_for("okx").batch_size(Market.SWAP) == 20
    assert profile_for("bybit").batch_size(Market.SPOT) == 10
    assert type(profile_for("kraken")) is Profile and profile_for("kraken").batch_size(Market.SWAP) == 1


def test_only_the_three_profiles_replace_ccxts_throttle() -> None:
    assert all(profile_for(e).owns_rate_limit for e in ("binance", "okx", "bybit"))
    assert not profile_for("kraken").owns_rate_limit


def test_capabilities_say_plainly_what_an_exchange_cannot_do() -> None:
    okx = describe_capabilities("okx", "swap")
    assert okx.profile == "okx" and okx.fetch_positions and okx.cancel_all_orders and okx.blocking is None
    kraken = describe_capabilities("kraken", "swap")  # ccxt's kraken is spot only
    assert kraken.profile == "generic" and kraken.blocking and "kraken" in kraken.blocking
    unknown = describe_capabilities("nosuchexchange", "spot")
    assert unknown.blocking and "not a ccxt exchange id" in unknown.blocking
    data = okx.as_dict()
    assert data["exchange"] == "okx" and isinstance(data["problems"], tuple)


def _config(exchange: str, market: str) -> str:
    return f"""
[[accounts]]
id = "a"
user = "u"
exchange = "{exchange}"
market = "{market}"
max_positions = 3
"""


def test_a_swap_account_on_an_exchange_that_cant_list_positions_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config("kraken", "swap"))
    assert info.value.key == "accounts[0].market" and "kraken" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config(_config("bitstamp", "swap"))  # swaps, but no fetchPositions in ccxt
    assert "no fetchPositions" in str(info.value) and "neither count nor close" in str(info.value)
    assert parse_config(_config("okx", "swap")).accounts[0].exchange == "okx"
    assert parse_config(_config("kraken", "spot")).accounts[0].market is Market.SPOT
