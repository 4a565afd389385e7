"""The enforcer's clock (full cycles, fast re-reads) and its flag watcher, on real SQLite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from guard_app.core.cadence import Cadence, FlagWatcher
from guard_app.core.config import EnforcerConfig
from guard_app.core.events import EnforcerEvent, FlagsChanged
from guard_app.core.state import StateStore

CONFIG = EnforcerConfig(interval_seconds=30.0, fast_interval_seconds=0.05)


def wait(cadence: Cadence, hot: set[str], *, wake_after: float | None = None) -> set[str] | None:
    async def go() -> set[str] | None:
        wake, stop = asyncio.Event(), asyncio.Event()
        if wake_after is not None:
            asyncio.get_running_loop().call_later(wake_after, wake.set)
        return await cadence.wait(CONFIG, lambda: set(hot), wake, stop)

    return asyncio.run(go())


def test_hot_accounts_get_a_fast_re_read_between_full_cycles() -> None:
    cadence = Cadence()
    started = time.monotonic()
    cadence.full_cycle_started(started, CONFIG.interval_seconds)
    assert wait(cadence, {"a-spot"}) == {"a-spot"}
    assert cadence.next_cycle_at < started + 1  # scheduled at the fast cadence, not in 30 s


def test_nothing_hot_waits_for_the_full_cycle_or_a_wake() -> None:
    cadence = Cadence()
    cadence.full_cycle_started(time.monotonic(), CONFIG.interval_seconds)
    assert wait(cadence, set(), wake_after=0.05) is None  # woken: a full cycle
    assert cadence.next_cycle_at > time.monotonic() + 20  # it was waiting for the full one


def test_a_due_full_cycle_wins_over_a_fast_re_read() -> None:
    cadence = Cadence()
    cadence.full_cycle_started(time.monotonic() - 31, CONFIG.interval_seconds)
    assert wait(cadence, {"a-spot"}) is None


def test_fast_cadence_is_never_slower_than_the_normal_one() -> None:
    assert EnforcerConfig(interval_seconds=1.0, fast_interval_seconds=2.0).fast_interval == 1.0
    assert Cadence.next_cycle_after(CONFIG, hot=True) == 0.05
    assert Cadence.next_cycle_after(CONFIG, hot=False) == 30.0


def test_flag_watcher_reads_flags_only_when_another_process_changed_something(
    tmp_path: Path,
) -> None:
    events: list[EnforcerEvent] = []
    mine = StateStore(tmp_path)
    watcher = FlagWatcher(lambda: mine, events.append)
    assert watcher.changed_elsewhere()  # never read yet
    assert watcher.refresh() is False  # nobody under unwind: nothing changes, but it says so
    [initial] = events
    assert isinstance(initial, FlagsChanged) and initial.initial and initial.active_users == ()
    events.clear()
    assert not watcher.changed_elsewhere()
    mine.journal("cycle_start", "own writes are not news")
    assert not watcher.changed_elsewhere()

    with StateStore(tmp_path) as other:  # e.g. `guard-app unwind` in a terminal
        other.set_forced_unwind("alice", True, by="cli", reason="bad day")
    assert watcher.changed_elsewhere()
    assert watcher.refresh() is True
    assert watcher.users == {"alice"}
    [changed] = events
    assert isinstance(changed, FlagsChanged) and changed.active_users == ("alice",)
    flag = changed.flag("alice")
    assert flag is not None and (flag.by, flag.reason) == ("cli", "bad day")
    assert watcher.refresh() is False  # same flags: announced once

    with StateStore(tmp_path) as other:
        other.set_forced_unwind("alice", False, by="cli")
    assert watcher.changed_elsewhere() and watcher.refresh() is True
    assert isinstance(events[-1], FlagsChanged) and events[-1].active_users == ()
    mine.close()
