"""The main window on a real enforcer against the real simulator (ccxt over HTTP).

Forced Unwind from the button through the confirmation to orders on the exchange,
over-cap highlights in table, chart and pill, an account with a wrong key, and
charts that update in place.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QPushButton  # noqa: E402

from guard_app.core.events import AccountError, AccountRead, CycleFinished  # noqa: E402
from guard_app.core.secrets import ApiKeys  # noqa: E402
from guard_app.gui.dashboard_model import DashboardModel  # noqa: E402
from guard_app.gui.main_window import MainWindow  # noqa: E402
from guard_app.gui.model.dashboard import AccountState  # noqa: E402
from guard_app.gui.theme import state_colour  # noqa: E402
from guard_app.gui.unwind_dialog import UnwindDialog  # noqa: E402
from tests.fixtures.world import World, sim_account  # noqa: E402
from tests.gui.conftest import EventLog, MakeHost  # noqa: E402

pytestmark = [
    pytest.mark.gui,
    pytest.mark.keyring,
]

ALICE_SPOT = {"USDT": 500, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1}  # 60, 30, 15 USDT
BOB_SPOT = {"USDT": 500, "BTC": 0.002, "LINK": 1.0}  # 120, 15 USDT


def start_window(qtbot, world: World, make_host: MakeHost, accounts, **kw):
    config = world.write_config(accounts, interval=60, **kw)
    host = make_host(config, world.data_dir, world.secrets)
    log = EventLog(host)
    model = DashboardModel(host)
    window = MainWindow(host, model)
    qtbot.addWidget(window)
    window.show()
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=15_000)
    model.flush()
    return host, model, window, log


def next_cycle(qtbot, host, model, log: EventLog) -> None:
    done = log.cycles_finished()
    host.wake()
    qtbot.waitUntil(lambda: log.cycles_finished() > done, timeout=15_000)
    model.flush()


def on_dialog(qtbot, act: Callable[[UnwindDialog], None]) -> list[bool]:
    """Run ``act`` on the modal unwind dialog once it is up (it blocks in exec())."""
    done: list[bool] = []
    deadline = time.monotonic() + 10  # never keep polling into a later test

    def poll() -> None:
        modal = QApplication.activeModalWidget()
        if isinstance(modal, UnwindDialog) and modal.isVisible():
            act(modal)
            done.append(True)
        elif time.monotonic() < deadline:
            QTimer.singleShot(20, poll)

    QTimer.singleShot(0, poll)
    return done


def sells(sim, account: str) -> list:
    return [o for o in sim.exchange.orders if o.accepted and o.account == account]


def test_forced_unwind_cancel_confirm_and_turn_off(qtbot, world: World,
                                                  make_host: MakeHost) -> None:
    sim = world.start_sim([
        sim_account("alice", spot=ALICE_SPOT, positions=[("ETH/USDT:USDT", "long", 0.1)]),
        sim_account("bob", spot=BOB_SPOT),
    ])
    host, model, window, log = start_window(qtbot, world, make_host, [
        world.account("alice-spot", sim, "alice"),
        world.account("alice-swap", sim, "alice", market="swap"),
        world.account("bob-spot", sim, "bob", user="bob"),
    ])
    button: QPushButton = window.unwind_button("alice")
    assert button.objectName() == "unwind-alice"
    assert button.text() == "Forced Unwind…"

    # Cancel: nothing happens.
    done = on_dialog(qtbot, lambda d: qtbot.mouseClick(d.cancel_button, Qt.MouseButton.LeftButton))
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert done == [True]
    assert host.state().forced_unwind_flags() == {}
    assert not model.dashboard.users["alice"].forced_unwind
    assert sells(sim, "alice") == []

    # Escape and Enter don't confirm either, even with the name typed.
    def escape(d: UnwindDialog) -> None:
        qtbot.keyClicks(d.name_edit, "alice")
        qtbot.keyClick(d.name_edit, Qt.Key.Key_Return)
        assert d.isVisible()
        qtbot.keyClick(d, Qt.Key.Key_Escape)

    done = on_dialog(qtbot, escape)
    assert window.request_unwind("alice") is False
    assert done == [True]
    assert host.state().forced_unwind_flags() == {}

    # Typing the name and confirming: flag stored, orders for all of alice's accounts.
    def confirm(d: UnwindDialog) -> None:
        assert d.tree.topLevelItemCount() == 2
        qtbot.keyClicks(d.name_edit, "alice")
        qtbot.mouseClick(d.confirm_button, Qt.MouseButton.LeftButton)

    done = on_dialog(qtbot, confirm)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert done == [True]
    flag = host.state().forced_unwind_flags()["alice"]
    assert flag.active and flag.by == "gui"
    qtbot.waitUntil(lambda: len({o.symbol for o in sells(sim, "alice")}) >= 4, timeout=15_000)
    assert {o.symbol for o in sells(sim, "alice")} == {
        "BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/USDT:USDT"}
    assert sells(sim, "bob") == []
    qtbot.waitUntil(lambda: "UNWIND ACTIVE" in button.text(), timeout=5_000)
    assert button.property("role") == "unwind-active"
    qtbot.waitUntil(lambda: "closed 4 of 4" in button.text(), timeout=15_000)
    # Panels redraw on their own timer turn (one per event-loop turn): wait for it.
    qtbot.waitUntil(
        lambda: window.panel("alice-spot").pill.state == AccountState.UNWINDING.value,
        timeout=5_000)
    assert window.panel("bob-spot").pill.state == AccountState.OK.value
    assert model.dashboard.worst_state() is AccountState.UNWINDING

    # Turning it off is confirmed too, and restores the button.
    done = on_dialog(qtbot, lambda d: qtbot.mouseClick(d.confirm_button,
                                                       Qt.MouseButton.LeftButton))
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert done == [True]
    assert host.state().forced_unwind_flags() == {}
    # The window follows the enforcer's announcement of the stored flag (FlagsChanged).
    qtbot.waitUntil(lambda: button.text() == "Forced Unwind…", timeout=5_000)
    assert button.text() == "Forced Unwind…"
    assert button.property("role") == "unwind"
    next_cycle(qtbot, host, model, log)
    assert window.panel("alice-spot").pill.state == AccountState.OK.value


def test_over_cap_highlights_table_chart_and_pill_then_back_under(
        qtbot, world: World, make_host: MakeHost) -> None:
    sim = world.start_sim([sim_account("a", spot={"USDT": 500, "BTC": 0.001, "ETH": 0.01})])
    host, model, window, log = start_window(
        qtbot, world, make_host, [world.account("a-spot", sim, "a", max_positions=2)])
    panel = window.panel("a-spot")
    assert panel.objectName() == "account-a-spot"
    assert panel.pill.state == "ok" and panel.pill.text() == "OK"
    bar_item, count_curve = panel.bars.bars, panel.exposure.count_curve
    items_before = list(panel.bars.getPlotItem().items)
    ok_colour = state_colour("ok").name()
    assert [b.color().name() for b in bar_item.opts["brushes"]] == [ok_colour, ok_colour]

    # Two more small positions: 4 of 2, the two smallest are closed. The enforcer
    # re-reads right after its closes, so the over-cap state is on screen only between
    # those two reads: capture the window as drawn when the over-cap read arrives.
    over = state_colour("over_cap").name()
    drawn: dict[str, object] = {}

    def capture(event: object) -> None:
        if isinstance(event, AccountRead) and event.over_cap and not drawn:
            model.flush()  # draw it now, as the window does within 50 ms
            row = next(i for i, r in enumerate(panel.positions.rows) if r[0] == "LINK/USDT")
            background = panel.positions.data(panel.positions.index(row, 0),
                                              Qt.ItemDataRole.BackgroundRole)
            drawn.update(
                state=panel.pill.state, text=panel.pill.text(),
                kinds={r[0]: r[4] for r in panel.positions.rows},
                brushes={s: b.color().name() for s, b in zip(
                    panel.bars.symbols, panel.bars.bars.opts["brushes"], strict=True)},
                symbols=list(panel.bars.symbols), cap=panel.bars.cap_line.value(),
                background=None if background is None else background.color().name(),
                worst=model.dashboard.worst_state())

    host.enforcer_event.connect(capture)
    sim.exchange.add_balance("a", "SOL", 0.1)  # 15 USDT
    sim.exchange.add_balance("a", "LINK", 0.5)  # 7.5 USDT
    next_cycle(qtbot, host, model, log)
    host.enforcer_event.disconnect(capture)
    assert drawn["state"] == "over_cap"
    assert drawn["text"] == "OVER CAP 4/2"
    kinds = drawn["kinds"]
    assert kinds["LINK/USDT"] in ("close", "closed") and kinds["SOL/USDT"] in ("close", "closed")
    assert kinds["BTC/USDT"] == kinds["ETH/USDT"] == "keep"
    assert drawn["brushes"] == {"LINK/USDT": over, "SOL/USDT": over, "ETH/USDT": ok_colour,
                                "BTC/USDT": ok_colour}
    assert drawn["symbols"] == ["LINK/USDT", "SOL/USDT", "ETH/USDT", "BTC/USDT"]
    assert drawn["cap"] == pytest.approx(1.5)  # 2 left of it close
    assert drawn["background"] == over
    assert drawn["worst"] is AccountState.OVER_CAP

    # The closes went through; the re-read right after them is back under the cap.
    qtbot.waitUntil(lambda: panel.pill.state == "ok", timeout=5_000)
    model.flush()
    assert panel.pill.state == "ok"
    assert [b.color().name() for b in panel.bars.bars.opts["brushes"]] == [ok_colour, ok_colour]
    assert panel.count_bar.value.text() == "2 / 2"
    # Same plot items throughout: updated in place, never rebuilt.
    assert panel.bars.bars is bar_item and panel.exposure.count_curve is count_curve
    assert list(panel.bars.getPlotItem().items) == items_before
    xs, _ys = panel.exposure.count_curve.getData()
    assert len(xs) == 3


def test_a_wrong_key_shows_its_error_and_leaves_the_others_alone(
        qtbot, world: World, make_host: MakeHost) -> None:
    sim = world.start_sim([sim_account("a", spot={"USDT": 500, "BTC": 0.001}),
                           sim_account("b", spot={"USDT": 500, "ETH": 0.01})])
    good = world.account("good", sim, "a")
    bad = world.account("bad", sim, "b", user="bob", store_keys=False)
    world.secrets.set("bad", ApiKeys("not-a-real-key-0123456789", "wrong-secret-abcdefghij"))
    host, model, window, log = start_window(qtbot, world, make_host, [good, bad])
    errors = log.of(AccountError)
    assert [e.account_id for e in errors] == ["bad"]
    bad_panel, good_panel = window.panel("bad"), window.panel("good")
    # Panels are drawn one per event-loop turn: wait for both, never sleep.
    qtbot.waitUntil(lambda: bad_panel.pill.state == "error" and good_panel.pill.state == "ok",
                    timeout=5_000)
    assert bad_panel.pill.state == "error"
    assert bad_panel.pill.toolTip().startswith("ERROR: ")
    assert errors[0].message in bad_panel.pill.toolTip()
    assert good_panel.pill.state == "ok"
    assert good_panel.positions.rows[0][0] == "BTC/USDT"
    assert [e.snapshot.account_id for e in log.of(AccountRead)] == ["good"]
    assert model.dashboard.worst_state() is AccountState.ERROR
    assert window.strip.overall.text() == "1 ACCOUNT FAILING"


def test_status_strip_menu_and_activity(qtbot, world: World, make_host: MakeHost) -> None:
    sim = world.start_sim([sim_account("a", spot={"USDT": 500, "BTC": 0.001, "ETH": 0.01,
                                                  "SOL": 0.1})])
    host, model, window, log = start_window(
        qtbot, world, make_host, [world.account("a-spot", sim, "a", max_positions=2)])
    strip = window.findChild(type(window.strip), "status-strip")
    assert strip is window.strip
    qtbot.waitUntil(lambda: "Enforcer running" in strip.status.text(), timeout=5_000)
    assert "Interventions today: <b>1</b>" == strip.interventions.text()
    assert not strip.restart.isVisible()

    activity = window.activity
    assert activity.objectName() == "activity"
    # The Activity view follows JournalWritten events: nothing polls the database.
    assert not activity.findChildren(QTimer)
    qtbot.waitUntil(lambda: bool(activity.model.entries)
                    and activity.model.entries[0].kind == "cycle_end", timeout=5_000)
    kinds = [e.kind for e in activity.model.entries]
    assert "order_filled" in kinds and kinds[0] == "cycle_end"  # newest first
    ids = [e.id for e in activity.model.entries]
    assert ids == sorted(ids, reverse=True)
    first = activity.model.rowCount()
    next_cycle(qtbot, host, model, log)
    qtbot.waitUntil(lambda: activity.model.rowCount() > first, timeout=5_000)
    assert activity.model.rowCount() > first
    assert [e.id for e in activity.model.entries] == sorted(
        {e.id for e in activity.model.entries}, reverse=True)
    activity.set_filter("account", "a-spot")
    assert activity.model.entries and all(
        e.account_id == "a-spot" for e in activity.model.entries)

    with qtbot.waitSignal(window.accounts_requested, timeout=1000):
        window.accounts_action.trigger()
    with qtbot.waitSignal(window.quit_requested, timeout=1000):
        window.quit_action.trigger()
    window.pause_action.trigger()
    qtbot.waitUntil(lambda: model.dashboard.summary.paused, timeout=5_000)
    model.flush()
    assert "paused" in strip.status.text()
    window.pause_action.trigger()
    qtbot.waitUntil(lambda: not model.dashboard.summary.paused, timeout=5_000)
    done = log.cycles_finished()
    window.check_now_action.trigger()
    qtbot.waitUntil(lambda: log.cycles_finished() > done, timeout=10_000)
    assert log.of(CycleFinished)[-1].failed_accounts == ()
