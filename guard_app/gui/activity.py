"""The Activity view: the audit journal, newest first, filterable by account or user.

It follows the enforcer's events: the journal observer re-emits every entry it writes
as ``JournalWritten`` and :meth:`ActivityView.add` puts it at the top of the table
(nothing polls the database). The history already in the journal is read once, when
the view is built, and again only when the trader picks another filter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sized

from PySide6.QtCore import QModelIndex, Qt
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
# The time column always shows a whole "23:59:59" (it was once cut to "17…").
_TIME_SAMPLE = "00:00:00"


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
        metrics = self.table.fontMetrics()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        hh.resizeSection(0, metrics.horizontalAdvance(_TIME_SAMPLE) + 24)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        hh.resizeSection(1, metrics.horizontalAdvance("alice-binance-futures") + 24)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        hh.resizeSection(2, metrics.horizontalAdvance("order rejected") + 24)
        hh.setStretchLastSection(True)
        layout.addWidget(self.table)
        self.refresh()  # the history, once; new entries come from add()

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

    def _shown(self, entry: JournalEntry) -> bool:
        chosen = str(self.filter.currentData() or "")
        if not chosen:
            return True
        kind, _, name = chosen.partition(":")
        return (entry.user if kind == "user" else entry.account_id) == name

    def add(self, entry: JournalEntry) -> None:
        """A journal entry just written (from a ``JournalWritten`` event)."""
        last = self.model.last_id
        if (last is not None and entry.id <= last) or not self._shown(entry):
            return  # already shown (read with the history), or filtered out
        self.model.prepend([entry])

    def refresh(self) -> None:
        """Read journal entries newer than the newest one shown (the history at start)."""
        chosen = str(self.filter.currentData() or "")
        kind, _, name = chosen.partition(":")
        user = name if chosen and kind == "user" else None
        account_id = name if chosen and kind != "user" else None
        try:
            entries = self._state().entries(limit=MAX_ROWS, after_id=self.model.last_id,
                                            user=user, account_id=account_id)
        except Exception:
            log.exception("could not read the journal for the Activity view")
            return
        self.model.prepend(entries)
