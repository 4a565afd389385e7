"""The Forced Unwind confirmation: what will be closed, and a deliberate "yes".

Turning a forced unwind ON lists every account of the user with the positions that
will be market-closed and their estimated value, and a total. **Cancel** is the
default button, Escape cancels, and Enter can never confirm: the destructive button
is neither default nor auto-default, and it stays disabled until the user's name is
typed exactly. The dialog opens with the name field focused, so the trader types at
once; positions already closed (``closed ✓`` in the panel) are not listed. Turning it OFF is lighter (no typing) but still an explicit click
on a non-default button.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent, QShowEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from guard_app.gui.model.dashboard import Dashboard
from guard_app.gui.theme import HEADING, scaled_font, state_colour

__all__ = ["UnwindDialog", "confirm_unwind"]


class UnwindDialog(QDialog):
    """Confirm turning a user's forced unwind on (or, with ``turning_off``, off)."""

    def __init__(self, parent: QWidget | None, user: str, dashboard: Dashboard, *,
                 turning_off: bool = False) -> None:
        super().__init__(parent)
        self.user = user
        self.turning_off = turning_off
        self.setObjectName("unwind-dialog")
        self.setModal(True)
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        layout.setSpacing(12)
        layout.setContentsMargins(20, 18, 20, 18)
        red = state_colour("unwinding").name()
        preview = dashboard.unwind_preview(user)
        quote = preview[0][0].config.quote if preview else "USDT"
        total_value = sum(r[3] for _, rows in preview for r in rows)
        total_count = sum(len(rows) for _, rows in preview)

        heading = QLabel()
        heading.setFont(scaled_font(self.font(), HEADING, bold=True))
        heading.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setObjectName("unwind-positions")
        self.tree.setHeaderLabels(["Account / position", "Side", "Amount", f"Est. value ({quote})"])
        self.tree.setRootIsDecorated(True)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for view, rows in preview:
            unread = "" if view.snapshot is not None else "  (not read yet: closes whatever it holds)"
            acc = QTreeWidgetItem([f"{view.account_id}{unread}", "", f"{len(rows)} positions",
                                   f"{sum(r[3] for r in rows):,.2f}"])
            font = acc.font(0)
            font.setBold(True)
            for c in range(4):
                acc.setFont(c, font)
            for symbol, side, amount, value in rows:
                QTreeWidgetItem(acc, [symbol, side, f"{amount:,.6g}", f"{value:,.2f}"])
            self.tree.addTopLevelItem(acc)
            acc.setExpanded(True)
        self.total_label = QLabel()
        self.total_label.setObjectName("unwind-total")

        self.cancel_button = QPushButton("Keep unwinding" if turning_off else "Cancel")
        self.cancel_button.setObjectName("unwind-cancel")
        self.cancel_button.setDefault(True)
        self.cancel_button.setAutoDefault(True)
        self.cancel_button.clicked.connect(self.reject)
        self.confirm_button = QPushButton()
        self.confirm_button.setObjectName("unwind-confirm")
        self.confirm_button.setDefault(False)
        self.confirm_button.setAutoDefault(False)
        self.confirm_button.clicked.connect(self._confirm_clicked)
        self.name_edit: QLineEdit | None = None

        if turning_off:
            self.setWindowTitle(f"Turn off forced unwind for {user}?")
            heading.setText(f"Turn off forced unwind for {user}?")
            layout.addWidget(heading)
            note = QLabel(
                f"The enforcer stops closing {user}'s positions. Positions still open stay "
                "open and only the normal caps apply again.")
            note.setWordWrap(True)
            layout.addWidget(note)
            if total_count:
                layout.addWidget(QLabel("Still open (as last read):"))
                layout.addWidget(self.tree)
            self.total_label.setText(f"{total_count} positions still open, "
                                     f"about {total_value:,.2f} {quote}")
            layout.addWidget(self.total_label)
            self.confirm_button.setText("Turn off forced unwind")
            self.confirm_button.setEnabled(True)
        else:
            self.setWindowTitle(f"Forced Unwind {user}?")
            heading.setText(f"Close EVERY position of {user} at market?")
            heading.setStyleSheet(f"color: {red};")
            layout.addWidget(heading)
            note = QLabel(
                f"All {len(preview)} accounts of {user} are closed now and kept flat until "
                "someone turns this off. Market orders: the fill price may differ from the "
                "estimate.")
            note.setWordWrap(True)
            layout.addWidget(note)
            layout.addWidget(self.tree)
            self.total_label.setText(
                f"Total: {total_count} positions, about {total_value:,.2f} {quote}")
            self.total_label.setFont(scaled_font(self.font(), 1, bold=True))
            layout.addWidget(self.total_label)
            prompt = QLabel(f"Type <b>{user}</b> to confirm:")
            self.name_edit = QLineEdit()
            self.name_edit.setObjectName("unwind-name")
            self.name_edit.setPlaceholderText(user)
            self.name_edit.textChanged.connect(self._name_changed)
            # Enter in the name field must do nothing (not confirm, not cancel).
            self.name_edit.installEventFilter(self)
            layout.addWidget(prompt)
            layout.addWidget(self.name_edit)
            self.confirm_button.setText(f"Close all positions of {user}")
            self.confirm_button.setProperty("role", "destructive")
            self.confirm_button.setEnabled(False)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.confirm_button)
        layout.addLayout(buttons)
        # The whole unwind is one click, the name, one click: the name field has the
        # focus (Enter there does nothing); Cancel stays the default button.
        self._first_focus: QWidget = self.name_edit or self.cancel_button
        self._first_focus.setFocus()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._first_focus.setFocus()

    @property
    def name_matches(self) -> bool:
        return self.name_edit is None or self.name_edit.text() == self.user

    def _name_changed(self) -> None:
        self.confirm_button.setEnabled(self.name_matches)

    def _confirm_clicked(self) -> None:
        if self.name_matches:
            self.accept()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if (watched is self.name_edit and event.type() == QEvent.Type.KeyPress
                and isinstance(event, QKeyEvent)
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)):
            return True
        return super().eventFilter(watched, event)


def confirm_unwind(parent: QWidget | None, user: str, dashboard: Dashboard, *,
                   turning_off: bool = False) -> bool:
    """Ask the trader; True only when they explicitly confirmed."""
    dialog = UnwindDialog(parent, user, dashboard, turning_off=turning_off)
    try:
        return dialog.exec() == QDialog.DialogCode.Accepted
    finally:
        dialog.deleteLater()
