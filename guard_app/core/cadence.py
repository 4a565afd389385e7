"""When the enforcer looks: the flags it follows and the clock of its cycles.

:class:`FlagWatcher` keeps the forced-unwind flags current (docs/enforcement.md rule 11): one cheap
"has anything changed?" question to the state store (``StateStore.data_version``, a
single ``PRAGMA`` on the enforcer's own connection, about 20 µs) every
``FLAG_POLL_SECONDS``; the flags themselves are read only when the answer is yes. A
store that can be told of changes (PostgreSQL ``LISTEN``/``NOTIFY``) answers the same
question from its notifications: the watcher only needs ``data_version`` to change.

:class:`Cadence` is the enforcer's clock (rule 14): a full cycle every
``interval_seconds`` or when woken; in between, a fast re-read of the accounts that
need one (their user is under forced unwind, or they were over a cap within the
last interval) every ``fast_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from guard_app.core.config import EnforcerConfig
from guard_app.core.events import EnforcerEvent, FlagsChanged
from guard_app.core.models import UnwindFlag
from guard_app.core.state import StateStore

# Rule 11 asks for <= 100 ms across processes; a poll costs ~20 µs (0.05 % of a core).
FLAG_POLL_SECONDS = 0.05


class FlagWatcher:
    """The forced-unwind flags as last read, announced as FlagsChanged when they change."""

    def __init__(self, state: Callable[[], StateStore], emit: Callable[[EnforcerEvent], None]) -> None:
        self._state = state
        self._emit = emit
        self._version: int | None = None
        self._announced: dict[str, UnwindFlag] | None = None
        self.flags: dict[str, UnwindFlag] = {}

    @property
    def users(self) -> set[str]:
        """Users whose forced unwind is on."""
        return set(self.flags)

    def changed_elsewhere(self) -> bool:
        """True when another connection or process committed since the last read."""
        return self._state().data_version() != self._version

    def refresh(self) -> bool:
        """Read the flags; emit FlagsChanged the first time and whenever they differ
        from what was announced. True when someone is now under a different unwind
        state than before (at start-up: when anyone is under forced unwind)."""
        state = self._state()
        self._version = state.data_version()
        flags = dict(state.forced_unwind_flags())
        self.flags = flags
        if flags == self._announced:
            return False
        first = self._announced is None
        self._announced = flags
        self._emit(FlagsChanged(active_users=tuple(sorted(flags)),
                                flags=tuple(flags[u] for u in sorted(flags)), initial=first))
        return not first or bool(flags)


class Cadence:
    """When the next cycle runs, and whether it is a full cycle or a fast re-read."""

    def __init__(self) -> None:
        self.next_full_at = 0.0  # monotonic
        self.next_cycle_at = 0.0  # monotonic: the next cycle of either kind

    def full_cycle_started(self, now: float, interval: float) -> None:
        self.next_full_at = now + interval

    @property
    def next_cycle_in(self) -> float:
        return max(0.0, self.next_cycle_at - time.monotonic())

    @staticmethod
    def next_cycle_after(config: EnforcerConfig, hot: bool) -> float:
        """Seconds to the next cycle right after one ended."""
        return config.fast_interval if hot else config.interval_seconds

    async def wait(
        self,
        config: EnforcerConfig,
        hot: Callable[[], set[str]],
        wake: asyncio.Event,
        stop: asyncio.Event,
    ) -> set[str] | None:
        """Wait for the next cycle: the accounts of a fast re-read, or None for a full
        cycle (the normal interval is up, or ``wake``/``stop`` was set)."""
        wake_task = asyncio.create_task(wake.wait())
        stop_task = asyncio.create_task(stop.wait())
        try:
            while True:
                now = time.monotonic()
                full_in = self.next_full_at - now
                wait = min(full_in, config.fast_interval) if hot() else full_in
                self.next_cycle_at = now + max(0.0, wait)
                if wait > 0:
                    done, _ = await asyncio.wait({wake_task, stop_task}, timeout=wait,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if done:
                        return None
                if time.monotonic() >= self.next_full_at - 0.001:
                    return None
                accounts = hot()
                if accounts:
                    return accounts
        finally:
            wake_task.cancel()
            stop_task.cancel()
