"""Start-up of the desktop app: QApplication, qasync loop, the enforcer host, the window.

``run_app`` is what ``guard-app`` and ``guard-app demo`` call. ``build_app`` wires the
parts together (host → model → window → tray) and is also used by tests and the
screenshot script. The GUI thread runs a qasync event loop for short GUI-side async
work; the enforcer runs on its own thread (see :mod:`guard_app.gui.enforcer_host`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import qasync
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox, QSystemTrayIcon, QWidget

import guard_app.exchanges  # noqa: F401 - wires ccxt's exchange ids into the config check
from guard_app import APP_NAME, ExitCode
from guard_app.core.config import AppConfig, load_config
from guard_app.core.errors import ConfigError, StateError
from guard_app.core.events import CycleFinished
from guard_app.core.paths import default_config_path, default_data_dir
from guard_app.core.secrets import SecretStore, SecretStoreProtocol
from guard_app.core.state import open_state
from guard_app.gui.accounts_dialog import AccountsDialog
from guard_app.gui.api_panel import ApiController, ApiPanel, LoopCompanion
from guard_app.gui.dashboard_model import DashboardModel
from guard_app.gui.enforcer_host import EnforcerHost
from guard_app.gui.excepthook import ExceptionHook
from guard_app.gui.first_run import FirstRunDialog
from guard_app.gui.icons import app_icon
from guard_app.gui.main_window import MainWindow
from guard_app.gui.theme import follow_system
from guard_app.gui.tray import Tray

log = logging.getLogger("guard_app.gui")

ORG_NAME = APP_NAME
DESKTOP_FILE = "io.github.guardapp.GuardApp"
EXIT_OK = ExitCode.OK
EXIT_BAD = ExitCode.USAGE
# Hidden hook for benchmarks/bench_gui.py: print when the window is first shown, then quit.
EXIT_AFTER_SHOWN_ENV = "GUARD_APP_EXIT_AFTER_SHOWN"
NO_TRAY_MESSAGE = ("No system tray on this desktop: closing this window quits guard-app "
                   "(and stops enforcing).")


@dataclass
class AppParts:
    """The running app's pieces (tray may be None where none was made)."""

    host: EnforcerHost
    model: DashboardModel
    window: MainWindow
    tray: Tray | None
    config_path: Path | None = None
    secrets: SecretStoreProtocol | None = None
    dialogs: list[QWidget] = field(default_factory=list)  # open non-modal dialogs (kept alive)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the enforcer and release everything (idempotent)."""
        if self.tray is not None:
            self.tray.hide()
        self.host.close(timeout)


def _make_application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    if not isinstance(app, QApplication):
        raise RuntimeError("guard-app needs a QApplication (a QCoreApplication already exists)")
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName(DESKTOP_FILE)
    app.setWindowIcon(app_icon())
    return app


def tray_available() -> bool:
    """True when the desktop has a system tray to hide the window into."""
    return bool(QSystemTrayIcon.isSystemTrayAvailable())


# Builds the remote API's desktop side (``guard_app.api.desktop.DesktopApi``): the CLI,
# which sits above both the GUI and the API, passes it in; the GUI never imports the API.
ApiFactory = Callable[[AppConfig, Path, SecretStoreProtocol, "Path | None"], "DesktopApiLike"]


class DesktopApiLike(ApiController, LoopCompanion, Protocol):
    """The API's companion on the enforcer's loop that is also the status strip's controller."""


def build_app(
    config: AppConfig,
    data_dir: Path,
    secrets: SecretStoreProtocol,
    *,
    config_path: Path | None = None,
    start: bool = True,
    stall_after: float = 15.0,
    api_factory: ApiFactory | None = None,
) -> AppParts:
    """Construct host, model, window and tray, wire them, and start the enforcer."""
    api = api_factory(config, data_dir, secrets, config_path) if api_factory else None
    host = EnforcerHost(config, data_dir, secrets, stall_after=stall_after,
                        companions=[api] if api is not None else ())
    model = DashboardModel(host)
    window = MainWindow(host, model)
    if api is not None:
        window.strip.add_panel(ApiPanel(api))
    window.setWindowIcon(app_icon())
    tray = Tray(window, host, model, window.commands)  # one Actions for window and tray
    parts = AppParts(host, model, window, tray, config_path, secrets)

    has_tray = tray_available()
    window.set_hide_on_close(has_tray)
    app = QApplication.instance()
    if isinstance(app, QApplication):
        # With a tray, closing the window only hides it: the enforcer keeps running.
        app.setQuitOnLastWindowClosed(not has_tray)
    if has_tray:
        tray.show()
    else:
        log.warning("%s", NO_TRAY_MESSAGE)
        _say_once_no_tray(window)

    _freeze_long_lived_objects_after_first_cycle(host)
    window.accounts_requested.connect(lambda: open_accounts_dialog(parts))
    window.quit_requested.connect(lambda: request_quit(parts))
    tray.quit_requested.connect(lambda: request_quit(parts))
    if start:
        host.start()
    return parts


def _freeze_long_lived_objects_after_first_cycle(host: EnforcerHost) -> None:
    """Keep Python's full garbage collections short, so they don't freeze the window.

    After the first cycle the big long-lived objects exist (every account's ccxt market
    tables, the widgets): collect once, then ``gc.freeze()`` them so later full
    collections don't rescan them. Measured with 50 accounts, unfrozen full collections
    took 100-250 ms and were the longest GUI-thread stalls. Done once per app run.
    """
    def on_event(event: object) -> None:
        if isinstance(event, CycleFinished):
            host.enforcer_event.disconnect(on_event)
            gc.collect()
            gc.freeze()
            log.debug("long-lived objects frozen for the garbage collector")

    host.enforcer_event.connect(on_event)


def _say_once_no_tray(window: MainWindow) -> None:
    bar = getattr(window, "statusBar", None)
    if callable(bar):
        bar().showMessage(NO_TRAY_MESSAGE)


def open_accounts_dialog(parts: AppParts) -> QWidget | None:
    """Open the accounts editor; a saved config goes to the enforcer and the dashboard."""
    if parts.config_path is None or parts.secrets is None:
        QMessageBox.information(parts.window, "Accounts",
                                "This session has no config file to edit.")
        return None
    dialog = AccountsDialog(parts.config_path, parts.secrets, parts.window)

    # Applied once: the host takes it and announces config_changed, which the
    # dashboard model and the tray follow.
    dialog.saved.connect(parts.host.update_config)
    dialog.finished.connect(lambda _r: parts.dialogs.remove(dialog)
                            if dialog in parts.dialogs else None)
    parts.dialogs.append(dialog)
    dialog.open()
    return dialog


def confirm_quit(parent: QWidget | None, model: DashboardModel) -> bool:
    """Ask before quitting while a forced unwind is active; True to quit."""
    users = sorted(n for n, u in model.dashboard.users.items() if u.forced_unwind)
    if not users:
        return True
    names = ", ".join(users)
    box = QMessageBox(parent)
    box.setObjectName("confirm-quit")
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Quit guard-app?")
    box.setText(f"A forced unwind is active for {names}.")
    box.setInformativeText(
        "If you quit, guard-app stops closing positions until it runs again. The "
        "flag stays on and the unwind continues at the next start (or with "
        "'guard-app run'). Quit anyway?")
    quit_button = box.addButton("Quit anyway", QMessageBox.ButtonRole.DestructiveRole)
    keep = box.addButton("Keep running", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(keep)
    box.setEscapeButton(keep)
    box.exec()
    return box.clickedButton() is quit_button


def request_quit(parts: AppParts) -> None:
    if confirm_quit(parts.window, parts.model):
        log.info("quitting guard-app")
        # Qt 6's quit() first offers every window a close event: the window must accept
        # it now instead of asking again. (quit(), unlike exit(), does nothing when no
        # event loop runs.)
        parts.window.set_quitting()
        QApplication.quit()


# -- window geometry ------------------------------------------------------------------

def restore_geometry(window: QWidget, settings: QSettings) -> None:
    geometry = settings.value("window/geometry")
    if geometry is not None:
        window.restoreGeometry(geometry)
    state = settings.value("window/state")
    restore_state = getattr(window, "restoreState", None)
    if state is not None and callable(restore_state):
        restore_state(state)


def save_geometry(window: QWidget, settings: QSettings) -> None:
    settings.setValue("window/geometry", window.saveGeometry())
    save_state = getattr(window, "saveState", None)
    if callable(save_state):
        settings.setValue("window/state", save_state())
    settings.sync()


# -- start-up -------------------------------------------------------------------------

async def _answered(dialog: QDialog) -> int:
    """Show a start-up dialog and wait for its answer on the running loop.

    Awaited, not ``exec()``-ed: no nested event loop, so coroutines started from the
    dialog (the accounts dialog's Test connection) run on the app's one loop.
    """
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finished(result: int) -> None:
        if not answer.done():
            answer.set_result(int(result))

    dialog.finished.connect(finished)
    dialog.setWindowModality(Qt.WindowModality.ApplicationModal)
    dialog.show()
    try:
        return await answer
    finally:
        dialog.deleteLater()


async def _error_dialog(title: str, text: str, detail: str = "") -> None:
    box = QMessageBox(QMessageBox.Icon.Critical, title, text)
    box.setObjectName("startup-error")
    if detail:
        box.setInformativeText(detail)
    await _answered(box)


async def _create_config_interactively(config_path: Path, secrets: SecretStoreProtocol) -> bool:
    await _answered(AccountsDialog(config_path, secrets, None))
    return _exists(config_path)


def _install_quit_signals(app: QApplication) -> QTimer:
    """SIGINT/SIGTERM quit cleanly (the enforcer stops after its requests in flight)."""
    def on_signal(_signum: int, _frame: Any) -> None:
        # A deliberate stop from outside: no questions (the flags stay stored).
        QTimer.singleShot(0, lambda: app.exit(EXIT_OK))

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    # Python runs signal handlers only between bytecodes: wake the interpreter regularly.
    ticker = QTimer(app)
    ticker.timeout.connect(lambda: None)
    ticker.start(500)
    return ticker


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The config file and data dir the command line names, else the defaults."""
    config_arg = getattr(args, "config", None)
    data_arg = getattr(args, "data_dir", None)
    config_path = Path(config_arg).expanduser() if config_arg else default_config_path()
    data_dir = Path(data_arg).expanduser() if data_arg else default_data_dir()
    return config_path, data_dir


def _exists(path: Path) -> bool:
    return path.exists()


async def _resolve_config(args: argparse.Namespace, demo: bool) -> tuple[str, Any]:
    """Decide what to run: ("run", (config_path, data_dir, secrets, demo_world)),
    or ("exit", code) when the user quit or the config can't be used."""
    config_path: Path | None = None
    data_dir: Path | None = None
    secrets: SecretStoreProtocol | None = None
    if not demo:
        config_path, data_dir = _paths(args)
        secrets = SecretStore()
        if not _exists(config_path):
            welcome = FirstRunDialog(None)
            await _answered(welcome)
            choice = welcome.choice
            if choice == "quit":
                return "exit", EXIT_OK
            if choice == "demo":
                demo = True
            elif not await _create_config_interactively(config_path, secrets):
                return "exit", EXIT_OK
    demo_world: Any = None
    if demo:
        from guard_app.demo import start_demo

        demo_world = start_demo(interval=10)
        config_path, data_dir, secrets = (
            demo_world.config_path, demo_world.data_dir, demo_world.keys)
        log.info("demo: simulated exchange at %s", demo_world.server.base_url)
    return "run", (config_path, data_dir, secrets, demo_world)


def run_app(args: argparse.Namespace, *, demo: bool = False,
            on_started: Callable[[AppParts], None] | None = None,
            api_factory: ApiFactory | None = None) -> int:
    """Run the desktop app until it quits; returns the process exit code.

    0 after a normal quit (or when the user chose to quit at first run), 2 when the
    config file or the state database can't be used (after saying why in a dialog).

    The theme and the qasync event loop exist before the first window: the first-run
    dialog's "Test connection" is a coroutine on that loop, and it would never run
    if the dialog were shown before the loop. Start-up itself is the loop's first
    task and awaits each dialog's answer (no nested event loops).
    ``on_started`` (tests, benchmarks) gets the running app once the window is shown.
    """
    started = time.monotonic()
    app = _make_application()
    follow_system(app)
    hook = ExceptionHook(app)
    hook.install()
    # Closing the last start-up dialog must not end the app before the window exists;
    # build_app sets the real rule (with a tray, closing the window only hides it).
    app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    _install_quit_signals(app)
    run = _Run()

    async def start() -> None:
        try:
            code = await _start(args, demo, run, hook, api_factory)
        except Exception as exc:  # re-raised by run_app after the loop ends
            run.error = exc
            code = EXIT_BAD
        if code is not None:
            run.code = code
            app.exit(code)
            return
        assert run.parts is not None  # noqa: S101 - _start returns None only when running
        if os.environ.get(EXIT_AFTER_SHOWN_ENV):
            def report_shown() -> None:
                print(f"GUARD_APP_SHOWN {time.monotonic() - started:.3f}", flush=True)
                app.exit(EXIT_OK)

            QTimer.singleShot(0, report_shown)
        if on_started is not None:
            parts = run.parts
            QTimer.singleShot(0, lambda: on_started(parts))  # outside the start-up task

    starting = loop.create_task(start())  # a strong reference until the loop ends
    try:
        with loop:
            loop.run_forever()
        del starting
        if run.error is not None:
            raise run.error
        return run.code
    finally:
        if run.parts is not None:
            run.parts.shutdown()
        if run.demo_world is not None:
            run.demo_world.stop()
        hook.uninstall()


@dataclass
class _Run:
    """What start-up made, for run_app to clean up after the loop ends."""

    code: int = EXIT_OK
    parts: AppParts | None = None
    demo_world: Any = None
    error: BaseException | None = None


async def _start(args: argparse.Namespace, demo: bool, run: _Run,
                 hook: ExceptionHook, api_factory: ApiFactory | None = None) -> int | None:
    """First run, config, state database, then the window. None: the app runs; else exit code."""
    what, value = await _resolve_config(args, demo)
    if what == "exit":
        return int(value)
    config_path, data_dir, secrets, run.demo_world = value
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        await _error_dialog("guard-app: the config file has a problem",
                      str(exc) if exc.source else f"{config_path}: {exc}",
                      "Fix this key in the config file and start guard-app again.")
        return EXIT_BAD
    try:
        open_state(data_dir, config.state).close()  # fail now, loudly, not in the worker
    except StateError as exc:
        await _error_dialog("guard-app: the state database can't be used", str(exc))
        return EXIT_BAD
    run.parts = parts = build_app(config, data_dir, secrets, config_path=config_path,
                                  api_factory=api_factory)
    hook.parent_widget = parts.window
    settings = QSettings(ORG_NAME, APP_NAME)
    restore_geometry(parts.window, settings)
    window = parts.window
    app = QApplication.instance()
    if isinstance(app, QApplication):
        app.aboutToQuit.connect(lambda: save_geometry(window, settings))
    window.show()
    return None
