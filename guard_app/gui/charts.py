"""pyqtgraph charts of one account: positions vs the cap, and exposure over time.

Both charts build their plot items once and then only call ``setOpts``/``setData``
on them, so a live update never recreates a plot, never flickers and stays cheap
with 50 accounts.

**Position bars.** One bar per position, smallest on the left, largest on the
right, because that is the order the enforcer closes in. The count cap is drawn as
a *vertical* line: everything left of it is what the enforcer closes, everything
right of it is what the cap keeps. While under the cap the line sits left of the
first bar and the gap between them is the number of free slots, so "how close am
I" reads at a glance too. (A horizontal line would only suit a per-position limit;
the notional cap is a limit on the *sum*, so it is shown in the time series
instead.) Bars the enforcer will close or is closing are in the over-cap colour
(the unwinding red during a forced unwind), dust bars are grey.

**Exposure over time.** Position count and notional as a percentage of their caps
on one axis, with the cap as a line at 100 %: both limits read against the same
line, whatever the currency amounts are.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from guard_app.gui.model.dashboard import AccountState, AccountView
from guard_app.gui.theme import current_theme, state_colour

__all__ = ["ExposureChart", "PositionBarsChart"]

_BAR_WIDTH = 0.8


def _brush(state: str, alpha: int = 255) -> QColor:
    colour = state_colour(state)
    colour.setAlpha(alpha)
    return colour


class PositionBarsChart(pg.PlotWidget):
    """Position values of one account, smallest first, with the count cap drawn."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        plot = self.getPlotItem()
        plot.showGrid(y=True, alpha=0.25)
        plot.getAxis("bottom").setStyle(showValues=False)
        plot.setLabel("left", "value")
        plot.setTitle("positions, smallest first", size="8pt")
        # One shared pen: pyqtgraph 0.14 fails on an empty per-bar ``pens`` list.
        self.bars = pg.BarGraphItem(x=[], height=[], width=_BAR_WIDTH, brushes=[], pen=None)
        self.cap_line = pg.InfiniteLine(
            angle=90, movable=False,
            pen=pg.mkPen(current_theme().text, width=2, style=pg.QtCore.Qt.PenStyle.DashLine),
            label="cap", labelOpts={"position": 0.92, "color": current_theme().text},
        )
        self.addItem(self.bars)
        self.addItem(self.cap_line)
        self.symbols: list[str] = []
        self.brush_states: list[str] = []

    def update_from(self, view: AccountView) -> None:
        snap = view.snapshot
        rows: list[tuple[float, str, str]] = []  # (value, symbol, colour state)
        if snap is not None:
            marked = view.planned_symbols | view.closed
            close_state = ("unwinding" if view.state is AccountState.UNWINDING else "over_cap")
            for p in snap.positions:
                state = close_state if p.symbol in marked else "ok"
                rows.append((p.value, p.symbol, state))
            for h in snap.dust:
                rows.append((h.value or 0.0, h.symbol, "dust"))
        rows.sort(key=lambda r: (r[0], r[1]))
        n = len(rows)
        self.symbols = [r[1] for r in rows]
        self.brush_states = [r[2] for r in rows]
        brushes = [pg.mkBrush(_brush(s, 150 if s == "dust" else 230)) for s in self.brush_states]
        self.bars.setOpts(x=list(range(n)), height=[r[0] for r in rows], width=_BAR_WIDTH,
                          brushes=brushes)
        cap = view.caps.max_positions
        counted = sum(1 for s in self.brush_states if s != "dust")
        dust = n - counted
        if cap is None:
            self.cap_line.hide()
            left = -0.5
        else:
            # Dust bars sort first (they are the smallest) but don't count.
            boundary = dust + (counted - cap) - 0.5
            self.cap_line.setValue(boundary)
            self.cap_line.label.setFormat(f"cap {cap}")
            self.cap_line.show()
            left = min(-0.5, boundary - 0.5)
        self.setXRange(left, max(n - 0.5, left + 1), padding=0.02)
        top = max((r[0] for r in rows), default=1.0)
        self.setYRange(0, top * 1.1 if top > 0 else 1.0, padding=0)
        plot = self.getPlotItem()
        if plot.getAxis("left").labelText != view.config.quote:
            plot.setLabel("left", view.config.quote)


class ExposureChart(pg.PlotWidget):
    """Position count and notional of one account over time, as % of their caps."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, axisItems={"bottom": pg.DateAxisItem()})
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        plot = self.getPlotItem()
        plot.showGrid(y=True, alpha=0.25)
        plot.setLabel("left", "% of cap")
        # A coloured title instead of a legend: a legend box would cover the data.
        plot.setTitle(
            f'<span style="color:{current_theme().text}">━ positions</span>&nbsp;&nbsp;'
            '<span style="color:#3d7bd9">━ exposure</span>&nbsp;&nbsp;'
            f'<span style="color:{state_colour("over_cap").name()}">╌ cap</span>',
            size="8pt")
        self.count_curve = plot.plot([], [], name="positions",
                                     pen=pg.mkPen(current_theme().text, width=2), stepMode=None)
        self.notional_curve = plot.plot([], [], name="exposure",
                                        pen=pg.mkPen("#3d7bd9", width=2))
        self.cap_line = pg.InfiniteLine(
            pos=100, angle=0, movable=False,
            pen=pg.mkPen(state_colour("over_cap"), width=2, style=pg.QtCore.Qt.PenStyle.DashLine),
        )
        self.addItem(self.cap_line)

    def update_from(self, view: AccountView) -> None:
        history = list(view.history)
        xs = [h[0] for h in history]
        caps = view.caps
        if caps.max_positions:
            self.count_curve.setData(xs, [100.0 * h[1] / caps.max_positions for h in history])
        else:
            self.count_curve.setData([], [])
        if caps.max_notional:
            self.notional_curve.setData(xs, [100.0 * h[2] / caps.max_notional for h in history])
            self.notional_curve.show()
        else:
            self.notional_curve.setData([], [])
            self.notional_curve.hide()
        peak = max(
            [100.0 * h[1] / caps.max_positions for h in history if caps.max_positions]
            + [100.0 * h[2] / caps.max_notional for h in history if caps.max_notional]
            + [100.0]
        )
        self.setYRange(0, peak * 1.1, padding=0)
        if xs:
            self.setXRange(xs[0], max(xs[-1], xs[0] + 60), padding=0.02)
