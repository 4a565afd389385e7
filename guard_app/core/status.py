"""Read every account once, without closing anything: ``guard-app status``.

Builds the ``status --json`` document of DESIGN.md (a contract other tools rely on).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from guard_app.core.config import AccountConfig, AppConfig
from guard_app.core.errors import BrokerError, GuardError
from guard_app.core.models import AccountSnapshot, UnwindFlag
from guard_app.core.policy import over_cap
from guard_app.core.ports import BrokerFactory
from guard_app.core.secrets import SecretReader


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One account as ``status`` read it: its snapshot, or why it could not be read."""

    account: AccountConfig
    snapshot: AccountSnapshot | None
    error: str | None


async def read_account(
    account: AccountConfig,
    secrets: SecretReader,
    broker_factory: BrokerFactory,
) -> AccountStatus:
    """One live read of one account; every failure becomes a one-line ``error``.
    Keys come through ``aget``: the keyring is read by one thread, one account at a
    time, while the exchanges are read concurrently."""
    try:
        keys = await secrets.aget(account.id)
    except GuardError as exc:
        return AccountStatus(account, None, str(exc))
    if keys is None:
        return AccountStatus(
            account, None, f"no API keys in the keyring (guard-app keys set {account.id})"
        )
    broker = broker_factory(account, keys)
    try:
        return AccountStatus(account, await broker.snapshot(), None)
    except BrokerError as exc:
        return AccountStatus(account, None, exc.reason)
    finally:
        await broker.aclose()


async def read_all(
    config: AppConfig, secrets: SecretReader, broker_factory: BrokerFactory
) -> list[AccountStatus]:
    """Read every account concurrently, in config order."""
    return list(await asyncio.gather(
        *(read_account(a, secrets, broker_factory) for a in config.accounts)
    ))


def status_document(
    config: AppConfig, flags: dict[str, UnwindFlag], statuses: list[AccountStatus]
) -> dict[str, Any]:
    """The ``status --json`` object: every configured user, then every account."""
    users: dict[str, Any] = {}
    for user in config.user_names:
        flag = flags.get(user)
        users[user] = {
            "forced_unwind": bool(flag and flag.active),
            "since": flag.since if flag else None,
            "by": flag.by if flag else None,
            "reason": flag.reason if flag else None,
        }
    accounts = []
    for st in statuses:
        a, snap = st.account, st.snapshot
        accounts.append(
            {
                "id": a.id,
                "user": a.user,
                "exchange": a.exchange,
                "market": a.market.value,
                "quote": a.quote,
                "max_positions": a.max_positions,
                "max_notional": a.max_notional,
                "position_count": snap.position_count if snap else None,
                "notional": round(snap.notional, 8) if snap else None,
                "positions": [
                    {"symbol": p.symbol, "side": p.side.value, "amount": p.amount,
                     "value": round(p.value, 8)}
                    for p in (snap.positions if snap else ())
                ],
                "dust": [
                    {"symbol": h.symbol, "amount": h.amount,
                     "value": None if h.value is None else round(h.value, 8), "reason": h.reason}
                    for h in (snap.dust if snap else ())
                ],
                "unpriced": [
                    {"symbol": h.symbol, "amount": h.amount, "reason": h.reason}
                    for h in (snap.unpriced if snap else ())
                ],
                "over_cap": over_cap(snap, a.caps) if snap else False,
                "forced_unwind": bool(flags.get(a.user) and flags[a.user].active),
                "error": st.error,
            }
        )
    return {"users": users, "accounts": accounts}
