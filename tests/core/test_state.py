"""The state stores: flags that survive restarts and other processes, the journal,
metrics, leases, copying; and (SQLite) refusing, never recreating, a corrupt file.

Every test taking ``opener`` runs against both stores (SQLite in a data dir, and a
fresh database on the session's throwaway PostgreSQL cluster), so they can't drift.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from guard_app.core.config import StateConfig
from guard_app.core.errors import StateError
from guard_app.core.state import DB_FILENAME, StateStore
from tests.fixtures.postgres_fixtures import PASSWORD, PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[2]

Opener = Callable[[], StateStore]


class Backend:
    """Opens stores on one shared state: a data dir, or a PostgreSQL database."""

    def __init__(self, data_dir: Path, url: str | None, server: PostgresServer | None) -> None:
        self.data_dir = data_dir
        self.url = url
        self.server = server
        self.opened: list[StateStore] = []

    def open(self) -> StateStore:
        if self.url is None:
            store: StateStore = StateStore(self.data_dir)
        else:
            from guard_app.core.state.postgres import PostgresStateStore

            store = PostgresStateStore(self.url, password=PASSWORD)
        self.opened.append(store)
        return store

    def env(self) -> dict[str, str]:
        base = self.server.env() if self.server else dict(os.environ)
        return {**base, "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        b = Backend(tmp_path / "data", server.create_database(), server)
    else:
        b = Backend(tmp_path / "data", None, None)
    yield b
    for s in b.opened:
        s.close()


@pytest.fixture
def opener(backend: Backend) -> Opener:
    return backend.open


@pytest.fixture
def store(opener: Opener) -> StateStore:
    return opener()


# --- forced-unwind flags -------------------------------------------------------------


def test_flag_survives_reopening(opener: Opener) -> None:
    with opener() as s:
        flag = s.set_forced_unwind("alice", True, by="gui", reason="strategy went wild")
        assert flag.active and flag.by == "gui" and flag.since.endswith("Z")
    with opener() as again:
        assert again.forced_unwind_flags() == {"alice": flag}
        assert again.flag("alice") == flag
        assert again.flag("bob") is None


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_flag_set_by_another_process_is_seen(backend: Backend, store: StateStore) -> None:
    before = store.data_version()
    changes: list[int] = []
    store.on_change(lambda: changes.append(1))
    script = (
        "import sys; from pathlib import Path\n"
        "from guard_app.core.config import StateConfig\n"
        "from guard_app.core.state import open_state\n"
        "s = open_state(Path(sys.argv[1]), StateConfig(url=sys.argv[2] or None))\n"
        "s.set_forced_unwind('bob', True, by='cli'); s.close()"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(backend.data_dir), backend.url or ""],
        check=True, cwd=REPO_ROOT, env=backend.env(), timeout=60,
    )
    # PostgreSQL tells us (LISTEN/NOTIFY); SQLite's data_version shows it at once.
    assert _wait_for(lambda: store.data_version() != before)
    if backend.url:
        assert _wait_for(lambda: bool(changes))
    flag = store.flag("bob")
    assert flag is not None and flag.active and flag.by == "cli"
    assert set(store.forced_unwind_flags()) == {"bob"}


def test_own_writes_do_not_change_data_version_but_others_do(opener: Opener) -> None:
    with opener() as mine, opener() as other:
        v = mine.data_version()
        mine.journal("cycle_start", "cycle 1")
        mine.set_forced_unwind("carol", True, by="gui")
        time.sleep(0.3)  # give a (wrong) notification of our own write time to arrive
        assert mine.data_version() == v
        other.set_forced_unwind("alice", True, by="tray")
        assert _wait_for(lambda: mine.data_version() != v)
        assert "alice" in mine.forced_unwind_flags()


def test_set_forced_unwind_is_idempotent(store: StateStore) -> None:
    first = store.set_forced_unwind("alice", True, by="gui", reason="first")
    again = store.set_forced_unwind("alice", True, by="cli", reason="second")
    assert again == first
    assert [e.kind for e in store.entries(user="alice")] == ["unwind_on"]

    off = store.set_forced_unwind("alice", False, by="cli")
    assert not off.active
    assert store.set_forced_unwind("alice", False, by="gui") == off
    assert store.forced_unwind_flags() == {}
    assert store.flag("alice") == off
    assert [e.kind for e in store.entries(user="alice")] == ["unwind_off", "unwind_on"]

    store.set_forced_unwind("alice", True, by="gui")
    assert store.metrics().unwind_activations == 2


def test_turning_off_a_flag_never_set_writes_nothing(store: StateStore) -> None:
    flag = store.set_forced_unwind("carol", False, by="cli")
    assert not flag.active
    assert store.flag("carol") is None
    assert store.entries() == []


def test_unwind_needs_a_user_and_who(store: StateStore) -> None:
    with pytest.raises(ValueError, match="user"):
        store.set_forced_unwind("", True, by="cli")
    with pytest.raises(ValueError, match="by"):
        store.set_forced_unwind("alice", True, by="")


# --- journal -------------------------------------------------------------------------


def test_journal_filters_order_and_tailing(store: StateStore) -> None:
    ids = [
        store.journal("cycle_start", "cycle 7", cycle_id=7),
        store.journal("snapshot", "a1: 3 positions", account_id="a1", user="alice", cycle_id=7,
                      data={"count": 3, "notional": 41.5}),
        store.journal("snapshot", "b1: 1 position", account_id="b1", user="bob", cycle_id=7),
        store.journal("decision", "a1: closing DOGE/USDT", account_id="a1", user="alice",
                      cycle_id=7, data={"closes": [{"symbol": "DOGE/USDT", "value": 4.1}]}),
        store.journal("cycle_end", "cycle 7 done", cycle_id=7),
    ]
    assert ids == sorted(ids) and len(set(ids)) == 5

    assert [e.id for e in store.entries()] == ids[::-1]
    assert [e.id for e in store.entries(newest_first=False)] == ids
    assert [e.id for e in store.entries(limit=2)] == [ids[4], ids[3]]
    assert [e.id for e in store.entries(account_id="a1")] == [ids[3], ids[1]]
    assert [e.id for e in store.entries(user="bob")] == [ids[2]]
    assert [e.kind for e in store.entries(kinds={"cycle_start", "cycle_end"})] == [
        "cycle_end", "cycle_start"]
    assert store.entries(kinds=[]) == []
    assert [e.id for e in store.entries(after_id=ids[2], newest_first=False)] == ids[3:]
    assert [e.id for e in store.entries(account_id="a1", kinds=["snapshot"])] == [ids[1]]

    entry = store.entries(kinds=["decision"])[0]
    assert entry.data == {"closes": [{"symbol": "DOGE/USDT", "value": 4.1}]}
    assert (entry.account_id, entry.user, entry.cycle_id) == ("a1", "alice", 7)
    assert abs(entry.ts - time.time()) < 60


def test_journal_refuses_credentials(store: StateStore) -> None:
    for data in (
        {"apiKey": "k"},
        {"order": {"Secret": "s"}},
        {"accounts": [{"api_key": "k"}]},
        {"password": "p"},
    ):
        with pytest.raises(ValueError, match="credentials never go in the journal"):
            store.journal("account_error", "oops", data=data)
    assert store.entries() == []


def test_client_order_ids(store: StateStore) -> None:
    for acct, coid in [("a1", "ga-1"), ("a1", "ga-2"), ("b1", "gb-1")]:
        store.journal("order_sent", f"{acct}: sell", account_id=acct,
                      data={"client_order_id": coid, "symbol": "X/USDT", "side": "sell",
                            "amount": 1.0})
    store.journal("order_filled", "filled", account_id="a1", data={"client_order_id": "ga-9"})
    assert store.client_order_ids() == {"ga-1", "ga-2", "gb-1"}
    assert store.client_order_ids("a1") == {"ga-1", "ga-2"}
    assert store.client_order_ids("zz") == set()


def test_cycle_ids_keep_counting_across_restarts(opener: Opener) -> None:
    with opener() as s:
        assert [s.next_cycle_id(), s.next_cycle_id()] == [1, 2]
    with opener() as s:
        assert s.next_cycle_id() == 3


# --- metrics -------------------------------------------------------------------------


def test_interventions_today_versus_total(store: StateStore) -> None:
    now = time.time()
    store.journal("intervention", "old", account_id="a1", ts=now - 3 * 86400)
    store.journal("intervention", "yesterday", account_id="a1", ts=now - 2 * 86400)
    store.journal("intervention", "now", account_id="a1", ts=now)
    store.journal("decision", "not an intervention", account_id="a1", ts=now)
    m = store.metrics(now)
    assert (m.interventions, m.interventions_today) == (3, 1)


def test_back_under_cap_durations(store: StateStore) -> None:
    assert store.metrics().last_back_under_cap_seconds is None
    store.record_over_cap("a1", True, ts=1000)
    store.record_over_cap("a1", True, ts=1030)  # still over: the episode started at 1000
    store.record_over_cap("b1", True, ts=1010)
    assert store.metrics().over_cap_now == ("a1", "b1")
    store.record_over_cap("a1", False, ts=1060)
    store.record_over_cap("a1", False, ts=1090)  # already under: nothing new
    m = store.metrics()
    assert (m.last_back_under_cap_seconds, m.worst_back_under_cap_seconds) == (60, 60)
    assert m.over_cap_now == ("b1",)
    store.record_over_cap("b1", False, ts=1015)
    m = store.metrics()
    assert (m.last_back_under_cap_seconds, m.worst_back_under_cap_seconds) == (60, 60)
    store.record_over_cap("a1", True, ts=2000)
    store.record_over_cap("a1", False, ts=2010)
    m = store.metrics()
    assert (m.last_back_under_cap_seconds, m.worst_back_under_cap_seconds) == (10, 60)
    assert m.over_cap_now == ()


# --- a database that can't be trusted is refused, never recreated ------------------------


def test_garbage_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / DB_FILENAME
    garbage = b"this is not a database\x00\xff" * 200
    db.write_bytes(garbage)
    with pytest.raises(StateError) as info:
        StateStore(tmp_path)
    assert str(db) in str(info.value)
    assert "restore it from a backup" in str(info.value)
    assert db.read_bytes() == garbage


def _populated(tmp_path: Path) -> Path:
    with StateStore(tmp_path) as s:
        s.set_forced_unwind("alice", True, by="cli")
        for i in range(200):
            s.journal("snapshot", "x" * 200, account_id="a1", data={"i": i})
    return tmp_path / DB_FILENAME


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_database_is_refused(tmp_path: Path, keep: float) -> None:
    db = _populated(tmp_path)
    data = db.read_bytes()
    db.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(StateError, match="corrupt") as info:
        StateStore(tmp_path)
    assert str(db) in str(info.value)


def test_empty_database_file_is_refused(tmp_path: Path) -> None:
    db = _populated(tmp_path)
    db.write_bytes(b"")
    with pytest.raises(StateError, match="is empty"):
        StateStore(tmp_path)
    assert db.stat().st_size == 0


def test_someone_elses_sqlite_file_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute("CREATE TABLE notes (t TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not a guard-app state database"):
        StateStore(tmp_path)


def test_closed_store_says_so(opener: Opener) -> None:
    s = opener()
    s.close()
    s.close()
    with pytest.raises(StateError, match="already closed"):
        s.forced_unwind_flags()


def test_new_database_is_private(tmp_path: Path) -> None:
    with StateStore(tmp_path / "fresh"):
        pass
    assert (tmp_path / "fresh" / DB_FILENAME).stat().st_mode & 0o077 == 0
    assert [p.name for p in (tmp_path / "fresh").iterdir() if p.name.startswith(".")] == []


# --- concurrency -------------------------------------------------------------------------


def test_two_threads_write_at_once_without_locking_errors(opener: Opener) -> None:
    opener().close()
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(name: str) -> None:
        try:
            with opener() as s:
                start.wait(timeout=10)
                for i in range(150):
                    s.journal("decision", f"{name} {i}", account_id=name)
                    if i % 25 == 0:
                        s.set_forced_unwind(name, i % 50 == 0, by=name)
                        s.next_cycle_id()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with opener() as s:
        assert len(s.entries(limit=1000, kinds=["decision"])) == 300
        assert s.next_cycle_id() == 2 * 6 + 1


def test_sqlite_store_is_bound_to_its_thread(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    failures: list[BaseException] = []

    def other() -> None:
        try:
            store.forced_unwind_flags()
        except BaseException as e:
            failures.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(timeout=10)
    store.close()
    assert len(failures) == 1 and isinstance(failures[0], StateError | sqlite3.ProgrammingError)


# --- leases: one enforcer acts on an account at a time ------------------------------------


def test_leases_are_exclusive_stable_and_expire(opener: Opener) -> None:
    with opener() as a, opener() as b:
        assert a.acquire_leases("host-a:1", ["acct1", "acct2"], 60) == {"acct1", "acct2"}
        # A healthy holder keeps its accounts: another enforcer gets nothing...
        assert b.acquire_leases("host-b:2", ["acct1", "acct2", "acct3"], 60) == {"acct3"}
        # ...and renewing is the same call.
        assert a.acquire_leases("host-a:1", ["acct1", "acct2"], 60) == {"acct1", "acct2"}
        assert b.lease_holders() == {"acct1": "host-a:1", "acct2": "host-a:1",
                                     "acct3": "host-b:2"}
        # A holder that stops renewing loses its accounts once the lease runs out.
        assert a.acquire_leases("host-a:1", ["acct1"], 0.2) == {"acct1"}
        assert _wait_for(lambda: b.acquire_leases("host-b:2", ["acct1"], 60) == {"acct1"})
        assert a.acquire_leases("host-a:1", ["acct1"], 60) == set()
        # A clean stop hands everything over at once.
        a.release_leases("host-a:1")
        assert b.acquire_leases("host-b:2", ["acct2"], 60) == {"acct2"}
        assert a.lease_holders() == {"acct1": "host-b:2", "acct2": "host-b:2",
                                     "acct3": "host-b:2"}


def test_racing_enforcers_never_both_hold_an_account(opener: Opener) -> None:
    opener().close()
    held: dict[str, set[str]] = {}
    start = threading.Barrier(3)

    def race(name: str) -> None:
        with opener() as s:
            start.wait(timeout=10)
            held[name] = s.acquire_leases(name, [f"acct{i}" for i in range(20)], 60)

    threads = [threading.Thread(target=race, args=(f"h{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    everyone = [a for accounts in held.values() for a in accounts]
    assert sorted(everyone) == sorted(f"acct{i}" for i in range(20))  # each exactly once


# --- guard-app state copy ------------------------------------------------------------------


def test_copy_carries_flags_journal_cycle_ids_and_metrics(
    tmp_path: Path, backend: Backend
) -> None:
    with StateStore(tmp_path / "old") as source:
        source.set_forced_unwind("alice", True, by="cli", reason="moving desks")
        source.set_forced_unwind("bob", True, by="gui")
        source.set_forced_unwind("bob", False, by="gui")
        for _ in range(5):
            source.next_cycle_id()
        source.journal("order_sent", "sell", account_id="a1",
                       data={"client_order_id": "ga-5-0-abc", "symbol": "X/USDT"})
        source.record_over_cap("a1", True, ts=100)
        source.record_over_cap("a1", False, ts=130)
        dump = source.dump()
        flags, entries = source.forced_unwind_flags(), source.entries(newest_first=False)
    with backend.open() as target:
        target.load(dump)
        assert target.forced_unwind_flags() == flags
        assert target.flag("bob") is not None and not target.flag("bob").active  # type: ignore[union-attr]
        assert target.entries(newest_first=False) == entries
        assert target.client_order_ids() == {"ga-5-0-abc"}
        assert target.next_cycle_id() == 6
        assert target.metrics().last_back_under_cap_seconds == 30
        new_id = target.journal("cycle_start", "after the move")
        assert new_id > max(e.id for e in entries)
        with pytest.raises(StateError, match="empty"):
            target.load(dump)


# --- PostgreSQL: the server going away ---------------------------------------------------------


def test_postgres_url_with_a_password_is_a_config_error() -> None:
    from guard_app.core.config import parse_config
    from guard_app.core.errors import ConfigError

    for url in ("postgresql://guard:hunter2@db:5432/guard",
                "postgresql://guard@db/guard?password=hunter2"):
        with pytest.raises(ConfigError) as info:
            parse_config(f'[state]\nurl = "{url}"\n')
        assert info.value.key == "state.url" and "hunter2" not in str(info.value)
        assert "guard-app state password" in str(info.value)
    with pytest.raises(ConfigError, match="state.url"):
        parse_config('[state]\nurl = "mysql://db/guard"\n')
    with pytest.raises(ConfigError, match="state.lease_seconds"):
        parse_config('[state]\nurl = "postgresql://guard@db/guard"\nlease_seconds = 0\n')
    config = parse_config('[state]\nurl = "postgresql://guard@db/guard"\nlease_seconds = 1.5\n')
    assert config.state == StateConfig(url="postgresql://guard@db/guard", lease_seconds=1.5)
    assert parse_config("").state == StateConfig()


def test_postgres_url_without_psycopg_says_what_to_install(tmp_path: Path) -> None:
    # A Python that can't import psycopg (blocked), checking a config with a desk URL.
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from guard_app.core.config import parse_config\n"
        "from guard_app.core.errors import ConfigError\n"
        "try:\n"
        "    parse_config('[state]\\nurl = \"postgresql://guard@db/guard\"\\n')\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                         timeout=60, check=True).stdout
    assert "state.url" in out and "pip install 'guard-app[postgres]'" in out


def test_postgres_unreachable_at_start_is_a_state_error(postgres_server: PostgresServer) -> None:
    from guard_app.core.state.postgres import PostgresStateStore

    url = f"postgresql://guard@127.0.0.1:{postgres_server.port}/no_such_db"
    with pytest.raises(StateError) as info:
        PostgresStateStore(url, password=PASSWORD)
    assert "no_such_db" in str(info.value) and PASSWORD not in str(info.value)
    with pytest.raises(StateError, match="password"):
        PostgresStateStore(postgres_server.url(), password="wrong")


def test_postgres_down_keeps_the_last_flags_and_the_journal(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    from guard_app.core.state import StateUnavailableError
    from guard_app.core.state.postgres import PostgresStateStore

    url = postgres_server.create_database()
    store = PostgresStateStore(url, password=PASSWORD)
    try:
        store.set_forced_unwind("alice", True, by="cli")
        flags = store.forced_unwind_flags()
        cycle = store.next_cycle_id()
        metrics = store.metrics()
        postgres_server.stop()
        try:
            with caplog.at_level("ERROR", logger="guard_app.state"):
                assert store.forced_unwind_flags() == flags  # the flags last seen
                assert store.next_cycle_id() == cycle + 1
                assert store.journal("order_sent", "kept for later", account_id="a1",
                                     data={"client_order_id": "ga-x"}) == 0
                store.record_over_cap("a1", True)  # skipped, not raised
                assert store.metrics() == metrics  # the last numbers read
                with pytest.raises(StateUnavailableError):
                    store.acquire_leases("h", ["a1"], 3)
                with pytest.raises(StateError):
                    store.set_forced_unwind("bob", True, by="cli")
            errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 1  # once per minute, not once per call
            assert url.rsplit("/", 1)[1] in errors[0] and "unreachable" in errors[0]
        finally:
            postgres_server.start()
        assert _wait_for(lambda: store.available, timeout=20)
        assert "ga-x" in store.client_order_ids("a1")  # written once the server was back
        assert store.acquire_leases("h", ["a1"], 3) == {"a1"}
    finally:
        store.close()


def test_journal_many_writes_a_batch_in_order(store: StateStore) -> None:
    ids = store.journal_many("order_sent", [
        ("a1: sell X", "a1", "alice", 3, {"client_order_id": "ga3n0rx"}),
        ("a1: sell Y", "a1", "alice", 3, {"client_order_id": "ga3n1rx"}),
    ], ts=1000.0)
    assert len(ids) == 2 and ids == sorted(ids)
    assert store.client_order_ids("a1") == {"ga3n0rx", "ga3n1rx"}
    assert [e.ts for e in store.entries(kinds=["order_sent"])] == [1000.0, 1000.0]
    with pytest.raises(ValueError, match="credentials"):
        store.journal_many("order_sent", [("m", None, None, None, {"secret": "s"})])


def test_another_connections_journal_entries_change_data_version(opener: Opener) -> None:
    with opener() as mine, opener() as other:
        v = mine.data_version()
        other.journal("snapshot", "written elsewhere", account_id="a1")
        assert _wait_for(lambda: mine.data_version() != v)
        assert [e.message for e in mine.entries(limit=1)] == ["written elsewhere"]
