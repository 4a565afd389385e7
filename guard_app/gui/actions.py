"""What a trader can do from anywhere in the app: Forced Unwind, turn it off, pause, resume.

The window's buttons and menu and the tray's menu all call one :class:`Actions`, so
an unwind asked for from the tray gets exactly the window's confirmation, and pause
from either place shows in both. An action never updates the screen itself: the
enforcer announces the stored flag (``FlagsChanged``) and the dashboard follows that
event, the one source of truth for who is under forced unwind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from guard_app.gui.unwind_dialog import confirm_unwind

if TYPE_CHECKING:
    from guard_app.gui.dashboard_model import DashboardModel
    from guard_app.gui.enforcer_host import EnforcerHost

__all__ = ["Actions"]

log = logging.getLogger("guard_app.gui")


class Actions(QObject):
    """The app's commands, each confirmed where it must be (see the module docstring)."""

    paused_changed = Signal(bool)

    def __init__(self, host: EnforcerHost, model: DashboardModel,
                 parent_widget: Callable[[], QWidget | None] = lambda: None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.model = model
        self._parent_widget = parent_widget

    # -- forced unwind ------------------------------------------------------------------

    def toggle_unwind(self, user: str) -> bool:
        """The user's one red button: turn the unwind on, or (while on) off. Asks first."""
        view = self.model.dashboard.users.get(user)
        if view is not None and view.forced_unwind:
            return self.request_unwind_off(user)
        return self.request_unwind(user)

    def request_unwind(self, user: str, *, source: str = "window") -> bool:
        """Ask, then turn ``user``'s forced unwind on. True when it was turned on."""
        self.model.flush()  # the confirmation lists what is open *now*
        if not confirm_unwind(self._parent_widget(), user, self.model.dashboard):
            return False
        self.host.set_forced_unwind(user, True, by="gui", reason=f"Forced Unwind in the {source}")
        return True

    def request_unwind_off(self, user: str, *, source: str = "window") -> bool:
        """Ask, then turn ``user``'s forced unwind off. True when it was turned off."""
        self.model.flush()
        if not confirm_unwind(self._parent_widget(), user, self.model.dashboard,
                              turning_off=True):
            return False
        self.host.set_forced_unwind(user, False, by="gui", reason=f"turned off in the {source}")
        return True

    # -- enforcement --------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.host.paused

    def set_paused(self, paused: bool) -> None:
        """Pause (caps not enforced; forced unwinds still run) or resume enforcement."""
        if paused == self.host.paused:
            return
        if paused:
            self.host.pause()
            log.info("enforcement paused (forced unwinds still run)")
        else:
            self.host.resume()
            log.info("enforcement resumed")
        self.paused_changed.emit(paused)

    def toggle_pause(self) -> None:
        self.set_paused(not self.host.paused)
