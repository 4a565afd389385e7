"""The tray icon: the worst account state at a glance, alerts, and a short menu.

The icon follows ``DashboardModel.worst_state_changed`` (the same state colours as the
table and charts); a stalled or crashed enforcer shows the error icon until it beats
again. ``DashboardModel.notice`` becomes a desktop notification. The menu offers Show,
a Forced Unwind (or turn-off) per user and Pause / Resume enforcement through the
app's one :class:`~guard_app.gui.actions.Actions` (the window's own confirmation), and
Quit (the app confirms it while an unwind is active).

The class also works where no system tray exists (tests, some desktops): it keeps its
state, tooltip and menu, it just isn't shown.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget

from guard_app.core.events import EnforcerEvent, Heartbeat
from guard_app.gui.actions import Actions
from guard_app.gui.enforcer_host import EnforcerHost
from guard_app.gui.icons import tray_icon_for_state, tray_icon_name

log = logging.getLogger("guard_app.gui.tray")

APP_TITLE = "guard-app"
NOTICE_MSECS = 8000
_WARNING_NOTICES = {"over_cap", "failing", "unwind_started", "database_unreachable"}
_MAX_TOOLTIP_ACCOUNTS = 3
_HEADLESS_PLATFORMS = {"offscreen", "minimal"}


class Tray(QSystemTrayIcon):
    """The app's tray icon (see the module docstring)."""

    quit_requested = Signal()

    def __init__(self, window: QWidget, host: EnforcerHost, model: Any,
                 actions: Actions | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent if parent is not None else window)
        self._window = window
        self._host = host
        self._model = model
        # The window's own actions (build_app shares one): the same confirmations.
        self.commands = actions or Actions(host, model, lambda: window, self)
        self.state = "pending"
        self.enforcer_problem: str | None = None  # "stalled" / "crashed" text, if any
        self.notifications: deque[tuple[str, str]] = deque(maxlen=50)  # (title, text)
        self.menu = QMenu()
        self.menu.setObjectName("tray-menu")
        self.setContextMenu(self.menu)
        self._rebuild_pending = False
        self.menu.aboutToHide.connect(self._on_menu_hidden)
        self.activated.connect(self._on_activated)

        model.worst_state_changed.connect(self._on_worst_state)
        model.notice.connect(self.notify)
        model.flags_changed.connect(self._rebuild_later)
        model.changed.connect(self._on_model_changed)
        host.config_changed.connect(self._rebuild_later)
        host.stalled.connect(self._on_stalled)
        host.crashed.connect(self._on_crashed)
        host.enforcer_event.connect(self._on_event)
        self.commands.paused_changed.connect(self._on_paused)
        self.destroyed.connect(self.menu.deleteLater)

        self.rebuild_menu()
        self._on_worst_state(str(model.dashboard.worst_state()))

    # -- state → icon and tooltip ---------------------------------------------------

    @property
    def icon_name(self) -> str:
        """The resource name of the icon shown now (``tray-ok``, ``tray-error``, ...)."""
        return tray_icon_name("stalled" if self.enforcer_problem else self.state)

    @Slot(str)
    def _on_worst_state(self, state: str) -> None:
        self.state = str(state)
        self._refresh()

    @Slot(object)
    def _on_model_changed(self, _ids: object) -> None:
        self._refresh_tooltip()

    def _refresh(self) -> None:
        self.setIcon(tray_icon_for_state("stalled" if self.enforcer_problem else self.state))
        self._refresh_tooltip()

    def _refresh_tooltip(self) -> None:
        self.setToolTip(self.tooltip_text())

    def tooltip_text(self) -> str:
        """One line a trader can read on hover: the accounts in the worst state."""
        if self.enforcer_problem:
            return f"{APP_TITLE}: {self.enforcer_problem}"
        dashboard = self._model.dashboard
        worst = [v for v in dashboard.accounts.values() if str(v.state) == self.state]
        if self._host.paused:
            prefix = f"{APP_TITLE} (enforcement paused)"
        else:
            prefix = APP_TITLE
        # Unknown is not zero (DESIGN rule 16): an account not read is never "under its cap".
        unread = [v for v in dashboard.unread_accounts() if v.snapshot is not None
                  or v.error is not None]
        if self.state in ("ok", "pending") or not worst:
            total = len(dashboard.accounts)
            if self.state == "pending":
                return f"{prefix}: {total} accounts, checking"
            if not unread:
                return f"{prefix}: {total} accounts, all under their caps"
            worst = unread
        parts = [f"{v.account_id} {v.state_text().lower()}" for v in worst[:_MAX_TOOLTIP_ACCOUNTS]]
        more = len(worst) - _MAX_TOOLTIP_ACCOUNTS
        if more > 0:
            parts.append(f"and {more} more")
        listed = {v.account_id for v in worst}
        not_read = [v for v in unread if v.account_id not in listed]
        if not_read:
            parts.append(f"{len(not_read)} more not read")
        return f"{prefix}: " + "; ".join(parts)

    @Slot(float)
    def _on_stalled(self, seconds: float) -> None:
        self.enforcer_problem = f"the enforcer is not responding ({seconds:.0f} s)"
        self._refresh()
        self.notify_text("Enforcer stalled",
                         f"No sign of life from the enforcer for {seconds:.0f} s. "
                         "Caps are not being checked; restart it from the window.")

    @Slot(str)
    def _on_crashed(self, reason: str) -> None:
        self.enforcer_problem = "the enforcer crashed and is being restarted"
        self._refresh()
        self.notify_text("Enforcer crashed", f"{reason}. guard-app is restarting it.")

    @Slot(object)
    def _on_event(self, event: EnforcerEvent) -> None:
        if self.enforcer_problem and isinstance(event, Heartbeat):
            self.enforcer_problem = None
            self._refresh()
            self._rebuild_later()

    # -- notifications --------------------------------------------------------------

    @Slot(object)
    def notify(self, notice: Any) -> None:
        """Show a dashboard ``Notice`` as a desktop notification."""
        warning = getattr(notice, "kind", "") in _WARNING_NOTICES
        self.notify_text(notice.title, notice.text, warning=warning)

    def notify_text(self, title: str, text: str, *, warning: bool = True) -> None:
        self.notifications.append((title, text))
        if self.isVisible() and self.supportsMessages():
            kind = (QSystemTrayIcon.MessageIcon.Warning if warning
                    else QSystemTrayIcon.MessageIcon.Information)
            self.showMessage(title, text, kind, NOTICE_MSECS)

    # -- menu -----------------------------------------------------------------------

    @Slot()
    @Slot(object)
    def _rebuild_later(self, *_args: object) -> None:
        # Never rebuild a menu while it is open under the mouse.
        if self.menu.isVisible():
            self._rebuild_pending = True
            return
        self.rebuild_menu()

    @Slot()
    def _on_menu_hidden(self) -> None:
        if self._rebuild_pending:
            self.rebuild_menu()

    @Slot()
    def rebuild_menu(self) -> None:
        """Recreate the menu for the current users, flags and pause state."""
        self._rebuild_pending = False
        self.menu.clear()
        show = self._action("Show guard-app", "tray-show", self.show_window)
        self.menu.addAction(show)
        self.menu.addSeparator()
        dashboard = self._model.dashboard
        for user in self._host.config.user_names:
            view = dashboard.users.get(user)
            active = bool(view is not None and view.forced_unwind)
            if active:
                action = self._action(f"Turn off unwind {user}…", f"tray-unwind-off-{user}",
                                      lambda _=False, u=user: self._unwind(u, off=True))
            else:
                action = self._action(f"Forced Unwind {user}…", f"tray-unwind-{user}",
                                      lambda _=False, u=user: self._unwind(u, off=False))
            self.menu.addAction(action)
        self.menu.addSeparator()
        if self._host.paused:
            pause = self._action("Resume enforcement", "tray-resume", self._toggle_pause)
        else:
            pause = self._action("Pause enforcement", "tray-pause", self._toggle_pause)
        self.menu.addAction(pause)
        self.menu.addSeparator()
        self.menu.addAction(self._action("Quit guard-app", "tray-quit", self.quit_requested.emit))

    def _action(self, text: str, name: str, slot: Any) -> QAction:
        action = QAction(text, self.menu)
        action.setObjectName(name)
        action.triggered.connect(slot)
        return action

    def action(self, name: str) -> QAction | None:
        """The menu action with objectName ``name`` (``tray-unwind-alice``, ...)."""
        for action in self.menu.actions():
            if action.objectName() == name:
                return action
        return None

    @Slot()
    def show_window(self) -> None:
        self._window.showNormal()
        # Headless platforms (offscreen, minimal) can't raise windows and say so loudly.
        if QGuiApplication.platformName() not in _HEADLESS_PLATFORMS:
            self._window.raise_()
            self._window.activateWindow()

    def _unwind(self, user: str, *, off: bool) -> None:
        # The same confirmation as the window's button, parented to the window.
        self.show_window()
        if off:
            self.commands.request_unwind_off(user, source="tray")
        else:
            self.commands.request_unwind(user, source="tray")
        # The menu follows the stored flag when the enforcer announces it (flags_changed).

    @Slot()
    def _toggle_pause(self) -> None:
        self.commands.toggle_pause()

    @Slot(bool)
    def _on_paused(self, _paused: bool) -> None:
        self._rebuild_later()
        self._refresh_tooltip()

    @Slot(QSystemTrayIcon.ActivationReason)
    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            if self._window.isVisible() and not self._window.isMinimized():
                self._window.hide()
            else:
                self.show_window()
