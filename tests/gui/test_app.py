"""App start-up and wiring: build_app on the demo world, the excepthook, run_app's exits.

The demo world is the real simulator with its strategy opening positions, so
"the enforcer runs" means closes reaching that simulator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from guard_app.demo import DemoWorld, start_demo
from guard_app.gui.app import AppParts, build_app, run_app
from guard_app.gui.excepthook import ExceptionHook

pytestmark = [
    pytest.mark.gui,
]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoWorld]:
    world = start_demo(tmp_path / "demo", interval=1.0, strategy_interval=0.3)
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture
def parts(qtbot, demo: DemoWorld) -> Iterator[AppParts]:
    built = build_app(demo.config, demo.data_dir, demo.keys, config_path=demo.config_path)
    qtbot.addWidget(built.window)
    try:
        yield built
    finally:
        built.shutdown(timeout=15)
        assert not built.host.alive


def closes_since(demo: DemoWorld, since: float) -> list:
    return [o for o in demo.server.exchange.orders if o.accepted and o.timestamp >= since]


def test_demo_app_builds_the_window_and_the_enforcer_closes_positions(
        qtbot, parts: AppParts, demo: DemoWorld) -> None:
    parts.window.show()
    qtbot.waitExposed(parts.window)

    qtbot.waitUntil(lambda: len(closes_since(demo, 0)) >= 1, timeout=15_000)
    assert parts.host.alive
    assert set(parts.model.dashboard.accounts) == {
        "alice-binance-spot", "alice-binance-futures", "alice-okx-swap", "bob-binance-spot",
        "bob-bybit-swap"}
    assert parts.tray is not None
    assert parts.window.unwind_button("alice") is not None
    # closing without a system tray asks the app (which quits); with one it hides
    assert parts.window.isVisible()


def test_the_enforcer_keeps_closing_while_the_window_is_hidden(
        qtbot, parts: AppParts, demo: DemoWorld) -> None:
    parts.window.show()
    qtbot.waitUntil(lambda: len(closes_since(demo, 0)) >= 1, timeout=15_000)
    parts.window.hide()
    hidden_at = time.time()

    qtbot.waitUntil(lambda: len(closes_since(demo, hidden_at)) >= 2, timeout=15_000)

    assert not parts.window.isVisible()


def test_the_enforcer_keeps_closing_while_a_modal_dialog_is_open(
        qtbot, parts: AppParts, demo: DemoWorld) -> None:
    parts.window.show()
    qtbot.waitUntil(lambda: len(closes_since(demo, 0)) >= 1, timeout=15_000)
    box = QMessageBox(QMessageBox.Icon.Question, "Modal", "Blocking the window",
                      parent=parts.window)
    opened_at = time.time()
    seen_while_open: list[int] = []

    def check() -> None:
        count = len(closes_since(demo, opened_at))
        if count >= 2:
            seen_while_open.append(count)
            box.done(0)

    poll = QTimer(box)
    poll.timeout.connect(check)
    poll.start(100)
    # Never hang the suite; parented to the box so it can't fire in a later test.
    give_up = QTimer(box)
    give_up.setSingleShot(True)
    give_up.timeout.connect(lambda: box.done(0))
    give_up.start(15_000)
    box.exec()
    poll.stop()
    give_up.stop()

    assert seen_while_open, "no close reached the simulator while the dialog was open"


@pytest.mark.qt_no_exception_capture
def test_an_unexpected_exception_shows_a_dialog_and_the_app_keeps_running(
        qtbot, parts: AppParts, demo: DemoWorld) -> None:
    hook = ExceptionHook()
    hook.install()
    try:
        def broken_slot() -> None:
            raise ValueError("a bug in a window slot")

        with qtbot.waitSignal(hook.dialog_shown, timeout=5_000) as shown:
            QTimer.singleShot(0, broken_slot)
        dialog = shown.args[0]
        assert dialog.isVisible()
        assert "ValueError: a bug in a window slot" in dialog.text()
        assert "broken_slot" in dialog.detailedText()
        assert "keeps running" in dialog.informativeText()

        # still alive: the event loop runs and the enforcer keeps closing
        after = time.time()
        qtbot.waitUntil(lambda: len(closes_since(demo, after)) >= 1, timeout=15_000)
        assert parts.host.alive
        dialog.done(0)
    finally:
        hook.uninstall()
    assert sys.excepthook is not hook.handle


def _auto_dismiss(found: list[str]) -> QTimer:
    """Close any modal message box that run_app shows, remembering its text."""
    def close_modal() -> None:
        widget = QApplication.activeModalWidget()
        if isinstance(widget, QMessageBox):
            found.append(f"{widget.text()} | {widget.informativeText()}")
            widget.done(0)

    timer = QTimer()
    timer.timeout.connect(close_modal)
    timer.start(50)
    return timer


def test_a_bad_config_is_explained_and_exits_2(qtbot, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[enforcer]\ninterval_seconds = "often"\n', encoding="utf-8")
    texts: list[str] = []
    timer = _auto_dismiss(texts)

    code = run_app(argparse.Namespace(config=str(config), data_dir=str(tmp_path / "d")))

    timer.stop()
    assert code == 2
    assert len(texts) == 1 and "interval_seconds" in texts[0]


def test_a_corrupt_state_database_is_explained_and_exits_2(
        qtbot, tmp_path: Path, demo: DemoWorld) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.sqlite3").write_bytes(b"this is not a database" * 100)
    texts: list[str] = []
    timer = _auto_dismiss(texts)

    code = run_app(argparse.Namespace(config=str(demo.config_path), data_dir=str(data)))

    timer.stop()
    assert code == 2
    assert len(texts) == 1 and "state database" in texts[0]


def test_guard_app_demo_starts_and_shows_its_window(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", GUARD_APP_EXIT_AFTER_SHOWN="1",
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    result = subprocess.run([sys.executable, "-m", "guard_app", "demo"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "GUARD_APP_SHOWN" in result.stdout
    assert (tmp_path / "config" / "guard-app" / "guard-app.conf").exists()  # geometry saved
