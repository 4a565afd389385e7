"""Leases as the enforcer uses them: renewed by its own loop, lost when that loop freezes,
checked before every order; on both stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from guard_app.core.config import parse_config
from guard_app.core.enforcer import Enforcer
from guard_app.core.events import EnforcerEvent, LeasesChanged
from guard_app.core.state import StateStore, open_state
from guard_app.core.state.leases import LeaseKeeper
from guard_app.exchanges import make_broker
from tests.fixtures.postgres_fixtures import PostgresServer

LEASE = 0.6


@pytest.fixture(params=["sqlite", "postgres"])
def state_toml(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> str:
    """The [state] table of a config on one of the two stores."""
    if request.param == "sqlite":
        return f"[state]\nlease_seconds = {LEASE}\n"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    monkeypatch.setenv("PGPASSWORD", server.env()["PGPASSWORD"])
    return f'[state]\nurl = "{server.create_database()}"\nlease_seconds = {LEASE}\n'


@pytest.fixture
def other_store(tmp_path: Path, state_toml: str) -> Iterator[StateStore]:
    store = open_state(tmp_path / "data", parse_config(state_toml).state)
    yield store
    store.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_holder_that_stops_renewing_loses_and_never_sends(other_store: StateStore) -> None:
    frozen = LeaseKeeper(LEASE, holder="frozen:1")
    standby = LeaseKeeper(LEASE, holder="standby:2")
    accounts = ["a1", "a2"]
    assert frozen.renew(other_store, accounts) == {"a1", "a2"}
    assert standby.renew(other_store, accounts) == set()
    assert standby.enforced_by("a1") == "frozen:1"
    # The frozen holder stops renewing; the standby keeps trying and takes over.
    wait_for(lambda: standby.renew(other_store, accounts) == {"a1", "a2"})
    assert not frozen.holds("a1")
    # The check before an order renews first and finds the account gone.
    assert not frozen.confirm(other_store, accounts, "a1")
    assert frozen.enforced_by("a1") == "standby:2"
    assert standby.confirm(other_store, accounts, "a1")


def test_a_frozen_enforcer_loop_loses_its_accounts(tmp_path: Path, state_toml: str,
                                                    other_store: StateStore) -> None:
    config = parse_config(
        "[enforcer]\ninterval_seconds = 60\n"
        '[[accounts]]\nid = "fz-spot"\nuser = "fz"\nexchange = "binance"\nmax_positions = 3\n'
        + state_toml
    )
    events: list[EnforcerEvent] = []
    enforcer = Enforcer(config, tmp_path / "data", broker_factory=make_broker,
                        observers=[events.append])
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(enforcer.run(),))
    runner.start()
    try:
        me = enforcer._leases.holder
        wait_for(lambda: other_store.lease_holders().get("fz-spot") == me)
        # Healthy: a standby gets nothing, however often it asks.
        for _ in range(5):
            assert other_store.acquire_leases("standby:9", ["fz-spot"], LEASE) == set()
            time.sleep(LEASE / 3)
        # Freeze the enforcer's loop: it can't renew, so the standby takes over.
        unfreeze = threading.Event()
        loop.call_soon_threadsafe(unfreeze.wait, 30)
        wait_for(lambda: other_store.acquire_leases("standby:9", ["fz-spot"], 60) == {"fz-spot"})
        unfreeze.set()
        # Thawed, it finds the account held by the standby and leaves it alone.
        wait_for(lambda: enforcer.enforced_by("fz-spot") == "standby:9")
        assert other_store.lease_holders() == {"fz-spot": "standby:9"}
        # ...and tells its observers (the window shows "STANDBY: standby:9 enforces").
        leases = [e for e in events if isinstance(e, LeasesChanged)]
        assert leases[0].enforced_by == (("fz-spot", me),) and not leases[0].standby("fz-spot")
        wait_for(lambda: any(e.standby("fz-spot") for e in events
                             if isinstance(e, LeasesChanged)))
    finally:
        enforcer.stop()
        runner.join(timeout=30)
        loop.close()
    assert not runner.is_alive()


def test_the_window_shows_an_account_another_enforcer_holds_as_standby() -> None:
    from guard_app.gui.model.dashboard import Dashboard

    config = parse_config(
        '[[accounts]]\nid = "a1"\nuser = "u"\nexchange = "binance"\nmax_positions = 3\n'
        '[[accounts]]\nid = "a2"\nuser = "u"\nexchange = "binance"\nmax_positions = 3\n'
    )
    board = Dashboard(config)
    changed = board.apply(LeasesChanged(holder="ws-a:1",
                                        enforced_by=(("a1", "ws-a:1"), ("a2", "ws-b:2"))))
    assert changed == {"a1", "a2"}
    assert board.accounts["a2"].state_text() == "STANDBY: ws-b:2 enforces"
    assert board.accounts["a1"].state_text() != board.accounts["a2"].state_text()
    assert board.accounts["a1"].enforced_by == "ws-a:1" and not board.accounts["a1"].standby
    # Taken over by this window's enforcer: no longer standby.
    board.apply(LeasesChanged(holder="ws-a:1", enforced_by=(("a1", "ws-a:1"), ("a2", "ws-a:1"))))
    assert not board.accounts["a2"].standby
    assert "STANDBY" not in board.accounts["a2"].state_text()
    # The shared database going away and coming back reaches the tray as notices.
    board.take_notices()
    away = (("a1", "ws-a:1"), ("a2", "ws-a:1"))
    board.apply(LeasesChanged(holder="ws-a:1", enforced_by=away, database_ok=False,
                              database="postgresql://guard@db/guard"))
    notices = board.take_notices()
    assert [n.kind for n in notices] == ["database_unreachable"]
    assert "postgresql://guard@db/guard" in notices[0].text
    board.apply(LeasesChanged(holder="ws-a:1", enforced_by=away, database_ok=True,
                              database="postgresql://guard@db/guard"))
    assert [n.kind for n in board.take_notices()] == ["database_back"]


def test_a_crashed_enforcer_on_this_machine_is_not_waited_for(other_store: StateStore) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    crashed = f"{socket.gethostname()}:{gone.pid}"
    assert other_store.acquire_leases(crashed, ["a1"], 60) == {"a1"}
    far_away = LeaseKeeper(60, holder="elsewhere:1")
    assert far_away.renew(other_store, ["a1"]) == set()  # another machine can't judge
    restarted = LeaseKeeper(60)  # this process, on the same machine
    assert restarted.renew(other_store, ["a1"]) == {"a1"}
    assert other_store.lease_holders() == {"a1": restarted.holder}
