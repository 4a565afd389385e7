"""Runs the core ``Enforcer`` on its own ``QThread`` with its own asyncio loop.

Why a thread of its own: exits must never wait for the window. The worker thread
owns an asyncio loop (``asyncio.new_event_loop()``), the enforcer's ccxt clients
(created inside that loop) and the enforcer's own SQLite connection, so a blocked,
hidden or modal GUI thread never delays a close.

Events go out as Qt signals: the enforcer's observer runs on the worker thread and
only emits ``_Worker.event_ready``; Qt queues it to the host on the GUI thread, which
re-emits ``event``. No GUI code ever runs on the worker thread. Commands go in
through the enforcer's thread-safe methods (``wake``, ``stop``, ``pause``, ``resume``,
``update_config``).

A heartbeat (``Heartbeat`` every ~1 s) is stamped on the worker thread itself, so the
GUI-side stall check never mistakes a busy GUI thread for a stalled enforcer. If the
worker thread dies, the host says so (``crashed``) and starts a fresh one after a
short, growing back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from guard_app.core.config import AppConfig
from guard_app.core.events import CycleFinished, EnforcerEvent, Heartbeat, Observer
from guard_app.core.secrets import SecretStoreProtocol
from guard_app.core.state import StateStore, UnwindFlag, open_state
from guard_app.gui.api_panel import LoopCompanion, companion_observers, run_with_companions

if TYPE_CHECKING:
    # Imported in the worker thread instead: ccxt takes about a second to import and
    # the window must not wait for it.
    from guard_app.core.enforcer import Enforcer

log = logging.getLogger("guard_app.gui.host")

EnforcerFactory = Callable[[AppConfig, Path, SecretStoreProtocol, Sequence[Observer]], "Enforcer"]
MAX_RESTART_BACKOFF = 30.0
ABANDON_WAIT_SECONDS = 2.0


def _default_factory(
    config: AppConfig, data_dir: Path, secrets: SecretStoreProtocol,
    observers: Sequence[Observer],
) -> Enforcer:
    from guard_app.core.enforcer import Enforcer
    from guard_app.exchanges import make_broker

    return Enforcer(config, data_dir, secrets, observers=observers, broker_factory=make_broker)


class _Worker(QThread):
    """One run of the enforcer: a thread, its event loop, its enforcer."""

    event_ready = Signal(object)  # emitted on the worker thread; queued to the host
    failed = Signal(int, str)  # generation, one-line reason

    def __init__(
        self,
        generation: int,
        make: Callable[[Observer], Enforcer] | None,
        companions: Sequence[LoopCompanion] = (),
    ) -> None:
        super().__init__()
        self.generation = generation
        self.companions = tuple(companions)  # run on this loop next to the enforcer
        # Builds the enforcer on the worker thread: importing it loads ccxt (about a
        # second), which must not delay the window.
        self.make = make
        self.enforcer: Enforcer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        # Written on the worker thread, read by the GUI thread's stall check (a float
        # assignment is atomic in CPython).
        self.last_beat = time.monotonic()
        self.setObjectName(f"guard-enforcer-{generation}")

    def observe(self, event: EnforcerEvent) -> None:
        """The enforcer's observer: runs on the worker thread, so it only emits."""
        if isinstance(event, Heartbeat):
            self.last_beat = time.monotonic()
        self.event_ready.emit(event)

    def run(self) -> None:
        # ``make`` is bound to the host: drop it once used, so no reference cycle ties the
        # host (and its timers) to this thread. A cycle would be freed by Python's garbage
        # collector on whatever thread it runs, and a QObject with timers destroyed off
        # the GUI thread leaves Qt a dangling timer (a crash seen in the GUI tests).
        make, self.make = self.make, None
        if make is None:  # run() twice: the first run used it
            return
        try:
            enforcer = make(self.observe)
        except BaseException as exc:  # noqa: BLE001 - reported like any other death
            log.error("the enforcer could not be created", exc_info=True)
            self.failed.emit(self.generation, f"{type(exc).__name__}: {exc}")
            return
        finally:
            del make
        self.enforcer = enforcer
        if self.stopping:  # asked to stop while it was being built
            enforcer.stop()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self.last_beat = time.monotonic()
        reason: str | None = None
        try:
            loop.run_until_complete(run_with_companions(enforcer, self.companions))
            if not self.stopping:
                reason = "the enforcer loop ended without being asked to stop"
        except BaseException as exc:  # noqa: BLE001 - any death of the thread is reported
            reason = f"{type(exc).__name__}: {exc}"
            if not self.stopping:
                log.error("the enforcer thread crashed", exc_info=True)
        finally:
            self._close_loop(loop)
            # The enforcer holds this worker's observe(): break that cycle here, while
            # the thread is ours, rather than leave it to the garbage collector.
            self.enforcer = None
            del enforcer
        if reason is not None and not self.stopping:
            self.failed.emit(self.generation, reason)

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        """Let the enforcer's own clean-up run (exchange sessions, state DB), then close."""
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        except BaseException:  # noqa: BLE001 - closing must not raise past the thread
            log.warning("the enforcer thread did not shut down cleanly", exc_info=True)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class EnforcerHost(QObject):
    """Owns the enforcer's worker thread; the GUI's only way to talk to the enforcer."""

    enforcer_event = Signal(object)  # every EnforcerEvent, delivered queued on the GUI thread
    stalled = Signal(float)  # no heartbeat for stall_after s (arg: seconds since last)
    crashed = Signal(str)  # the worker died unexpectedly; the host restarts it
    running_changed = Signal(bool)
    config_changed = Signal(object)  # the AppConfig given to update_config

    def __init__(
        self,
        config: AppConfig,
        data_dir: Path,
        secrets: SecretStoreProtocol,
        parent: QObject | None = None,
        *,
        stall_after: float = 15.0,
        restart_backoff: float = 1.0,
        enforcer_factory: EnforcerFactory | None = None,
        companions: Sequence[LoopCompanion] = (),
    ) -> None:
        super().__init__(parent)
        # Run on the enforcer's loop next to it (the remote API): see gui/api_panel.py.
        self._companions = tuple(companions)
        self._config = config
        self._data_dir = Path(data_dir)
        self._secrets = secrets
        self._stall_after = stall_after
        self._restart_backoff = restart_backoff
        self._factory = enforcer_factory or _default_factory
        self._worker: _Worker | None = None
        self._abandoned: list[_Worker] = []
        self._generation = 0
        self._paused = False
        self._wanted = False  # start() called and not stop()ped: crashes get restarted
        self._crashes = 0
        self._stall_reported = False
        self._state: StateStore | None = None

        self._stall_timer = QTimer(self)
        self._stall_timer.setInterval(max(100, min(1000, int(stall_after * 250))))
        self._stall_timer.timeout.connect(self._check_stall)
        self._restart_timer = QTimer(self)
        self._restart_timer.setSingleShot(True)
        self._restart_timer.timeout.connect(self._restart_after_crash)

    # -- properties ---------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def alive(self) -> bool:
        """True while a worker thread is running the enforcer."""
        worker = self._worker
        return worker is not None and worker.isRunning() and not worker.stopping

    @property
    def config(self) -> AppConfig:
        return self._config

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def secrets(self) -> SecretStoreProtocol:
        return self._secrets

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start a worker thread running the enforcer (no-op if one is running)."""
        self._wanted = True
        self._restart_timer.stop()
        if self._worker is not None and self._worker.isRunning() and not self._worker.stopping:
            return
        self._generation += 1
        worker = _Worker(self._generation, self._make_enforcer, self._companions)
        worker.event_ready.connect(self._on_worker_event, Qt.ConnectionType.QueuedConnection)
        worker.failed.connect(self._on_worker_failed, Qt.ConnectionType.QueuedConnection)
        self._worker = worker
        self._stall_reported = False
        worker.start()
        self._stall_timer.start()
        log.info("enforcer thread started (%d accounts)", len(self._config.accounts))
        self.running_changed.emit(True)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the enforcer after its requests in flight; True if it ended within ``timeout``.

        A thread that does not end in time is left to finish on its own (its enforcer
        has been told to stop) and is no longer the host's worker.
        """
        self._wanted = False
        self._restart_timer.stop()
        self._stall_timer.stop()
        worker, self._worker = self._worker, None
        if worker is None:
            return True
        return self._end_worker(worker, timeout)

    def _end_worker(self, worker: _Worker, timeout: float) -> bool:
        worker.stopping = True
        if worker.enforcer is not None:
            worker.enforcer.stop()
        done = worker.wait(max(0, int(timeout * 1000)))
        if not done:
            log.error("the enforcer thread did not stop within %.0f s; leaving it to finish "
                      "its requests in flight on its own", timeout)
            self._abandoned.append(worker)
            worker.finished.connect(self._reap_abandoned, Qt.ConnectionType.QueuedConnection)
        self.running_changed.emit(False)
        return done

    def restart(self) -> None:
        """Stop the worker (bounded wait) and start a fresh one."""
        log.info("restarting the enforcer thread")
        worker, self._worker = self._worker, None
        if worker is not None:
            self._end_worker(worker, ABANDON_WAIT_SECONDS)
        self.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the enforcer and close the GUI thread's state connection (app exit)."""
        done = self.stop(timeout)
        for worker in list(self._abandoned):
            worker.wait(max(0, int(timeout * 1000)))
        if self._state is not None:
            self._state.close()
            self._state = None
        return done

    # -- commands (GUI thread; the enforcer's methods are thread-safe) --------------

    def wake(self) -> None:
        """Run a cycle now (or right after the one in progress)."""
        enforcer = self._current_enforcer()
        if enforcer is not None:
            enforcer.wake()

    def pause(self) -> None:
        """Stop enforcing caps (forced unwinds still run)."""
        self._paused = True
        enforcer = self._current_enforcer()
        if enforcer is not None:
            enforcer.pause()

    def resume(self) -> None:
        self._paused = False
        enforcer = self._current_enforcer()
        if enforcer is not None:
            enforcer.resume()

    def update_config(self, config: AppConfig) -> None:
        """Use a new config from the next cycle on (and in any restarted worker)."""
        self._config = config
        enforcer = self._current_enforcer()
        if enforcer is not None:
            enforcer.update_config(config)
        self.config_changed.emit(config)

    def set_forced_unwind(
        self, user: str, active: bool, *, by: str, reason: str = ""
    ) -> UnwindFlag:
        """Persist a user's forced-unwind flag, then wake the enforcer at once.

        Written through the GUI thread's own StateStore (committed durably before this
        returns); the enforcer would also notice through ``data_version`` within
        a fraction of a second, the wake just skips that wait.
        """
        flag = self.state().set_forced_unwind(user, active, by=by, reason=reason)
        log.info("forced unwind %s for %s (by %s); waking the enforcer",
                 "ON" if active else "OFF", user, by)
        self.wake()
        return flag

    def state(self) -> StateStore:
        """The GUI thread's own StateStore (journal, metrics, flags)."""
        if self._state is None:
            # The store [state] selects: on a desk, the shared database the enforcer uses.
            self._state = open_state(self._data_dir, self._config.state)
        return self._state

    def _make_enforcer(self, observer: Observer) -> Enforcer:
        """Runs on the worker thread. Commands that arrived while it was being built
        are caught up with at the end (the host's fields always hold the latest)."""
        config = self._config
        observers = [observer, *companion_observers(self._companions)]
        enforcer = self._factory(config, self._data_dir, self._secrets, observers)
        if self._paused:
            enforcer.pause()
        if self._config is not config:
            enforcer.update_config(self._config)
        return enforcer

    def _current_enforcer(self) -> Enforcer | None:
        worker = self._worker
        return worker.enforcer if worker is not None else None

    # -- slots (GUI thread) ---------------------------------------------------------

    @Slot(object)
    def _on_worker_event(self, event: EnforcerEvent) -> None:
        if isinstance(event, CycleFinished):
            self._crashes = 0
        self.enforcer_event.emit(event)

    @Slot(int, str)
    def _on_worker_failed(self, generation: int, reason: str) -> None:
        worker = self._worker
        if worker is None or worker.generation != generation:
            return  # an old worker that was already replaced
        worker.wait(int(ABANDON_WAIT_SECONDS * 1000))  # it is on its way out
        self._worker = None
        self._stall_timer.stop()
        self._crashes += 1
        delay = min(MAX_RESTART_BACKOFF, self._restart_backoff * 2 ** (self._crashes - 1))
        log.error("the enforcer thread stopped unexpectedly (%s); restarting it in %.0f s",
                  reason, delay)
        self.running_changed.emit(False)
        self.crashed.emit(reason)
        if self._wanted:
            self._restart_timer.start(int(delay * 1000))

    @Slot()
    def _restart_after_crash(self) -> None:
        if self._wanted and self._worker is None:
            self.start()

    @Slot()
    def _check_stall(self) -> None:
        worker = self._worker
        if worker is None or not worker.isRunning():
            return
        silent_for = time.monotonic() - worker.last_beat
        if silent_for >= self._stall_after:
            if not self._stall_reported:
                self._stall_reported = True
                log.error("the enforcer has sent no heartbeat for %.0f s: it looks stalled",
                          silent_for)
                self.stalled.emit(silent_for)
        elif self._stall_reported:
            self._stall_reported = False
            log.info("the enforcer is responding again")

    @Slot()
    def _reap_abandoned(self) -> None:
        self._abandoned = [w for w in self._abandoned if w.isRunning()]
