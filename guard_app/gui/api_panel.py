"""The remote API in the window: is it on and where, turn it on, copy the address,
rotate the token; and the hook that runs it on the enforcer thread's loop.

The GUI never imports ``guard_app.api`` (the layers keep them apart): the app's start-up
hands in an object that fits ``ApiController`` (``guard_app.api.desktop.DesktopApi``
does) and gives the same object to the enforcer host as a ``LoopCompanion``, which
the host runs next to ``Enforcer.run`` on the enforcer's own loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from guard_app.core.errors import GuardError
from guard_app.core.events import Observer

if TYPE_CHECKING:
    from guard_app.core.enforcer import Enforcer

log = logging.getLogger("guard_app.gui.api")


class ApiStateLike(Protocol):
    """On and where, or off and why (read-only)."""

    @property
    def on(self) -> bool: ...

    @property
    def url(self) -> str | None: ...

    @property
    def problem(self) -> str | None: ...


class ApiController(Protocol):
    """What the panel needs (``guard_app.api.desktop.DesktopApi`` fits)."""

    on_change: Callable[[], None] | None

    def describe(self) -> ApiStateLike: ...

    @property
    def address(self) -> str: ...

    def turn_on(self) -> str | None: ...

    def rotate_token(self) -> str: ...


class LoopCompanion(Protocol):
    """Something that runs on the enforcer's loop next to ``Enforcer.run``."""

    def observers(self) -> Sequence[Observer]: ...

    async def start(self, enforcer: Enforcer) -> None: ...

    async def stop(self) -> None: ...


async def run_with_companions(enforcer: Enforcer, companions: Sequence[LoopCompanion]) -> None:
    """``enforcer.run()`` with each companion started before and stopped after.

    A companion that fails to start is logged and left out: the enforcer runs anyway.
    """
    started = []
    for companion in companions:
        try:
            await companion.start(enforcer)
            started.append(companion)
        except Exception:
            log.exception("a companion of the enforcer could not start; enforcing without it")
    try:
        await enforcer.run()
    finally:
        for companion in reversed(started):
            try:
                await companion.stop()
            except Exception:
                log.exception("a companion of the enforcer did not stop cleanly")


def companion_observers(companions: Sequence[LoopCompanion]) -> list[Observer]:
    """Every companion's observers (built on the worker thread), for
    ``Enforcer(observers=...)``; the enforcer isolates each observer's failures itself.
    A companion that can't be set up is logged and left out: enforcement never waits
    on it."""
    extra: list[Observer] = []
    for companion in companions:
        try:
            extra.extend(companion.observers())
        except Exception:  # a companion must never keep the enforcer from running
            log.exception("a companion of the enforcer could not be set up; enforcing without it")
    return extra


class TokenDialog(QDialog):
    """Shows a new token once, selectable and with a copy button; never stored by us."""

    def __init__(self, token: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("api-token-dialog")
        self.setWindowTitle("Remote API token")
        text = QLabel("This is the remote API's new token. It is shown only now: copy it into "
                      "your password manager or monitoring. Any previous token no longer works.")
        text.setWordWrap(True)
        self.field = QLineEdit(token)
        self.field.setReadOnly(True)
        self.field.setObjectName("api-token")
        copy = QPushButton("Copy token")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(token))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        row = QHBoxLayout()
        row.addWidget(self.field, 1)
        row.addWidget(copy)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addLayout(row)
        layout.addWidget(buttons)


class ApiPanel(QWidget):
    """One line for the status strip: 'API on at …' or 'API off (why)', and its buttons."""

    _changed = Signal()  # emitted from any thread; delivered on the GUI thread

    def __init__(self, controller: ApiController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("api-panel")
        self._controller = controller
        self.label = QLabel()
        self.label.setObjectName("api-state")
        self.turn_on_button = QPushButton("Turn on")
        self.copy_button = QPushButton("Copy address")
        self.rotate_button = QPushButton("Rotate token…")
        self.token_dialog: TokenDialog | None = None
        for button, tip in (
            (self.turn_on_button, "Serve the remote API (and keep it on in the config file)"),
            (self.copy_button, "Copy the API's address to the clipboard"),
            (self.rotate_button, "Make a new token; the old one stops working at once"),
        ):
            button.setToolTip(tip)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        for button in (self.turn_on_button, self.copy_button, self.rotate_button):
            layout.addWidget(button)
        self.turn_on_button.clicked.connect(self._turn_on)
        self.copy_button.clicked.connect(self._copy)
        self.rotate_button.clicked.connect(self._rotate)
        self._changed.connect(self.refresh)
        controller.on_change = self._changed.emit
        self.refresh()

    @Slot()
    def refresh(self) -> None:
        state = self._controller.describe()
        if state.on:
            self.label.setText(f"API on at {state.url}")
        elif state.problem:
            self.label.setText(f"API off: {state.problem}")
        else:
            self.label.setText("API off")
        self.turn_on_button.setVisible(not state.on)
        # Off: one button, "Turn on" (which makes a token if needed); the rest only
        # mean something while the API serves.
        self.copy_button.setEnabled(state.on)
        self.copy_button.setVisible(state.on)
        self.rotate_button.setVisible(state.on)

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self._controller.address)

    def _turn_on(self) -> None:
        try:
            token = self._controller.turn_on()
        except GuardError as exc:
            QMessageBox.warning(self, "Remote API", f"The API could not be turned on: {exc}")
            return
        if token is not None:
            self._show_token(token)
        self.refresh()

    def _rotate(self) -> None:
        answer = QMessageBox.question(
            self, "Rotate the API token",
            "Make a new API token? Scripts and monitoring using the current one stop "
            "working at once until they get the new one.")
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.rotate_now()

    def rotate_now(self) -> None:
        """Rotate without asking (the confirmed part of the button; tests use it)."""
        try:
            token = self._controller.rotate_token()
        except GuardError as exc:
            QMessageBox.warning(self, "Remote API", f"The token could not be replaced: {exc}")
            return
        self._show_token(token)

    def _show_token(self, token: str) -> None:
        if self.token_dialog is not None:
            self.token_dialog.close()
        self.token_dialog = TokenDialog(token, self)
        self.token_dialog.show()
