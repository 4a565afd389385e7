"""State stores: forced-unwind flags, the audit journal, cycle ids, metrics and leases.

``from guard_app.core.state import StateStore`` keeps working as before:
``StateStore(data_dir)`` opens the SQLite file in the data dir. :func:`open_state`
opens whichever store the config's ``[state]`` section selects (SQLite by default,
PostgreSQL for a desk), see docs/desk.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from guard_app.core.state.base import (
    DURABLE_KINDS,
    JOURNAL_KINDS,
    JournalEntry,
    Metrics,
    StateDump,
    StateStore,
    StateUnavailableError,
    UnwindFlag,
    holder_name,
)
from guard_app.core.state.sqlite import DB_FILENAME, SqliteStateStore

if TYPE_CHECKING:
    from guard_app.core.config import StateConfig
    from guard_app.core.secrets import SecretStore

__all__ = [
    "DB_FILENAME",
    "DURABLE_KINDS",
    "JOURNAL_KINDS",
    "JournalEntry",
    "Metrics",
    "SqliteStateStore",
    "StateDump",
    "StateStore",
    "StateUnavailableError",
    "UnwindFlag",
    "holder_name",
    "open_state",
]


def open_state(
    data_dir: Path, config: StateConfig | None = None, secrets: SecretStore | None = None
) -> StateStore:
    """The store ``config`` selects: PostgreSQL when ``url`` is set, else SQLite in ``data_dir``.

    For PostgreSQL the password comes from the keyring entry ``state-db`` when one is
    stored (read through ``secrets``), else from libpq's own ways (PGPASSWORD, ~/.pgpass).
    Raises StateError when the store can't be opened.
    """
    if config is None or not config.url:
        return SqliteStateStore(data_dir)
    from guard_app.core.state.postgres import PostgresStateStore

    return PostgresStateStore(config.url, password=_keyring_password(secrets))


def _keyring_password(secrets: SecretStore | None) -> str | None:
    import logging

    from guard_app.core.errors import SecretStoreError
    from guard_app.core.secrets import SecretStore

    try:
        return (secrets or SecretStore()).state_password()
    except SecretStoreError as exc:
        # No usable keyring (a headless service): libpq's own ways still work.
        logging.getLogger("guard_app.state").info(
            "no keyring for the state database password (%s); using PGPASSWORD or ~/.pgpass", exc
        )
        return None
