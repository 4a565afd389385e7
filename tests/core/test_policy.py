"""The pure close policy: each rule by example, then its properties with hypothesis."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard_app.core.models import (
    AccountSnapshot,
    Caps,
    CloseReason,
    Holding,
    PlannedClose,
    Position,
    Side,
)
from guard_app.core.policy import (
    ACCOUNT_REASONS,
    USER_REASONS,
    describe_plan,
    describe_user_plan,
    over_cap,
    plan_closes,
)

LONG, SHORT = Side.LONG, Side.SHORT


def snap(
    account_id: str,
    user: str,
    *values: float | tuple[str, float] | tuple[str, float, Side],
    quote: str = "USDT",
) -> AccountSnapshot:
    """A snapshot; bare numbers become COINi/USDT positions worth that much."""
    positions = []
    for i, v in enumerate(values):
        if isinstance(v, tuple):
            symbol, value, *side = v
            positions.append(Position(symbol, 1.0, float(value), side[0] if side else LONG))
        else:
            positions.append(Position(f"C{i}/USDT", 1.0, float(v)))
    return AccountSnapshot(account_id, user, quote, tuple(positions))


def closed(plan: Sequence[PlannedClose]) -> list[tuple[str, str, float, CloseReason]]:
    return [(c.account_id, c.position.symbol, c.position.value, c.reason) for c in plan]


# --- rules by example -----------------------------------------------------------------


def test_under_caps_closes_nothing() -> None:
    s = snap("a", "alice", 5, 6, 7)
    assert plan_closes([s], {"a": Caps(3, 100)}, {}, []) == []


def test_count_cap_closes_exactly_the_k_smallest() -> None:
    s = snap("a", "alice", 50, 4.1, 30, 6.02, 10)
    plan = plan_closes([s], {"a": Caps(3)}, {}, [])
    assert closed(plan) == [
        ("a", "C1/USDT", 4.1, CloseReason.COUNT_CAP),
        ("a", "C3/USDT", 6.02, CloseReason.COUNT_CAP),
    ]


def test_no_count_cap_when_max_positions_is_none() -> None:
    s = snap("a", "alice", *range(1, 50))
    assert plan_closes([s], {"a": Caps(None, None)}, {}, []) == []


def test_missing_account_caps_mean_no_cap() -> None:
    s = snap("a", "alice", *range(1, 20))
    assert plan_closes([s], {}, {}, []) == []


def test_notional_cap_closes_smallest_first_until_under() -> None:
    # 1 + 50 + 60 = 111 > 100: closing 1 leaves 110, closing 50 leaves 60 <= 100.
    s = snap("a", "alice", 60, 1, 50)
    plan = plan_closes([s], {"a": Caps(None, 100)}, {}, [])
    assert closed(plan) == [
        ("a", "C1/USDT", 1.0, CloseReason.NOTIONAL_CAP),
        ("a", "C2/USDT", 50.0, CloseReason.NOTIONAL_CAP),
    ]


def test_notional_exactly_at_cap_is_not_over() -> None:
    s = snap("a", "alice", 40, 60)
    assert plan_closes([s], {"a": Caps(None, 100)}, {}, []) == []


def test_count_then_notional_on_the_same_account() -> None:
    s = snap("a", "alice", 1, 2, 3, 100, 200)
    plan = plan_closes([s], {"a": Caps(4, 250)}, {}, [])
    # Count closes 1 (the smallest); 305 left > 250, so 2 and 3 and 100 go... until <= 250:
    # 305 -> 303 -> 300 -> 200.
    assert closed(plan) == [
        ("a", "C0/USDT", 1.0, CloseReason.COUNT_CAP),
        ("a", "C1/USDT", 2.0, CloseReason.NOTIONAL_CAP),
        ("a", "C2/USDT", 3.0, CloseReason.NOTIONAL_CAP),
        ("a", "C3/USDT", 100.0, CloseReason.NOTIONAL_CAP),
    ]


def test_forced_unwind_closes_everything_of_that_user_only() -> None:
    a = snap("alice-spot", "alice", 5, 7)
    a2 = snap("alice-swap", "alice", 9)
    b = snap("bob-spot", "bob", 1, 2, 3)
    plan = plan_closes(
        [b, a2, a],
        {"alice-spot": Caps(8), "alice-swap": Caps(8), "bob-spot": Caps(2)},
        {},
        ["alice"],
    )
    assert closed(plan) == [
        ("alice-spot", "C0/USDT", 5.0, CloseReason.FORCED_UNWIND),
        ("alice-spot", "C1/USDT", 7.0, CloseReason.FORCED_UNWIND),
        ("alice-swap", "C0/USDT", 9.0, CloseReason.FORCED_UNWIND),
        ("bob-spot", "C0/USDT", 1.0, CloseReason.COUNT_CAP),
    ]


def test_forced_unwind_of_a_user_without_accounts_closes_nothing() -> None:
    s = snap("a", "alice", 1, 2)
    assert plan_closes([s], {"a": Caps(5)}, {}, ["nobody"]) == []


def test_dust_and_unpriced_are_never_closed() -> None:
    s = AccountSnapshot(
        "a", "alice", "USDT", (Position("BTC/USDT", 1, 10.0),),
        dust=(Holding("TRX/USDT", 1.7, 0.2, "below min_position_value 1.0"),),
        unpriced=(Holding("XYZ", 3, None, "no XYZ/USDT market"),),
    )
    plan = plan_closes([s], {"a": Caps(0)}, {}, ["alice"])
    assert [c.position.symbol for c in plan] == ["BTC/USDT"]


def test_user_count_cap_takes_the_smallest_across_accounts() -> None:
    spot = snap("alice-spot", "alice", ("A/USDT", 5), ("B/USDT", 9))
    swap = snap("alice-swap", "alice", ("C/USDT:USDT", 3), ("D/USDT:USDT", 20))
    plan = plan_closes(
        [spot, swap], {"alice-spot": Caps(8), "alice-swap": Caps(8)}, {"alice": Caps(2)}, []
    )
    assert closed(plan) == [
        ("alice-spot", "A/USDT", 5.0, CloseReason.USER_COUNT_CAP),
        ("alice-swap", "C/USDT:USDT", 3.0, CloseReason.USER_COUNT_CAP),
    ]


def test_user_notional_cap() -> None:
    spot = snap("alice-spot", "alice", ("A/USDT", 50), ("B/USDT", 90))
    swap = snap("alice-swap", "alice", ("C/USDT:USDT", 30))
    plan = plan_closes([spot, swap], {}, {"alice": Caps(None, 100)}, [])
    # 170 -> 140 (close C) -> 90 (close A)
    assert closed(plan) == [
        ("alice-spot", "A/USDT", 50.0, CloseReason.USER_NOTIONAL_CAP),
        ("alice-swap", "C/USDT:USDT", 30.0, CloseReason.USER_NOTIONAL_CAP),
    ]


def test_account_caps_apply_before_user_caps() -> None:
    spot = snap("alice-spot", "alice", ("A/USDT", 1), ("B/USDT", 2), ("C/USDT", 3))
    swap = snap("alice-swap", "alice", ("D/USDT:USDT", 4), ("E/USDT:USDT", 5))
    plan = plan_closes(
        [spot, swap], {"alice-spot": Caps(2)}, {"alice": Caps(3)}, []
    )
    # Account: A goes (3 > 2). User: B, C, D, E = 4 > 3, so B (the smallest left) goes.
    assert closed(plan) == [
        ("alice-spot", "A/USDT", 1.0, CloseReason.COUNT_CAP),
        ("alice-spot", "B/USDT", 2.0, CloseReason.USER_COUNT_CAP),
    ]


def test_user_caps_of_one_user_never_touch_another() -> None:
    a = snap("alice-spot", "alice", 1, 2, 3)
    b = snap("bob-spot", "bob", 1, 2, 3)
    plan = plan_closes([a, b], {}, {"alice": Caps(1)}, [])
    assert {c.account_id for c in plan} == {"alice-spot"}
    assert len(plan) == 2


def test_tie_break_by_symbol_then_side_then_account() -> None:
    s = snap("a", "alice", ("B/USDT", 5), ("A/USDT", 5), ("Z/USDT", 1))
    plan = plan_closes([s], {"a": Caps(1)}, {}, [])
    assert [c.position.symbol for c in plan] == ["Z/USDT", "A/USDT"]

    d = snap("d", "alice", ("X/USDT:USDT", 5, SHORT), ("X/USDT:USDT", 5, LONG), ("Y", 6))
    plan = plan_closes([d], {"d": Caps(2)}, {}, [])
    assert [(c.position.symbol, c.position.side) for c in plan] == [("X/USDT:USDT", LONG)]

    one = snap("acct-2", "alice", ("X/USDT", 5))
    two = snap("acct-1", "alice", ("X/USDT", 5))
    plan = plan_closes([one, two], {}, {"alice": Caps(1)}, [])
    assert [c.account_id for c in plan] == ["acct-1"]


def test_output_is_ordered_by_account_then_value() -> None:
    a = snap("b-acct", "bob", 9, 1, 5)
    b = snap("a-acct", "alice", 7, 3)
    plan = plan_closes([a, b], {}, {}, ["alice", "bob"])
    assert [(c.account_id, c.position.value) for c in plan] == [
        ("a-acct", 3.0), ("a-acct", 7.0), ("b-acct", 1.0), ("b-acct", 5.0), ("b-acct", 9.0),
    ]


def test_duplicate_account_or_position_is_refused() -> None:
    s = snap("a", "alice", 1)
    with pytest.raises(ValueError, match="a: two snapshots"):
        plan_closes([s, s], {}, {}, [])
    dup = snap("a", "alice", ("X/USDT", 1), ("X/USDT", 2))
    with pytest.raises(ValueError, match="X/USDT long appears twice"):
        plan_closes([dup], {}, {}, [])


def test_over_cap() -> None:
    s = snap("a", "alice", 10, 20, 30)
    assert not over_cap(s, Caps(3, 60))
    assert over_cap(s, Caps(2, None))
    assert over_cap(s, Caps(None, 59.99))
    assert not over_cap(s, Caps())


# --- descriptions -----------------------------------------------------------------------


def test_describe_count_cap_matches_the_documented_line() -> None:
    others = [(f"S{i}/USDT", 10.0 + i) for i in range(8)]
    s = snap("alice-binance-spot", "alice", ("XRP/USDT", 6.02), *others, ("DOGE/USDT", 4.10))
    caps = Caps(8)
    plan = plan_closes([s], {s.account_id: caps}, {}, [])
    assert describe_plan(s, caps, plan) == (
        "over cap 10/8 on alice-binance-spot: closing DOGE/USDT (4.10 USDT), XRP/USDT (6.02 USDT)"
    )


def test_describe_notional_cap() -> None:
    s = snap("alice-binance-spot", "alice", ("BTC/USDT", 20000), ("ETH/USDT", 6100))
    caps = Caps(8, 25000)
    plan = plan_closes([s], {s.account_id: caps}, {}, [])
    assert describe_plan(s, caps, plan) == (
        "over cap notional 26,100/25,000 USDT on alice-binance-spot: "
        "closing ETH/USDT (6,100 USDT)"
    )


def test_describe_forced_within_and_long_lists() -> None:
    s = snap("alice-swap", "alice", *range(1, 13))
    caps = Caps(20)
    assert describe_plan(s, caps, []) == "alice-swap: within caps (12/20)"
    plan = plan_closes([s], {}, {}, ["alice"])
    line = describe_plan(s, caps, plan)
    assert line.startswith("forced unwind active for alice on alice-swap: closing all 12 positions: ")
    assert line.endswith("C7/USDT (8.00 USDT) and 4 more")
    empty = snap("alice-swap", "alice")
    assert "no positions left to close" in describe_plan(empty, caps, [], forced=True)


def test_describe_user_plan() -> None:
    spot = snap("alice-spot", "alice", ("A/USDT", 5), ("B/USDT", 9))
    swap = snap("alice-swap", "alice", ("C/USDT:USDT", 3, SHORT))
    ucaps = Caps(2)
    plan = plan_closes([spot, swap], {}, {"alice": ucaps}, [])
    assert describe_user_plan("alice", [spot, swap], ucaps, plan) == (
        "alice over user cap 3/2 across 2 accounts: "
        "closing C/USDT:USDT short on alice-swap (3.00 USDT)"
    )
    assert "alice over the user cap: closing C/USDT:USDT short" in describe_plan(
        swap, Caps(), plan
    )
    assert describe_user_plan("alice", [spot, swap], Caps(5), []) == (
        "alice: within user caps (3 positions across 2 accounts)"
    )


# --- properties -------------------------------------------------------------------------

USERS = ["alice", "bob", "carol"]
ACCOUNTS = ["a1", "a2", "b1", "c1", "c2"]
OWNER = {"a1": "alice", "a2": "alice", "b1": "bob", "c1": "carol", "c2": "carol"}
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "ADA/USDT",
           "TRX/USDT", "LTC/USDT"]
# A few repeated values so ties (and the tie-breaks) happen often.
values = st.one_of(
    st.sampled_from([1.0, 2.5, 5.0, 10.0]),
    st.floats(min_value=0.01, max_value=1000, allow_nan=False, allow_infinity=False),
)
caps_st = st.builds(
    Caps,
    st.one_of(st.none(), st.integers(min_value=0, max_value=6)),
    st.one_of(st.none(), st.floats(min_value=0, max_value=2000, allow_nan=False)),
)


@st.composite
def positions_st(draw: st.DrawFn) -> tuple[Position, ...]:
    keys = draw(st.lists(st.tuples(st.sampled_from(SYMBOLS), st.sampled_from(list(Side))),
                         unique=True, max_size=10))
    return tuple(Position(sym, 1.0, draw(values), side) for sym, side in keys)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[
    list[AccountSnapshot], dict[str, Caps], dict[str, Caps], set[str]
]:
    ids = draw(st.lists(st.sampled_from(ACCOUNTS), unique=True, min_size=1))
    snaps = [AccountSnapshot(a, OWNER[a], "USDT", draw(positions_st())) for a in ids]
    account_caps = {a: draw(caps_st) for a in ids if draw(st.booleans())}  # some have no caps
    user_caps = draw(st.dictionaries(st.sampled_from(USERS), caps_st))
    forced = draw(st.sets(st.sampled_from(USERS + ["nobody"])))
    return snaps, account_caps, user_caps, forced


def order_key(p: Position) -> tuple[float, str, str]:
    return (p.value, p.symbol, p.side.value)


def within(caps: Caps, kept: Sequence[float]) -> bool:
    return caps.count_excess(len(kept)) == 0 and not caps.notional_exceeded(math.fsum(kept))


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_plan_properties(case: tuple[list[AccountSnapshot], dict[str, Caps],
                                     dict[str, Caps], set[str]]) -> None:
    snaps, account_caps, user_caps, forced = case
    plan = plan_closes(snaps, account_caps, user_caps, forced)

    # Only positions of the snapshots, each at most once.
    known = {(s.account_id, p.symbol, p.side.value): p for s in snaps for p in s.positions}
    keys = [c.key for c in plan]
    assert len(keys) == len(set(keys))
    for c in plan:
        assert known[c.key] == c.position
        assert c.user == next(s.user for s in snaps if s.account_id == c.account_id)

    for s in snaps:
        mine = [c for c in plan if c.account_id == s.account_id]
        if s.user in forced:
            # Forced unwind: everything, and only for that reason.
            assert {c.key for c in mine} == {
                (s.account_id, p.symbol, p.side.value) for p in s.positions
            }
            assert all(c.reason is CloseReason.FORCED_UNWIND for c in mine)
            continue
        assert all(c.reason is not CloseReason.FORCED_UNWIND for c in mine)
        caps = account_caps.get(s.account_id, Caps())
        ordered = sorted(s.positions, key=order_key)
        acct = [c for c in mine if c.reason in ACCOUNT_REASONS]
        # Account-level closes are a prefix of smallest-first order...
        assert sorted((c.position for c in acct), key=order_key) == ordered[: len(acct)]
        kept = ordered[len(acct):]
        # ...exactly k by count, and count closes come before notional ones...
        k = caps.count_excess(len(ordered))
        assert sum(c.reason is CloseReason.COUNT_CAP for c in acct) == k
        assert all(c.reason is CloseReason.COUNT_CAP
                   for c in sorted(acct, key=lambda c: order_key(c.position))[:k])
        # ...leave the account within its caps...
        assert within(caps, [p.value for p in kept])
        # ...and no more than needed: keeping the largest notional close would not do.
        if len(acct) > k:
            assert caps.notional_exceeded(math.fsum(p.value for p in ordered[len(acct) - 1:]))
        # Smallest first: every account-level close is no bigger than anything kept.
        if acct and kept:
            assert max(c.position.value for c in acct) <= min(p.value for p in kept)

    for user in {s.user for s in snaps} - forced:
        ucaps = user_caps.get(user)
        theirs = [s for s in snaps if s.user == user]
        user_closes = [c for c in plan if c.user == user and c.reason in USER_REASONS]
        if ucaps is None:
            assert user_closes == []
            continue
        closed_keys = {c.key for c in plan}
        acct_closed = {c.key for c in plan if c.user == user and c.reason in ACCOUNT_REASONS}
        before = sorted(
            ((p, s.account_id) for s in theirs for p in s.positions
             if (s.account_id, p.symbol, p.side.value) not in acct_closed),
            key=lambda pa: (*order_key(pa[0]), pa[1]),
        )
        left = [p.value for p, a in before if (a, p.symbol, p.side.value) not in closed_keys]
        assert within(ucaps, left)
        uk = ucaps.count_excess(len(before))
        assert sum(c.reason is CloseReason.USER_COUNT_CAP for c in user_closes) == uk
        # User closes are the smallest prefix across accounts, and no longer than needed.
        prefix = [(a, p.symbol, p.side.value) for p, a in before[: len(user_closes)]]
        assert sorted(prefix) == sorted(c.key for c in user_closes)
        if len(user_closes) > uk:
            rest = [p.value for p, _ in before[len(user_closes) - 1:]]
            assert ucaps.notional_exceeded(math.fsum(rest))


@settings(max_examples=200, deadline=None)
@given(scenario(), st.randoms(use_true_random=False))
def test_plan_is_deterministic_under_permutation(
    case: tuple[list[AccountSnapshot], dict[str, Caps], dict[str, Caps], set[str]],
    rnd: random.Random,
) -> None:
    snaps, account_caps, user_caps, forced = case
    shuffled = [
        AccountSnapshot(s.account_id, s.user, s.quote,
                        tuple(rnd.sample(s.positions, len(s.positions))))
        for s in rnd.sample(snaps, len(snaps))
    ]
    forced_list = list(forced)
    rnd.shuffle(forced_list)
    assert plan_closes(shuffled, account_caps, user_caps, forced_list) == plan_closes(
        snaps, account_caps, user_caps, forced
    )


@settings(max_examples=200, deadline=None)
@given(scenario())
def test_one_account_alone_gets_the_same_forced_and_account_level_closes(
    case: tuple[list[AccountSnapshot], dict[str, Caps], dict[str, Caps], set[str]],
) -> None:
    snaps, account_caps, user_caps, forced = case
    full = plan_closes(snaps, account_caps, user_caps, forced)
    for s in snaps:
        alone = plan_closes([s], account_caps, user_caps, forced)
        assert [c for c in alone if c.reason in ACCOUNT_REASONS] == [
            c for c in full if c.account_id == s.account_id and c.reason in ACCOUNT_REASONS
        ]


@settings(max_examples=200, deadline=None)
@given(scenario())
def test_users_are_planned_independently(
    case: tuple[list[AccountSnapshot], dict[str, Caps], dict[str, Caps], set[str]],
) -> None:
    snaps, account_caps, user_caps, forced = case
    full = plan_closes(snaps, account_caps, user_caps, forced)
    for user in {s.user for s in snaps}:
        theirs = [s for s in snaps if s.user == user]
        assert plan_closes(theirs, account_caps, user_caps, forced) == [
            c for c in full if c.user == user
        ]
