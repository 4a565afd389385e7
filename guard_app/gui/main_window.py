"""The main window: status strip, accounts grouped by user, and the Activity view.

Top to bottom: a status strip (is the enforcer running, what did it do lately), then
one section per user with a header holding the user's one red **Forced Unwind**
button and a card per account, in a scroll area so 1 or 50 accounts both read well,
and the journal at the bottom. Everything updates in place from the
:class:`DashboardModel`; nothing is rebuilt per cycle.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from PySide6.QtCore import SIGNAL, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from guard_app.core.events import JournalWritten
from guard_app.gui.account_panel import AccountPanel, ago, duration
from guard_app.gui.actions import Actions
from guard_app.gui.activity import ActivityView
from guard_app.gui.dashboard_model import DashboardModel
from guard_app.gui.model.dashboard import (
    SUMMARY,
    AccountState,
    Dashboard,
    UserTotals,
    UserView,
)
from guard_app.gui.theme import BIG_NUMBER, HEADING, scaled_font, state_colour

if TYPE_CHECKING:
    from guard_app.gui.enforcer_host import EnforcerHost

__all__ = ["MainWindow"]


def _restyle(widget: QWidget, role: str) -> None:
    if widget.property("role") != role:
        widget.setProperty("role", role)
        widget.style().unpolish(widget)
        widget.style().polish(widget)


def totals_text(totals: UserTotals, quote: str) -> str:
    """A user's sums, never a guess: a missing account makes them "at least"."""
    if totals.unread and totals.count == 0 and not totals.stale and totals.notional == 0:
        return f"positions not known ({len(totals.unread)} not read)"
    sums = f"{totals.count} positions, {totals.notional:,.0f} {quote}"
    if totals.unread:
        sums = f"at least {sums} ({', '.join(totals.unread)} not read)"
    if totals.stale:
        sums += f" ({', '.join(totals.stale)}: last known, read failed since)"
    return sums


class UserSection(QWidget):
    """A user's header (name, user caps, Forced Unwind button) and account cards."""

    def __init__(self, window: MainWindow, user: UserView) -> None:
        super().__init__()
        self.user = user.name
        self.setObjectName(f"user-{user.name}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 8)
        layout.setSpacing(8)
        self.header = QFrame()
        self.header.setObjectName(f"user-header-{user.name}")
        head = QHBoxLayout(self.header)
        head.setContentsMargins(10, 6, 10, 6)
        self.name = QLabel(user.name)
        self.name.setFont(scaled_font(self.font(), BIG_NUMBER - 1, bold=True))
        self.caps = QLabel("")
        self.caps.setProperty("role", "muted")
        self.banner = QLabel("")
        self.banner.setFont(scaled_font(self.font(), HEADING, bold=True))
        self.button = QPushButton("Forced Unwind…")
        self.button.setObjectName(f"unwind-{user.name}")
        self.button.setProperty("role", "unwind")
        self.button.setAutoDefault(False)
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.button.setMinimumHeight(36)
        self.button.clicked.connect(lambda: window.commands.toggle_unwind(self.user))
        head.addWidget(self.name)
        head.addSpacing(12)
        head.addWidget(self.caps)
        head.addSpacing(12)
        head.addWidget(self.banner)
        head.addStretch(1)
        head.addWidget(self.button)
        layout.addWidget(self.header)
        self.panels: dict[str, AccountPanel] = {}
        for account_id in user.account_ids:
            panel = AccountPanel(account_id)
            self.panels[account_id] = panel
            layout.addWidget(panel)
        self._active: bool | None = None

    def update_from(self, dashboard: Dashboard) -> None:
        user = dashboard.users[self.user]
        views = dashboard.accounts_of(self.user)
        quote = views[0].config.quote if views else ""
        parts = [f"{len(views)} account{'s' if len(views) != 1 else ''}",
                 totals_text(dashboard.user_totals(self.user), quote)]
        if user.caps.max_positions is not None:
            parts.append(f"user cap {user.caps.max_positions} positions")
        if user.caps.max_notional is not None:
            parts.append(f"user cap {user.caps.max_notional:,.0f} {quote}")
        self.caps.setText(" · ".join(parts))
        active = user.forced_unwind
        if active:
            self.button.setText(f"UNWIND ACTIVE — {user.progress_text} · Turn off…")
            self.banner.setText("FORCED UNWIND ACTIVE: closing everything")
            self.button.setToolTip(f"Forced unwind of {self.user} is ON. Click to turn it off.")
        else:
            self.button.setText("Forced Unwind…")
            self.banner.setText("")
            self.button.setToolTip(f"Close every position of {self.user} now (asks first)")
        if active != self._active:
            self._active = active
            _restyle(self.button, "unwind-active" if active else "unwind")
            red = state_colour("unwinding").name()
            self.header.setStyleSheet(
                f"QFrame#user-header-{self.user} {{ background: {red}; border-radius: 8px; }}"
                f" QFrame#user-header-{self.user} QLabel {{ color: white; }}"
                f" QPushButton {{ background: white; color: {red}; border: 2px solid white;"
                f" border-radius: 6px; padding: 6px 16px; font-weight: 800; }}"
                if active else ""
            )


SECONDARY_MIN_WIDTH = 60


class StatusStrip(QFrame):
    """Enforcer running/paused/stalled, last cycle, interventions, unwinds, recovery."""

    def __init__(self, host: EnforcerHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("status-strip")
        self.setProperty("role", "status-strip")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(16, 8, 16, 8)
        layout.setSpacing(22)
        self.status = QLabel("")
        self.status.setFont(scaled_font(self.font(), 1, bold=True))
        self.overall = QLabel("")
        self.overall.setObjectName("pill")
        self.restart = QPushButton("Restart enforcer")
        self.restart.setObjectName("restart-enforcer")
        self.restart.setAutoDefault(False)
        self.restart.clicked.connect(host.restart)
        self.restart.hide()
        self.cycle = QLabel("")
        self.interventions = QLabel("")
        self.unwinds = QLabel("")
        self.recovery = QLabel("")
        for w in (self.overall, self.status, self.restart, self.cycle, self.interventions,
                  self.unwinds, self.recovery):
            layout.addWidget(w)
        # The secondary figures give way first on a narrow screen (their full text stays
        # in the tooltip): the window must fit a 1366-pixel laptop screen, panels included.
        for w in (self.cycle, self.interventions, self.unwinds, self.recovery):
            w.setMinimumWidth(SECONDARY_MIN_WIDTH)
        layout.addStretch(1)
        self._overall_state = ""

    def add_panel(self, panel: QWidget) -> None:
        """A panel at the strip's right end (the remote API's: on and where)."""
        layout = self.layout()
        if layout is not None:
            layout.addWidget(panel)

    def update_from(self, dashboard: Dashboard, now: float | None = None) -> None:
        now = now or time.time()
        s = dashboard.summary
        word = s.status_word
        colour = {"running": "ok", "paused": "over_cap", "stalled": "error",
                  "stopped": "no_keys"}[word]
        extra = ""
        if word == "stalled":
            extra = f" — no sign of life for {duration(s.stalled_for)}"
        elif s.cycle_running:
            extra = " — checking accounts now"
        elif s.next_cycle_at is not None and word != "stopped":
            extra = f" — next check in {duration(s.next_cycle_at - now)}"
        if word == "paused":
            extra += " (caps NOT enforced; forced unwinds still run)"
        self.status.setText(f"● Enforcer {word}{extra}")
        self.status.setStyleSheet(f"color: {state_colour(colour).name()};")
        self.restart.setVisible(s.stalled)
        if s.last_cycle_at is None:
            self.cycle.setText("Last cycle: none yet")
        else:
            failed = f", {len(s.last_failed)} failed" if s.last_failed else ""
            self.cycle.setText(f"Last cycle: {ago(s.last_cycle_at, now)} "
                               f"({s.last_cycle_duration or 0:.1f} s{failed})")
        self.interventions.setText(f"Interventions today: <b>{s.interventions_today}</b>")
        self.unwinds.setText(f"Forced unwinds: <b>{s.unwind_activations}</b>")
        back = ("—" if s.last_back_under_seconds is None
                else duration(s.last_back_under_seconds))
        worst = ("" if s.worst_back_under_seconds is None
                 else f" (worst {duration(s.worst_back_under_seconds)})")
        self.recovery.setText(f"Back under cap in: <b>{back}</b>{worst}")
        for label in (self.cycle, self.interventions, self.unwinds, self.recovery):
            label.setToolTip(label.text())  # the whole text when the strip is narrow
        worst_state = dashboard.worst_state()
        views = list(dashboard.accounts.values())
        over = sum(v.state is AccountState.OVER_CAP for v in views)
        errors = sum(v.state is AccountState.ERROR for v in views)
        unwinding = sum(u.forced_unwind for u in dashboard.users.values())
        if unwinding:
            text = f"{unwinding} UNWIND{'S' if unwinding > 1 else ''} ACTIVE"
        elif errors:
            text = f"{errors} ACCOUNT{'S' if errors > 1 else ''} FAILING"
        elif over:
            text = f"{over} OVER CAP"
        elif any(v.state is AccountState.NO_KEYS for v in views):
            text = "KEYS MISSING"
        elif not views:
            text = "NO ACCOUNTS"
        elif any(v.state is AccountState.PENDING for v in views):
            # Never "ALL OK" while an account has not been read (DESIGN rule 16).
            pending = sum(v.state is AccountState.PENDING for v in views)
            text = f"CHECKING… {pending} NOT READ YET"
        else:
            text = f"ALL {len(views)} OK"
        self.overall.setText(text)
        state = worst_state.value if worst_state is not AccountState.PENDING else "no_keys"
        if state != self._overall_state:
            self._overall_state = state
            self.overall.setStyleSheet(f"background: {state_colour(state).name()};")


class MainWindow(QMainWindow):
    """The window a trader keeps open all day."""

    accounts_requested = Signal()
    quit_requested = Signal()

    def __init__(self, host: EnforcerHost, model: DashboardModel,
                 parent: QWidget | None = None, *, actions: Actions | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.model = model
        # Shared with the tray (build_app passes one); confirmations parent to this window.
        self.commands = actions or Actions(host, model, lambda: self, self)
        self.commands.paused_changed.connect(self._show_paused)
        self._hide_on_close = False
        self._quitting = False
        self.setWindowTitle("guard-app")
        self.resize(1360, 860)

        self.strip = StatusStrip(host)
        self._build_menu()

        self.sections_widget = QWidget()
        self.sections_layout = QVBoxLayout(self.sections_widget)
        self.sections_layout.setContentsMargins(16, 12, 16, 12)
        self.sections_layout.setSpacing(14)
        self.accounts_area = QScrollArea()
        self.accounts_area.setObjectName("accounts")
        self.accounts_area.setWidgetResizable(True)
        self.accounts_area.setFrameShape(QFrame.Shape.NoFrame)
        self.accounts_area.setWidget(self.sections_widget)
        self.accounts_area.verticalScrollBar().valueChanged.connect(self._redraw_newly_visible)
        self.activity = ActivityView(host.state)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.accounts_area)
        splitter.addWidget(self.activity)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([700, 150])
        central = QWidget()
        v = QVBoxLayout(central)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(0)
        v.addWidget(self.strip)
        v.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.activity.setContentsMargins(16, 0, 16, 8)

        # Account panels waiting to be redrawn (an ordered set), drawn in slices.
        self._stale_panels: dict[str, None] = {}
        self._panel_timer = QTimer(self)
        self._panel_timer.setSingleShot(True)
        self._panel_timer.setInterval(0)
        self._panel_timer.timeout.connect(lambda: self._update_stale_panels())
        self.sections: dict[str, UserSection] = {}
        self._rebuild_sections()
        model.changed.connect(self._on_changed)
        host.enforcer_event.connect(self._on_event)
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._tick)
        self._clock.start()

    # -- building -----------------------------------------------------------------------

    def _build_menu(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.accounts_action = QAction("&Accounts…", self)
        self.accounts_action.triggered.connect(self.accounts_requested.emit)
        file_menu.addAction(self.accounts_action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.triggered.connect(self.quit_requested.emit)
        file_menu.addAction(self.quit_action)
        enforcement = bar.addMenu("&Enforcement")
        self.check_now_action = QAction("Check &now", self)
        self.check_now_action.setShortcut("F5")
        self.check_now_action.triggered.connect(self.host.wake)
        enforcement.addAction(self.check_now_action)
        self.pause_action = QAction("&Pause enforcement", self)
        self.pause_action.setCheckable(True)
        self.pause_action.toggled.connect(self.commands.set_paused)
        enforcement.addAction(self.pause_action)

    def _rebuild_sections(self) -> None:
        self._stale_panels.clear()  # every panel is rebuilt from the dashboard below
        for section in self.sections.values():
            self.sections_layout.removeWidget(section)
            section.deleteLater()
        self.sections = {}
        while self.sections_layout.count():
            self.sections_layout.takeAt(0)
        dashboard = self.model.dashboard
        for name, user in dashboard.users.items():
            section = UserSection(self, user)
            self.sections[name] = section
            self.sections_layout.addWidget(section)
        if not dashboard.users:
            empty = QLabel("No accounts yet. Use File → Accounts… to add one.")
            empty.setProperty("role", "muted")
            empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.sections_layout.addWidget(empty)
        self.sections_layout.addStretch(1)
        self.activity.set_choices(list(dashboard.users), list(dashboard.accounts))
        self._refresh_all()

    # -- updating -----------------------------------------------------------------------

    def panel(self, account_id: str) -> AccountPanel:
        user = self.model.dashboard.accounts[account_id].config.user
        return self.sections[user].panels[account_id]

    def _refresh_all(self) -> None:
        dashboard = self.model.dashboard
        for section in self.sections.values():
            section.update_from(dashboard)
            for account_id, panel in section.panels.items():
                panel.update_from(dashboard.accounts[account_id])
        self.strip.update_from(dashboard)

    def _on_changed(self, changed: set[str]) -> None:
        dashboard = self.model.dashboard
        if "config" in changed or set(dashboard.users) != set(self.sections) or any(
            list(s.panels) != dashboard.users[n].account_ids for n, s in self.sections.items()
        ):
            self._rebuild_sections()
            return
        users_touched: set[str] = set()
        for account_id in changed - {SUMMARY}:
            view = dashboard.accounts.get(account_id)
            if view is None:
                continue
            self._stale_panels[account_id] = None
            users_touched.add(view.config.user)
        if self.model.flushing:
            self._update_stale_panels(all_now=True)
        elif self._stale_panels and not self._panel_timer.isActive():
            self._panel_timer.start()
        if SUMMARY in changed:
            users_touched = set(self.sections)
        for name in users_touched:
            self.sections[name].update_from(dashboard)
        self.strip.update_from(dashboard)
        if not self.pause_action.signalsBlocked():
            self._show_paused(dashboard.summary.paused)

    def _on_event(self, event: object) -> None:
        if isinstance(event, JournalWritten):
            self.activity.add(event.entry)

    def _update_stale_panels(self, *, all_now: bool = False) -> None:
        """Redraw changed account panels without freezing the window.

        A cycle over 50 accounts changes every panel at once. Timer-driven updates
        redraw only panels on screen, one per event-loop turn, so each is painted (and
        input handled) before the next one changes; panels out of view stay stale until
        they scroll into view or the window is shown again. ``all_now`` (an explicit
        flush): every panel, now.
        """
        dashboard = self.model.dashboard
        more = False
        for account_id in list(self._stale_panels):
            view = dashboard.accounts.get(account_id)
            if view is None:
                del self._stale_panels[account_id]
                continue
            panel = self.panel(account_id)
            if not all_now and panel.visibleRegion().isEmpty():
                continue  # off screen: redrawn when it comes into view
            del self._stale_panels[account_id]
            panel.update_from(view)
            if not all_now:
                more = True  # let this panel paint before the next one changes
                break
        if more:
            self._panel_timer.start()

    def _redraw_newly_visible(self, *_args: object) -> None:
        if self._stale_panels and not self._panel_timer.isActive():
            self._panel_timer.start()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._redraw_newly_visible()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._redraw_newly_visible()

    def _tick(self) -> None:
        now = time.time()
        dashboard = self.model.dashboard
        self.strip.update_from(dashboard, now)
        for section in self.sections.values():
            for account_id, panel in section.panels.items():
                panel.update_times(dashboard.accounts[account_id], now)

    # -- actions ------------------------------------------------------------------------

    def _show_paused(self, paused: bool) -> None:
        if self.pause_action.isChecked() != paused:
            self.pause_action.blockSignals(True)
            self.pause_action.setChecked(paused)
            self.pause_action.blockSignals(False)

    def request_unwind(self, user: str) -> bool:
        """Ask, then turn ``user``'s forced unwind on (see :class:`Actions`)."""
        return self.commands.request_unwind(user)

    def request_unwind_off(self, user: str) -> bool:
        """Ask, then turn ``user``'s forced unwind off (see :class:`Actions`)."""
        return self.commands.request_unwind_off(user)

    def unwind_button(self, user: str) -> QPushButton:
        return self.sections[user].button

    # -- window behaviour ---------------------------------------------------------------

    def set_hide_on_close(self, hide: bool) -> None:
        self._hide_on_close = hide

    def set_quitting(self) -> None:
        """The app is quitting (already confirmed): closing now really closes."""
        self._quitting = True

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self._quitting:
            event.accept()
            return
        if self._hide_on_close:
            event.ignore()
            self.hide()
            return
        if self.receivers(SIGNAL("quit_requested()")) > 0:
            # The app decides (it may ask first while an unwind is active).
            event.ignore()
            self.quit_requested.emit()
            return
        event.accept()
