"""The state database: flags that survive restarts and other processes, the journal,
metrics, and refusing (never recreating) a corrupt file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard_app.core.errors import StateError
from guard_app.core.state import DB_FILENAME, StateStore

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "data")
    yield s
    s.close()


# --- forced-unwind flags -------------------------------------------------------------


def test_flag_survives_reopening(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        flag = s.set_forced_unwind("alice", True, by="gui", reason="strategy went wild")
        assert flag.active and flag.by == "gui" and flag.since.endswith("Z")
    with StateStore(tmp_path) as again:
        assert again.forced_unwind_flags() == {"alice": flag}
        assert again.flag("alice") == flag
        assert again.flag("bob") is None


def test_flag_set_by_another_process_is_seen(store: StateStore) -> None:
    before = store.data_version()
    script = (
        "import sys; from pathlib import Path; from guard_app.core.state import StateStore\n"
        "s = StateStore(Path(sys.argv[1])); s.set_forced_unwind('bob', True, by='cli'); s.close()"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-c", script, str(store.path.parent)],
        check=True, cwd=REPO_ROOT, env=env, timeout=60,
    )
    assert store.data_version() != before
    flag = store.flag("bob")
    assert flag is not None and flag.active and flag.by == "cli"
    assert set(store.forced_unwind_flags()) == {"bob"}


def test_own_writes_do_not_change_data_version_but_others_do(tmp_path: Path) -> None:
    with StateStore(tmp_path) as mine, StateStore(tmp_path) as other:
        v = mine.data_version()
        mine.journal("cycle_start", "cycle 1")
        assert mine.data_version() == v
        other.set_forced_unwind("alice", True, by="tray")
        assert mine.data_version() != v
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


def test_cycle_ids_keep_counting_across_restarts(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        assert [s.next_cycle_id(), s.next_cycle_id()] == [1, 2]
    with StateStore(tmp_path) as s:
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


def test_closed_store_says_so(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
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


def test_two_threads_write_at_once_without_locking_errors(tmp_path: Path) -> None:
    StateStore(tmp_path).close()
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(name: str) -> None:
        try:
            with StateStore(tmp_path) as s:
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
    with StateStore(tmp_path) as s:
        assert len(s.entries(limit=1000, kinds=["decision"])) == 300
        assert s.next_cycle_id() == 2 * 6 + 1


def test_store_is_bound_to_its_thread(store: StateStore) -> None:
    failures: list[BaseException] = []

    def other() -> None:
        try:
            store.forced_unwind_flags()
        except BaseException as e:
            failures.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(timeout=10)
    assert len(failures) == 1 and isinstance(failures[0], StateError | sqlite3.ProgrammingError)
