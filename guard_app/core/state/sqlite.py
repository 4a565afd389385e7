"""The SQLite state store (the default): flags, the audit journal, cap metrics, leases.

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
  orders / one close-and-re-read round of a forced unwind (docs/enforcement.md rule 12).

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
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guard_app.core.errors import StateError
from guard_app.core.state.base import (
    DURABLE_KINDS,
    JournalEntry,
    Metrics,
    StateDump,
    StateStore,
    UnwindFlag,
    check_no_secrets,
    check_unwind_args,
    entries_query,
    flag_change,
    local_midnight,
    unwind_message,
)

__all__ = ["DB_FILENAME", "SqliteStateStore"]

DB_FILENAME = "state.sqlite3"

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

# Added after schema 1 shipped; an additive table older versions simply ignore, so it
# is created on open (IF NOT EXISTS) without a schema-version bump. Two enforcers on
# one machine (even on one data dir) share accounts through it.
_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    account_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires REAL NOT NULL
)
"""


class SqliteStateStore(StateStore):
    """Forced-unwind flags, the audit journal and cap metrics in ``data_dir/state.sqlite3``.

    Open one per thread (or process); see the module docstring. Raises StateError when
    the file is corrupt, unreadable or not a guard-app state database.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir).expanduser().absolute() / DB_FILENAME
        self.location = str(self.path)
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
            conn.execute(_LEASES)
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

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"SqliteStateStore({str(self.path)!r}, {state})"

    # --- forced unwind --------------------------------------------------------------

    def set_forced_unwind(
        self,
        user: str,
        active: bool,
        *,
        by: str,
        reason: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> UnwindFlag:
        """Turn a user's forced unwind on or off; returns the flag as it now stands.

        Idempotent: setting the state it already has changes nothing (the original
        ``since``/``by``/``reason`` stay and nothing is journaled). Turning off a
        flag that was never set writes nothing and returns an inactive flag.
        Committed with synchronous=FULL before returning. ``data`` adds detail to the
        journal entry (the API puts the client's ``address`` there).
        """
        check_unwind_args(user, by)
        verb = "on" if active else "off"
        with self._writing(f"turn forced unwind {verb} for {user}", durable=True) as db:
            row = db.execute(
                "SELECT user, active, since, by, reason FROM unwind_flags WHERE user = ?",
                (user,),
            ).fetchone()
            current = self._flag_from_row(row) if row is not None else None
            now = time.time()
            flag, write = flag_change(current, user, active, by, reason, now)
            if not write:
                return flag
            db.execute(
                "INSERT INTO unwind_flags (user, active, since, by, reason) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user) DO UPDATE SET "
                "active = excluded.active, since = excluded.since, by = excluded.by, "
                "reason = excluded.reason",
                (user, int(active), flag.since, by, reason),
            )
            message = unwind_message(user, active, by, reason)
            self._insert_entry(
                db, now, f"unwind_{verb}", message, None, user, None,
                {**(data or {}), "by": by, "reason": reason},
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
        check_no_secrets(payload)
        with self._writing(f"write a {kind} journal entry", durable=kind in DURABLE_KINDS) as db:
            return self._insert_entry(
                db, time.time() if ts is None else ts, kind, message, account_id, user,
                cycle_id, payload,
            )

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
        any of them leaves, without one fsync per order."""
        if not kind:
            raise ValueError("a journal entry needs a kind")
        payloads = [dict(data) for *_, data in entries]
        for payload in payloads:
            check_no_secrets(payload)
        now = time.time() if ts is None else ts
        with self._writing(f"write {len(entries)} {kind} journal entries",
                           durable=kind in DURABLE_KINDS) as db:
            return [
                self._insert_entry(db, now, kind, message, account_id, user, cycle_id, payload)
                for (message, account_id, user, cycle_id, _), payload in zip(
                    entries, payloads, strict=True)
            ]

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
        query = entries_query(
            "?", "user", "journal", limit=limit, account_id=account_id, user=user,
            kinds=kinds, after_id=after_id, newest_first=newest_first,
        )
        if query is None:
            return []
        sql, args = query
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
                    (local_midnight(now),),
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

    # --- leases ---------------------------------------------------------------------

    def acquire_leases(
        self, holder: str, account_ids: Sequence[str], seconds: float
    ) -> set[str]:
        # One machine, one clock: wall-clock expiry is comparable between processes.
        now = time.time()
        ids = sorted(set(account_ids))
        with self._writing("take the account leases") as db:
            db.executemany(
                "INSERT INTO leases (account_id, holder, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (account_id) DO UPDATE SET holder = excluded.holder, "
                "expires = excluded.expires "
                "WHERE leases.holder = excluded.holder OR leases.expires < ?",
                [(a, holder, now + seconds, now) for a in ids],
            )
            rows = db.execute(
                "SELECT account_id FROM leases WHERE holder = ? AND expires >= ?", (holder, now)
            ).fetchall()
        return {r[0] for r in rows} & set(ids)

    def release_leases(self, holder: str) -> None:
        with self._writing("give up the account leases") as db:
            db.execute("DELETE FROM leases WHERE holder = ?", (holder,))

    def lease_holders(self) -> dict[str, str]:
        with self._reading("read the account leases") as db:
            rows = db.execute(
                "SELECT account_id, holder FROM leases WHERE expires >= ? ORDER BY account_id",
                (time.time(),),
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    # --- copying --------------------------------------------------------------------

    def dump(self) -> StateDump:
        with self._reading("read the whole state") as db:
            flags = [
                self._flag_from_row(r)
                for r in db.execute(
                    "SELECT user, active, since, by, reason FROM unwind_flags ORDER BY user"
                )
            ]
            cycle = db.execute("SELECT value FROM meta WHERE key = 'cycle_id'").fetchone()[0]
            now_rows = db.execute("SELECT account_id, since FROM over_cap_now").fetchall()
            episodes = db.execute(
                "SELECT account_id, started, ended FROM over_cap_episodes ORDER BY id"
            ).fetchall()
        journal = self.entries(limit=2**62, newest_first=False)
        return StateDump(
            flags=tuple(flags), journal=tuple(journal), cycle_id=int(cycle),
            over_cap_now=tuple((r[0], float(r[1])) for r in now_rows),
            over_cap_episodes=tuple((r[0], float(r[1]), float(r[2])) for r in episodes),
        )

    def load(self, dump: StateDump) -> None:
        with self._writing("copy a state in", durable=True) as db:
            used = db.execute(
                "SELECT (SELECT COUNT(*) FROM journal) + (SELECT COUNT(*) FROM unwind_flags)"
            ).fetchone()[0]
            if used:
                raise StateError(
                    f"state database {self.path} already holds flags or a journal; "
                    "copy only into an empty one"
                )
            db.executemany(
                "INSERT INTO unwind_flags (user, active, since, by, reason) VALUES (?, ?, ?, ?, ?)",
                [(f.user, int(f.active), f.since, f.by, f.reason) for f in dump.flags],
            )
            db.executemany(
                "INSERT INTO journal (id, ts, kind, message, account_id, user, cycle_id, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.id, e.ts, e.kind, e.message, e.account_id, e.user, e.cycle_id,
                  json.dumps(e.data, default=str, sort_keys=True)) for e in dump.journal],
            )
            db.execute(
                "UPDATE meta SET value = MAX(value, ?) WHERE key = 'cycle_id'", (dump.cycle_id,)
            )
            db.executemany("INSERT INTO over_cap_now (account_id, since) VALUES (?, ?)",
                           dump.over_cap_now)
            db.executemany(
                "INSERT INTO over_cap_episodes (account_id, started, ended) VALUES (?, ?, ?)",
                dump.over_cap_episodes,
            )
