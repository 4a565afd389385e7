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
