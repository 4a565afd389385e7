"""The app as users start it: ``run_app`` (what ``guard-app`` calls), not a hand-built window.

Each test runs ``run_app`` to completion. Its ``on_started`` hook gets the running app
once the window is shown; the check runs there (waiting for conditions, never
sleeping) and then quits the app. First-run tests answer the modal dialogs from a
timer, as a user would click them.

Run under scripts/with-keyring.sh: start-up uses the real OS keyring.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QWidget

from guard_app.api.desktop import DesktopApi
from guard_app.core.events import AccountRead, OrderFilled
from guard_app.gui.accounts_dialog import AccountsDialog
from guard_app.gui.app import AppParts, run_app
from guard_app.gui.first_run import FirstRunDialog
from guard_app.gui.theme import DARK, LIGHT, THEME_ENV
from guard_app.gui.unwind_dialog import UnwindDialog
from guard_app.resources import STATE_COLOURS
from guard_app.sim import ccxt_overrides
from tests.fixtures.world import World, sim_account
from tests.gui.test_accounts_dialog import fill

pytestmark = [
    pytest.mark.gui,
    pytest.mark.keyring,
]


def start(args: argparse.Namespace, check: Callable[[AppParts], None], *,
          demo: bool = False) -> int:
    """``run_app`` with ``check`` run on the started app; its failure fails the test."""
    failures: list[BaseException] = []

    def on_started(parts: AppParts) -> None:
        try:
            check(parts)
        except BaseException as exc:  # re-raised below, after the app has quit
            failures.append(exc)
        finally:
            QApplication.exit(0)  # like a signal: no "quit while unwinding?" question

    # Exactly what `guard-app` passes (guard_app/cli.py): the remote API's desktop side.
    code = run_app(args, demo=demo, on_started=on_started, api_factory=DesktopApi)
    if failures:
        raise failures[0]
    return code


def args_for(world: World) -> argparse.Namespace:
    return argparse.Namespace(config=str(world.config_path), data_dir=str(world.data_dir))


@pytest.fixture
def desktop_palette(qapp: QApplication) -> Iterator[Callable[[bool], None]]:
    """Make the 'desktop' light or dark the way Qt reports it: the application palette."""
    before = QPalette(qapp.palette())

    def use(dark: bool) -> None:
        palette = QPalette()
        for role, colour in ((QPalette.ColorRole.Window, "#202124" if dark else "#f0f0f0"),
                             (QPalette.ColorRole.WindowText, "#eeeeee" if dark else "#111111")):
            palette.setColor(role, QColor(colour))
        qapp.setPalette(palette)

    yield use
    qapp.setPalette(before)


def pixel_in(widget: QWidget, x: int, y: int) -> QColor:
    return widget.grab().toImage().pixelColor(x, y)


@pytest.mark.parametrize("dark", [False, True], ids=["light-desktop", "dark-desktop"])
def test_the_theme_follows_the_desktop_and_unwind_buttons_are_red(
        qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        desktop_palette: Callable[[bool], None], dark: bool) -> None:
    monkeypatch.delenv(THEME_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    desktop_palette(dark)
    theme = DARK if dark else LIGHT

    def check(parts: AppParts) -> None:
        app = QApplication.instance()
        assert isinstance(app, QApplication)
        window_colour = app.palette().color(QPalette.ColorRole.Window)
        assert window_colour.name() == theme.window
        assert (window_colour.lightness() < 128) is dark
        qtbot.waitExposed(parts.window)
        button = parts.window.unwind_button("alice")
        assert button.property("role") == "unwind"
        # Idle: a red tint inside a red border, on light and dark alike.
        inside = pixel_in(button, button.width() // 2, 4)
        assert inside.red() - inside.green() >= 15 and inside.red() - inside.blue() >= 15, \
            inside.name()
        border = pixel_in(button, button.width() // 2, 0)
        assert border.name() == STATE_COLOURS["unwinding"], border.name()
        # Charts are drawn on the card colour of the same theme (not black in a light window).
        panel = parts.window.panel("alice-binance-spot")
        assert panel.bars.backgroundBrush().color().name() == theme.card

    assert start(argparse.Namespace(), check, demo=True) == 0


def answer_first_run(actions: list[Callable[[QWidget], bool]]) -> QTimer:
    """Each action gets the active modal dialog; it returns True once done with it."""
    def tick() -> None:
        widget = QApplication.activeModalWidget()
        if widget is not None and actions and actions[0](widget):
            actions.pop(0)

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(50)
    return timer


def first_run_with_test_connection(world: World, ccxt_json: str, keys: dict[str, str]) -> str:
    """Start with no config, add an account, press Test connection; the result text."""
    result: list[str] = []

    def welcome(widget: QWidget) -> bool:
        if not isinstance(widget, FirstRunDialog):
            return False
        widget.accounts_button.click()
        return True

    def fill_and_test(widget: QWidget) -> bool:
        if not isinstance(widget, AccountsDialog):
            return False
        fill(widget, id="alice-sim", user="alice", exchange="binance", market="spot",
             max_positions="8", ccxt=ccxt_json, api_key=keys["api_key"], secret=keys["secret"])
        widget.test_button.click()
        return True

    def read_result(widget: QWidget) -> bool:
        if not isinstance(widget, AccountsDialog) or widget.test_running:
            return False
        result.append(widget.test_result.text())
        widget.reject()  # no config saved: run_app ends with 0
        return True

    timer = answer_first_run([welcome, fill_and_test, read_result])
    try:
        code = run_app(args_for(world))
    finally:
        timer.stop()
    assert code == 0
    assert not world.config_path.exists()
    assert len(result) == 1, "Test connection never finished"
    return result[0]


def test_first_run_test_connection_completes_against_the_simulator(
        qtbot: Any, world: World) -> None:
    alice = sim_account("alice", spot={"USDT": 1000, "BTC": 0.01, "ETH": 0.5})
    sim = world.start_sim([alice])
    ccxt_json = json.dumps({**ccxt_overrides(sim.base_url), "timeout": 5000})

    assert first_run_with_test_connection(world, ccxt_json, alice) == "OK: 2 positions found"


def test_first_run_test_connection_fails_clearly_with_the_simulator_stopped(
        qtbot: Any, world: World) -> None:
    alice = sim_account("alice")
    sim = world.start_sim([alice])
    ccxt_json = json.dumps({**ccxt_overrides(sim.base_url), "timeout": 3000})
    sim.stop()

    text = first_run_with_test_connection(world, ccxt_json, alice)

    assert text.startswith("exchange unreachable"), text


def test_an_unreadable_account_is_shown_as_not_known(qtbot: Any, world: World) -> None:
    alice = sim_account("alice", spot={"USDT": 1000, "BTC": 0.01})
    sim = world.start_sim([alice])
    good = world.account("alice-good", sim, "alice", max_positions=5)
    bad = world.account("alice-down", sim, "alice", max_positions=5)
    bad["ccxt"] = {**ccxt_overrides("http://127.0.0.1:9"), "timeout": 2000}  # nothing there
    world.write_config([good, bad])

    def check(parts: AppParts) -> None:
        dashboard = parts.model.dashboard
        qtbot.waitUntil(lambda: dashboard.accounts["alice-down"].error is not None
                        and dashboard.accounts["alice-good"].reading.known, timeout=20_000)
        parts.model.flush()  # draws every panel now, on screen or not
        panel = parts.window.panel("alice-down")
        texts = [panel.count_bar.value.text(), panel.notional_bar.value.text()]
        assert texts == ["not read", "not read"]
        assert not panel.count_bar.bar.isVisible()
        assert panel.pill.text().startswith("ERROR")
        header = parts.window.sections["alice"].caps.text()
        assert "alice-down not read" in header and "at least 1 positions" in header, header
        assert parts.window.panel("alice-good").count_bar.value.text() == "1 / 5"
        assert "ACCOUNT FAILING" in parts.window.strip.overall.text()
        assert parts.tray is not None
        tooltip = parts.tray.tooltip_text()
        assert "alice-down error" in tooltip and "under their caps" not in tooltip, tooltip

    assert start(args_for(world), check) == 0


def test_panels_are_flat_right_after_an_unwinds_closes(qtbot: Any, world: World) -> None:
    alice = sim_account("alice", spot={"USDT": 1000, "BTC": 0.01, "ETH": 0.5, "SOL": 3})
    sim = world.start_sim([alice])
    world.write_config([world.account("alice-spot", sim, "alice", max_positions=8)],
                       interval=600)  # the next normal cycle is ten minutes away

    def check(parts: AppParts) -> None:
        dashboard = parts.model.dashboard
        view = dashboard.accounts["alice-spot"]
        qtbot.waitUntil(lambda: view.reading.known and view.position_count == 3, timeout=20_000)
        reads: list[AccountRead] = []
        fills: list[OrderFilled] = []

        def seen(event: object) -> None:
            if isinstance(event, AccountRead) and fills:
                reads.append(event)
            if isinstance(event, OrderFilled):
                fills.append(event)

        parts.host.enforcer_event.connect(seen)
        parts.host.set_forced_unwind("alice", True, by="test", reason="test")
        # The enforcer re-reads right after its closes; the window draws that read.
        qtbot.waitUntil(lambda: len(fills) >= 3 and bool(reads), timeout=20_000)
        parts.model.flush()
        panel = parts.window.panel("alice-spot")
        assert reads[-1].snapshot.position_count == 0
        assert panel.count_bar.value.text() == "0 / 8"
        assert panel.pill.text() == "UNWOUND (flat)"
        assert "0 positions" in parts.window.sections["alice"].caps.text()

    assert start(args_for(world), check) == 0


def test_every_style_sheet_selector_matches_a_widget_of_the_app(
        qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    selectors: list[str] = []

    def check(parts: AppParts) -> None:
        app = QApplication.instance()
        assert isinstance(app, QApplication)
        sheet = app.styleSheet()
        # The unwind confirmation's widgets exist only while it is open: build one.
        dialog = UnwindDialog(parts.window, "alice", parts.model.dashboard)
        qtbot.addWidget(dialog)
        widgets = [w for w in app.allWidgets() if w.isWindow() is False or w is dialog]
        for match in re.finditer(r"^(Q\w+)(?:#([\w-]+)|\[(\w+)=\"([\w-]+)\"\])", sheet, re.M):
            kind, name, prop, value = match.groups()
            selectors.append(match.group(0))
            if value == "unwind-active":
                continue  # only while an unwind is on: test_window checks that button

            found = [w for w in widgets if w.inherits(kind) and (
                w.objectName() == name if name else str(w.property(prop)).lower() == value)]
            assert found, f"style sheet selector {match.group(0)} matches no widget"

    assert start(argparse.Namespace(), check, demo=True) == 0
    assert any("unwind" in s for s in selectors) and any("card" in s for s in selectors)


def test_the_demo_enforces_every_account_on_all_three_exchanges(qtbot: Any) -> None:
    """`guard-app demo` as users start it: the enforcer runs (the API companion, off in
    the demo, must not stop it) and reads the Binance, OKX and Bybit accounts."""
    read: set[str] = set()

    def check(parts: AppParts) -> None:
        parts.host.enforcer_event.connect(
            lambda e: read.add(e.snapshot.account_id) if isinstance(e, AccountRead) else None)
        expected = {a.id for a in parts.host.config.accounts}
        assert {a.exchange for a in parts.host.config.accounts} == {"binance", "okx", "bybit"}
        qtbot.waitUntil(lambda: expected <= read, timeout=30_000)
        assert parts.host.alive
        # With every panel filled and the API panel in the strip, it still fits a laptop.
        assert parts.window.minimumSizeHint().width() <= 1366

    assert start(argparse.Namespace(), check, demo=True) == 0
