"""Dashboard view state: events in, account/user/summary state and notices out (no Qt)."""

from __future__ import annotations

from guard_app.core.config import parse_config
from guard_app.core.events import (
    AccountError,
    AccountRead,
    CycleFinished,
    CycleStarted,
    FlagsChanged,
    Heartbeat,
    OrderFilled,
    OrderPlaced,
    OrderRejected,
    OverCapDetected,
    UnwindProgress,
)
from guard_app.core.models import (
    AccountSnapshot,
    Caps,
    CloseReason,
    Holding,
    PlannedClose,
    Position,
)
from guard_app.core.state import Metrics, UnwindFlag
from guard_app.gui.model.dashboard import (
    FAILING_AFTER,
    HISTORY_POINTS,
    SUMMARY,
    AccountState,
    Dashboard,
    state_rank,
)

CONFIG = parse_config(
    """
[enforcer]
interval_seconds = 60

[[accounts]]
id = "a1"
user = "alice"
exchange = "binance"
max_positions = 2
max_notional = 1000

[[accounts]]
id = "a2"
user = "alice"
exchange = "binance"
market = "swap"
max_positions = 3

[[accounts]]
id = "b1"
user = "bob"
exchange = "binance"
max_positions = 5

[users.alice]
max_positions = 4
"""
)


def snap(account_id: str, *values: float, user: str = "alice", dust: bool = False,
         ts: float = 100.0) -> AccountSnapshot:
    positions = tuple(Position(f"S{i}/USDT", 1.0, v) for i, v in enumerate(values))
    holdings = (Holding("TRX/USDT", 1.7, 0.2, "below min_position_value 1.0"),) if dust else ()
    return AccountSnapshot(account_id, user, "USDT", positions, holdings, taken_at=ts)


def read(account_id: str, *values: float, over: bool = False, forced: bool = False,
         planned: int = 0, ts: float = 100.0, user: str = "alice", dust: bool = False,
         ) -> AccountRead:
    s = snap(account_id, *values, user=user, dust=dust, ts=ts)
    ordered = sorted(s.positions, key=lambda p: p.value)
    plan = tuple(PlannedClose(account_id, user, p, CloseReason.COUNT_CAP) for p in ordered[:planned])
    return AccountRead(ts=ts, cycle_id=1, snapshot=s, caps=Caps(2, 1000), over_cap=over,
                       forced_unwind=forced, planned=plan)


def test_accounts_and_users_follow_the_config() -> None:
    d = Dashboard(CONFIG)
    assert list(d.accounts) == ["a1", "a2", "b1"]
    assert d.users["alice"].account_ids == ["a1", "a2"]
    assert d.users["alice"].caps.max_positions == 4
    assert d.users["bob"].caps == Caps()
    assert {v.state for v in d.accounts.values()} == {AccountState.PENDING}
    assert d.worst_state() is AccountState.PENDING


def test_a_read_within_caps_is_ok_and_recorded_in_history() -> None:
    d = Dashboard(CONFIG)
    changed = d.apply(read("a1", 10, 20, dust=True, ts=5.0))
    assert changed == {"a1"}
    view = d.accounts["a1"]
    assert view.state is AccountState.OK
    assert view.state_text() == "OK"
    assert view.position_count == 2 and view.notional == 30
    assert view.dust_held
    assert view.last_check == 5.0
    assert list(view.history) == [(5.0, 2, 30.0)]
    assert d.take_notices() == []


def test_history_is_bounded() -> None:
    d = Dashboard(CONFIG)
    for i in range(HISTORY_POINTS + 10):
        d.apply(read("a1", 1, ts=float(i)))
    history = d.accounts["a1"].history
    assert len(history) == HISTORY_POINTS
    assert history[0][0] == 10.0


def test_over_cap_and_back_under_notify_once_each() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("a1", 10, 20))
    d.apply(read("a1", 10, 20, 30, 40, over=True, planned=2))
    view = d.accounts["a1"]
    assert view.state is AccountState.OVER_CAP
    assert view.state_text() == "OVER CAP 4/2"
    assert view.planned_symbols == {"S0/USDT", "S1/USDT"}
    notices = d.take_notices()
    assert [n.kind for n in notices] == ["over_cap"]
    assert notices[0].account_id == "a1" and "S0/USDT" in notices[0].text
    # Still over on the next read: no second notice.
    d.apply(read("a1", 10, 20, 30, over=True, planned=1))
    assert d.take_notices() == []
    d.apply(read("a1", 30, 40))
    assert [n.kind for n in d.take_notices()] == ["back_under"]
    assert view.state is AccountState.OK
    assert view.planned_symbols == set()


def test_orders_mark_rows_closing_then_closed_or_rejected() -> None:
    d = Dashboard(CONFIG)
    event = read("a1", 10, 20, 30, over=True, planned=1)
    d.apply(event)
    pc = event.planned[0]
    assert d.apply(OrderPlaced(cycle_id=1, close=pc, client_order_id="c1", amount=1.0)) == {"a1"}
    assert d.accounts["a1"].closing == {"S0/USDT"}
    d.apply(OrderFilled(cycle_id=1, close=pc, client_order_id="c1", order_id="9", filled=1.0,
                        status="closed"))
    assert d.accounts["a1"].closing == set() and d.accounts["a1"].closed == {"S0/USDT"}
    d.apply(OrderPlaced(cycle_id=1, close=pc, client_order_id="c2", amount=1.0))
    d.apply(OrderRejected(cycle_id=1, close=pc, client_order_id="c2", reason="insufficient balance"))
    assert d.accounts["a1"].rejected == {"S0/USDT": "insufficient balance"}
    assert d.accounts["a1"].closing == set()


def test_user_cap_closes_are_added_to_each_account() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("a1", 10, 20))
    d.apply(read("a2", 5, 50, 60))
    pcs = (PlannedClose("a2", "alice", Position("S0/USDT", 1.0, 5), CloseReason.USER_COUNT_CAP),)
    changed = d.apply(OverCapDetected(cycle_id=1, account_id=None, user="alice", count=5,
                                      max_positions=4, notional=145, max_notional=None,
                                      planned=pcs))
    assert changed == {"a2"}
    assert d.accounts["a2"].state is AccountState.OVER_CAP
    assert d.accounts["a2"].state_text() == "OVER USER CAP"
    assert d.accounts["a2"].planned_symbols == {"S0/USDT"}
    assert d.accounts["a1"].state is AccountState.OK


def test_error_keeps_the_exchange_reason_and_failing_notice_after_three_cycles() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("b1", 10, user="bob"))
    for i in range(FAILING_AFTER):
        d.apply(AccountError(ts=200.0 + i, cycle_id=i, account_id="b1", kind="needs_user",
                             message="binance refused the API key (code -2015)", retry_in=300))
        if i < FAILING_AFTER - 1:
            assert d.take_notices() == []
    view = d.accounts["b1"]
    assert view.state is AccountState.ERROR
    assert view.state_text() == "ERROR: binance refused the API key (code -2015)"
    assert view.next_check_at == 202.0 + 300
    notices = d.take_notices()
    assert [n.kind for n in notices] == ["failing"]
    assert "NOT being guarded" in notices[0].text
    # Another failure doesn't repeat the notice; a good read says it recovered.
    d.apply(AccountError(cycle_id=9, account_id="b1", kind="temporary", message="x", retry_in=60))
    assert d.take_notices() == []
    d.apply(read("b1", 10, user="bob"))
    assert [n.kind for n in d.take_notices()] == ["recovered"]
    assert view.state is AccountState.OK and view.error is None


def test_no_keys_is_its_own_state_and_never_failing() -> None:
    d = Dashboard(CONFIG)
    for i in range(5):
        d.apply(AccountError(cycle_id=i, account_id="a2", kind="no_keys",
                             message="no API keys in the keyring", retry_in=None))
    assert d.accounts["a2"].state is AccountState.NO_KEYS
    assert d.accounts["a2"].state_text() == "NO KEYS"
    assert d.take_notices() == []


def test_forced_unwind_progress_and_notices() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("a1", 10, 20))
    d.apply(read("a2", 5, 50, 60))
    assert d.apply(FlagsChanged(active_users=("alice",))) == {SUMMARY}
    alice = d.users["alice"]
    assert alice.forced_unwind
    assert d.accounts["a1"].state is AccountState.UNWINDING
    assert d.accounts["b1"].state is AccountState.PENDING
    assert [n.kind for n in d.take_notices()] == ["unwind_started"]
    d.apply(UnwindProgress(cycle_id=2, user="alice", closed=3, total=5, remaining=2))
    assert (alice.unwind_closed, alice.unwind_total) == (3, 5)
    assert alice.progress_text == "closed 3 of 5"
    assert d.take_notices() == []
    d.apply(UnwindProgress(cycle_id=3, user="alice", closed=2, total=2, remaining=0))
    assert (alice.unwind_closed, alice.unwind_total, alice.unwind_flat) == (5, 5, True)
    assert [n.kind for n in d.take_notices()] == ["unwind_finished"]
    # Flat again next cycle: no second "finished".
    d.apply(UnwindProgress(cycle_id=4, user="alice", closed=0, total=0, remaining=0))
    assert d.take_notices() == []
    d.apply(read("a1", forced=True))
    assert d.accounts["a1"].state_text() == "UNWOUND (flat)"
    d.set_flags({})
    assert not alice.forced_unwind
    assert d.accounts["a1"].state is AccountState.OK


def test_set_flags_reads_the_stored_flags() -> None:
    d = Dashboard(CONFIG)
    flag = UnwindFlag("bob", True, "2026-01-01T00:00:00Z", "cli", "test")
    d.set_flags({"bob": flag})
    assert d.users["bob"].forced_unwind and d.users["bob"].flag == flag
    assert d.accounts["b1"].state is AccountState.UNWINDING
    assert d.worst_state() is AccountState.UNWINDING


def test_only_flags_changed_turns_a_users_unwind_on_with_its_record() -> None:
    # One source of truth (issue 9): reads and progress never switch the flag themselves.
    d = Dashboard(CONFIG)
    assert d.apply(read("b1", 10, forced=True, user="bob")) == {"b1"}
    d.apply(UnwindProgress(cycle_id=1, user="bob", closed=1, total=1, remaining=0))
    assert not d.users["bob"].forced_unwind
    flag = UnwindFlag("bob", True, "2026-01-01T00:00:00Z", "cli", "panic")
    changed = d.apply(FlagsChanged(active_users=("bob",), flags=(flag,)))
    assert changed == {SUMMARY}
    assert d.users["bob"].forced_unwind and d.users["bob"].flag == flag
    assert d.accounts["b1"].state is AccountState.UNWINDING


def test_worst_state_order() -> None:
    order = [AccountState.UNWINDING, AccountState.ERROR, AccountState.OVER_CAP,
             AccountState.NO_KEYS, AccountState.OK, AccountState.PENDING]
    assert sorted(order, key=state_rank, reverse=True) == order
    d = Dashboard(CONFIG)
    d.apply(read("a1", 1))
    d.apply(read("a2", 1))
    d.apply(read("b1", 1, user="bob"))
    assert d.worst_state() is AccountState.OK
    d.apply(AccountError(cycle_id=1, account_id="a2", kind="no_keys", message="none", retry_in=None))
    assert d.worst_state() is AccountState.NO_KEYS
    d.apply(read("a1", 1, 2, 3, over=True, planned=1))
    assert d.worst_state() is AccountState.OVER_CAP
    d.apply(AccountError(cycle_id=1, account_id="b1", kind="temporary", message="timeout",
                         retry_in=60))
    assert d.worst_state() is AccountState.ERROR
    d.apply(FlagsChanged(active_users=("alice",)))
    assert d.worst_state() is AccountState.UNWINDING
    assert Dashboard(parse_config("")).worst_state() is AccountState.OK


def test_summary_from_cycles_heartbeats_and_metrics() -> None:
    d = Dashboard(CONFIG)
    assert d.summary.status_word == "stopped"
    d.apply(Heartbeat(ts=10.0, next_cycle_in=5.0, paused=False))
    assert d.summary.status_word == "running" and d.summary.next_cycle_at == 15.0
    d.apply(CycleStarted(cycle_id=3, account_ids=("a1",)))
    assert d.summary.cycle_running
    d.apply(CycleFinished(ts=20.0, cycle_id=3, duration=0.4, interventions=1,
                          failed_accounts=("b1",), next_cycle_in=60.0))
    s = d.summary
    assert (s.last_cycle_id, s.last_cycle_at, s.last_cycle_duration) == (3, 20.0, 0.4)
    assert s.last_failed == ("b1",) and not s.cycle_running
    assert d.accounts["a1"].next_check_at == 80.0
    assert d.next_check_in("a1", now=50.0) == 30.0
    d.apply(Heartbeat(ts=21.0, next_cycle_in=59.0, paused=True))
    assert d.summary.status_word == "paused"
    d.set_stalled(17.0)
    assert d.summary.status_word == "stalled"
    d.apply(Heartbeat(ts=40.0, next_cycle_in=1.0, paused=False))
    assert d.summary.status_word == "running"
    d.set_metrics(Metrics(interventions=9, interventions_today=4, unwind_activations=2,
                          last_back_under_cap_seconds=12.5, worst_back_under_cap_seconds=61.0,
                          over_cap_now=()))
    assert (s.interventions_today, s.unwind_activations, s.last_back_under_seconds) == (4, 2, 12.5)


def test_set_config_keeps_known_accounts_and_drops_removed_ones() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("a1", 10))
    smaller = parse_config(
        '[[accounts]]\nid = "a1"\nuser = "alice"\nexchange = "binance"\nmax_positions = 9\n'
    )
    d.set_config(smaller)
    assert list(d.accounts) == ["a1"]
    assert d.accounts["a1"].caps.max_positions == 9
    assert d.accounts["a1"].position_count == 1
    assert list(d.users) == ["alice"]
    assert d.apply(read("b1", 1, user="bob")) == set()


def test_unwind_preview_lists_every_position() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("a1", 10, 20, dust=True))
    preview = d.unwind_preview("alice")
    assert [(v.account_id, rows) for v, rows in preview] == [
        ("a1", [("S0/USDT", "long", 1.0, 10.0), ("S1/USDT", "long", 1.0, 20.0)]),
        ("a2", []),
    ]


def test_unknown_is_not_zero_an_account_never_read_has_no_numbers() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("a1", 10, 20, ts=5.0))
    d.apply(AccountError(ts=6.0, cycle_id=1, account_id="a2", kind="temporary",
                         message="exchange unreachable", retry_in=60))

    a2 = d.accounts["a2"].reading
    assert not a2.known and not a2.has_numbers
    assert a2.reason == "exchange unreachable" and a2.read_at is None
    totals = d.user_totals("alice")
    assert (totals.count, totals.unread, totals.stale) == (2, ("a2",), ())
    assert not totals.complete
    assert [v.account_id for v in d.unread_accounts()] == ["a2", "b1"]


def test_a_failed_read_keeps_the_last_good_one_marked_stale_with_its_time() -> None:
    d = Dashboard(CONFIG)
    d.apply(read("a1", 10, 20, ts=5.0))
    d.apply(AccountError(ts=65.0, cycle_id=2, account_id="a1", kind="temporary",
                         message="timeout", retry_in=60))

    reading = d.accounts["a1"].reading
    assert reading.stale and not reading.known
    assert reading.read_at == 5.0 and reading.reason == "timeout"
    assert d.user_totals("alice").stale == ("a1",)

    d.apply(read("a1", 10, ts=125.0))
    assert d.accounts["a1"].reading.known
    assert d.user_totals("alice").stale == ()


def test_a_position_opened_after_flat_makes_the_unwind_not_flat_again() -> None:
    d = Dashboard(CONFIG)
    d.apply(FlagsChanged(active_users=("alice",)))
    d.apply(UnwindProgress(cycle_id=1, user="alice", closed=2, total=2, remaining=0))
    assert d.users["alice"].unwind_flat
    d.apply(read("a1", 25, forced=True))
    assert not d.users["alice"].unwind_flat
    assert d.users["alice"].progress_text == "closed 2 of 2"
