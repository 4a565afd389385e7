"""What every state store offers: flags, journal, cycle ids, metrics and leases.

:class:`StateStore` is the interface the enforcer, the CLI and the window use. Two
implementations keep it: :class:`~guard_app.core.state.sqlite.SqliteStateStore` (one
file in the data dir, the default for one trader) and
:class:`~guard_app.core.state.postgres.PostgresStateStore` (one database for a desk,
selected by ``[state] url``). The same tests (``tests/core/test_state.py``) run
against both, so their behaviour can't drift apart.

``StateStore(data_dir)`` still opens the SQLite store, as it always did;
:func:`guard_app.core.state.open_state` picks the store the config asks for.

Leases (a desk's active/standby per account): an enforcer holds an account while its
lease is unexpired; :meth:`StateStore.acquire_leases` both takes free or expired
leases and renews the caller's own in one step, so a healthy holder is never
displaced (holders are stable) and a dead or frozen one loses its accounts once its
lease runs out. Holder names are ``HOST:PID`` (:func:`holder_name`).
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

__all__ = ["JournalEntry", "Metrics", "StateDump", "StateStore", "StateUnavailableError",
           "UnwindFlag", "holder_name"]

from guard_app.core.errors import StateError
from guard_app.core.models import JournalEntry, UnwindFlag
from guard_app.core.secrets import is_credential_key

JOURNAL_KINDS = frozenset(
    {
        "cycle_start",
        "cycle_end",
        "snapshot",
        "over_cap",
        "decision",
        "order_sent",
        "order_filled",
        "order_rejected",
        "order_unknown",
        "account_error",
        "unwind_on",
        "unwind_off",
        "intervention",
        "unwind_progress",
        "order_skipped",
        "orders_cancelled",
        "unwind_round",
    }
)

# Entries that must survive a power cut once written: a forgotten order_sent could
# let a retry close the same position twice.
DURABLE_KINDS = frozenset({"order_sent", "unwind_on", "unwind_off"})



class StateUnavailableError(StateError):
    """The shared database can't be reached right now (the store reconnects by itself).

    Raised only by stores that can lose their server (PostgreSQL); the enforcer keeps
    enforcing the accounts it held, with the flags it last saw.
    """


@dataclass(frozen=True)
class Metrics:
    """Headline numbers for the dashboard.

    ``interventions_today`` counts since local midnight. The back-under-cap durations
    are how long an account stayed over its cap before it was back under (the most
    recent episode and the worst one); None until one has ended.
    """

    interventions: int
    interventions_today: int
    unwind_activations: int
    last_back_under_cap_seconds: float | None
    worst_back_under_cap_seconds: float | None
    over_cap_now: tuple[str, ...]


@dataclass(frozen=True)
class StateDump:
    """Everything a store holds, for ``guard-app state copy`` (moving a desk in)."""

    flags: tuple[UnwindFlag, ...]
    journal: tuple[JournalEntry, ...]
    cycle_id: int
    over_cap_now: tuple[tuple[str, float], ...]
    over_cap_episodes: tuple[tuple[str, float, float], ...]


def holder_name() -> str:
    """This process as a lease holder and ``enforced_by`` value: ``HOST:PID``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def utc_iso(ts: float | None = None) -> str:
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_no_secrets(value: Any, where: str = "data") -> None:
    """Raise ValueError if ``value`` holds a key named like a credential."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if is_credential_key(key):
                raise ValueError(
                    f"journal {where} may not contain a key named {key!r}: "
                    "credentials never go in the journal"
                )
            check_no_secrets(inner, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            check_no_secrets(inner, f"{where}[{i}]")


def local_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def check_unwind_args(user: str, by: str) -> None:
    if not user:
        raise ValueError("forced unwind needs a user name")
    if not by:
        raise ValueError("forced unwind needs 'by': who or what changed it")


def flag_change(
    current: UnwindFlag | None, user: str, active: bool, by: str, reason: str, now: float
) -> tuple[UnwindFlag, bool]:
    """The flag after asking to turn it on or off, and whether anything must be written.

    Idempotent: asking for the state it already has changes nothing (the original
    since/by/reason stay); turning off a flag that was never set writes nothing.
    """
    if current is not None and current.active == active:
        return current, False
    flag = UnwindFlag(user, active, utc_iso(now), by, reason)
    return flag, not (current is None and not active)


def unwind_message(user: str, active: bool, by: str, reason: str) -> str:
    """The journal line of a flag change (the same words on every store)."""
    why = f": {reason}" if reason else ""
    if active:
        return (
            f"forced unwind ON for {user} by {by}{why}; every position of {user}'s "
            "accounts will be closed until it is turned off"
        )
    return f"forced unwind OFF for {user} by {by}{why}; normal caps apply again"


def entries_query(
    param: str,
    user_column: str,
    table: str,
    *,
    limit: int,
    account_id: str | None,
    user: str | None,
    kinds: Collection[str] | None,
    after_id: int | None,
    newest_first: bool,
) -> tuple[str, list[Any]] | None:
    """The SELECT behind :meth:`StateStore.entries` (None: nothing can match).

    ``param`` is the driver's placeholder (``?`` or ``%s``); ``user_column`` the
    column holding the user (``user`` is a reserved word in PostgreSQL).
    """
    where: list[str] = []
    args: list[Any] = []
    if account_id is not None:
        where.append(f"account_id = {param}")
        args.append(account_id)
    if user is not None:
        where.append(f"{user_column} = {param}")
        args.append(user)
    if kinds is not None:
        kind_list = sorted(set(kinds))
        if not kind_list:
            return None
        where.append(f"kind IN ({', '.join([param] * len(kind_list))})")
        args.extend(kind_list)
    if after_id is not None:
        where.append(f"id > {param}")
        args.append(after_id)
    sql = (f"SELECT id, ts, kind, message, account_id, {user_column}, cycle_id, data "  # noqa: S608 - only column names and placeholders are interpolated
           f"FROM {table}")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT {param}"
    args.append(max(0, limit))
    return sql, args


class StateStore(ABC):
    """Forced-unwind flags, the audit journal, cycle ids, cap metrics and leases.

    One instance per thread (or process). ``StateStore(data_dir)`` opens the SQLite
    store in ``data_dir`` (what every caller did before a desk store existed); use
    :func:`guard_app.core.state.open_state` to honour ``[state] url``.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> StateStore:
        if cls is StateStore:
            from guard_app.core.state.sqlite import SqliteStateStore

            return super().__new__(SqliteStateStore)
        return super().__new__(cls)

    #: Where the state lives, for messages (a file path, or a URL without password).
    location: str = ""

    # --- forced unwind --------------------------------------------------------------

    @abstractmethod
    def set_forced_unwind(
        self, user: str, active: bool, *, by: str, reason: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> UnwindFlag:
        """Turn a user's forced unwind on or off; returns the flag as it now stands.

        ``data`` adds detail to the journal entry (the API puts the client's
        ``address`` there).

        Idempotent: setting the state it already has changes nothing (the original
        ``since``/``by``/``reason`` stay and nothing is journaled). Turning off a
        flag that was never set writes nothing and returns an inactive flag.
        Durably committed before returning; every other store sees it within about
        a second (:meth:`data_version`, :meth:`on_change`).
        """

    @abstractmethod
    def forced_unwind_flags(self) -> dict[str, UnwindFlag]:
        """Every user whose forced unwind is on, by user name."""

    @abstractmethod
    def flag(self, user: str) -> UnwindFlag | None:
        """The user's flag (on or off) as last changed, or None if it was never set."""

    @abstractmethod
    def data_version(self) -> int:
        """A number that changes when another connection or process commits a change.

        Cheap enough to poll every few hundred milliseconds; this store's own writes
        don't change it.
        """

    def on_change(self, callback: Callable[[], None] | None) -> None:  # noqa: B027 - optional hook
        """Call ``callback`` (from any thread) when another process changes a flag.

        Stores that are told of changes (PostgreSQL's LISTEN/NOTIFY) call it at once;
        the SQLite store can't be told and relies on polling :meth:`data_version`.
        """

    @abstractmethod
    def next_cycle_id(self) -> int:
        """The next enforcer cycle number; keeps counting across restarts."""

    # --- journal --------------------------------------------------------------------

    @abstractmethod
    def journal(
        self,
        kind: str,
        message: str,
        *,
        account_id: str | None = None,
        user: str | None = None,
        cycle_id: int | None = None,
        data: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> int:
        """Append one entry to the audit journal; returns its id.

        ``kind`` is one of :data:`JOURNAL_KINDS` (others are accepted for forward
        compatibility). ``data`` must be JSON-friendly (other values are stored as
        text) and may not hold credentials: keys like ``apiKey``, ``secret`` or
        ``password`` raise ValueError. ``ts`` defaults to now.
        """

    @abstractmethod
    def journal_many(
        self,
        kind: str,
        entries: Sequence[tuple[str, str | None, str | None, int | None, Mapping[str, Any]]],
        *,
        ts: float | None = None,
    ) -> list[int]:
        """Append several entries of one ``kind`` in ONE transaction (one disk sync for
        durable kinds); each entry is ``(message, account_id, user, cycle_id, data)``.
        Returns their ids. Used for ``order_sent``: a batch of closes is on disk before
        any of them leaves, without one sync per order."""

    @abstractmethod
    def entries(
        self,
        *,
        limit: int = 200,
        account_id: str | None = None,
        user: str | None = None,
        kinds: Collection[str] | None = None,
        after_id: int | None = None,
        newest_first: bool = True,
    ) -> list[JournalEntry]:
        """Journal entries matching every given filter, at most ``limit`` of them.

        ``after_id`` returns only entries newer than that id (for tailing). With
        ``newest_first`` the newest matching entries come first; otherwise the oldest
        matching ones, oldest first.
        """

    @abstractmethod
    def client_order_ids(self, account_id: str | None = None) -> set[str]:
        """Every client order id journaled as sent (``order_sent``), optionally for one account."""

    # --- metrics --------------------------------------------------------------------

    @abstractmethod
    def record_over_cap(self, account_id: str, over: bool, ts: float | None = None) -> None:
        """Note whether an account is over its cap now; call it every cycle.

        The first ``over=True`` starts an episode, the next ``over=False`` ends it and
        records how long the account took to get back under its cap. Repeats change
        nothing.
        """

    @abstractmethod
    def metrics(self, now: float | None = None) -> Metrics:
        """Interventions (all time and since local midnight), unwinds, cap recovery times."""

    # --- leases (active/standby per account) ----------------------------------------

    @abstractmethod
    def acquire_leases(
        self, holder: str, account_ids: Sequence[str], seconds: float
    ) -> set[str]:
        """Take or renew ``holder``'s lease on each account; returns those it now holds.

        A lease is taken only when it is free, expired, or already the holder's:
        a healthy holder keeps its accounts. Every held lease now runs ``seconds``.
        """

    @abstractmethod
    def release_leases(self, holder: str) -> None:
        """Give up every lease of ``holder`` (a clean stop: standbys take over at once)."""

    @abstractmethod
    def lease_holders(self) -> dict[str, str]:
        """Unexpired leases: {account id: holder}."""

    # --- copying a state (guard-app state copy) --------------------------------------

    @abstractmethod
    def dump(self) -> StateDump:
        """Everything this store holds."""

    @abstractmethod
    def load(self, dump: StateDump) -> None:
        """Fill an empty store with ``dump`` (journal ids and cycle ids kept).

        Raises StateError if this store already has flags or a journal: merging two
        histories would interleave them.
        """

    # --- lifetime -------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Close the connection(s). Safe to call twice."""

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
