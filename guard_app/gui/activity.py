"""The Activity view: the audit journal, newest first, filterable by account or user.

Reads the GUI thread's own StateStore (``host.state()``) incrementally with
``after_id``, so a refresh only fetches what is new; the model inserts those rows at
the top instead of rebuilding the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sized

from PySide6.QtCore import QModelIndex, Qt, QTimer
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from guard_app.core.state import JournalEntry, StateStore
from guard_app.gui.table_model import Index, ReadOnlyTableModel
from guard_app.gui.theme import state_colour

__all__ = ["ActivityModel", "ActivityView"]

log = logging.getLogger("guard_app.gui")


# Which journal kinds get a state colour in the Activity table.
_KIND_STATE = {
    "over_cap": "over_cap", "decision": "over_cap", "order_filled": "ok",
    "order_rejected": "error", "order_unknown": "error", "account_error": "error",
    "unwind_on": "unwinding", "unwind_off": "unwinding", "unwind_progress": "unwinding",
    "intervention": "over_cap",
}
MAX_ROWS = 2000
REFRESH_MS = 2000


class ActivityModel(ReadOnlyTableModel):
    """Journal entries, newest first, capped at MAX_ROWS."""

    HEADERS = ("Time", "Account / user", "What", "Details")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entries: list[JournalEntry] = []

    @property
    def last_id(self) -> int | None:
        return self.entries[0].id if self.entries else None

    def prepend(self, newest_first: list[JournalEntry]) -> None:
        if not newest_first:
            return
        self.beginInsertRows(QModelIndex(), 0, len(newest_first) - 1)
        self.entries[0:0] = newest_first
        self.endInsertRows()
        if len(self.entries) > MAX_ROWS:
            self.beginRemoveRows(QModelIndex(), MAX_ROWS, len(self.entries) - 1)
            del self.entries[MAX_ROWS:]
            self.endRemoveRows()

    def clear(self) -> None:
        self.beginResetModel()
        self.entries = []
        self.endResetModel()

    def _rows(self) -> Sized:
        return self.entries

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        e = self.entries[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            col = index.column()
            if col == 0:
                return time.strftime("%H:%M:%S", time.localtime(e.ts))
            if col == 1:
                return e.account_id or e.user or ""
            if col == 2:
                return e.kind.replace("_", " ")
            return e.message
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 2:
            state = _KIND_STATE.get(e.kind)
            return QBrush(state_colour(state)) if state else None
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == 3:
            return e.message
        return None


class ActivityView(QWidget):
    """The journal table with an account/user filter (objectName ``activity``)."""

    def __init__(self, state: Callable[[], StateStore], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("activity")
        self._state = state
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        title = QLabel("Activity")
        title.setProperty("role", "title")
        self.filter = QComboBox()
        self.filter.setObjectName("activity-filter")
        self.filter.addItem("Everything", "")
        self.filter.currentIndexChanged.connect(self._filter_changed)
        bar.addWidget(title)
        bar.addStretch(1)
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.filter)
        layout.addLayout(bar)
        self.model = ActivityModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        hh.resizeSection(2, 130)
        hh.setStretchLastSection(True)
        layout.addWidget(self.table)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    def set_choices(self, users: list[str], accounts: list[str]) -> None:
        current = self.filter.currentData()
        self.filter.blockSignals(True)
        self.filter.clear()
        self.filter.addItem("Everything", "")
        for u in users:
            self.filter.addItem(f"user {u}", f"user:{u}")
        for a in accounts:
            self.filter.addItem(f"account {a}", f"account:{a}")
        index = self.filter.findData(current)
        self.filter.setCurrentIndex(max(0, index))
        self.filter.blockSignals(False)

    def set_filter(self, kind: str | None, name: str | None = None) -> None:
        """Show only one user's or account's entries (``kind``: "user" | "account" | None)."""
        index = self.filter.findData(f"{kind}:{name}" if kind else "")
        self.filter.setCurrentIndex(max(0, index))

    def _filter_changed(self) -> None:
        self.model.clear()
        self.refresh()

    def refresh(self) -> None:
        """Fetch journal entries newer than the newest one shown."""
        chosen = str(self.filter.currentData() or "")
        kw: dict[str, str] = {}
        if chosen:
            kind, _, name = chosen.partition(":")
            kw["user" if kind == "user" else "account_id"] = name
        try:
            entries = self._state().entries(limit=MAX_ROWS, after_id=self.model.last_id, **kw)
        except Exception:
            log.exception("could not read the journal for the Activity view")
            return
        self.model.prepend(entries)
