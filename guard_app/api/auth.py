"""Who may use the API: the bearer token and the slow-down for wrong guesses.

``TokenKeeper`` holds the current token, re-read from the OS keyring every
``TOKEN_REFRESH_SECONDS`` in a worker thread (never on the loop), so a
``guard-app api token --rotate`` in a terminal locks the old token out of a running
guard-app within a second. The token is compared in constant time and never appears in
a log line, an error or a repr.

``BadTokenLimiter``: after ``MAX_BAD_TOKENS`` missing or wrong tokens from one address
within ``WINDOW_SECONDS``, that address gets 429 (with ``Retry-After``) until a window
passes without a wrong token from it; other addresses are unaffected.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from guard_app.core.errors import SecretStoreError

log = logging.getLogger("guard_app.api")

TOKEN_REFRESH_SECONDS = 0.5
MAX_BAD_TOKENS = 10
WINDOW_SECONDS = 60.0
# Addresses tracked at once; beyond it the quietest are forgotten (a flood of spoofed
# sources can't grow memory without bound; TCP peers can't be spoofed cheaply).
MAX_TRACKED_ADDRESSES = 10_000


def new_token() -> str:
    """A fresh token: 32 random bytes, 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


class TokenKeeper:
    """The current API token, refreshed from the keyring off the loop."""

    def __init__(self, read_token: Callable[[], str | None], token: str | None) -> None:
        self._read = read_token
        self._token = token.encode() if token else None
        self._warned = False

    def __repr__(self) -> str:
        return f"TokenKeeper(token={'<hidden>' if self._token else None})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def check(self, presented: str | None) -> bool:
        """True when ``presented`` is the current token (constant-time comparison)."""
        current = self._token
        if current is None or not presented:
            return False
        return hmac.compare_digest(presented.encode(), current)

    def refresh(self) -> None:
        """Re-read the keyring (blocking: call it in a worker thread)."""
        try:
            token = self._read()
        except SecretStoreError as exc:
            # Keep the last token: a keyring hiccup must not lock the risk manager out.
            if not self._warned:
                log.warning("remote API: could not re-read the API token (%s); "
                            "keeping the current one and trying again", exc)
                self._warned = True
            return
        self._warned = False
        new = token.encode() if token else None
        if new != self._token:
            log.info("remote API: the API token changed; the previous one is refused from now on"
                     if new else "remote API: no API token stored any more; every request "
                     "is refused until 'guard-app api token' creates one")
            self._token = new

    async def keep_fresh(self) -> None:
        """Refresh forever (a task on the serving loop)."""
        while True:
            await asyncio.to_thread(self.refresh)
            await asyncio.sleep(TOKEN_REFRESH_SECONDS)


@dataclass
class _Address:
    bad: deque[float] = field(default_factory=deque)  # monotonic times of wrong tokens
    blocked: bool = False


class BadTokenLimiter:
    """429 for an address after too many wrong tokens, until it has been quiet a window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._addresses: dict[str, _Address] = {}

    def retry_after(self, address: str) -> int | None:
        """Seconds the address must wait, or None when it may be served."""
        entry = self._addresses.get(address)
        if entry is None or not entry.blocked:
            return None
        quiet_for = self._clock() - entry.bad[-1]
        if quiet_for >= WINDOW_SECONDS:
            del self._addresses[address]
            return None
        return max(1, math.ceil(WINDOW_SECONDS - quiet_for))

    def wrong_token(self, address: str) -> None:
        """Record a missing or wrong token from ``address``."""
        now = self._clock()
        entry = self._addresses.get(address)
        if entry is None:
            if len(self._addresses) >= MAX_TRACKED_ADDRESSES:
                self._forget_quietest()
            entry = self._addresses[address] = _Address()
        entry.bad.append(now)
        while entry.bad and now - entry.bad[0] >= WINDOW_SECONDS:
            entry.bad.popleft()
        if len(entry.bad) >= MAX_BAD_TOKENS and not entry.blocked:
            entry.blocked = True
            log.warning("remote API: %d wrong tokens from %s within a minute; refusing it "
                        "(429) until it stops for a minute", len(entry.bad), address)
        if entry.blocked:
            while len(entry.bad) > 1:  # only the last one matters while blocked
                entry.bad.popleft()

    def _forget_quietest(self) -> None:
        quietest = min(self._addresses, key=lambda a: self._addresses[a].bad[-1])
        del self._addresses[quietest]
