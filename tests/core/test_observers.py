"""The enforcer's event stream and its standard observers (journal, trader log),
against the simulator through the real ccxt, with keys in the real keyring."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import pytest

from guard_app.core.enforcer import Enforcer
from guard_app.core.errors import ErrorKind, SecretStoreError, StateError
from guard_app.core.events import (
    AccountError,
    CloseDecided,
    EnforcerEvent,
    FlagsChanged,
    JournalWritten,
    OrderPlaced,
    OrderRejected,
)
from guard_app.core.models import CLIENT_ORDER_ID_MAX, client_order_id
from guard_app.core.secrets import ApiKeys, MemorySecretStore
from guard_app.core.state import StateStore
from guard_app.exchanges import make_broker
from tests.fixtures.world import World, keys_of, sim_account


def spot_ten() -> dict[str, float]:
    return {"USDT": 500, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "BNB": 0.02, "LINK": 0.5,
            "DOT": 1.0, "LTC": 0.1, "AVAX": 0.2, "XRP": 10, "DOGE": 40}


def run_once(enforcer: Enforcer) -> Any:
    async def go() -> Any:
        try:
            return await enforcer.run_cycle()
        finally:
            await enforcer.aclose()

    return asyncio.run(go())


def test_order_sent_is_in_the_journal_before_the_exchange_sees_the_order(world: World) -> None:
    sim = world.start_sim([sim_account("a", spot=spot_ten())])
    config = world.write_config([world.account("a-spot", sim, "a", max_positions=8)])
    seen_at_arrival: dict[str, bool] = {}
    receive = sim.exchange.new_order

    def probe(acc: Any, venue: str, params: dict[str, str]) -> Any:
        # Runs on the simulator's HTTP thread when the order arrives: a separate
        # connection, so only what is committed is visible.
        cid = params.get("newClientOrderId", "")
        with StateStore(world.data_dir) as store:
            seen_at_arrival[cid] = cid in store.client_order_ids("a-spot")
        return receive(acc, venue, params)

    sim.exchange.new_order = probe  # type: ignore[method-assign]
    report = run_once(Enforcer(config, world.data_dir, world.secrets, broker_factory=make_broker))

    assert report.ok, report.errors
    assert len(seen_at_arrival) == 2
    assert all(seen_at_arrival.values()), seen_at_arrival


class BrokenGate:
    """A send gate that can't record: the orders must not leave."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, event: EnforcerEvent) -> None:
        return None

    def before_send(self, orders: Sequence[OrderPlaced]) -> None:
        self.asked += [o.client_order_id for o in orders]
        raise StateError("disk full")


def test_an_order_that_could_not_be_recorded_is_not_sent(world: World) -> None:
    sim = world.start_sim([sim_account("b", spot=spot_ten())])
    config = world.write_config([world.account("b-spot", sim, "b", max_positions=8)])
    gate = BrokenGate()
    events: list[EnforcerEvent] = []

    report = run_once(Enforcer(config, world.data_dir, world.secrets, events.append,
                               observers=[gate], broker_factory=make_broker))

    assert len(gate.asked) == 2
    assert sim.exchange.orders == []
    rejected = [e for e in events if isinstance(e, OrderRejected)]
    assert len(rejected) == 2 and all("not sent" in e.reason for e in rejected)
    assert not report.ok and len(report.rejected) == 2


def test_journal_entries_are_events_too_and_match_the_database(world: World) -> None:
    sim = world.start_sim([sim_account("c", spot=spot_ten())])
    config = world.write_config([world.account("c-spot", sim, "c", max_positions=8)])
    events: list[EnforcerEvent] = []

    run_once(Enforcer(config, world.data_dir, world.secrets, events.append,
                      broker_factory=make_broker))

    written = [e.entry for e in events if isinstance(e, JournalWritten)]
    stored = StateStore(world.data_dir).entries(limit=500, newest_first=False)
    assert [(e.id, e.kind, e.message) for e in written] == [
        (e.id, e.kind, e.message) for e in stored]
    decisions = [e for e in events if isinstance(e, CloseDecided)]
    assert {d.close.position.symbol for d in decisions} == {"XRP/USDT", "DOGE/USDT"}
    assert all(not d.dry_run for d in decisions)


def test_flags_changed_carries_who_set_the_flag_and_why(world: World) -> None:
    sim = world.start_sim([sim_account("d", spot={"USDT": 10})])
    config = world.write_config([world.account("d-spot", sim, "d", user="dora")])
    StateStore(world.data_dir).set_forced_unwind("dora", True, by="cli", reason="bad day")
    events: list[EnforcerEvent] = []

    run_once(Enforcer(config, world.data_dir, world.secrets, events.append,
                      broker_factory=make_broker))

    changed = [e for e in events if isinstance(e, FlagsChanged)]
    assert len(changed) == 1
    flag = changed[0].flag("dora")
    assert changed[0].active_users == ("dora",)
    assert flag is not None and flag.active and (flag.by, flag.reason) == ("cli", "bad day")


class FailingReader(MemorySecretStore):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def aget(self, account_id: str) -> ApiKeys | None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [(SecretStoreError("the keyring is locked"), ErrorKind.KEYRING),
     (StateError("state.sqlite3 is unreadable"), ErrorKind.STATE)],
)
def test_each_error_is_reported_with_its_own_kind(
    world: World, exc: Exception, kind: ErrorKind
) -> None:
    sim = world.start_sim([sim_account("e", spot=spot_ten())])
    config = world.write_config([world.account("e-spot", sim, "e", store_keys=False)])
    events: list[EnforcerEvent] = []

    run_once(Enforcer(config, world.data_dir, FailingReader(exc), events.append,
                      broker_factory=make_broker))

    errors = [e for e in events if isinstance(e, AccountError)]
    assert [(e.account_id, e.kind) for e in errors] == [("e-spot", kind)]
    kinds = [e.data["kind"] for e in StateStore(world.data_dir).entries(kinds=["account_error"])]
    assert kinds == [str(kind)]


def test_memory_store_runs_the_enforcer_without_a_keyring(world: World) -> None:
    acc = sim_account("m", spot=spot_ten())
    sim = world.start_sim([acc])
    config = world.write_config([world.account("m-spot", sim, "m", store_keys=False)])
    keys = MemorySecretStore({"m-spot": keys_of(acc)})

    report = run_once(Enforcer(config, world.data_dir, keys, broker_factory=make_broker))

    assert report.ok and len(report.orders) == 2


# OKX clOrdId, Binance newClientOrderId, Bybit orderLinkId (see models.client_order_id).
OKX = re.compile(r"[A-Za-z0-9]{1,32}")
BINANCE = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
BYBIT = re.compile(r"[A-Za-z0-9_-]{1,36}")


@pytest.mark.parametrize("cycle_id", [1, 4_207, 10**12 - 1])
@pytest.mark.parametrize("index", [0, 19, 99_999])
def test_client_order_ids_are_accepted_by_every_exchange(cycle_id: int, index: int) -> None:
    cid = client_order_id(cycle_id, index, "a1b2c3")
    assert len(cid) <= CLIENT_ORDER_ID_MAX
    for rule in (OKX, BINANCE, BYBIT):
        assert rule.fullmatch(cid), (rule.pattern, cid)
    assert cid.startswith(f"ga{cycle_id}n{index}r")


def test_client_order_ids_of_a_cycle_are_unique_and_name_it(world: World) -> None:
    sim = world.start_sim([sim_account("f", spot=spot_ten())])
    config = world.write_config([world.account("f-spot", sim, "f", max_positions=6)])

    report = run_once(Enforcer(config, world.data_dir, world.secrets, broker_factory=make_broker))

    cids = [o.client_order_id for o in sim.exchange.orders if o.accepted]
    assert len(cids) == 4 and len(set(cids)) == 4
    assert all(c.startswith(f"ga{report.cycle_id}n") and OKX.fullmatch(c) for c in cids)
