"""The Qt face of the core Dashboard: host events in, coalesced change signals out.

Every ``EnforcerEvent`` from the host is folded into :class:`Dashboard` at once (so
the state is never stale), but the ``changed`` signal is coalesced: a cycle over 50
accounts sends hundreds of events and the window redraws each account at most once
per :data:`COALESCE_MS`. Notices and worst-state changes go out immediately.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from guard_app.core.events import CycleFinished, EnforcerEvent, FlagsChanged
from guard_app.gui.model.dashboard import SUMMARY, Dashboard

if TYPE_CHECKING:
    from guard_app.gui.enforcer_host import EnforcerHost

log = logging.getLogger("guard_app.gui")

COALESCE_MS = 50


class DashboardModel(QObject):
    """Feeds the host's events into a Dashboard and tells the widgets what changed."""

    changed = Signal(object)  # set[str] of account ids ("*" = summary/users)
    worst_state_changed = Signal(str)  # an AccountState value
    notice = Signal(object)  # a Notice
    flags_changed = Signal(object)  # dict[str, UnwindFlag]

    def __init__(self, host: EnforcerHost, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.dashboard = Dashboard(host.config)
        self._dirty: set[str] = set()
        self.flushing = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(COALESCE_MS)
        self._timer.timeout.connect(self._flush)
        self._worst = self.dashboard.worst_state()
        host.enforcer_event.connect(self._on_event)
        host.stalled.connect(self._on_stalled)
        host.running_changed.connect(self._on_running)
        config_changed = getattr(host, "config_changed", None)
        if config_changed is not None:
            config_changed.connect(self.set_config)
        self.refresh_metrics()

    # -- inputs -----------------------------------------------------------------------

    def _on_event(self, event: EnforcerEvent) -> None:
        changed = self.dashboard.apply(event)
        if isinstance(event, FlagsChanged):
            # The one source of truth for forced unwinds: the enforcer's announcement
            # carries the stored flag records (no re-read of the database here).
            changed |= {a for u in self.dashboard.users for a in self._accounts_of(u)}
            self.flags_changed.emit({f.user: f for f in event.flags})
        elif isinstance(event, CycleFinished):
            self.refresh_metrics()
        self._mark(changed)

    def _on_stalled(self, seconds: float) -> None:
        self.dashboard.set_stalled(seconds)
        self._mark({SUMMARY})

    def _on_running(self, running: bool) -> None:
        self.dashboard.set_running(running)
        self._mark({SUMMARY})

    def set_config(self, config: object) -> None:
        from guard_app.core.config import AppConfig

        if isinstance(config, AppConfig):
            self.dashboard.set_config(config)
            self._mark(set(self.dashboard.accounts) | {SUMMARY, "config"})

    def refresh_metrics(self) -> None:
        try:
            self.dashboard.set_metrics(self.host.state().metrics())
        except Exception:
            log.exception("could not read the dashboard metrics")
            return
        self._mark({SUMMARY})

    def _accounts_of(self, user: str) -> list[str]:
        view = self.dashboard.users.get(user)
        return list(view.account_ids) if view is not None else []

    # -- outputs ----------------------------------------------------------------------

    def _mark(self, changed: set[str]) -> None:
        for notice in self.dashboard.take_notices():
            self.notice.emit(notice)
        worst = self.dashboard.worst_state()
        if worst != self._worst:
            self._worst = worst
            self.worst_state_changed.emit(worst.value)
        if changed:
            self._dirty |= changed
            if not self._timer.isActive():
                self._timer.start()

    def flush(self) -> None:
        """Emit pending changes now (tests, and before a modal dialog reads the state).

        Views update synchronously for an explicit flush (``flushing`` is True while
        ``changed`` is emitted); timer-driven updates may be spread over several
        event-loop turns to keep the window responsive.
        """
        self._timer.stop()
        self.flushing = True
        try:
            # Emitted even with nothing new: a view still drawing an earlier change in
            # slices (the window's off-screen panels) finishes it now.
            dirty, self._dirty = self._dirty, set()
            self.changed.emit(dirty)
        finally:
            self.flushing = False

    def _flush(self) -> None:
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            self.changed.emit(dirty)
