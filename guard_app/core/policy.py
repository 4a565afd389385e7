"""What to close: a pure function of account snapshots, caps and forced-unwind flags.

No I/O, no clocks, no randomness: the same input (in any order) always gives the same
plan, so the enforcer, the CLI ``status`` and the tests can all ask the same question.

The rules (README "What the enforcer does each cycle", docs/architecture.md):

1. A user under forced unwind: every position of every one of their accounts closes
   (``FORCED_UNWIND``). Nothing else is decided for that user.
2. Per account, over ``max_positions`` by k: the k smallest positions close
   (``COUNT_CAP``); then, while what is left is worth more than ``max_notional``,
   the smallest remaining position closes (``NOTIONAL_CAP``).
3. Per user, across the user's accounts in the input, whatever is left after rule 2
   is held to the user's caps the same way, smallest first across accounts
   (``USER_COUNT_CAP``, then ``USER_NOTIONAL_CAP``).

"Smallest" means by value in quote, ties broken by symbol, then side, then account
id. Snapshots hold only real positions: dust and unpriced holdings are never counted
nor closed. Rules 1 and 2 depend on one account alone, so planning one account by
itself gives exactly the forced and account-level closes it would get in a plan over
all of its user's accounts; only rule 3 needs the user's other accounts. User
notional caps add values across accounts as they are, so they assume the accounts'
quote currencies are comparable (USDT, USDC, USD).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

from guard_app.core.models import (
    AccountSnapshot,
    Caps,
    CloseReason,
    PlannedClose,
    Side,
)

__all__ = [
    "ACCOUNT_REASONS",
    "USER_REASONS",
    "describe_plan",
    "describe_user_plan",
    "over_cap",
    "plan_closes",
]

#: Reasons decided from one account alone (stable when other accounts are missing).
ACCOUNT_REASONS = frozenset(
    {CloseReason.FORCED_UNWIND, CloseReason.COUNT_CAP, CloseReason.NOTIONAL_CAP}
)
#: Reasons that depend on all of a user's accounts.
USER_REASONS = frozenset({CloseReason.USER_COUNT_CAP, CloseReason.USER_NOTIONAL_CAP})

_NO_CAPS = Caps()

# How many positions a one-line description names before "and N more".
_DESCRIBE_LIMIT = 8


def _close_order(c: PlannedClose) -> tuple[float, str, str, str]:
    return (c.position.value, c.position.symbol, c.position.side.value, c.account_id)


def _notional(values: Iterable[float]) -> float:
    # fsum: exact and order-independent, so a permuted input can't flip a
    # borderline "over the notional cap" decision.
    return math.fsum(values)


def over_cap(snapshot: AccountSnapshot, caps: Caps) -> bool:
    """True when the account holds more positions, or more notional, than its caps allow."""
    return caps.count_excess(snapshot.position_count) > 0 or caps.notional_exceeded(
        _notional(p.value for p in snapshot.positions)
    )


def _smallest_to_close(
    ordered: Sequence[PlannedClose], caps: Caps
) -> tuple[list[PlannedClose], list[PlannedClose]]:
    """Split ``ordered`` (smallest first) into (closed by count, closed by notional).

    The count rule closes exactly the excess; the notional rule then closes the
    shortest run of the next-smallest positions that brings the rest under the cap.
    """
    k = caps.count_excess(len(ordered))
    by_count = list(ordered[:k])
    m = k
    if caps.max_notional is not None:
        while m < len(ordered) and caps.notional_exceeded(
            _notional(c.position.value for c in ordered[m:])
        ):
            m += 1
    return by_count, list(ordered[k:m])


def _validate(snapshots: Sequence[AccountSnapshot]) -> None:
    seen_accounts: set[str] = set()
    for snap in snapshots:
        if snap.account_id in seen_accounts:
            raise ValueError(f"{snap.account_id}: two snapshots of the same account in one plan")
        seen_accounts.add(snap.account_id)
        seen_positions: set[tuple[str, str]] = set()
        for p in snap.positions:
            key = (p.symbol, p.side.value)
            if key in seen_positions:
                raise ValueError(
                    f"{snap.account_id}: {p.symbol} {p.side.value} appears twice in one snapshot"
                )
            seen_positions.add(key)


def plan_closes(
    snapshots: Sequence[AccountSnapshot],
    account_caps: Mapping[str, Caps],
    user_caps: Mapping[str, Caps],
    forced_users: Collection[str],
) -> list[PlannedClose]:
    """Decide which whole positions to close so every account and user is within caps.

    ``account_caps`` is keyed by account id and ``user_caps`` by user; a missing entry
    means no cap. Every user in ``forced_users`` has all positions closed. The result
    is ordered by account id, then smallest first, and never names a position twice.
    Raises ValueError when two snapshots share an account id or a snapshot lists the
    same symbol and side twice (a broker bug: the plan would be ambiguous).
    """
    _validate(snapshots)
    forced = set(forced_users)
    closes: list[PlannedClose] = []
    kept_by_user: dict[str, list[PlannedClose]] = {}

    for snap in snapshots:
        candidates = sorted(
            (PlannedClose(snap.account_id, snap.user, p, CloseReason.FORCED_UNWIND)
             for p in snap.positions),
            key=_close_order,
        )
        if snap.user in forced:
            closes.extend(candidates)
            continue
        by_count, by_notional = _smallest_to_close(
            candidates, account_caps.get(snap.account_id, _NO_CAPS)
        )
        closes.extend(_with_reason(by_count, CloseReason.COUNT_CAP))
        closes.extend(_with_reason(by_notional, CloseReason.NOTIONAL_CAP))
        kept = candidates[len(by_count) + len(by_notional):]
        kept_by_user.setdefault(snap.user, []).extend(kept)

    for user, kept in kept_by_user.items():
        caps = user_caps.get(user)
        if caps is None:
            continue
        by_count, by_notional = _smallest_to_close(sorted(kept, key=_close_order), caps)
        closes.extend(_with_reason(by_count, CloseReason.USER_COUNT_CAP))
        closes.extend(_with_reason(by_notional, CloseReason.USER_NOTIONAL_CAP))

    closes.sort(key=lambda c: (c.account_id, *_close_order(c)))
    return closes


def _with_reason(closes: Iterable[PlannedClose], reason: CloseReason) -> list[PlannedClose]:
    return [PlannedClose(c.account_id, c.user, c.position, reason) for c in closes]


# --- one-line descriptions for logs, the journal and the GUI ------------------------


def _money(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x != 0 and abs(x) < 0.01:
        return f"{x:.4g}"
    return f"{x:,.2f}"


def _cap_number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 or float(x).is_integer() else _money(x)


def _closing(closes: Sequence[PlannedClose], quote: str, *, name_account: bool = False) -> str:
    ordered = sorted(closes, key=_close_order)
    named = []
    unit = f" {quote}" if quote else ""
    for c in ordered[:_DESCRIBE_LIMIT]:
        side = f" {c.position.side.value}" if c.position.side is not Side.LONG else ""
        account = f" on {c.account_id}" if name_account else ""
        named.append(f"{c.position.symbol}{side}{account} ({_money(c.position.value)}{unit})")
    more = len(ordered) - _DESCRIBE_LIMIT
    text = ", ".join(named)
    if more > 0:
        text += f" and {more} more"
    return text


def _cap_words(count: int, notional: float, caps: Caps, quote: str) -> list[str]:
    words = []
    if caps.count_excess(count) > 0 and caps.max_positions is not None:
        words.append(f"{count}/{caps.max_positions}")
    if caps.max_notional is not None and caps.notional_exceeded(notional):
        unit = f" {quote}" if quote else ""
        words.append(f"notional {_money(notional)}/{_cap_number(caps.max_notional)}{unit}")
    return words


def describe_plan(
    snapshot: AccountSnapshot,
    caps: Caps,
    closes: Sequence[PlannedClose],
    *,
    forced: bool = False,
) -> str:
    """One line a trader can read about one account's part of a plan.

    ``closes`` may be the whole plan; only this account's closes are used. Examples:
    ``over cap 10/8 on alice-binance-spot: closing DOGE/USDT (4.10 USDT), XRP/USDT
    (6.02 USDT)``, ``forced unwind active for alice on alice-binance-spot: closing all
    3 positions: ...``, ``alice-binance-spot: within caps (3/8)``. ``forced`` says the
    user is under forced unwind, for the wording when nothing is left to close.
    """
    mine = [c for c in closes if c.account_id == snapshot.account_id]
    count = snapshot.position_count
    notional = _notional(p.value for p in snapshot.positions)
    quote = snapshot.quote
    unwinding = [c for c in mine if c.reason is CloseReason.FORCED_UNWIND]
    if unwinding:
        n = len(unwinding)
        return (
            f"forced unwind active for {snapshot.user} on {snapshot.account_id}: closing all "
            f"{n} position{'s' if n != 1 else ''}: {_closing(unwinding, quote)}"
        )
    account_level = [c for c in mine if c.reason in ACCOUNT_REASONS]
    user_level = [c for c in mine if c.reason in USER_REASONS]
    parts = []
    if account_level:
        words = _cap_words(count, notional, caps, quote)
        parts.append(
            f"over cap {', '.join(words)} on {snapshot.account_id}: "
            f"closing {_closing(account_level, quote)}"
        )
    if user_level:
        lead = "" if account_level else f"{snapshot.account_id}: "
        parts.append(
            f"{lead}{snapshot.user} over the user cap: closing {_closing(user_level, quote)}"
        )
    if parts:
        return "; ".join(parts)
    if forced:
        return (
            f"forced unwind active for {snapshot.user} on {snapshot.account_id}: "
            "no positions left to close"
        )
    limit = f"/{caps.max_positions}" if caps.max_positions is not None else ""
    if over_cap(snapshot, caps):
        # Only reachable when handed a plan made without this account's caps.
        words = _cap_words(count, notional, caps, quote)
        return f"over cap {', '.join(words)} on {snapshot.account_id}: nothing planned"
    return f"{snapshot.account_id}: within caps ({count}{limit})"


def describe_user_plan(
    user: str,
    snapshots: Sequence[AccountSnapshot],
    caps: Caps,
    closes: Sequence[PlannedClose],
) -> str:
    """One line about a user's cap across their accounts, e.g.

    ``alice over user cap 14/12 across 2 accounts: closing TRX/USDT on
    alice-binance-spot (2.10), ...``. Counts are after account-level closes, as the
    policy applies them.
    """
    mine = [s for s in snapshots if s.user == user]
    account_closed = {c.key for c in closes if c.user == user and c.reason in ACCOUNT_REASONS}
    remaining = [
        p.value
        for s in mine
        for p in s.positions
        if (s.account_id, p.symbol, p.side.value) not in account_closed
    ]
    user_closes = [c for c in closes if c.user == user and c.reason in USER_REASONS]
    n_accounts = len(mine)
    across = f"across {n_accounts} account{'s' if n_accounts != 1 else ''}"
    quotes = {s.quote for s in mine}
    quote = next(iter(quotes)) if len(quotes) == 1 else ""
    words = _cap_words(len(remaining), _notional(remaining), caps, quote)
    if not user_closes:
        if words:
            return f"{user} over user cap {', '.join(words)} {across}: nothing planned"
        return f"{user}: within user caps ({len(remaining)} positions {across})"
    return (
        f"{user} over user cap {', '.join(words)} {across}: "
        f"closing {_closing(user_closes, quote, name_account=True)}"
    )
