"""The state database: forced-unwind flags, the audit journal and cap metrics.

One SQLite file, ``state.sqlite3`` in the data dir, in WAL mode. Flag changes and
order records are committed with ``synchronous=FULL`` so that once guard-app says a
forced unwind is on, a crash or power cut can't forget it. The file is never
silently recreated: if it is corrupt or unreadable, :class:`StateStore` raises
:class:`~guard_app.core.errors.StateError` naming the file and what to do, because
starting fresh would drop every forced-unwind flag.

Threads and processes: a ``StateStore`` holds one SQLite connection, usable only from
the thread that opened it (sqlite3's ``check_same_thread``). Each thread or process
(the enforcer thread, the GUI thread, a ``guard-app unwind`` in a terminal) opens its
own ``StateStore`` on the same data dir; writes wait for each other (busy timeout)
instead of failing with "database is locked". :meth:`StateStore.data_version`
changes whenever *another* connection commits, which is how a running enforcer
notices a flag set elsewhere within a poll interval.

Journal kinds written by the enforcer (``data`` is a small JSON object):

- ``cycle_start`` / ``cycle_end``: a cycle began / ended (``cycle_end`` data: duration,
  interventions, failed accounts).
- ``snapshot``: what an account held (counts, notional, dust).
- ``over_cap``: an account or user is over a cap.
- ``decision``: the planned closes and why.
- ``order_sent``: a close order was sent; data holds ``client_order_id``, ``symbol``,
  ``side``, ``amount``. :meth:`StateStore.client_order_ids` reads these back.
- ``order_filled`` / ``order_rejected`` / ``order_unknown``: what became of it
  (``order_unknown``: the answer was lost, the position is re-read before retrying).
- ``account_error``: an account could not be read or closed this cycle.
- ``unwind_on`` / ``unwind_off``: a forced-unwind flag changed (written by
  :meth:`StateStore.set_forced_unwind` itself).
- ``intervention``: one per account and cycle in which close orders were placed; the
  ``interventions`` metric counts these.
- ``orders_cancelled`` / ``unwind_round``: the kill switch cancelled an account's open
  orders / one close-and-re-read round of a forced unwind (DESIGN rule 12).

The enforcer's entries are written by ``core/journal.py`` (JournalObserver).

The journal is an audit trail a trader may share: it must never hold API keys.
:meth:`StateStore.journal` refuses data with keys named like ``apiKey``, ``secret``
or ``password``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from guard_app.core.errors import StateError
from guard_app.core.models import JournalEntry, UnwindFlag
from guard_app.core.secrets import is_credential_key

__all__ = [
    "DB_FILENAME",
    "JOURNAL_KINDS",
    "JournalEntry",
    "Metrics",
    "StateStore",
    "UnwindFlag",
]

DB_FILENAME = "state.sqlite3"

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
_DURABLE_KINDS = frozenset({"order_sent", "unwind_on", "unwind_off"})

# Marks the file as ours (PRAGMA application_id), "GUAR".
_APPLICATION_ID = 0x47554152
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_SECONDS = 30.0


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE unwind_flags (
    user TEXT PRIMARY KEY,
    active INTEGER NOT NULL,
    since TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    account_id TEXT,
    user TEXT,
    cycle_id INTEGER,
    data TEXT NOT NULL
);
CREATE INDEX journal_kind ON journal (kind, id);
CREATE INDEX journal_account ON journal (account_id, id);
CREATE INDEX journal_user ON journal (user, id);
CREATE TABLE over_cap_now (account_id TEXT PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE over_cap_episodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL NOT NULL
);
INSERT INTO meta (key, value) VALUES ('schema_version', 1), ('cycle_id', 0);
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


def _utc_iso(ts: float | None = None) -> str:
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_no_secrets(value: Any, where: str = "data") -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if is_credential_key(key):
                raise ValueError(
                    f"journal {where} may not contain a key named {key!r}: "
                    "credentials never go in the journal"
                )
            _check_no_secrets(inner, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            _check_no_secrets(inner, f"{where}[{i}]")


def _local_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


class StateStore:
    """Forced-unwind flags, the audit journal and cap metrics in ``data_dir/state.sqlite3``.

    Open one per thread (or process); see the module docstring. Raises StateError when
    the file is corrupt, unreadable or not a guard-app state database.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir).expanduser().absolute() / DB_FILENAME
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise StateError(
                f"can't create the data folder {self.path.parent}: {e.strerror or e}; "
                "check its permissions or pass another --data-dir"
            ) from e
        if not self.path.exists():
            self._create()
        self._conn = self._open()

    # --- opening --------------------------------------------------------------------

    def _unusable(self, problem: str) -> StateError:
        return StateError(
            f"state database {self.path} {problem}. It holds the forced-unwind flags, so "
            "guard-app will not start over without it: restore it from a backup, or move "
            "it aside to start with no flags and an empty journal (then check every "
            "user's forced unwind)"
        )

    def _create(self) -> None:
        """Build a fresh database under a temporary name, then link it into place.

        A crash half-way leaves only a stray temporary file, never a half-made
        ``state.sqlite3`` that would later look corrupt.
        """
        tmp = self.path.with_name(f".{DB_FILENAME}.new-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
            finally:
                conn.close()
            # The journal records a trader's positions and orders: theirs alone to read.
            os.chmod(tmp, 0o600)
            try:
                # link, not rename: if another process created the file meanwhile, keep
                # theirs (it may already hold a flag) and drop ours.
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            except OSError:
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except (OSError, sqlite3.Error) as e:
            raise StateError(
                f"can't create the state database {self.path}: {e}; check that the data "
                "folder is writable and the disk is not full"
            ) from e
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)

    def _open(self) -> sqlite3.Connection:
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise self._unusable(f"can't be read ({e.strerror or e})") from e
        if size == 0:
            raise self._unusable("is empty (it was probably truncated)")
        # mode=rw: never let SQLite create a new, empty file in its place.
        uri = self.path.resolve().as_uri() + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None
            )
        except sqlite3.Error as e:
            raise self._unusable(f"can't be opened ({e})") from e
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id != _APPLICATION_ID:
                raise self._unusable("is not a guard-app state database")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise self._unusable(f"is corrupt ({'; '.join(problems[:3])})")
            version = conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            if version is None:
                raise self._unusable("is missing its schema version")
            if version[0] > _SCHEMA_VERSION:
                raise self._unusable(
                    f"was written by a newer guard-app (schema {version[0]}); "
                    "run that version instead"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except StateError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise self._unusable(f"is unreadable or corrupt ({e})") from e
        return conn

    # --- plumbing -------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state database {self.path} was already closed")
        return self._conn

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db
        except sqlite3.Error as e:
            raise StateError(f"state database {self.path}: could not {action}: {e}") from e

    @contextmanager
    def _writing(self, action: str, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable`` commits with synchronous=FULL.

        BEGIN IMMEDIATE takes the write lock up front, so two writers queue on the
        busy timeout instead of one failing when it upgrades a read to a write.
        """
        conn = self._db
        try:
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StateError(
                f"state database {self.path}: could not {action}: {e}; "
                "check the disk has space and the file is writable"
            ) from e
        finally:
            if durable:
                try:
                    conn.execute("PRAGMA synchronous = NORMAL")
                except sqlite3.Error:
                    pass

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"StateStore({str(self.path)!r}, {state})"

    # --- forced unwind --------------------------------------------------------------

    def set_forced_unwind(
        self, user: str, active: bool, *, by: str, reason: str = ""
    ) -> UnwindFlag:
        """Turn a user's forced unwind on or off; returns the flag as it now stands.

        Idempotent: setting the state it already has changes nothing (the original
        ``since``/``by``/``reason`` stay and nothing is journaled). Turning off a
        flag that was never set writes nothing and returns an inactive flag.
        Committed with synchronous=FULL before returning.
        """
        if not user:
            raise ValueError("forced unwind needs a user name")
        if not by:
            raise ValueError("forced unwind needs 'by': who or what changed it")
        verb = "on" if active else "off"
        with self._writing(f"turn forced unwind {verb} for {user}", durable=True) as db:
            row = db.execute(
                "SELECT user, active, since, by, reason FROM unwind_flags WHERE user = ?",
                (user,),
            ).fetchone()
            current = self._flag_from_row(row) if row is not None else None
            if current is not None and current.active == active:
                return current
            now = time.time()
            flag = UnwindFlag(user, active, _utc_iso(now), by, reason)
            if current is None and not active:
                return flag
            db.execute(
                "INSERT INTO unwind_flags (user, active, since, by, reason) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user) DO UPDATE SET "
                "active = excluded.active, since = excluded.since, by = excluded.by, "
                "reason = excluded.reason",
                (user, int(active), flag.since, by, reason),
            )
            why = f": {reason}" if reason else ""
            message = (
                f"forced unwind ON for {user} by {by}{why}; every position of {user}'s "
                "accounts will be closed until it is turned off"
                if active
                else f"forced unwind OFF for {user} by {by}{why}; normal caps apply again"
            )
            self._insert_entry(
                db, now, f"unwind_{verb}", message, None, user, None,
                {"by": by, "reason": reason},
            )
            return flag

    @staticmethod
    def _flag_from_row(row: tuple[Any, ...]) -> UnwindFlag:
        return UnwindFlag(
            user=row[0], active=bool(row[1]), since=row[2], by=row[3], reason=row[4]
        )

    def forced_unwind_flags(self) -> dict[str, UnwindFlag]:
        """Every user whose forced unwind is on, by user name."""
        with self._reading("read the forced-unwind flags") as db:
            rows = db.execute(
                "SELECT user, active, since, by, reason FROM unwind_flags "
                "WHERE active = 1 ORDER BY user"
            ).fetchall()
        return {row[0]: self._flag_from_row(row) for row in rows}

    def flag(self, user: str) -> UnwindFlag | None:
        """The user's flag (on or off) as last changed, or None if it was never set."""
        with self._reading(f"read the forced-unwind flag of {user}") as db:
            row = db.execute(
                "SELECT user, active, since, by, reason FROM unwind_flags WHERE user = ?",
                (user,),
            ).fetchone()
        return self._flag_from_row(row) if row is not None else None

    def data_version(self) -> int:
        """A number that changes when another connection or process commits.

        Cheap enough to poll every few hundred milliseconds; this connection's own
        writes don't change it.
        """
        with self._reading("poll for changes") as db:
            return int(db.execute("PRAGMA data_version").fetchone()[0])

    def next_cycle_id(self) -> int:
        """The next enforcer cycle number; keeps counting across restarts."""
        with self._writing("number the next cycle") as db:
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'cycle_id'")
            return int(db.execute("SELECT value FROM meta WHERE key = 'cycle_id'").fetchone()[0])

    # --- journal --------------------------------------------------------------------

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
        if not kind:
            raise ValueError("a journal entry needs a kind")
        payload = dict(data or {})
        _check_no_secrets(payload)
        with self._writing(f"write a {kind} journal entry", durable=kind in _DURABLE_KINDS) as db:
            return self._insert_entry(
                db, time.time() if ts is None else ts, kind, message, account_id, user,
                cycle_id, payload,
            )

    @staticmethod
    def _insert_entry(
        db: sqlite3.Connection,
        ts: float,
        kind: str,
        message: str,
        account_id: str | None,
        user: str | None,
        cycle_id: int | None,
        data: Mapping[str, Any],
    ) -> int:
        cur = db.execute(
            "INSERT INTO journal (ts, kind, message, account_id, user, cycle_id, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ts, kind, message, account_id, user, cycle_id,
             json.dumps(data, default=str, sort_keys=True)),
        )
        return int(cur.lastrowid or 0)

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
        where: list[str] = []
        args: list[Any] = []
        if account_id is not None:
            where.append("account_id = ?")
            args.append(account_id)
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if kinds is not None:
            kind_list = sorted(set(kinds))
            if not kind_list:
                return []
            where.append(f"kind IN ({', '.join('?' * len(kind_list))})")
            args.extend(kind_list)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        sql = "SELECT id, ts, kind, message, account_id, user, cycle_id, data FROM journal"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(max(0, limit))
        with self._reading("read the journal") as db:
            rows = db.execute(sql, args).fetchall()
        return [
            JournalEntry(
                id=r[0], ts=r[1], kind=r[2], message=r[3], account_id=r[4], user=r[5],
                cycle_id=r[6], data=json.loads(r[7]),
            )
            for r in rows
        ]

    def client_order_ids(self, account_id: str | None = None) -> set[str]:
        """Every client order id journaled as sent (``order_sent``), optionally for one account."""
        sql = "SELECT data FROM journal WHERE kind = 'order_sent'"
        args: tuple[str, ...] = ()
        if account_id is not None:
            sql += " AND account_id = ?"
            args = (account_id,)
        with self._reading("read the sent orders") as db:
            rows = db.execute(sql, args).fetchall()
        ids: set[str] = set()
        for (raw,) in rows:
            coid = json.loads(raw).get("client_order_id")
            if coid:
                ids.add(str(coid))
        return ids

    # --- metrics --------------------------------------------------------------------

    def record_over_cap(self, account_id: str, over: bool, ts: float | None = None) -> None:
        """Note whether an account is over its cap now; call it every cycle.

        The first ``over=True`` starts an episode, the next ``over=False`` ends it and
        records how long the account took to get back under its cap. Repeats change
        nothing.
        """
        now = time.time() if ts is None else ts
        with self._writing(f"record the cap state of {account_id}") as db:
            row = db.execute(
                "SELECT since FROM over_cap_now WHERE account_id = ?", (account_id,)
            ).fetchone()
            if over and row is None:
                db.execute(
                    "INSERT INTO over_cap_now (account_id, since) VALUES (?, ?)",
                    (account_id, now),
                )
            elif not over and row is not None:
                db.execute("DELETE FROM over_cap_now WHERE account_id = ?", (account_id,))
                db.execute(
                    "INSERT INTO over_cap_episodes (account_id, started, ended) VALUES (?, ?, ?)",
                    (account_id, row[0], max(now, row[0])),
                )

    def metrics(self, now: float | None = None) -> Metrics:
        """Interventions (all time and since local midnight), unwinds, cap recovery times."""
        now = time.time() if now is None else now
        with self._reading("compute the metrics") as db:
            # One read transaction so the numbers agree with each other.
            db.execute("BEGIN")
            try:
                interventions = db.execute(
                    "SELECT COUNT(*) FROM journal WHERE kind = 'intervention'"
                ).fetchone()[0]
                today = db.execute(
                    "SELECT COUNT(*) FROM journal WHERE kind = 'intervention' AND ts >= ?",
                    (_local_midnight(now),),
                ).fetchone()[0]
                unwinds = db.execute(
                    "SELECT COUNT(*) FROM journal WHERE kind = 'unwind_on'"
                ).fetchone()[0]
                last = db.execute(
                    "SELECT ended - started FROM over_cap_episodes "
                    "ORDER BY ended DESC, id DESC LIMIT 1"
                ).fetchone()
                worst = db.execute(
                    "SELECT MAX(ended - started) FROM over_cap_episodes"
                ).fetchone()[0]
                over_now = [
                    r[0]
                    for r in db.execute("SELECT account_id FROM over_cap_now ORDER BY account_id")
                ]
            finally:
                db.execute("COMMIT")
        return Metrics(
            interventions=int(interventions),
            interventions_today=int(today),
            unwind_activations=int(unwinds),
            last_back_under_cap_seconds=None if last is None else float(last[0]),
            worst_back_under_cap_seconds=None if worst is None else float(worst),
            over_cap_now=tuple(over_now),
        )
