"""The accounts dialog: add, edit, test and remove exchange accounts and their keys.

A thin view over :class:`~guard_app.gui.model.accounts_editor.AccountsEditor` (Qt-free):
the editor holds the config document and the key status, checks the form with the
config loader's own rules (so the dialog and the loader can never disagree) and saves;
the dialog builds the widgets, copies texts and the editor's answers between them, and
runs "Test connection" on the GUI's qasync loop, so the window never freezes and the
test can be cancelled. API keys go to the OS keyring (``SecretStore``) and never into
the config file; once stored they are never shown again, only replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from guard_app.core.config import AccountConfig
from guard_app.core.errors import SecretStoreError
from guard_app.core.models import Market
from guard_app.core.secrets import ApiKeys, SecretStoreProtocol
from guard_app.exchanges.catalog import exchange_ids
from guard_app.gui.keyring_help import keyring_help
from guard_app.gui.model.account_form import (
    TEXT_FIELDS,
    ConnectionTestTimeout,
    connection_test_timeout,
    describe_test_failure,
)
from guard_app.gui.model.accounts_editor import (
    KEY_FIELDS,
    AccountsEditor,
    KeysBox,
    Outcome,
    describe_test_result,
)

ERROR_STYLE = "color: #c62828;"


def _button(text: str, name: str, slot: Callable[[], object]) -> QPushButton:
    button = QPushButton(text)
    button.setObjectName(name)
    button.clicked.connect(slot)
    return button


def _confirm_remove(parent: QWidget, account_id: str) -> bool:
    """Ask before removing an account; Cancel is the default."""
    box = QMessageBox(
        QMessageBox.Icon.Warning,
        "Remove account",
        f"Remove {account_id}?\n\nguard-app stops watching it and deletes its API keys "
        f"from the keyring. Positions on the exchange are not touched.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        parent,
    )
    box.setObjectName("confirm-remove")
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    answer = box.exec()
    box.deleteLater()
    return answer == QMessageBox.StandardButton.Yes


class _ErrorLabel(QLabel):
    """A red line under a field; hidden while empty.

    With ``reserve`` (the per-field messages) the line keeps its one-line height even
    while empty, so a message appearing as you type never pushes the fields below it
    down (a click would land in the wrong field); long messages are cut, the whole
    text is in the tooltip.
    """

    def __init__(self, parent: QWidget | None = None, *, reserve: bool = False) -> None:
        super().__init__(parent)
        self.setStyleSheet(ERROR_STYLE)
        self._reserve = reserve
        self.setWordWrap(not reserve)
        if reserve:
            self.setFixedHeight(self.fontMetrics().height() + 2)
            self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        else:
            self.hide()

    def set_error(self, text: str) -> None:
        self.setText(text)
        self.setToolTip(text)
        if not self._reserve:
            self.setVisible(bool(text))


class _KeyringBanner(QFrame):
    """What is wrong with the keyring and how to fix it, with a Retry button; hidden when fine."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("keyring-banner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.retry = QPushButton("Retry")
        self.retry.setObjectName("keyring-retry")
        layout = QHBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.retry, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_problem(self, error: SecretStoreError | None) -> None:
        if error is None:
            self.hide()
            return
        self.text.setText(keyring_help(error))
        self.show()


class _AccountForm(QWidget):
    """The form's fields with an error line under each, and the keys box.

    Reads and writes plain texts (what :class:`AccountsEditor` works with) and emits
    ``changed`` on every edit; it knows no rules.
    """

    changed = Signal()
    exchange_changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, QWidget] = {}
        self.errors: dict[str, _ErrorLabel] = {}
        form = QFormLayout()
        self.fields["id"] = QLineEdit(placeholderText="alice-binance-spot")
        self.fields["user"] = QLineEdit(placeholderText="alice")
        exchange = QComboBox()
        exchange.setEditable(True)
        exchange.addItems(list(exchange_ids()))
        exchange.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        completer = QCompleter(list(exchange_ids()), exchange)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        exchange.setCompleter(completer)
        self.fields["exchange"] = exchange
        market = QComboBox()
        market.addItems([m.value for m in Market])
        self.fields["market"] = market
        self.fields["quote"] = QLineEdit(placeholderText="USDT")
        self.fields["max_positions"] = QLineEdit(placeholderText="e.g. 8")
        self.fields["max_notional"] = QLineEdit(placeholderText="optional, in quote")
        self.fields["user_max_positions"] = QLineEdit(placeholderText="optional")
        self.fields["min_position_value"] = QLineEdit(placeholderText="1.0")
        self.fields["ignore_assets"] = QLineEdit(placeholderText="e.g. BNB, FDUSD")
        self.fields["sandbox"] = QCheckBox("Use the exchange's sandbox / testnet")
        ccxt_edit = QPlainTextEdit()
        ccxt_edit.setPlaceholderText('optional JSON, e.g. {"timeout": 20000}')
        ccxt_edit.setFixedHeight(90)
        self.fields["ccxt"] = ccxt_edit

        labels = {
            "id": "Account id", "user": "User", "exchange": "Exchange", "market": "Market type",
            "quote": "Quote currency", "max_positions": "Max positions",
            "max_notional": "Max notional", "user_max_positions": "User cap (all accounts)",
            "min_position_value": "Dust below", "ignore_assets": "Ignored assets",
            "sandbox": "Sandbox", "ccxt": "Advanced ccxt options",
        }
        for key, text in labels.items():
            form.addRow(text, self._with_error(key))

        # Keys.
        keys_box = QGroupBox("API keys (stored in the OS keyring, never in the file)")
        keys_form = QFormLayout(keys_box)
        self.keys_status = QLabel()
        self.keys_status.setObjectName("keys-status")
        self.keys_status.setWordWrap(True)
        self.replace_keys_button = QPushButton("Replace keys…")
        self.replace_keys_button.setObjectName("replace-keys")
        status_row = QHBoxLayout()
        status_row.addWidget(self.keys_status, 1)
        status_row.addWidget(self.replace_keys_button)
        keys_form.addRow(status_row)
        self._key_rows: dict[str, QWidget] = {}
        for key, text in (("api_key", "API key"), ("secret", "Secret"),
                          ("password", "Passphrase")):
            edit = QLineEdit()
            edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.setObjectName(f"field-{key}")
            self.fields[key] = edit
            container = self._with_error(key)
            self._key_rows[key] = container
            keys_form.addRow(text, container)
        self._keys_form = keys_form

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(keys_box)
        for key, widget in self.fields.items():
            if key not in KEY_FIELDS:
                widget.setObjectName(f"field-{key}")
            self._connect_change(widget)
        exchange.currentTextChanged.connect(lambda _text: self.exchange_changed.emit())

    def _with_error(self, key: str) -> QWidget:
        container = QWidget()
        layout = QVBoxLayout(container)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.fields[key])
        label = _ErrorLabel(reserve=True)
        label.setObjectName(f"error-{key}")
        layout.addWidget(label)
        self.errors[key] = label
        return container

    def _connect_change(self, widget: QWidget) -> None:
        def changed(*_args: object) -> None:
            self.changed.emit()

        if isinstance(widget, QLineEdit | QPlainTextEdit):
            widget.textChanged.connect(changed)
        elif isinstance(widget, QComboBox):
            widget.currentTextChanged.connect(changed)
        elif isinstance(widget, QCheckBox):
            widget.toggled.connect(changed)

    # ---- values ----

    def text(self, key: str) -> str:
        widget = self.fields[key]
        if isinstance(widget, QComboBox):
            return widget.currentText().strip()
        if isinstance(widget, QPlainTextEdit):
            return widget.toPlainText().strip()
        assert isinstance(widget, QLineEdit)  # noqa: S101
        return widget.text().strip()

    def texts(self) -> dict[str, str]:
        return {key: self.text(key) for key in TEXT_FIELDS}

    def sandbox(self) -> bool:
        box = self.fields["sandbox"]
        assert isinstance(box, QCheckBox)  # noqa: S101
        return box.isChecked()

    def set_values(self, texts: dict[str, str], sandbox: bool) -> None:
        for key, text in texts.items():
            widget = self.fields[key]
            if isinstance(widget, QComboBox) and widget.isEditable():
                widget.setEditText(text)
            elif isinstance(widget, QComboBox):
                widget.setCurrentIndex(max(widget.findText(text), 0))
            elif isinstance(widget, QPlainTextEdit):
                widget.setPlainText(text)
            elif isinstance(widget, QLineEdit):
                widget.setText(text)
        box = self.fields["sandbox"]
        assert isinstance(box, QCheckBox)  # noqa: S101
        box.setChecked(sandbox)

    def show_errors(self, errors: dict[str, str]) -> None:
        for key, message in errors.items():
            self.errors[key].set_error(message)

    def show_keys(self, box: KeysBox) -> None:
        """The keys box as the editor describes it; hidden key fields are emptied."""
        self.keys_status.setText(box.text)
        self.replace_keys_button.setVisible(box.replace_visible)
        for key in KEY_FIELDS:
            self._keys_form.setRowVisible(self._key_rows[key], key in box.visible)
            if key not in box.visible:
                edit = self.fields[key]
                assert isinstance(edit, QLineEdit)  # noqa: S101
                edit.clear()


class AccountsDialog(QDialog):
    """Add, edit, test and remove accounts; keys in the OS keyring, never in the file."""

    saved = Signal(object)  # the new AppConfig after a successful atomic save

    def __init__(
        self, config_path: Path, secrets: SecretStoreProtocol, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("accounts-dialog")
        self.setWindowTitle("Accounts and keys")
        self.config_path = Path(config_path)
        self.editor = AccountsEditor(self.config_path, secrets)
        self._loading = False
        self._test_task: asyncio.Future[Any] | None = None
        self.form = _AccountForm()
        self.fields, self.errors = self.form.fields, self.form.errors
        self.keys_status = self.form.keys_status
        self.replace_keys_button = self.form.replace_keys_button
        self._build()
        self._reload()

    def _build(self) -> None:
        self.config_error = _ErrorLabel()
        self.config_error.setObjectName("config-error")

        self.keyring_banner = _KeyringBanner()
        self.keyring_text = self.keyring_banner.text
        self.keyring_banner.retry.clicked.connect(self._retry_keyring)

        # Left: the accounts.
        self.account_list = QListWidget()
        self.account_list.setObjectName("accounts-list")
        self.account_list.currentItemChanged.connect(self._on_selection)
        self.add_button = _button("Add account", "add-account", self.new_account)
        self.remove_button = _button("Remove…", "remove-account", self.remove_selected)
        left = QVBoxLayout()
        left.addWidget(self.account_list, 1)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        left.addLayout(row)

        # Right: the form, the test, Save.
        self.replace_keys_button.clicked.connect(self._start_replacing_keys)
        self.form.changed.connect(self._revalidate)
        self.form.exchange_changed.connect(self._update_key_fields)
        self.test_button = _button("Test connection", "test-connection", self.start_test)
        self.cancel_test_button = _button("Cancel test", "cancel-test", self.cancel_test)
        self.cancel_test_button.setEnabled(False)
        self.test_result = QLabel()
        self.test_result.setObjectName("test-result")
        self.test_result.setWordWrap(True)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.cancel_test_button)
        test_row.addWidget(self.test_result, 1)

        self.form_error = _ErrorLabel()
        self.form_error.setObjectName("form-error")
        self.status = QLabel()
        self.status.setObjectName("save-status")
        self.status.setWordWrap(True)
        self.save_button = _button("Save account", "save-account", self.save_current)
        self.save_button.setDefault(True)
        self.close_button = _button("Close", "close", self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.save_button)

        right = QVBoxLayout()
        right.addWidget(self.form)
        right.addLayout(test_row)
        right.addWidget(self.form_error)
        right.addLayout(buttons)

        body = QHBoxLayout()
        body.addLayout(left, 1)
        body.addLayout(right, 2)
        outer = QVBoxLayout(self)
        outer.addWidget(self.config_error)
        outer.addWidget(self.keyring_banner)
        outer.addLayout(body)

    # ---- the editor's answers into the widgets ----

    def _reload(self, select: str | None = None) -> None:
        self.config_error.set_error(self.editor.reload())
        self.keyring_banner.show_problem(self.editor.keyring_error)
        self._fill_list(select)

    def _retry_keyring(self) -> None:
        self.editor.refresh_key_status()
        self.keyring_banner.show_problem(self.editor.keyring_error)
        self._fill_list(self.editor.editing_id)

    def _fill_list(self, select: str | None) -> None:
        self._loading = True
        self.account_list.clear()
        selected: QListWidgetItem | None = None
        for account_id, text in self.editor.list_rows():
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, account_id)
            self.account_list.addItem(item)
            if account_id == select:
                selected = item
        self._loading = False
        if selected is not None:
            self.account_list.setCurrentItem(selected)
        elif self.account_list.count():
            self.account_list.setCurrentRow(0)
        else:
            self.new_account()
        self.remove_button.setEnabled(self.editor.editing_id is not None)

    def _on_selection(self, current: QListWidgetItem | None, _previous: object) -> None:
        if self._loading or current is None:
            return
        self.select_account(str(current.data(Qt.ItemDataRole.UserRole)))

    def select_account(self, account_id: str) -> None:
        """Show an existing account in the form."""
        form = self.editor.select(account_id)
        if form is not None:
            self._show_form(*form, removable=True)

    def new_account(self) -> None:
        """Clear the form for a new account."""
        self._loading = True
        self.account_list.clearSelection()
        self.account_list.setCurrentRow(-1)
        self._loading = False
        self._show_form(*self.editor.new_account(), removable=False)

    def _show_form(self, texts: dict[str, str], sandbox: bool, *, removable: bool) -> None:
        self._loading = True
        try:
            self.form.set_values(texts, sandbox)
        finally:
            self._loading = False
        self._update_key_fields()
        self.remove_button.setEnabled(removable)
        self.test_result.clear()
        self.status.clear()
        self._revalidate()

    def _start_replacing_keys(self) -> None:
        self.editor.entering_keys = True
        self._update_key_fields()
        self.fields["api_key"].setFocus()

    def _update_key_fields(self) -> None:
        self.form.show_keys(self.editor.keys_box(self.form.text("exchange")))

    # ---- validation ----

    def field_error(self, key: str) -> str:
        """The error shown under a field ("" when none)."""
        label = self.errors[key]
        return label.text() if not label.isHidden() else ""

    def _show_errors(self, errors: dict[str, str], form_error: str) -> None:
        self.form.show_errors(errors)
        if form_error:
            self.form_error.set_error(form_error)

    def _revalidate(self) -> bool:
        """Check the form with the loader's rules; mark fields; enable Save when valid."""
        if self._loading:
            return False
        self.form.show_errors(dict.fromkeys(self.errors, ""))
        self.form_error.set_error("")
        check = self.editor.check(self.form.texts(), self.form.sandbox())
        self._show_errors(check.errors, check.form_error)
        self.save_button.setEnabled(check.valid)
        return check.valid

    # ---- saving and removing ----

    def _apply(self, outcome: Outcome, select: str | None, status: str) -> bool:
        if outcome.keyring_error is not None:
            self.keyring_banner.show_problem(outcome.keyring_error)
        self._show_errors(outcome.errors, outcome.form_error)
        if outcome.config is None:
            return False
        self._reload(select=select)
        self.status.setText(status)
        self.saved.emit(outcome.config)
        return True

    def save_current(self) -> bool:
        """Save the account in the form: keys to the keyring, the rest to the file."""
        if not self._revalidate():
            return False
        outcome = self.editor.save(self.form.texts(), self.form.sandbox())
        return self._apply(outcome, outcome.account_id, f"Saved {outcome.account_id}. "
                           "The enforcer uses it from its next cycle.")

    def remove_selected(self) -> bool:
        """Remove the selected account after confirmation, and delete its keys."""
        account_id = self.editor.editing_id
        if account_id is None or self.editor.doc is None:
            return False
        if not _confirm_remove(self, account_id):
            return False
        return self._apply(self.editor.remove(account_id), None,
                           f"Removed {account_id} and its keys.")

    # ---- test connection ----

    def start_test(self) -> None:
        """Check the form's account and keys against the exchange, without blocking."""
        if self._test_task is not None and not self._test_task.done():
            return
        plan = self.editor.plan_test(self.form.texts(), self.form.sandbox())
        if isinstance(plan, str):
            self.test_result.setText(plan)
            return
        self.test_result.setText("Testing… (loading markets and reading the account)")
        self.test_button.setEnabled(False)
        self.cancel_test_button.setEnabled(True)
        # A strong reference: the loop only keeps a weak one to running tasks.
        self._test_task = asyncio.ensure_future(
            self._run_test(plan.account, plan.keys, plan.stored_id))
        self._test_task.add_done_callback(self._test_finished)

    def cancel_test(self) -> None:
        if self._test_task is not None and not self._test_task.done():
            self._test_task.cancel()

    @property
    def test_running(self) -> bool:
        return self._test_task is not None and not self._test_task.done()

    async def _run_test(
        self, account: AccountConfig, keys: ApiKeys | None, stored_id: str | None
    ) -> str:
        from guard_app.exchanges import make_broker

        if keys is None and stored_id is not None:
            keys = await asyncio.to_thread(self.editor.secrets.get, stored_id)
            if keys is None:
                return "no keys stored for this account: enter them first"
        assert keys is not None  # noqa: S101 - start_test checked
        broker = make_broker(account, keys)  # SandboxUnavailableError when there is none
        limit = connection_test_timeout(account)
        try:
            # ccxt's timeout bounds each request; the test as a whole (markets, then the
            # account) gets the same bound, so it always ends: answer, failure or timeout.
            check = await asyncio.wait_for(broker.check_connection(), limit)
        except TimeoutError as exc:
            raise ConnectionTestTimeout(limit) from exc
        finally:
            await broker.aclose()
        return describe_test_result(check.positions, check.dust, check.problems)

    def _test_finished(self, task: asyncio.Future[Any]) -> None:
        if self._test_task is task:
            self._test_task = None
        try:
            self.test_button.setEnabled(True)
            self.cancel_test_button.setEnabled(False)
            if task.cancelled():
                self.test_result.setText("Test cancelled.")
                return
            exc = task.exception()
            self.test_result.setText(describe_test_failure(exc) if exc else task.result())
        except RuntimeError:
            pass  # the dialog was deleted while the test ran: nobody to tell

    def done(self, result: int) -> None:
        self.cancel_test()
        super().done(result)
