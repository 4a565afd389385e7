"""The PostgreSQL state store: one database shared by every guard-app of a desk.

Selected by ``[state] url = "postgresql://USER@HOST:PORT/DB"`` (docs/desk.md). Holds
the same things as the SQLite store (flags, journal, cycle ids, metrics) plus the
per-account leases that let several enforcers run with the same accounts while
exactly one acts on each. Needs psycopg 3: ``pip install 'guard-app[postgres]'``.

How it talks to the server, and why:

* The store's methods are synchronous, like the SQLite store's, and are called from
  the enforcer's asyncio loop. Each call is one short statement on an open
  connection (a millisecond or two on a LAN). The connection is made with short
  timeouts (``connect_timeout``, ``tcp_user_timeout``, ``statement_timeout``) so a
  dead server can't hold the loop for long; *connecting again* never happens on the
  caller's thread: a background thread does it, with back-off, and swaps the fresh
  connection in. Until then calls fail fast.
* A flag change (and every journal write) is committed together with
  ``pg_notify('guard_state', ...)``. The background thread LISTENs on a second,
  dedicated connection, so every other store (on any machine) sees the change in
  milliseconds, as SQLite's ``data_version`` sees another connection's commit: :meth:`data_version` is a local
  counter that it bumps (no round trip, so polling it every 0.2 s is free) and
  :meth:`on_change` callbacks are called at once. Notifications sent by this
  store's own connection are ignored, as SQLite's ``data_version`` ignores its own
  writes.
* The server unreachable (stopped, restarted, network gone): what the enforcer needs
  to keep closing keeps working. :meth:`forced_unwind_flags` answers with the flags
  last seen, :meth:`next_cycle_id` counts on locally, :meth:`journal` keeps entries
  in memory and writes them (in order, ids renumbered by the server) once the server
  is back, :meth:`record_over_cap` is skipped, :meth:`metrics` answers with the last
  numbers it read. Everything else, and every lease call,
  raises :class:`StateUnavailableError`. An ERROR line naming the database is logged
  once per minute while it lasts; the reconnect back-off tops out at 5 s, so within
  15 s of the server's return everything is connected again.

Limitation: a server that is frozen (SIGSTOP, not dead) with the TCP connection
still up keeps a call waiting until the operating system gives up on it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from guard_app.core.errors import StateError
from guard_app.core.state.base import (
    JournalEntry,
    Metrics,
    StateDump,
    StateStore,
    StateUnavailableError,
    UnwindFlag,
    check_no_secrets,
    check_unwind_args,
    entries_query,
    flag_change,
    holder_name,
    local_midnight,
    unwind_message,
)

try:  # optional: pip install 'guard-app[postgres]'
    import psycopg
except ImportError:  # pragma: no cover - exercised where the extra is missing
    psycopg = None  # type: ignore[assignment]

log = logging.getLogger("guard_app.state")

INSTALL_HINT = "pip install 'guard-app[postgres]' (psycopg 3)"
CHANNEL = "guard_state"
_SCHEMA_VERSION = 1
# pg_advisory_xact_lock key serialising schema creation ("GUAR").
_SCHEMA_LOCK = 0x47554152
ERROR_EVERY_SECONDS = 60.0
# How long opening a store waits for its listener (then it catches up later).
_FIRST_LISTEN_WAIT_SECONDS = 5.0
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 5.0
_LISTEN_POLL_SECONDS = 0.25

_SCHEMA = f"""
SELECT pg_advisory_xact_lock({_SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS guard_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO guard_meta (key, value) VALUES ('schema_version', {_SCHEMA_VERSION}), ('cycle_id', 0)
    ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS guard_unwind_flags (
    user_name TEXT PRIMARY KEY,
    active BOOLEAN NOT NULL,
    since TEXT NOT NULL,
    by_whom TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS guard_journal (
    id BIGSERIAL PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    account_id TEXT,
    user_name TEXT,
    cycle_id BIGINT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS guard_journal_kind ON guard_journal (kind, id);
CREATE INDEX IF NOT EXISTS guard_journal_account ON guard_journal (account_id, id);
CREATE INDEX IF NOT EXISTS guard_journal_user ON guard_journal (user_name, id);
CREATE TABLE IF NOT EXISTS guard_over_cap_now (
    account_id TEXT PRIMARY KEY, since DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS guard_over_cap_episodes (
    id BIGSERIAL PRIMARY KEY,
    account_id TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS guard_leases (
    account_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
"""  # noqa: S608 - only module constants are interpolated

_FLAG_COLUMNS = "user_name, active, since, by_whom, reason"


def describe_url(url: str) -> str:
    """The URL as it may be shown: scheme, user, host, port and database; never a password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class PostgresStateStore(StateStore):
    """The shared state of a desk in one PostgreSQL database (see the module docstring).

    Raises StateError when psycopg is missing or the database can't be reached or
    set up when the store is opened.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        connect_timeout: int = 5,
        statement_timeout_ms: int = 5000,
    ) -> None:
        self.location = describe_url(url)
        if psycopg is None:
            raise StateError(
                f"state database {self.location}: PostgreSQL support is not installed; "
                f"install it with: {INSTALL_HINT}"
            )
        self._url = url
        self._connect_args: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": connect_timeout,
            # Give up on a peer that stops acknowledging (network gone) after 3 s.
            "tcp_user_timeout": 3000,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "application_name": f"guard-app {holder_name()}"[:63],
        }
        if password:  # the keyring entry wins over PGPASSWORD and ~/.pgpass
            self._connect_args["password"] = password
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._callback: Callable[[], None] | None = None
        self._version = 0
        self._own_pids: set[int] = set()
        self._flags_seen: dict[str, UnwindFlag] = {}
        self._cycle_seen = 0
        self._metrics_seen: Metrics | None = None
        self._pending: list[tuple[Any, ...]] = []
        self._down_since: float | None = None
        self._last_error_logged = 0.0
        try:
            conn = self._connect()
        except psycopg.Error as e:
            raise StateError(
                f"state database {self.location} can't be reached: {_one_line(e)}; check "
                "that it is running and the URL, user and password are right "
                "(guard-app state password)"
            ) from None
        try:
            with conn.transaction():
                conn.execute(_SCHEMA)
                row = conn.execute(
                    "SELECT value FROM guard_meta WHERE key = 'schema_version'"
                ).fetchone()
        except psycopg.Error as e:
            conn.close()
            raise StateError(
                f"state database {self.location}: can't set up guard-app's tables: "
                f"{_one_line(e)}; the user needs CREATE rights on the database"
            ) from None
        if row is not None and int(row[0]) > _SCHEMA_VERSION:
            conn.close()
            raise StateError(
                f"state database {self.location} was written by a newer guard-app "
                f"(schema {row[0]}); run that version instead"
            )
        self._conn: psycopg.Connection[Any] | None = conn
        self._own_pids.add(conn.info.backend_pid)
        # The first LISTEN is awaited here (briefly), so that once the store is handed
        # out no change can slip by unseen, and no spurious "changed" arrives later
        # from the listener's catch-up look (data_version must not move on its own).
        self._listening = threading.Event()
        self._handed_out = False
        self._thread = threading.Thread(
            target=self._background, name="guard-state-listener", daemon=True
        )
        self._thread.start()
        self._listening.wait(_FIRST_LISTEN_WAIT_SECONDS)
        with self._lock:
            self._handed_out = True

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else "open"
        return f"PostgresStateStore({self.location!r}, {state})"

    # --- connections ----------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, **self._connect_args)

    @property
    def available(self) -> bool:
        """False while the server can't be reached (the store reconnects by itself)."""
        return self._conn is not None

    def _unavailable(self, action: str) -> StateUnavailableError:
        return StateUnavailableError(
            f"state database {self.location} is unreachable; could not {action} "
            "(reconnecting in the background)"
        )

    def _lost(self, conn: psycopg.Connection[Any], error: BaseException) -> None:
        """The main connection broke: drop it; the background thread reconnects."""
        with self._lock:
            if self._conn is conn:
                self._conn = None
        try:
            conn.close()
        except Exception:  # noqa: S110 - it is already broken; closing is best effort
            pass
        self._note_down(error)

    def _note_down(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        if now - self._last_error_logged >= ERROR_EVERY_SECONDS:
            self._last_error_logged = now
            log.error(
                "state database %s unreachable (%s): enforcing only the accounts this "
                "enforcer already held, with the forced-unwind flags last seen; "
                "reconnecting", self.location, _one_line(error),
            )

    def _run(self, action: str, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """Run ``work`` in one transaction on the main connection."""
        if self._closed.is_set():
            raise StateError(f"state database {self.location} was already closed")
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._unavailable(action)
            try:
                with conn.transaction():
                    return work(conn)
            except psycopg.OperationalError as e:
                if conn.broken or conn.closed:
                    self._lost(conn, e)
                    raise self._unavailable(action) from None
                raise StateError(
                    f"state database {self.location}: could not {action}: {_one_line(e)}"
                ) from None
            except psycopg.Error as e:
                raise StateError(
                    f"state database {self.location}: could not {action}: {_one_line(e)}"
                ) from None

    def _background(self) -> None:
        """LISTEN for flag changes; reconnect both connections with back-off."""
        listener: psycopg.Connection[Any] | None = None
        backoff = _BACKOFF_FIRST
        while not self._closed.is_set():
            try:
                if self._conn is None:
                    self._reconnect_main()
                if listener is None:
                    listener = self._connect()
                    listener.execute(f"LISTEN {CHANNEL}")
                    with self._lock:
                        missed = self._handed_out  # listening started after callers read
                        self._listening.set()
                    if missed:  # changes made while we weren't listening: look again
                        self._changed()
                for note in listener.notifies(timeout=_LISTEN_POLL_SECONDS):
                    if note.pid not in self._own_pids:
                        self._changed()
                backoff = _BACKOFF_FIRST
            except psycopg.Error as e:
                if listener is not None:
                    try:
                        listener.close()
                    except Exception:  # noqa: S110 - already broken
                        pass
                    listener = None
                if not self._closed.is_set():
                    self._note_down(e)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            except Exception:  # a bug here must not end listening for good
                log.exception("state database %s: listener failed; restarting it", self.location)
                self._closed.wait(_BACKOFF_MAX)
        if listener is not None:
            listener.close()

    def _reconnect_main(self) -> None:
        conn = self._connect()
        with self._lock:
            if self._closed.is_set():
                conn.close()
                return
            self._own_pids.add(conn.info.backend_pid)
            pending, self._pending = self._pending, []
            if pending:
                try:
                    with conn.transaction():
                        for entry in pending:
                            self._insert_entry(conn, *entry, notify=True)
                except psycopg.Error:
                    self._pending = pending + self._pending
                    conn.close()
                    raise
            self._conn = conn
        down = time.monotonic() - (self._down_since or time.monotonic())
        self._down_since = None
        self._last_error_logged = 0.0
        log.warning(
            "state database %s reachable again after %.0f s%s", self.location, down,
            f"; {len(pending)} journal entries written late" if pending else "",
        )
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        callback = self._callback
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("state change callback failed")

    def on_change(self, callback: Callable[[], None] | None) -> None:
        self._callback = callback

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=5)
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # --- forced unwind --------------------------------------------------------------

    @staticmethod
    def _flag_from_row(row: Sequence[Any]) -> UnwindFlag:
        return UnwindFlag(user=row[0], active=bool(row[1]), since=row[2], by=row[3],
                          reason=row[4])

    def set_forced_unwind(
        self, user: str, active: bool, *, by: str, reason: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> UnwindFlag:
        check_unwind_args(user, by)
        verb = "on" if active else "off"

        def work(db: psycopg.Connection[Any]) -> UnwindFlag:
            # One change per user at a time, so "already on" is decided once.
            db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"guard-flag:{user}",))
            row = db.execute(
                f"SELECT {_FLAG_COLUMNS} FROM guard_unwind_flags WHERE user_name = %s",  # noqa: S608
                (user,),
            ).fetchone()
            current = self._flag_from_row(row) if row is not None else None
            now = time.time()
            flag, write = flag_change(current, user, active, by, reason, now)
            if not write:
                return flag
            db.execute(
                "INSERT INTO guard_unwind_flags (user_name, active, since, by_whom, reason) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_name) DO UPDATE SET "
                "active = excluded.active, since = excluded.since, by_whom = excluded.by_whom, "
                "reason = excluded.reason",
                (user, active, flag.since, by, reason),
            )
            self._insert_entry(db, now, f"unwind_{verb}", unwind_message(user, active, by, reason),
                               None, user, None, {**(data or {}), "by": by, "reason": reason})
            # Delivered to every listener when this transaction commits.
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, user))
            return flag

        flag: UnwindFlag = self._run(f"turn forced unwind {verb} for {user}", work)
        return flag

    def forced_unwind_flags(self) -> dict[str, UnwindFlag]:
        try:
            rows = self._run("read the forced-unwind flags", lambda db: db.execute(
                f"SELECT {_FLAG_COLUMNS} FROM guard_unwind_flags "  # noqa: S608
                "WHERE active ORDER BY user_name").fetchall())
        except StateUnavailableError:
            return dict(self._flags_seen)  # keep enforcing what we last knew
        flags = {row[0]: self._flag_from_row(row) for row in rows}
        self._flags_seen = flags
        return dict(flags)

    def flag(self, user: str) -> UnwindFlag | None:
        row = self._run(f"read the forced-unwind flag of {user}", lambda db: db.execute(
            f"SELECT {_FLAG_COLUMNS} FROM guard_unwind_flags WHERE user_name = %s",  # noqa: S608
            (user,)).fetchone())
        return self._flag_from_row(row) if row is not None else None

    def data_version(self) -> int:
        if self._closed.is_set():
            raise StateError(f"state database {self.location} was already closed")
        return self._version

    def next_cycle_id(self) -> int:
        try:
            value = self._run("number the next cycle", lambda db: _first(db.execute(
                "UPDATE guard_meta SET value = value + 1 WHERE key = 'cycle_id' RETURNING value"
            ).fetchone()))
        except StateUnavailableError:
            value = self._cycle_seen + 1  # count on; the server's count resumes later
        self._cycle_seen = int(value)
        return int(value)

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
        """Append one entry; returns its id (0 while the server is unreachable: the
        entry is kept in memory and written, in order, once the server is back)."""
        if not kind:
            raise ValueError("a journal entry needs a kind")
        payload = dict(data or {})
        check_no_secrets(payload)
        entry = (time.time() if ts is None else ts, kind, message, account_id, user,
                 cycle_id, payload)
        try:
            new_id: int = self._run(f"write a {kind} journal entry",
                                    lambda db: self._insert_entry(db, *entry, notify=True))
        except StateUnavailableError:
            with self._lock:
                self._pending.append(entry)
            return 0
        return new_id

    def journal_many(
        self,
        kind: str,
        entries: Sequence[tuple[str, str | None, str | None, int | None, Mapping[str, Any]]],
        *,
        ts: float | None = None,
    ) -> list[int]:
        """Several entries in one transaction (ids 0 while the server is unreachable:
        kept in memory and written once it is back, like :meth:`journal`)."""
        if not kind:
            raise ValueError("a journal entry needs a kind")
        now = time.time() if ts is None else ts
        rows = []
        for message, account_id, user, cycle_id, data in entries:
            payload = dict(data)
            check_no_secrets(payload)
            rows.append((now, kind, message, account_id, user, cycle_id, payload))
        try:
            ids: list[int] = self._run(
                f"write {len(rows)} {kind} journal entries",
                lambda db: [self._insert_entry(db, *row, notify=True) for row in rows])
        except StateUnavailableError:
            with self._lock:
                self._pending.extend(rows)
            return [0] * len(rows)
        return ids

    @staticmethod
    def _insert_entry(
        db: psycopg.Connection[Any],
        ts: float,
        kind: str,
        message: str,
        account_id: str | None,
        user: str | None,
        cycle_id: int | None,
        data: Mapping[str, Any],
        *,
        notify: bool = False,
    ) -> int:
        if notify:
            # Other stores' data_version moves (a window follows the holder's journal);
            # identical notifications in one transaction are delivered once.
            db.execute("SELECT pg_notify(%s, 'journal')", (CHANNEL,))
        row = db.execute(
            "INSERT INTO guard_journal (ts, kind, message, account_id, user_name, cycle_id, data) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (ts, kind, message, account_id, user, cycle_id,
             json.dumps(data, default=str, sort_keys=True)),
        ).fetchone()
        return int(row[0]) if row else 0

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
        query = entries_query(
            "%s", "user_name", "guard_journal", limit=limit, account_id=account_id, user=user,
            kinds=kinds, after_id=after_id, newest_first=newest_first,
        )
        if query is None:
            return []
        sql, args = query
        rows = self._run("read the journal", lambda db: db.execute(sql, args).fetchall())
        return [
            JournalEntry(id=int(r[0]), ts=float(r[1]), kind=r[2], message=r[3],
                         account_id=r[4], user=r[5],
                         cycle_id=None if r[6] is None else int(r[6]), data=json.loads(r[7]))
            for r in rows
        ]

    def client_order_ids(self, account_id: str | None = None) -> set[str]:
        sql = "SELECT data FROM guard_journal WHERE kind = 'order_sent'"
        args: tuple[str, ...] = ()
        if account_id is not None:
            sql += " AND account_id = %s"
            args = (account_id,)
        rows = self._run("read the sent orders", lambda db: db.execute(sql, args).fetchall())
        ids: set[str] = set()
        for (raw,) in rows:
            coid = json.loads(raw).get("client_order_id")
            if coid:
                ids.add(str(coid))
        return ids

    # --- metrics --------------------------------------------------------------------

    def record_over_cap(self, account_id: str, over: bool, ts: float | None = None) -> None:
        now = time.time() if ts is None else ts

        def work(db: psycopg.Connection[Any]) -> None:
            row = db.execute(
                "SELECT since FROM guard_over_cap_now WHERE account_id = %s FOR UPDATE",
                (account_id,),
            ).fetchone()
            if over and row is None:
                db.execute(
                    "INSERT INTO guard_over_cap_now (account_id, since) VALUES (%s, %s) "
                    "ON CONFLICT (account_id) DO NOTHING",
                    (account_id, now),
                )
            elif not over and row is not None:
                db.execute("DELETE FROM guard_over_cap_now WHERE account_id = %s", (account_id,))
                db.execute(
                    "INSERT INTO guard_over_cap_episodes (account_id, started, ended) "
                    "VALUES (%s, %s, %s)",
                    (account_id, row[0], max(now, row[0])),
                )

        try:
            self._run(f"record the cap state of {account_id}", work)
        except StateUnavailableError:
            pass  # a metric: the next cycle after the reconnect records it again

    def metrics(self, now: float | None = None) -> Metrics:
        now = time.time() if now is None else now

        def work(db: psycopg.Connection[Any]) -> tuple[Any, ...]:
            def one(sql: str, *args: Any) -> Any:
                row = db.execute(sql, args).fetchone()
                return None if row is None else row[0]

            return (
                one("SELECT COUNT(*) FROM guard_journal WHERE kind = 'intervention'"),
                one("SELECT COUNT(*) FROM guard_journal WHERE kind = 'intervention' AND ts >= %s",
                    local_midnight(now)),
                one("SELECT COUNT(*) FROM guard_journal WHERE kind = 'unwind_on'"),
                one("SELECT ended - started FROM guard_over_cap_episodes "
                    "ORDER BY ended DESC, id DESC LIMIT 1"),
                one("SELECT MAX(ended - started) FROM guard_over_cap_episodes"),
                [r[0] for r in db.execute(
                    "SELECT account_id FROM guard_over_cap_now ORDER BY account_id")],
            )

        try:
            interventions, today, unwinds, last, worst, over_now = self._run(
                "compute the metrics", work)
        except StateUnavailableError:
            if self._metrics_seen is None:
                raise
            return self._metrics_seen  # the window keeps showing the last numbers
        self._metrics_seen = Metrics(
            interventions=int(interventions),
            interventions_today=int(today),
            unwind_activations=int(unwinds),
            last_back_under_cap_seconds=None if last is None else float(last),
            worst_back_under_cap_seconds=None if worst is None else float(worst),
            over_cap_now=tuple(over_now),
        )
        return self._metrics_seen

    # --- leases ---------------------------------------------------------------------

    def acquire_leases(
        self, holder: str, account_ids: Sequence[str], seconds: float
    ) -> set[str]:
        ids = sorted(set(account_ids))
        if not ids:
            return set()
        # The server's clock decides expiry, so machines' clocks need not agree.
        rows = self._run("take the account leases", lambda db: db.execute(
            "INSERT INTO guard_leases (account_id, holder, expires) "
            "SELECT a, %s, clock_timestamp() + make_interval(secs => %s) "
            "FROM unnest(%s::text[]) AS a ORDER BY a "
            "ON CONFLICT (account_id) DO UPDATE SET holder = excluded.holder, "
            "expires = excluded.expires "
            "WHERE guard_leases.holder = excluded.holder "
            "OR guard_leases.expires < clock_timestamp() "
            "RETURNING account_id",
            (holder, float(seconds), ids),
        ).fetchall())
        return {r[0] for r in rows}

    def release_leases(self, holder: str) -> None:
        self._run("give up the account leases", lambda db: db.execute(
            "DELETE FROM guard_leases WHERE holder = %s", (holder,)))

    def lease_holders(self) -> dict[str, str]:
        rows = self._run("read the account leases", lambda db: db.execute(
            "SELECT account_id, holder FROM guard_leases WHERE expires >= clock_timestamp() "
            "ORDER BY account_id").fetchall())
        return {r[0]: r[1] for r in rows}

    # --- copying --------------------------------------------------------------------

    def dump(self) -> StateDump:
        def work(db: psycopg.Connection[Any]) -> StateDump:
            flags = tuple(self._flag_from_row(r) for r in db.execute(
                f"SELECT {_FLAG_COLUMNS} FROM guard_unwind_flags ORDER BY user_name"))  # noqa: S608
            cycle = db.execute("SELECT value FROM guard_meta WHERE key = 'cycle_id'").fetchone()
            now_rows = db.execute("SELECT account_id, since FROM guard_over_cap_now").fetchall()
            episodes = db.execute(
                "SELECT account_id, started, ended FROM guard_over_cap_episodes ORDER BY id"
            ).fetchall()
            return StateDump(
                flags=flags, journal=(), cycle_id=int(cycle[0]) if cycle else 0,
                over_cap_now=tuple((r[0], float(r[1])) for r in now_rows),
                over_cap_episodes=tuple((r[0], float(r[1]), float(r[2])) for r in episodes),
            )

        head: StateDump = self._run("read the whole state", work)
        journal = tuple(self.entries(limit=2**62, newest_first=False))
        return StateDump(head.flags, journal, head.cycle_id, head.over_cap_now,
                         head.over_cap_episodes)

    def load(self, dump: StateDump) -> None:
        def work(db: psycopg.Connection[Any]) -> None:
            used = db.execute(
                "SELECT (SELECT COUNT(*) FROM guard_journal) "
                "+ (SELECT COUNT(*) FROM guard_unwind_flags)"
            ).fetchone()
            if used and used[0]:
                raise StateError(
                    f"state database {self.location} already holds flags or a journal; "
                    "copy only into an empty one"
                )
            with db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO guard_unwind_flags (user_name, active, since, by_whom, reason) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(f.user, f.active, f.since, f.by, f.reason) for f in dump.flags],
                )
                cur.executemany(
                    "INSERT INTO guard_journal "
                    "(id, ts, kind, message, account_id, user_name, cycle_id, data) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(e.id, e.ts, e.kind, e.message, e.account_id, e.user, e.cycle_id,
                      json.dumps(e.data, default=str, sort_keys=True)) for e in dump.journal],
                )
                cur.executemany(
                    "INSERT INTO guard_over_cap_now (account_id, since) VALUES (%s, %s)",
                    list(dump.over_cap_now),
                )
                cur.executemany(
                    "INSERT INTO guard_over_cap_episodes (account_id, started, ended) "
                    "VALUES (%s, %s, %s)",
                    list(dump.over_cap_episodes),
                )
            db.execute(
                "UPDATE guard_meta SET value = GREATEST(value, %s) WHERE key = 'cycle_id'",
                (dump.cycle_id,),
            )
            # New entries continue after the copied ids.
            db.execute(
                "SELECT setval(pg_get_serial_sequence('guard_journal', 'id'), "
                "GREATEST((SELECT MAX(id) FROM guard_journal), 1))"
            )
            for flag in dump.flags:
                db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, flag.user))

        self._run("copy a state in", work)


def _first(row: Sequence[Any] | None) -> Any:
    if row is None:
        raise StateError("the state database is missing guard-app's meta rows")
    return row[0]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
