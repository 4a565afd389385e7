"""Exchange facts as plain data, for the config loader, the CLI and the GUI.

No ccxt type leaks out of here. ccxt is imported lazily: importing it takes about half
a second, and the window must not wait for it on the GUI thread.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def exchange_ids() -> tuple[str, ...]:
    """Every exchange id ccxt knows, sorted."""
    import ccxt

    return tuple(sorted(ccxt.exchanges))


@functools.lru_cache(maxsize=256)
def _exchange_facts(exchange_id: str) -> tuple[bool, bool]:
    """(needs a passphrase, offers a sandbox) for a ccxt exchange id.

    Constructing a ccxt client costs a few milliseconds, hence the cache.
    """
    if exchange_id not in exchange_ids():
        return False, True
    import ccxt

    try:
        client = getattr(ccxt, exchange_id)()
    except Exception:  # noqa: BLE001 - a broken exchange class must not break a caller
        return False, True
    needs_password = bool(client.requiredCredentials.get("password"))
    offers_sandbox = bool(client.urls.get("test"))
    return needs_password, offers_sandbox


def needs_passphrase(exchange_id: str) -> bool:
    """Whether this exchange needs a passphrase besides key and secret (OKX does)."""
    return _exchange_facts(exchange_id)[0]


def sandbox_offered(exchange_id: str) -> bool:
    """Whether ccxt knows a sandbox/testnet URL for this exchange."""
    return _exchange_facts(exchange_id)[1]
