"""Point a ccxt ``binance``, ``okx`` or ``bybit`` client at the simulator.

``ccxt_overrides(base_url, exchange="binance")`` returns a dict to deep-merge into ccxt's
constructor config: every key of ``ccxt.<exchange>().urls["api"]`` mapped to the
simulator with the same path, so the real ccxt code path runs unmodified:

- binance: ``/api/v3``, ``/fapi/v1``, ``/sapi/v1``, ``/futures/data`` ...;
- okx: ``rest`` → the base URL (ccxt appends ``/api/v5/...``);
- bybit: ``spot``, ``futures``, ``v2``, ``public``, ``private`` → the base URL (ccxt
  appends ``/v5/...``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_PATHS", "EXCHANGE_API_PATHS", "api_paths", "ccxt_overrides"]


# ccxt's binance API url keys and the path part of each real URL. Kept as a table so
# pointing a client at the simulator doesn't import ccxt (about a second) on the GUI
# thread; tests/sim/test_overrides.py checks it against ccxt's own URLs.
API_PATHS: dict[str, str] = {
    "sapi": "/sapi/v1", "sapiV2": "/sapi/v2", "sapiV3": "/sapi/v3", "sapiV4": "/sapi/v4",
    "dapiPublic": "/dapi/v1", "dapiPrivate": "/dapi/v1", "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data", "eapiPublic": "/eapi/v1", "eapiPrivate": "/eapi/v1",
    "fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data", "public": "/api/v3", "private": "/api/v3", "v1": "/api/v1",
    "papi": "/papi/v1", "papiV2": "/papi/v2",
}


# The same for okx (one templated host) and bybit (five keys, one host each).
EXCHANGE_API_PATHS: dict[str, dict[str, str]] = {
    "binance": API_PATHS,
    "okx": {"rest": ""},
    "bybit": {"spot": "", "futures": "", "v2": "", "public": "", "private": ""},
}


def api_paths(exchange: str = "binance") -> dict[str, str]:
    """ccxt's API url keys of ``exchange`` and the path part of each real URL."""
    try:
        return dict(EXCHANGE_API_PATHS[exchange])
    except KeyError:
        raise ValueError(f"the simulator doesn't speak {exchange!r} (only {', '.join(EXCHANGE_API_PATHS)})") from None


def ccxt_overrides(base_url: str, exchange: str = "binance") -> dict[str, Any]:
    """Config to deep-merge into ``ccxt.<exchange>({...})`` so it talks to the simulator."""
    base = base_url.rstrip("/")
    return {"urls": {"api": {key: base + path for key, path in api_paths(exchange).items()}}}
