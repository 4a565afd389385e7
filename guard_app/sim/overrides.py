"""Point a ccxt ``binance`` client at the simulator.

``ccxt_overrides(base_url)`` returns a dict to deep-merge into ccxt's constructor config:
every key of ``ccxt.binance().urls["api"]`` mapped to the simulator with the same path
(``/api/v3``, ``/fapi/v1``, ``/sapi/v1``, ``/futures/data`` ...), so the real ccxt code
path runs unmodified.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

__all__ = ["api_paths", "ccxt_overrides"]


@cache
def api_paths() -> dict[str, str]:
    """ccxt's binance API url keys and the path part of each real URL."""
    import ccxt  # imported lazily: the simulator itself doesn't need ccxt

    urls = ccxt.binance().urls["api"]
    return {key: urlsplit(url).path for key, url in urls.items() if isinstance(url, str)}


def ccxt_overrides(base_url: str) -> dict[str, Any]:
    """Config to deep-merge into ``ccxt.binance({...})`` so it talks to the simulator."""
    base = base_url.rstrip("/")
    return {"urls": {"api": {key: base + path for key, path in api_paths().items()}}}
