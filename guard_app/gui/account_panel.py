"""One account's card: state pill, count and notional vs caps, positions, charts.

The card is built once and updated in place from an :class:`AccountView`; rows the
enforcer will close are highlighted in the over-cap colour, dust rows are greyed.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from guard_app.gui.charts import ExposureChart, PositionBarsChart
from guard_app.gui.model.dashboard import AccountState, AccountView
from guard_app.gui.theme import HEADING, SMALL, scaled_font, state_colour

__all__ = ["AccountPanel", "PositionsModel", "StatePill", "ago", "duration"]



def duration(seconds: float) -> str:
    """A short human duration: "8 s", "3 min", "2 h 05"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d}"


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    return f"{duration((now or time.time()) - ts)} ago"


class StatePill(QLabel):
    """A rounded label in a state's colour with the state in words."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("pill")
        self.state = ""
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def set_state(self, state: str, text: str) -> None:
        colour = "no_keys" if state == AccountState.PENDING.value else state
        if state != self.state:
            self.state = state
            self.setStyleSheet(f"background: {state_colour(colour).name()};")
        # Long exchange reasons are elided; the full text is in the tooltip.
        shown = text if len(text) <= 70 else text[:67] + "…"
        self.setText(shown)
        self.setToolTip(text)


Row = tuple[str, str, float, "float | None", str, str]


class PositionsModel(QStandardItemModel):
    """Positions then dust of one account, as last read.

    The cells live in Qt's own (C++) item model and are rebuilt only when the rows
    change: painting and sizing the table then need no Python calls. With many
    accounts each such call had to win the GIL back from the enforcer thread, which
    made a one-second cycle visibly stall the window.
    """

    HEADERS = ("Symbol", "Side", "Amount", "Value", "")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(list(self.HEADERS))
        # (symbol, side, amount, value, kind, note); kind: close | closed | keep | dust
        self.rows: list[Row] = []
        self.quote = "USDT"
        self.unwinding = False

    def set_view(self, view: AccountView) -> None:
        rows: list[Row] = []
        snap = view.snapshot
        if snap is not None:
            marked = view.planned_symbols
            for p in sorted(snap.positions, key=lambda p: (p.value, p.symbol)):
                if p.symbol in view.closed:
                    kind, note = "closed", "closed ✓"
                elif p.symbol in view.rejected:
                    kind, note = "close", f"close failed: {view.rejected[p.symbol]}"
                elif p.symbol in view.closing:
                    kind, note = "close", "closing…"
                elif p.symbol in marked:
                    kind, note = "close", "will close"
                else:
                    kind, note = "keep", ""
                rows.append((p.symbol, p.side.value, p.amount, p.value, kind, note))
            for h in snap.dust:
                rows.append((h.symbol, "", h.amount, h.value, "dust", "dust: " + h.reason))
        quote, unwinding = view.config.quote, view.state is AccountState.UNWINDING
        if (rows, quote, unwinding) == (self.rows, self.quote, self.unwinding):
            return  # nothing to redraw
        self.rows, self.quote, self.unwinding = rows, quote, unwinding
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c in range(len(self.HEADERS)):
                self.setItem(r, c, self._cell(row, c))

    def _cell(self, row: Row, col: int) -> QStandardItem:
        symbol, side, amount, value, kind, note = row
        text = (symbol, side, f"{amount:,.6g}",
                "—" if value is None else f"{value:,.2f} {self.quote}", note)[col]
        item = QStandardItem(text)
        item.setEditable(False)
        if col in (2, 3):
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if kind in ("close", "closed"):
            colour = state_colour("unwinding" if self.unwinding else "over_cap")
            colour.setAlpha(70 if kind == "close" else 35)
            item.setBackground(QBrush(colour))
        if kind in ("dust", "closed"):
            item.setForeground(QBrush(state_colour("dust")))
        if note:
            item.setToolTip(note)
        return item


class _CapBar(QWidget):
    """A caption, a big "used / cap" number and a bar coloured by how full it is."""

    def __init__(self, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.caption = QLabel(caption)
        self.caption.setProperty("role", "muted")
        self.value = QLabel("—")
        self.value.setFont(scaled_font(self.font(), HEADING, bold=True))
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setRange(0, 1000)
        self.bar.setFixedHeight(8)
        layout.addWidget(self.caption)
        layout.addWidget(self.value)
        layout.addWidget(self.bar)
        self._chunk = ""

    def set_unknown(self, text: str) -> None:
        """No number at all: the account was never read (never a zero)."""
        self.value.setText(text)
        self.bar.setValue(0)
        self.bar.setVisible(False)

    def set_stale(self, stale: bool) -> None:
        """Grey the number: it is the last good read's, not the account now."""
        if self.value.isEnabled() == stale:
            self.value.setEnabled(not stale)
            self.bar.setEnabled(not stale)

    def set_values(self, used: float, cap: float | None, text: str, closing_state: str) -> None:
        self.value.setText(text)
        if cap is None or cap <= 0:
            self.bar.setValue(0)
            self.bar.setVisible(False)
            return
        self.bar.setVisible(True)
        ratio = used / cap
        self.bar.setValue(int(min(1.0, ratio) * 1000))
        state = closing_state if ratio > 1 else ("over_cap" if ratio >= 0.9 else "ok")
        chunk = state_colour(state).name()
        if chunk != self._chunk:
            self._chunk = chunk
            self.bar.setStyleSheet(
                f"QProgressBar::chunk {{ background: {chunk}; border-radius: 3px; }}")


class AccountPanel(QFrame):
    """The card of one account (objectName ``account-{id}``)."""

    def __init__(self, account_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.account_id = account_id
        self.setObjectName(f"account-{account_id}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setProperty("card", True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(224)  # styled by the theme's QFrame[card="true"] rule

        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 10, 14, 10)
        outer.setSpacing(8)

        header = QHBoxLayout()
        header.setSpacing(10)
        self.title = QLabel(account_id)
        self.title.setFont(scaled_font(self.font(), HEADING - 1, bold=True))
        self.market = QLabel("")
        self.market.setProperty("role", "muted")
        self.pill = StatePill()
        self.dust_note = QLabel("")
        self.dust_note.setProperty("role", "muted")
        self.checked = QLabel("")
        self.checked.setProperty("role", "muted")
        self.checked.setFont(scaled_font(self.font(), SMALL))
        header.addWidget(self.title)
        header.addWidget(self.market)
        header.addWidget(self.pill)
        header.addWidget(self.dust_note)
        header.addStretch(1)
        header.addWidget(self.checked)
        outer.addLayout(header)

        body = QGridLayout()
        body.setHorizontalSpacing(16)
        numbers = QVBoxLayout()
        numbers.setSpacing(10)
        self.count_bar = _CapBar("Positions vs cap")
        self.notional_bar = _CapBar("Exposure vs cap")
        numbers.addWidget(self.count_bar)
        numbers.addWidget(self.notional_bar)
        numbers.addStretch(1)
        numbers_w = QWidget()
        numbers_w.setLayout(numbers)
        numbers_w.setFixedWidth(180)

        self.positions = PositionsModel(self)
        self.table = QTableView()
        self.table.setModel(self.positions)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setSelectionMode(QTableView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.verticalHeader().setDefaultSectionSize(20)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setStretchLastSection(True)

        self.bars = PositionBarsChart()
        self.exposure = ExposureChart()
        body.addWidget(numbers_w, 0, 0)
        body.addWidget(self.table, 0, 1)
        body.addWidget(self.bars, 0, 2)
        body.addWidget(self.exposure, 0, 3)
        body.setColumnStretch(1, 5)
        body.setColumnStretch(2, 4)
        body.setColumnStretch(3, 4)
        outer.addLayout(body, 1)

    def update_from(self, view: AccountView) -> None:
        cfg = view.config
        self.market.setText(f"{cfg.exchange} · {cfg.market.value} · {cfg.quote}")
        state = view.state
        self.pill.set_state(state.value, view.state_text())
        self.dust_note.setText(
            f"dust held: {len(view.snapshot.dust)}" if view.snapshot and view.snapshot.dust else "")
        closing_state = "unwinding" if state is AccountState.UNWINDING else "over_cap"
        caps = view.caps
        reading = view.reading
        self.notional_bar.caption.setText(
            f"Exposure ({cfg.quote}) vs cap" if caps.max_notional is not None
            else f"Exposure ({cfg.quote}), no cap")
        if not reading.has_numbers:
            # Unknown is not zero (DESIGN rule 16): no count, no exposure, no bar.
            self.count_bar.set_unknown("not read")
            self.notional_bar.set_unknown("not read")
        else:
            self.count_bar.set_values(
                view.position_count, caps.max_positions,
                f"{view.position_count} / {caps.max_positions}" if caps.max_positions is not None
                else f"{view.position_count}", closing_state)
            if caps.max_notional is not None:
                text = f"{view.notional:,.0f} / {caps.max_notional:,.0f}"
            else:
                text = f"{view.notional:,.0f}"
            self.notional_bar.set_values(view.notional, caps.max_notional, text, closing_state)
        # A failed read keeps the last good numbers on screen, greyed and dated.
        self.count_bar.set_stale(reading.stale)
        self.notional_bar.set_stale(reading.stale)
        self.table.setEnabled(not reading.stale)
        self.positions.set_view(view)
        self.bars.update_from(view)
        self.exposure.update_from(view)
        self.update_times(view)

    def update_times(self, view: AccountView, now: float | None = None) -> None:
        now = now or time.time()
        reading = view.reading
        if reading.known:
            parts = [f"read {ago(view.last_read_at, now)}"]
        elif reading.stale:
            parts = [f"NOT READ since {ago(reading.read_at, now)}: showing that read",
                     f"tried {ago(view.last_check, now)}"]
        else:
            parts = ["not read yet" if view.last_check is None
                     else f"not read: tried {ago(view.last_check, now)}"]
        if view.next_check_at is not None:
            parts.append(f"next in {duration(view.next_check_at - now)}")
        text = " · ".join(parts)
        if text != self.checked.text():
            self.checked.setText(text)
        stale = "stale" if reading.stale else ""
        if self.checked.property("state") != stale:
            self.checked.setProperty("state", stale)
            self.checked.setStyleSheet(
                f"color: {state_colour('error').name()}; font-weight: 700;" if stale else "")
