"""Unexpected exceptions end up in a dialog, not in a dead app (Electrum style).

``ExceptionHook.install()`` replaces ``sys.excepthook`` and ``threading.excepthook``.
The hook may run on any thread, so it only logs and emits a signal; the dialog is
built on the GUI thread when the queued signal arrives. The enforcer runs on its own
thread and is not affected by anything shown here.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

log = logging.getLogger("guard_app.gui")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ExceptionDialog(QMessageBox):
    """Says that something went wrong, that enforcement continues, and shows the details."""

    def __init__(self, exc_type: type[BaseException], exc: BaseException,
                 details: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("exception-dialog")
        self.setIcon(QMessageBox.Icon.Critical)
        self.setWindowTitle("guard-app: unexpected error")
        self.setText(f"Something went wrong in the window: {exc_type.__name__}: {exc}")
        self.setInformativeText(
            "The enforcer keeps running on its own thread; your caps and forced unwinds "
            "are still enforced. If this keeps happening, restart guard-app and report "
            "the details below."
        )
        self.setDetailedText(details)
        self.setStandardButtons(QMessageBox.StandardButton.Close)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.repeats = 0

    def note_repeat(self) -> None:
        self.repeats += 1
        self.setInformativeText(
            f"The same kind of error happened {self.repeats + 1} times. The enforcer keeps "
            "running; restart guard-app if the window misbehaves."
        )


class ExceptionHook(QObject):
    """Routes uncaught exceptions from any thread to an ``ExceptionDialog`` on the GUI thread."""

    _report = Signal(object)
    dialog_shown = Signal(object)  # the ExceptionDialog (tests, logging)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._report.connect(self._show, Qt.ConnectionType.QueuedConnection)
        self._previous_hook = sys.excepthook
        self._previous_thread_hook = threading.excepthook
        self._installed = False
        self.dialog: ExceptionDialog | None = None
        self.parent_widget: QWidget | None = None

    def install(self) -> None:
        self._previous_hook = sys.excepthook
        self._previous_thread_hook = threading.excepthook
        sys.excepthook = self.handle
        threading.excepthook = self._handle_thread
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            sys.excepthook = self._previous_hook
            threading.excepthook = self._previous_thread_hook
            self._installed = False

    def handle(self, exc_type: type[BaseException], exc: BaseException,
               tb: TracebackType | None) -> None:
        """``sys.excepthook``: log, then show a dialog (Ctrl-C still stops the app)."""
        if issubclass(exc_type, KeyboardInterrupt):
            self._previous_hook(exc_type, exc, tb)
            return
        log.error("unexpected error in the app", exc_info=(exc_type, exc, tb))
        self._report.emit((exc_type, exc, tb))

    def _handle_thread(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None:
            return
        self.handle(args.exc_type, args.exc_value, args.exc_traceback)

    @Slot(object)
    def _show(self, info: ExcInfo) -> None:
        exc_type, exc, tb = info
        if QGuiApplication.instance() is None:
            return
        if self.dialog is not None:
            try:
                if self.dialog.isVisible():
                    self.dialog.note_repeat()
                    return
            except RuntimeError:  # deleted on close
                pass
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        dialog = ExceptionDialog(exc_type, exc, details, self.parent_widget)
        dialog.destroyed.connect(self._forget_dialog)
        self.dialog = dialog
        # Not exec(): a nested event loop inside an error handler invites re-entrancy.
        dialog.open()
        self.dialog_shown.emit(dialog)

    @Slot()
    def _forget_dialog(self) -> None:
        self.dialog = None
