"""The accounts dialog against the simulator and the real Secret Service keyring.

Run under scripts/with-keyring.sh. "Test connection" runs on a qasync loop driven by
``qloop.run_until_complete``, exactly as in the app.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import asyncio  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Coroutine, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import qasync  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QCheckBox,
    QComboBox,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
)

from guard_app.core.config import load_config  # noqa: E402
from guard_app.core.secrets import ApiKeys, SecretStore  # noqa: E402
from guard_app.gui.accounts_dialog import AccountsDialog  # noqa: E402
from guard_app.gui.first_run import FirstRunDialog, first_run_choice  # noqa: E402
from guard_app.sim import ccxt_overrides  # noqa: E402
from tests.fixtures.world import World, sim_account  # noqa: E402

pytestmark = [
    pytest.mark.gui,
    pytest.mark.keyring,
]

USER_COMMENTS = "# my trading desk\n[enforcer]\ninterval_seconds = 30   # faster than default\n"


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.fixture
def make_dialog(qtbot: Any, secret_store: SecretStore) -> Callable[[Path], AccountsDialog]:
    def make(path: Path) -> AccountsDialog:
        dialog = AccountsDialog(path, secret_store)
        qtbot.addWidget(dialog)
        dialog.show()
        return dialog

    return make


def run(loop: qasync.QEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, 30))


async def until(condition: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def fill(dialog: AccountsDialog, **values: Any) -> None:
    for key, value in values.items():
        widget = dialog.fields[key]
        if isinstance(widget, QComboBox):
            widget.setEditText(value) if widget.isEditable() else widget.setCurrentText(value)
        elif isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif isinstance(widget, QPlainTextEdit):
            widget.setPlainText(value)
        else:
            assert isinstance(widget, QLineEdit)
            widget.setText(str(value))


def sim_ccxt_json(base_url: str) -> str:
    return json.dumps({**ccxt_overrides(base_url), "timeout": 5000})


def start_alice(world: World) -> Any:
    return world.start_sim([sim_account("alice", spot={"USDT": 1000, "BTC": 0.01, "ETH": 0.5})])


def test_add_account_test_connection_and_save_keys_only_in_the_keyring(
    world: World, make_dialog: Callable[[Path], AccountsDialog], qloop: Any, qtbot: Any,
    secret_store: SecretStore,
) -> None:
    sim = start_alice(world)
    alice = world.sim_accounts["alice"]
    world.config_path.write_text(USER_COMMENTS)
    dialog = make_dialog(world.config_path)
    assert dialog.fields["api_key"].echoMode() == QLineEdit.EchoMode.Password
    assert dialog.fields["secret"].echoMode() == QLineEdit.EchoMode.Password

    fill(dialog, id="alice-sim", user="alice", exchange="binance", market="spot",
         max_positions="8", user_max_positions="12", ignore_assets="bnb, fdusd",
         ccxt=sim_ccxt_json(sim.base_url), api_key=alice["api_key"], secret=alice["secret"])
    assert dialog.save_button.isEnabled()

    async def test_connection() -> None:
        dialog.test_button.click()
        assert dialog.test_running
        await until(lambda: not dialog.test_running)

    run(qloop, test_connection())
    assert dialog.test_result.text() == "OK: 2 positions found"

    with qtbot.waitSignal(dialog.saved, timeout=5000) as saved:
        dialog.save_button.click()
    config = saved.args[0]
    account = config.account("alice-sim")
    assert account.ignore_assets == ("BNB", "FDUSD")
    assert config.users["alice"].max_positions == 12
    assert load_config(world.config_path) == config

    stored = secret_store.get("alice-sim")
    assert stored is not None and stored.secret == alice["secret"]
    text = world.config_path.read_text()
    assert alice["api_key"] not in text and alice["secret"] not in text
    assert text.startswith("# my trading desk\n")
    assert "interval_seconds = 30   # faster than default" in text

    # The keys are never shown again: a status and a "Replace keys…" action instead.
    assert dialog.keys_status.text() == "keys stored ✓"
    assert dialog.replace_keys_button.isVisible()
    assert not dialog.fields["api_key"].isVisible()
    assert dialog.fields["api_key"].text() == ""

    # Testing again uses the stored keys.
    run(qloop, test_connection())
    assert dialog.test_result.text() == "OK: 2 positions found"


def test_a_wrong_secret_reports_a_wrong_key(
    world: World, make_dialog: Callable[[Path], AccountsDialog], qloop: Any,
) -> None:
    sim = start_alice(world)
    dialog = make_dialog(world.config_path)
    fill(dialog, id="alice-sim", user="alice", max_positions="8",
         ccxt=sim_ccxt_json(sim.base_url), api_key=world.sim_accounts["alice"]["api_key"],
         secret="not-the-right-secret")

    async def go() -> None:
        dialog.test_button.click()
        await until(lambda: not dialog.test_running)

    run(qloop, go())
    assert dialog.test_result.text().startswith("wrong key or secret")
    assert "not-the-right-secret" not in dialog.test_result.text()


def test_a_hanging_exchange_never_freezes_the_window_and_can_be_cancelled(
    tmp_path: Path, make_dialog: Callable[[Path], AccountsDialog], qloop: Any,
) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        base_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        dialog = make_dialog(tmp_path / "config.toml")
        fill(dialog, id="a1", user="alice", max_positions="3",
             ccxt=json.dumps({**ccxt_overrides(base_url), "timeout": 60000}),
             api_key="some-key-123", secret="some-secret-456")

        async def go() -> None:
            dialog.test_button.click()
            await asyncio.sleep(0.3)
            assert dialog.test_running and dialog.cancel_test_button.isEnabled()
            # The GUI still answers while the request hangs.
            fill(dialog, quote="USDC")
            assert dialog.fields["quote"].text() == "USDC"
            dialog.cancel_test_button.click()
            await until(lambda: not dialog.test_running, within=5)

        run(qloop, go())
    assert dialog.test_result.text() == "Test cancelled."
    assert dialog.test_button.isEnabled()


def test_sandbox_not_offered_and_passphrase_only_where_needed(
    tmp_path: Path, make_dialog: Callable[[Path], AccountsDialog],
) -> None:
    dialog = make_dialog(tmp_path / "config.toml")
    fill(dialog, id="k1", user="alice", exchange="kraken", max_positions="3", sandbox=True,
         api_key="k", secret="s")
    assert "sandbox not offered" in dialog.field_error("sandbox")
    dialog.test_button.click()  # refused at once, no network
    assert dialog.test_result.text().startswith("sandbox not offered by this exchange")
    assert not dialog.fields["password"].isVisible()
    fill(dialog, exchange="okx")
    assert dialog.fields["password"].isVisible()
    assert dialog.fields["password"].echoMode() == QLineEdit.EchoMode.Password
    assert "passphrase" in dialog.field_error("password")
    assert not dialog.save_button.isEnabled()
    fill(dialog, password="pp")
    assert dialog.save_button.isEnabled()


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"max_positions": "-1"}, "max_positions", "must be 0 or more"),
        ({"max_positions": "lots"}, "max_positions", "whole number"),
        ({"max_notional": "-5"}, "max_notional", "more than 0"),
        ({"user_max_positions": "-2"}, "user_max_positions", "must be 0 or more"),
        ({"id": "bad id!"}, "id", "not a valid name"),
        ({"exchange": "binanse"}, "exchange", "did you mean binance"),
        ({"ccxt": "{nope"}, "ccxt", "not valid JSON"),
        ({"ccxt": '["a list"]'}, "ccxt", "must be a table"),
        ({"ccxt": '{"apiKey": "AK-not-real"}'}, "ccxt", "keys belong in the keyring"),
        ({"ignore_assets": "BNB, $$"}, "ignore_assets", "not a currency code"),
        ({"api_key": "only-a-key"}, "secret", "enter the secret"),
    ],
)
def test_invalid_inputs_are_refused_next_to_the_field(
    tmp_path: Path, make_dialog: Callable[[Path], AccountsDialog],
    values: dict[str, str], field: str, message: str,
) -> None:
    path = tmp_path / "config.toml"
    dialog = make_dialog(path)
    fill(dialog, id="a1", user="alice", exchange="binance", max_positions="3")
    assert dialog.save_button.isEnabled()
    fill(dialog, **values)
    assert message in dialog.field_error(field)
    assert dialog.errors[field].isVisible()
    others = [k for k in dialog.errors if k not in (field, "sandbox") and dialog.field_error(k)]
    assert others == []
    assert not dialog.save_button.isEnabled()
    dialog.save_current()
    assert not path.exists()


def visible_top_level(predicate: Callable[[Any], bool]) -> Any:
    for widget in QApplication.topLevelWidgets():
        try:
            if predicate(widget) and widget.isVisible():
                return widget
        except RuntimeError:  # a widget deleted meanwhile
            continue
    return None


def click_when_shown(name: str, button: QMessageBox.StandardButton) -> None:
    """Answer the message box called ``name`` once it is open (it runs its own loop)."""
    deadline = time.monotonic() + 5

    def attempt() -> None:
        box = visible_top_level(lambda w: w.objectName() == name)
        if box is not None:
            assert isinstance(box, QMessageBox)
            box.button(button).click()
        elif time.monotonic() < deadline:  # never outlive the test by much
            QTimer.singleShot(20, attempt)

    QTimer.singleShot(0, attempt)


def test_remove_asks_then_deletes_the_account_and_its_keys(
    world: World, make_dialog: Callable[[Path], AccountsDialog], qtbot: Any,
    secret_store: SecretStore,
) -> None:
    sim = start_alice(world)
    world.config_path.write_text(USER_COMMENTS)
    doc_accounts = [world.account("alice-sim", sim, "alice"),
                    world.account("alice-two", sim, "alice")]
    world.write_config(doc_accounts)
    dialog = make_dialog(world.config_path)
    dialog.select_account("alice-sim")
    assert dialog.keys_status.text() == "keys stored ✓"

    click_when_shown("confirm-remove", QMessageBox.StandardButton.Cancel)
    assert dialog.remove_selected() is False
    assert secret_store.get("alice-sim") is not None

    click_when_shown("confirm-remove", QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(dialog.saved, timeout=5000) as saved:
        assert dialog.remove_selected() is True
    assert [a.id for a in saved.args[0].accounts] == ["alice-two"]
    assert secret_store.get("alice-sim") is None
    assert secret_store.get("alice-two") is not None
    assert [a.id for a in load_config(world.config_path).accounts] == ["alice-two"]


def test_editing_keeps_comments_and_renaming_moves_the_keys(
    world: World, make_dialog: Callable[[Path], AccountsDialog], qtbot: Any,
    secret_store: SecretStore,
) -> None:
    sim = start_alice(world)
    world.write_config([world.account("alice-sim", sim, "alice")])
    text = world.config_path.read_text()
    world.config_path.write_text("# desk config, do not share\n" + text.replace(
        "max_positions = 8", "max_positions = 8   # agreed with risk"))
    dialog = make_dialog(world.config_path)
    dialog.select_account("alice-sim")
    fill(dialog, id="alice-main", max_notional="5000")
    with qtbot.waitSignal(dialog.saved, timeout=5000):
        dialog.save_button.click()

    text = world.config_path.read_text()
    assert text.startswith("# desk config, do not share\n")
    assert "max_positions = 8   # agreed with risk" in text
    assert 'id = "alice-main"' in text and "alice-sim" not in text
    assert secret_store.get("alice-sim") is None
    moved = secret_store.get("alice-main")
    assert moved is not None and moved.secret == world.sim_accounts["alice"]["secret"]

    # Replace keys: the new ones overwrite the old ones on save.
    dialog.replace_keys_button.click()
    assert dialog.fields["api_key"].isVisible()
    fill(dialog, api_key="new-key-1", secret="new-secret-2")
    with qtbot.waitSignal(dialog.saved, timeout=5000):
        dialog.save_button.click()
    assert secret_store.get("alice-main") == ApiKeys("new-key-1", "new-secret-2")
    assert "new-secret-2" not in world.config_path.read_text()


@pytest.mark.usefixtures("locked_keyring")
def test_a_locked_keyring_is_explained_and_accounts_stay_listed_and_marked(
    tmp_path: Path, qtbot: Any,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[accounts]]\nid = "a1"\nuser = "alice"\nexchange = "binance"\n'
                    "max_positions = 3\n")
    dialog = AccountsDialog(path, SecretStore())
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.keyring_banner.isVisible()
    assert "The keyring is locked" in dialog.keyring_text.text()
    assert "Unlock" in dialog.keyring_text.text()
    assert dialog.account_list.count() == 1
    assert "keyring unavailable" in dialog.account_list.item(0).text()
    assert "keys can't be read or stored" in dialog.keys_status.text()
    # Saving new keys while locked stores nothing and writes nothing.
    fill(dialog, api_key="k-123", secret="s-456")
    assert dialog.save_current() is False
    assert "could not be stored" in dialog.field_error("api_key")
    assert "k-123" not in path.read_text()


@pytest.mark.parametrize("button", ["first-run-accounts", "first-run-demo", "first-run-quit"])
def test_first_run_choice(qtbot: Any, button: str) -> None:
    deadline = time.monotonic() + 5

    def press() -> None:
        dialog = visible_top_level(lambda w: isinstance(w, FirstRunDialog))
        if dialog is not None:
            dialog.findChild(QPushButton, button).click()
        elif time.monotonic() < deadline:
            QTimer.singleShot(20, press)

    QTimer.singleShot(0, press)
    assert first_run_choice(None) == button.removeprefix("first-run-")


def test_a_validation_message_never_moves_the_fields_below_it(
    tmp_path: Path, make_dialog: Callable[[Path], AccountsDialog], qtbot: Any,
) -> None:
    dialog = make_dialog(tmp_path / "config.toml")
    fill(dialog, id="a1", user="alice", exchange="binance", max_positions="3")
    qtbot.waitExposed(dialog)
    below = dialog.fields["max_notional"]
    before = below.mapTo(dialog, below.rect().topLeft())

    fill(dialog, max_positions="many")
    QApplication.processEvents()

    assert dialog.field_error("max_positions")
    assert below.mapTo(dialog, below.rect().topLeft()) == before
