"""Everything that touches ccxt lives in this package (an import-linter contract keeps it so).

* :mod:`guard_app.exchanges.broker` — the generic ccxt broker: reads an account into an
  ``AccountSnapshot``, closes positions, translates every ccxt error into guard-app's types.
* :mod:`guard_app.exchanges.catalog` — exchange facts as plain data (ids, passphrase,
  sandbox, ``describe_capabilities``), so the GUI and the config never import ccxt themselves.
* :mod:`guard_app.exchanges.profiles` — one small profile per exchange (Binance, OKX,
  Bybit) for what differs, and the generic one for every other ccxt exchange.
* :mod:`guard_app.exchanges.ratelimit` — the limiter that knows each exchange's windows.
* :mod:`guard_app.exchanges.scrub` — credentials out of every exchange text.

``make_broker`` is the :data:`guard_app.core.ports.BrokerFactory` the app wires into
the enforcer and ``guard-app status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guard_app.core import config as _config
from guard_app.exchanges.catalog import describe_capabilities, exchange_ids, market_problem

if TYPE_CHECKING:
    from guard_app.core.config import AccountConfig
    from guard_app.core.secrets import ApiKeys
    from guard_app.exchanges.broker import Broker

# The config loader checks exchange ids against ccxt's list, and an account's market type
# against what the exchange can do (a swap account needs fetchPositions), through this catalog.
_config.use_exchange_catalog(exchange_ids, market_problem)


def make_broker(account: AccountConfig, keys: ApiKeys) -> Broker:
    """The broker for one account (ccxt is imported on first use, not at start-up)."""
    from guard_app.exchanges.broker import Broker

    return Broker(account, keys)


__all__ = ["describe_capabilities", "exchange_ids", "make_broker", "market_problem"]
