"""The simulator's URL table must match the URLs ccxt's binance class really uses."""

from urllib.parse import urlsplit

import ccxt

from guard_app.sim.overrides import API_PATHS, ccxt_overrides


def test_path_table_matches_ccxt() -> None:
    urls = ccxt.binance().urls["api"]
    live = {key: urlsplit(url).path for key, url in urls.items() if isinstance(url, str)}
    assert live == API_PATHS


def test_overrides_cover_every_api_key() -> None:
    api = ccxt_overrides("http://127.0.0.1:1/")["urls"]["api"]
    assert set(api) == set(ccxt.binance().urls["api"])
    assert api["fapiPrivateV3"] == "http://127.0.0.1:1/fapi/v3"


import pytest  # noqa: E402

from guard_app.sim.overrides import EXCHANGE_API_PATHS  # noqa: E402


@pytest.mark.parametrize("name", ["okx", "bybit"])
def test_okx_and_bybit_tables_match_ccxt(name) -> None:
    urls = getattr(ccxt, name)().urls["api"]
    # ccxt templates the host ("https://{hostname}", "https://api.{hostname}"); the path is empty.
    live = {key: urlsplit(url.replace("{hostname}", "example.com")).path
            for key, url in urls.items() if isinstance(url, str)}
    assert live == EXCHANGE_API_PATHS[name]
    api = ccxt_overrides("http://127.0.0.1:1/", name)["urls"]["api"]
    assert set(api) == set(urls) and set(api.values()) == {"http://127.0.0.1:1"}


def test_unknown_exchange_is_named() -> None:
    with pytest.raises(ValueError, match="kraken"):
        ccxt_overrides("http://127.0.0.1:1", "kraken")


def test_sim_endpoints_fixture_serves_all_three(sim_endpoints) -> None:
    ends = sim_endpoints()
    assert ends.base_url == ends.server.base_url
    assert ends.overrides["okx"] == {"urls": {"api": {"rest": ends.base_url}}}
    assert set(ends.overrides["bybit"]["urls"]["api"]) == {"spot", "futures", "v2", "public", "private"}
    client = ccxt.okx({"enableRateLimit": False, "timeout": 5000, **ends.overrides["okx"]})
    client.options["fetchMarkets"] = {"types": ["swap"]}
    assert client.load_markets()["BTC/USDT:USDT"]["contractSize"] == 0.01
