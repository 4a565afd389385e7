"""A desk: two ``guard-app run`` processes, the same accounts, one PostgreSQL database.

Real everything: the simulator on 127.0.0.1, the real keyring, a throwaway PostgreSQL
cluster (tests/fixtures/postgres_fixtures.py), two enforcer processes.

* only the lease holder sends orders; ``status --json`` names it in ``enforced_by``;
* a flag set with ``guard-app unwind`` reaches the holder, which closes, within 1 s;
* SIGKILL the holder during a forced unwind while the strategy keeps opening
  positions: the standby takes over within 5 s (on one machine it
  sees the holder's process is gone and need not wait for the lease), finishes the
  unwind, and no client order id (nor any position) is closed twice;
* PostgreSQL stopped mid-run: the holder keeps enforcing its accounts and says so
  (ERROR naming the database), the standby takes nothing over; restarted: both
  reconnect;
* ``guard-app state copy --to URL`` moves a SQLite state (flags, journal, cycle ids)
  into PostgreSQL, with the password from the keyring (``guard-app state password``).

Leases are 1.5 s here (``[state] lease_seconds``) to keep the tests short; the
defaults (3 s) meet the same promises.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guard_app.core.state import StateStore, StateUnavailableError
from guard_app.core.state.postgres import PostgresStateStore
from guard_app.sim import SimServer
from tests.fixtures.postgres_fixtures import PASSWORD, PostgresServer
from tests.fixtures.world import World, sim_account

LEASE = 1.5
SPOT = {"USDT": 100, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "BNB": 0.02, "LINK": 0.5,
        "DOT": 1.0, "LTC": 0.1, "AVAX": 0.2, "XRP": 10, "DOGE": 40}
FUTURES = [("BTC/USDT:USDT", "long", 0.002), ("ETH/USDT:USDT", "short", 0.05),
           ("SOL/USDT:USDT", "long", 0.5)]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Desk:
    """One world (simulator, keys, config with [state] url) and its enforcer processes."""

    def __init__(self, world: World, server: PostgresServer, url: str) -> None:
        self.world = world
        self.server = server
        self.url = url
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: dict[int, Path] = {}
        self.store = PostgresStateStore(url, password=PASSWORD)

    def write_config(self, accounts: list[dict[str, Any]], interval: float = 60) -> None:
        self.world.write_config(accounts, interval=interval)
        path = self.world.config_path
        path.write_text(path.read_text()
                        + f'\n[state]\nurl = "{self.url}"\nlease_seconds = {LEASE}\n')

    def env(self) -> dict[str, str]:
        return self.server.env()

    def start(self, name: str) -> subprocess.Popen[str]:
        log = self.world.tmp_path / f"{name}.log"
        cmd = [sys.executable, "-m", "guard_app", "run", "--config",
               str(self.world.config_path), "--data-dir", str(self.world.tmp_path / name)]
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    env=self.env())
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log(self, proc: subprocess.Popen[str]) -> str:
        return self.logs[proc.pid].read_text()

    def holder(self, proc: subprocess.Popen[str]) -> str:
        return f"{socket.gethostname()}:{proc.pid}"

    def holders(self) -> dict[str, str]:
        try:
            return self.store.lease_holders()
        except StateUnavailableError:  # the test's own store reconnecting after a restart
            return {}

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "guard_app", *args, "--config",
               str(self.world.config_path), "--data-dir", str(self.world.tmp_path / "cli")]
        return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60,
                              env=self.env(), check=False)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.store.close()


@pytest.fixture
def desk(world: World, postgres_server: PostgresServer, pg_url: str) -> Iterator[Desk]:
    d = Desk(world, postgres_server, pg_url)
    try:
        yield d
    finally:
        d.close()


def accepted(sim: SimServer) -> list[Any]:
    return [o for o in sim.exchange.orders if o.accepted]


def two_accounts(desk: Desk, sim: SimServer) -> list[dict[str, Any]]:
    accounts = [desk.world.account("al-spot", sim, "s", max_positions=20),
                desk.world.account("al-fut", sim, "f", market="swap", max_positions=20)]
    desk.write_config(accounts)
    return accounts


def test_only_the_holder_acts_and_a_flag_reaches_it_within_a_second(desk: Desk) -> None:
    sim = desk.world.start_sim([sim_account("s", spot=SPOT), sim_account("f", positions=FUTURES)])
    two_accounts(desk, sim)
    first = desk.start("a")
    wait_for(lambda: set(desk.holders().values()) == {desk.holder(first)}
             and len(desk.holders()) == 2, 30, "the first enforcer to take both accounts")
    second = desk.start("b")
    wait_for(lambda: "enforcer started" in desk.log(second), 30, "the standby to start")

    status = desk.cli("status", "--json")
    doc = json.loads(status.stdout)
    assert {a["id"]: a["enforced_by"] for a in doc["accounts"]} == {
        "al-spot": desk.holder(first), "al-fut": desk.holder(first)}

    before = len(sim.exchange.orders)
    done = desk.cli("unwind", "alice", "--yes")
    returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    # The flag travels through PostgreSQL (NOTIFY) to the holder, which closes.
    wait_for(lambda: len(sim.exchange.orders) > before, 1.0,
             "the holder's first close after the flag was set (contract: 1 s)")
    took = time.monotonic() - returned
    wait_for(lambda: set(sim.exchange.balances("s")) == {"USDT"}
             and sim.exchange.positions("f") == [], 30, "the unwind to finish")
    assert took <= 1.0
    orders = accepted(sim)
    cids = [o.client_order_id for o in orders]
    assert len(cids) == len(set(cids)) == len(SPOT) - 1 + len(FUTURES)
    assert set(cids) <= desk.store.client_order_ids()  # the shared journal has them all
    wait_for(lambda: ": closed " in desk.log(first), 10, "the holder to log its closes")
    assert ": closed " not in desk.log(second)
    assert all(p.poll() is None for p in (first, second))


def test_sigkill_the_holder_mid_unwind_and_the_standby_finishes_it(desk: Desk) -> None:
    sim = desk.world.start_sim([sim_account("s", spot=SPOT), sim_account("f", positions=FUTURES)])
    accounts = two_accounts(desk, sim)
    for acc in accounts:
        acc["ccxt"]["rateLimit"] = 120  # a slow exchange, so the kill lands mid-unwind
    desk.write_config(accounts)
    sim.exchange.set_latency(0.1)
    first = desk.start("a")
    wait_for(lambda: len(desk.holders()) == 2, 30, "the first enforcer to take both accounts")
    second = desk.start("b")
    wait_for(lambda: "enforcer started" in desk.log(second), 30, "the standby to start")
    desk.store.set_forced_unwind("alice", True, by="test", reason="desk crash test")

    wait_for(lambda: len(accepted(sim)) >= 2, 30, "the holder's first closes")
    first.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    first.wait(timeout=10)
    # The strategy keeps trading while the unwind is on: only the standby can undo this.
    sim.exchange.open_position("f", "XRP/USDT:USDT", "long", 20)
    sim.exchange.add_balance("s", "ADA", 30)

    wait_for(lambda: set(desk.holders().values()) == {desk.holder(second)}
             and len(desk.holders()) == 2, 5.0 - (time.monotonic() - killed),
             "the standby to take both accounts over (contract: 5 s)")
    wait_for(lambda: set(sim.exchange.balances("s")) == {"USDT"}
             and sim.exchange.positions("f") == [], 60, "the standby to finish the unwind")

    log = sim.exchange.orders
    cids = [o.client_order_id for o in log]
    assert len(cids) == len(set(cids))  # no client order id sent twice
    assert set(cids) <= desk.store.client_order_ids()  # all journaled in the shared journal
    # Nothing closed twice: what was sold is exactly what was held (no more).
    sold: dict[str, float] = {}
    for o in log:
        if o.accepted and o.filled:
            sold[o.symbol] = sold.get(o.symbol, 0.0) + o.filled
    for asset, amount in {**SPOT, "ADA": 30}.items():
        if asset != "USDT":
            assert sold[f"{asset}/USDT"] == pytest.approx(amount), asset
    for symbol, _side, contracts in [*FUTURES, ("XRP/USDT:USDT", "long", 20)]:
        assert sold[symbol] == pytest.approx(contracts), symbol
    # The standby says what it did (its log may trail the exchange's answer a little).
    wait_for(lambda: "now enforcing" in desk.log(second) and ": closed " in desk.log(second),
             10, "the standby to log its takeover and closes")


def test_database_stopped_mid_run_holder_keeps_enforcing_then_both_reconnect(
    desk: Desk,
) -> None:
    sim = desk.world.start_sim([sim_account("s", spot={"USDT": 100})])
    accounts = [desk.world.account("al-spot", sim, "s", max_positions=1)]
    desk.write_config(accounts, interval=1)
    first = desk.start("a")
    wait_for(lambda: len(desk.holders()) == 1, 30, "the first enforcer to take the account")
    second = desk.start("b")
    wait_for(lambda: "enforcer started" in desk.log(second), 30, "the standby to start")
    dbname = desk.url.rsplit("/", 1)[1]

    desk.server.stop()
    try:
        # Over the cap while the database is away: the holder still closes.
        before = len(accepted(sim))
        sim.exchange.add_balance("s", "SOL", 0.1)
        sim.exchange.add_balance("s", "LINK", 1.0)
        wait_for(lambda: len(accepted(sim)) > before, 30, "the holder to close without the database")
        wait_for(lambda: "unreachable" in desk.log(first), 10, "the holder to say the database is gone")
        # A flag can't be set without the database, and the command says so.
        refused = desk.cli("unwind", "alice", "--yes")
        assert refused.returncode == 2 and dbname in refused.stderr
    finally:
        desk.server.start()
    for proc in (first, second):
        line = next(x for x in desk.log(proc).splitlines() if "unreachable" in x)
        assert "ERROR" in line and dbname in line and PASSWORD not in desk.log(proc)
    assert ": closed " not in desk.log(second)  # the standby took nothing over

    wait_for(lambda: all("reachable again" in desk.log(p) for p in (first, second)), 15,
             "both enforcers to reconnect (contract: 15 s)")
    try:
        wait_for(lambda: desk.holders() == {"al-spot": desk.holder(first)}, 10,
                 "the holder to keep its account after the database's return")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{desk.holders()}\nA:\n{desk.log(first)}\n"
                             f"B:\n{desk.log(second)}") from None
    # The closes made while the database was away reached the shared journal.
    assert {o.client_order_id for o in accepted(sim)} <= desk.store.client_order_ids()


def test_state_copy_moves_a_sqlite_state_in_with_the_keyring_password(
    desk: Desk, tmp_path: Path
) -> None:
    data = desk.world.tmp_path / "cli"
    with StateStore(data) as old:
        old.set_forced_unwind("alice", True, by="cli", reason="moving in")
        for _ in range(7):
            old.next_cycle_id()
        old.journal("order_sent", "sell", account_id="al-spot",
                    data={"client_order_id": "ga-7-0-abc"})
    desk.write_config([])
    stored = desk.cli("state", "password", input=PASSWORD + "\n")
    assert stored.returncode == 0, stored.stderr
    env = {k: v for k, v in desk.env().items() if k != "PGPASSWORD"}
    cmd = [sys.executable, "-m", "guard_app", "state", "copy", "--to", desk.url,
           "--data-dir", str(data)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "1 journal entries" not in done.stdout and PASSWORD not in done.stdout + done.stderr
    assert desk.store.forced_unwind_flags()["alice"].reason == "moving in"
    assert desk.store.client_order_ids() == {"ga-7-0-abc"}
    assert desk.store.next_cycle_id() == 8
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert again.returncode == 1 and "empty" in again.stderr


def test_a_password_in_the_url_stops_run_naming_state_url(desk: Desk) -> None:
    desk.write_config([])
    path = desk.world.config_path
    path.write_text(path.read_text().replace("postgresql://guard@",
                                             "postgresql://guard:hunter2@"))
    done = desk.cli("run", "--once")
    assert done.returncode == 2 and "state.url" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert os.environ.get("PGPASSWORD") != "hunter2"


def test_state_commands_refuse_bad_input_without_echoing_secrets(tmp_path: Path) -> None:
    def cli(*args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "guard_app", *args,
                               "--data-dir", str(tmp_path / "data")], input=input,
                              capture_output=True, text=True, timeout=60, check=False)

    with_password = cli("state", "copy", "--to", "postgresql://guard:s3cr3t-pw@db/guard")
    assert with_password.returncode == 2 and "must not contain a password" in with_password.stderr
    assert "s3cr3t-pw" not in with_password.stderr + with_password.stdout
    other = cli("state", "copy", "--to", "mysql://db/guard")
    assert other.returncode == 2 and "--to" in other.stderr and "postgresql://" in other.stderr
    empty = cli("state", "password", input="\n")
    assert empty.returncode == 2 and "nothing stored" in empty.stderr
    missing = cli("state", "copy")
    assert missing.returncode == 2 and "--to" in missing.stderr
