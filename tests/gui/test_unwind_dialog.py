"""The Forced Unwind confirmation: Cancel by default, nothing confirms by accident."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QDialog  # noqa: E402

from guard_app.core.config import parse_config  # noqa: E402
from guard_app.core.events import AccountRead, OrderFilled  # noqa: E402
from guard_app.core.models import (  # noqa: E402
    AccountSnapshot,
    Caps,
    CloseReason,
    Holding,
    PlannedClose,
    Position,
    Side,
)
from guard_app.gui.model.dashboard import Dashboard  # noqa: E402
from guard_app.gui.unwind_dialog import UnwindDialog  # noqa: E402

pytestmark = [
    pytest.mark.gui,
]

CONFIG = parse_config(
    """
[[accounts]]
id = "alice-spot"
user = "alice"
exchange = "binance"
max_positions = 8

[[accounts]]
id = "alice-swap"
user = "alice"
exchange = "binance"
market = "swap"
max_positions = 3
"""
)


@pytest.fixture
def dashboard() -> Dashboard:
    d = Dashboard(CONFIG)
    snap = AccountSnapshot(
        "alice-spot", "alice", "USDT",
        (Position("BTC/USDT", 0.01, 650.0), Position("SOL/USDT", 2.0, 300.0)),
        (Holding("TRX/USDT", 1.7, 0.2, "below min_position_value 1.0"),),
    )
    d.apply(AccountRead(cycle_id=1, snapshot=snap, caps=Caps(8), over_cap=False,
                        forced_unwind=False, planned=()))
    swap = AccountSnapshot("alice-swap", "alice", "USDT",
                           (Position("ETH/USDT:USDT", 0.1, 320.1, Side.SHORT),))
    d.apply(AccountRead(cycle_id=1, snapshot=swap, caps=Caps(3), over_cap=False,
                        forced_unwind=False, planned=()))
    return d


def make(qtbot, dashboard: Dashboard, **kw) -> UnwindDialog:
    dialog = UnwindDialog(None, "alice", dashboard, **kw)
    qtbot.addWidget(dialog)
    dialog.open()
    qtbot.waitExposed(dialog)
    return dialog


def test_lists_every_position_to_close_with_the_total(qtbot, dashboard: Dashboard) -> None:
    dialog = make(qtbot, dashboard)
    tree = dialog.tree
    assert tree.topLevelItemCount() == 2
    spot = tree.topLevelItem(0)
    assert spot.text(0) == "alice-spot"
    assert [spot.child(i).text(0) for i in range(spot.childCount())] == ["BTC/USDT", "SOL/USDT"]
    assert tree.topLevelItem(1).child(0).text(1) == "short"
    # Dust is never sold, so it is not listed.
    assert "TRX" not in "".join(spot.child(i).text(0) for i in range(spot.childCount()))
    assert dialog.total_label.text() == "Total: 3 positions, about 1,270.10 USDT"


def test_cancel_is_default_and_confirm_is_disabled_until_the_name_is_typed(
        qtbot, dashboard: Dashboard) -> None:
    dialog = make(qtbot, dashboard)
    assert dialog.cancel_button.isDefault()
    assert not dialog.confirm_button.isDefault()
    assert not dialog.confirm_button.autoDefault()
    assert not dialog.confirm_button.isEnabled()
    qtbot.keyClicks(dialog.name_edit, "Alice")
    assert not dialog.confirm_button.isEnabled()
    dialog.name_edit.clear()
    qtbot.keyClicks(dialog.name_edit, "alice")
    assert dialog.confirm_button.isEnabled()
    with qtbot.waitSignal(dialog.accepted, timeout=2000):
        qtbot.mouseClick(dialog.confirm_button, Qt.MouseButton.LeftButton)
    assert dialog.result() == QDialog.DialogCode.Accepted


def test_enter_in_the_name_field_never_confirms(qtbot, dashboard: Dashboard) -> None:
    dialog = make(qtbot, dashboard)
    qtbot.keyClicks(dialog.name_edit, "alice")
    qtbot.keyClick(dialog.name_edit, Qt.Key.Key_Return)
    qtbot.keyClick(dialog.name_edit, Qt.Key.Key_Enter)
    assert dialog.isVisible()
    assert dialog.result() != QDialog.DialogCode.Accepted


def test_enter_elsewhere_presses_cancel(qtbot, dashboard: Dashboard) -> None:
    dialog = make(qtbot, dashboard)
    qtbot.keyClicks(dialog.name_edit, "alice")  # even with the confirm button enabled
    dialog.cancel_button.setFocus()
    with qtbot.waitSignal(dialog.rejected, timeout=2000):
        qtbot.keyClick(dialog.cancel_button, Qt.Key.Key_Return)
    assert dialog.result() == QDialog.DialogCode.Rejected


def test_escape_cancels(qtbot, dashboard: Dashboard) -> None:
    dialog = make(qtbot, dashboard)
    qtbot.keyClicks(dialog.name_edit, "alice")
    with qtbot.waitSignal(dialog.rejected, timeout=2000):
        qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert dialog.result() == QDialog.DialogCode.Rejected


def test_turning_off_is_explicit_but_needs_no_typing(qtbot, dashboard: Dashboard) -> None:
    dialog = make(qtbot, dashboard, turning_off=True)
    assert dialog.name_edit is None
    assert dialog.cancel_button.isDefault() and dialog.cancel_button.text() == "Keep unwinding"
    assert dialog.confirm_button.isEnabled() and not dialog.confirm_button.autoDefault()
    with qtbot.waitSignal(dialog.rejected, timeout=2000):
        qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    dialog = make(qtbot, dashboard, turning_off=True)
    with qtbot.waitSignal(dialog.accepted, timeout=2000):
        qtbot.mouseClick(dialog.confirm_button, Qt.MouseButton.LeftButton)


def test_opens_with_the_name_field_focused_and_cancel_still_default(
        qtbot, dashboard: Dashboard) -> None:
    dialog = make(qtbot, dashboard)
    qtbot.waitUntil(lambda: dialog.focusWidget() is dialog.name_edit, timeout=2000)
    assert dialog.cancel_button.isDefault()
    # typing goes straight into the name field: one click, the name, one click
    qtbot.keyClicks(dialog.focusWidget(), "alice")
    assert dialog.confirm_button.isEnabled()


def test_the_preview_lists_only_positions_still_open(qtbot, dashboard: Dashboard) -> None:
    sol = dashboard.accounts["alice-spot"].snapshot.positions[1]
    close = PlannedClose("alice-spot", "alice", sol, CloseReason.FORCED_UNWIND)
    dashboard.apply(OrderFilled(cycle_id=2, close=close, client_order_id="c1",
                                order_id="o1", filled=2.0, status="closed"))

    dialog = make(qtbot, dashboard)

    spot = dialog.tree.topLevelItem(0)
    assert [spot.child(i).text(0) for i in range(spot.childCount())] == ["BTC/USDT"]
    assert dialog.total_label.text() == "Total: 2 positions, about 970.10 USDT"
