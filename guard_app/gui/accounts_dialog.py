"""The accounts dialog: add, edit, test and remove exchange accounts and their keys.

Validation uses the config loader's own rules (``ConfigDocument`` runs
``validate_account``/``parse_config`` on the would-be file), and each ConfigError's key
points at the field to mark, so the dialog and the loader can never disagree. API keys
go to the OS keyring (``SecretStore``) and never into the config file; once stored they
are never shown again, only replaced. "Test connection" runs on the GUI's qasync loop
with the keys as typed, so the window never freezes and the test can be cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
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

from guard_app.core.config import AccountConfig, validate_account
from guard_app.core.config_writer import ConfigDocument
from guard_app.core.errors import (
    ConfigError,
    SecretStoreError,
)
from guard_app.core.models import Market
from guard_app.core.secrets import ApiKeys, SecretStoreProtocol, UnreadableKeysError
from guard_app.exchanges.catalog import exchange_ids, needs_passphrase, sandbox_offered
from guard_app.gui.keyring_help import keyring_help, keyring_title
from guard_app.gui.model.account_form import (
    TEXT_FIELDS,
    ConnectionTestTimeout,
    connection_test_timeout,
    describe_test_failure,
    field_for_key,
    form_to_account,
)

log = logging.getLogger(__name__)

ERROR_STYLE = "color: #c62828;"

# Key status of an account, shown in the list and the keys box.
STORED, MISSING, UNREADABLE, KEYRING_DOWN = "stored", "missing", "unreadable", "keyring"


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
        self._secrets = secrets
        self._doc: ConfigDocument | None = None
        self._editing_id: str | None = None  # None: a new account
        self._key_status: dict[str, str] = {}
        self._keyring_error: SecretStoreError | None = None
        self._entering_keys = True
        self._loading = False
        self._test_task: asyncio.Future[Any] | None = None
        self.fields: dict[str, QWidget] = {}
        self.errors: dict[str, _ErrorLabel] = {}
        self._build()
        self._reload()

    # ---- building the widgets ----

    def _build(self) -> None:
        self.config_error = _ErrorLabel()
        self.config_error.setObjectName("config-error")

        self.keyring_banner = QFrame()
        self.keyring_banner.setObjectName("keyring-banner")
        self.keyring_banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.keyring_text = QLabel()
        self.keyring_text.setWordWrap(True)
        self.keyring_retry = QPushButton("Retry")
        self.keyring_retry.setObjectName("keyring-retry")
        self.keyring_retry.clicked.connect(self._retry_keyring)
        banner_layout = QHBoxLayout(self.keyring_banner)
        banner_layout.addWidget(self.keyring_text, 1)
        banner_layout.addWidget(self.keyring_retry, 0, Qt.AlignmentFlag.AlignTop)
        self.keyring_banner.hide()

        # Left: the accounts.
        self.account_list = QListWidget()
        self.account_list.setObjectName("accounts-list")
        self.account_list.currentItemChanged.connect(self._on_selection)
        self.add_button = QPushButton("Add account")
        self.add_button.setObjectName("add-account")
        self.add_button.clicked.connect(self.new_account)
        self.remove_button = QPushButton("Remove…")
        self.remove_button.setObjectName("remove-account")
        self.remove_button.clicked.connect(self.remove_selected)
        left = QVBoxLayout()
        left.addWidget(self.account_list, 1)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        left.addLayout(row)

        # Right: the form.
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
        self.replace_keys_button.clicked.connect(self._start_replacing_keys)
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

        # Test connection.
        self.test_button = QPushButton("Test connection")
        self.test_button.setObjectName("test-connection")
        self.test_button.clicked.connect(self.start_test)
        self.cancel_test_button = QPushButton("Cancel test")
        self.cancel_test_button.setObjectName("cancel-test")
        self.cancel_test_button.setEnabled(False)
        self.cancel_test_button.clicked.connect(self.cancel_test)
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
        self.save_button = QPushButton("Save account")
        self.save_button.setObjectName("save-account")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save_current)
        self.close_button = QPushButton("Close")
        self.close_button.setObjectName("close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.save_button)

        right = QVBoxLayout()
        right.addLayout(form)
        right.addWidget(keys_box)
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

        for key, widget in self.fields.items():
            if key not in ("api_key", "secret", "password"):
                widget.setObjectName(f"field-{key}")
            self._connect_change(widget)
        exchange.currentTextChanged.connect(lambda _text: self._update_key_fields())

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
            self._revalidate()

        if isinstance(widget, QLineEdit):
            widget.textChanged.connect(changed)
        elif isinstance(widget, QComboBox):
            widget.currentTextChanged.connect(changed)
        elif isinstance(widget, QCheckBox):
            widget.toggled.connect(changed)
        elif isinstance(widget, QPlainTextEdit):
            widget.textChanged.connect(changed)

    # ---- loading ----

    def _reload(self, select: str | None = None) -> None:
        try:
            self._doc = ConfigDocument.load(self.config_path)
        except ConfigError as exc:
            self._doc = None
            self.config_error.set_error(f"Can't edit the config file: {exc}")
        else:
            self.config_error.set_error("")
        self._refresh_key_status()
        self._fill_list(select)

    def _refresh_key_status(self) -> None:
        self._key_status.clear()
        self._keyring_error = None
        ids = self._doc.account_ids() if self._doc else []
        for account_id in ids:
            try:
                keys = self._secrets.get(account_id)
            except UnreadableKeysError:
                self._key_status[account_id] = UNREADABLE
                continue
            except SecretStoreError as exc:
                self._keyring_error = exc
                self._key_status.update({i: KEYRING_DOWN for i in ids})
                break
            self._key_status[account_id] = STORED if keys is not None else MISSING
        if self._keyring_error is None and not ids:
            try:
                self._secrets.check_available()
            except SecretStoreError as exc:
                self._keyring_error = exc
        self._show_keyring_problem(self._keyring_error)

    def _show_keyring_problem(self, error: SecretStoreError | None) -> None:
        if error is None:
            self.keyring_banner.hide()
            return
        self.keyring_text.setText(keyring_help(error))
        self.keyring_banner.show()

    def _retry_keyring(self) -> None:
        self._refresh_key_status()
        self._fill_list(self._editing_id)

    def _fill_list(self, select: str | None) -> None:
        self._loading = True
        self.account_list.clear()
        marks = {STORED: "✓ keys", MISSING: "⚠ no keys", UNREADABLE: "⚠ keys unreadable",
                 KEYRING_DOWN: "⚠ keyring unavailable"}
        selected: QListWidgetItem | None = None
        for account_id in self._doc.account_ids() if self._doc else []:
            data = self._doc.account_data(account_id) if self._doc else None
            data = data or {}
            mark = marks.get(self._key_status.get(account_id, MISSING), "")
            text = (f"{account_id}   {data.get('exchange', '?')} {data.get('market', 'spot')}"
                    f" · {data.get('user', '?')}   {mark}")
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
        self.remove_button.setEnabled(self._editing_id is not None)

    def _on_selection(self, current: QListWidgetItem | None, _previous: object) -> None:
        if self._loading or current is None:
            return
        self.select_account(str(current.data(Qt.ItemDataRole.UserRole)))

    def select_account(self, account_id: str) -> None:
        """Show an existing account in the form."""
        data = self._doc.account_data(account_id) if self._doc else None
        if data is None:
            return
        self._editing_id = account_id
        user_cap = self._doc.user_caps(str(data.get("user", "")))[0] if self._doc else None
        self._fill_form(data, user_cap)
        self._entering_keys = self._key_status.get(account_id) != STORED
        self._update_key_fields()
        self.remove_button.setEnabled(True)
        self.test_result.clear()
        self.status.clear()
        self._revalidate()

    def new_account(self) -> None:
        """Clear the form for a new account."""
        self._editing_id = None
        self._loading = True
        self.account_list.clearSelection()
        self.account_list.setCurrentRow(-1)
        self._loading = False
        self._fill_form({"exchange": "binance", "market": "spot"}, None)
        self._entering_keys = True
        self._update_key_fields()
        self.remove_button.setEnabled(False)
        self.test_result.clear()
        self.status.clear()
        self._revalidate()

    def _fill_form(self, data: dict[str, Any], user_cap: Any) -> None:
        self._loading = True
        try:
            def text(value: Any) -> str:
                return "" if value is None else str(value)

            self._line("id").setText(text(data.get("id")))
            self._line("user").setText(text(data.get("user")))
            exchange = self.fields["exchange"]
            assert isinstance(exchange, QComboBox)  # noqa: S101
            exchange.setEditText(text(data.get("exchange")))
            market = self.fields["market"]
            assert isinstance(market, QComboBox)  # noqa: S101
            index = market.findText(text(data.get("market", "spot")))
            market.setCurrentIndex(max(index, 0))
            self._line("quote").setText(text(data.get("quote")))
            self._line("max_positions").setText(text(data.get("max_positions")))
            self._line("max_notional").setText(text(data.get("max_notional")))
            self._line("user_max_positions").setText(text(user_cap))
            self._line("min_position_value").setText(text(data.get("min_position_value")))
            assets = data.get("ignore_assets") or []
            self._line("ignore_assets").setText(
                ", ".join(str(a) for a in assets) if isinstance(assets, list) else text(assets)
            )
            sandbox = self.fields["sandbox"]
            assert isinstance(sandbox, QCheckBox)  # noqa: S101
            sandbox.setChecked(bool(data.get("sandbox", False)))
            ccxt_edit = self.fields["ccxt"]
            assert isinstance(ccxt_edit, QPlainTextEdit)  # noqa: S101
            ccxt_value = data.get("ccxt") or {}
            ccxt_edit.setPlainText(json.dumps(ccxt_value, indent=2) if ccxt_value else "")
            for key in ("api_key", "secret", "password"):
                self._line(key).clear()
        finally:
            self._loading = False

    def _line(self, key: str) -> QLineEdit:
        widget = self.fields[key]
        assert isinstance(widget, QLineEdit)  # noqa: S101
        return widget

    # ---- keys box ----

    def _start_replacing_keys(self) -> None:
        self._entering_keys = True
        self._update_key_fields()
        self._line("api_key").setFocus()

    def _update_key_fields(self) -> None:
        status = self._key_status.get(self._editing_id or "", MISSING)
        existing = self._editing_id is not None
        if self._keyring_error is not None:
            text = f"⚠ {keyring_title(self._keyring_error)}: keys can't be read or stored now"
        elif existing and status == STORED and not self._entering_keys:
            text = "keys stored ✓"
        elif existing and status == STORED:
            text = "Enter the new keys; they replace the stored ones when you save."
        elif existing and status == UNREADABLE:
            text = "⚠ the stored keys are unreadable: enter them again"
        elif existing:
            text = "⚠ no keys stored: this account is skipped until you add them"
        else:
            text = "Enter the API key and secret (read and trade permissions, no withdrawals)."
        self.keys_status.setText(text)
        self.replace_keys_button.setVisible(existing and status == STORED
                                            and not self._entering_keys)
        exchange = self._text("exchange")
        for key in ("api_key", "secret", "password"):
            visible = self._entering_keys and (key != "password" or needs_passphrase(exchange))
            self._keys_form.setRowVisible(self._key_rows[key], visible)
            if not visible:
                self._line(key).clear()

    def _entered_keys(self) -> ApiKeys | None:
        if not self._entering_keys:
            return None
        api_key, secret = self._text("api_key"), self._text("secret")
        if not api_key or not secret:
            return None
        password = self._text("password") or None
        return ApiKeys(api_key=api_key, secret=secret, password=password)

    # ---- the form as config data ----

    def _text(self, key: str) -> str:
        widget = self.fields[key]
        if isinstance(widget, QComboBox):
            return widget.currentText().strip()
        if isinstance(widget, QPlainTextEdit):
            return widget.toPlainText().strip()
        assert isinstance(widget, QLineEdit)  # noqa: S101
        return widget.text().strip()

    def _form_data(self) -> tuple[dict[str, Any], Any, dict[str, str]]:
        """(account table, user cap, errors found before the loader can look)."""
        existing = (self._doc.account_data(self._editing_id)
                    if self._doc and self._editing_id else None) or {}
        sandbox = self.fields["sandbox"]
        assert isinstance(sandbox, QCheckBox)  # noqa: S101
        texts = {key: self._text(key) for key in TEXT_FIELDS}
        return form_to_account(texts, sandbox=sandbox.isChecked(), existing=existing)

    def _trial(self) -> tuple[ConfigDocument, dict[str, Any]]:
        """The document with the form applied; ConfigError names the first problem."""
        if self._doc is None:
            raise ConfigError("", "the config file can't be edited (see above)")
        data, user_cap, _ = self._form_data()
        trial = self._doc.copy()
        trial.upsert_account(data, replace_id=self._editing_id)
        user = data.get("user")
        if isinstance(user, str):
            _, user_notional = trial.user_caps(user)
            trial.set_user_caps(user, user_cap, user_notional)
        trial.validate()
        return trial, data

    # ---- validation ----

    @staticmethod
    def field_for_key(key: str) -> tuple[str | None, str]:
        """The form field a ConfigError key belongs to, and the rest of the key."""
        return field_for_key(key)

    def field_error(self, key: str) -> str:
        """The error shown under a field ("" when none)."""
        label = self.errors[key]
        return label.text() if not label.isHidden() else ""

    def _clear_errors(self) -> None:
        for label in self.errors.values():
            label.set_error("")
        self.form_error.set_error("")

    def _show_config_error(self, exc: ConfigError) -> None:
        field, rest = self.field_for_key(exc.key)
        if field is None:
            where = f"{rest}: " if rest else ""
            self.form_error.set_error(f"{where}{exc.problem}")
        else:
            self.errors[field].set_error(f"{rest}: {exc.problem}" if rest else exc.problem)

    def _revalidate(self) -> bool:
        """Check the form with the loader's rules; mark fields; enable Save when valid."""
        if self._loading:
            return False
        self._clear_errors()
        valid = self._doc is not None
        _, _, local = self._form_data()
        for key, message in local.items():
            self.errors[key].set_error(message)
            valid = False
        if not local and self._doc is not None:
            try:
                self._trial()
            except ConfigError as exc:
                self._show_config_error(exc)
                valid = False
        if self._entering_keys:
            api_key, secret = self._text("api_key"), self._text("secret")
            if api_key and not secret:
                self.errors["secret"].set_error("enter the secret that goes with this key")
                valid = False
            elif secret and not api_key:
                self.errors["api_key"].set_error("enter the API key that goes with this secret")
                valid = False
            elif (api_key and needs_passphrase(self._text("exchange"))
                  and not self._text("password")):
                self.errors["password"].set_error("this exchange needs the key's passphrase")
                valid = False
        sandbox = self.fields["sandbox"]
        assert isinstance(sandbox, QCheckBox)  # noqa: S101
        if sandbox.isChecked() and not sandbox_offered(
            self._text("exchange")
        ):
            self.errors["sandbox"].set_error(
                "sandbox not offered by this exchange (ccxt knows no testnet URL for it)"
            )
        self.save_button.setEnabled(valid)
        return valid

    # ---- saving and removing ----

    def save_current(self) -> bool:
        """Save the account in the form: keys to the keyring, the rest to the file."""
        if not self._revalidate():
            return False
        try:
            trial, data = self._trial()
        except ConfigError as exc:
            self._show_config_error(exc)
            return False
        new_id = str(data["id"])
        old_id = self._editing_id
        renamed = old_id is not None and old_id != new_id
        keys = self._entered_keys()
        stored_new_entry = False
        try:
            if keys is None and renamed and self._key_status.get(str(old_id)) == STORED:
                keys = self._secrets.get(str(old_id))  # the keys follow the renamed account
            if keys is not None:
                stored_new_entry = self._secrets.get(new_id) is None
                self._secrets.set(new_id, keys)
        except SecretStoreError as exc:
            self._show_keyring_problem(exc)
            self.errors["api_key"].set_error(
                f"the keys could not be stored, nothing was saved: {exc}"
            )
            return False
        try:
            config = trial.save()
        except ConfigError as exc:
            if stored_new_entry:
                self._forget_keys(new_id)
            self._show_config_error(exc)
            return False
        if renamed:
            self._forget_keys(str(old_id))
        log.info("accounts: saved %s to %s", new_id, self.config_path)
        self._reload(select=new_id)
        self.status.setText(f"Saved {new_id}. The enforcer uses it from its next cycle.")
        self.saved.emit(config)
        return True

    def _forget_keys(self, account_id: str) -> None:
        try:
            self._secrets.delete(account_id)
        except SecretStoreError as exc:
            self._show_keyring_problem(exc)
            self.form_error.set_error(
                f"the keys of {account_id} could not be deleted from the keyring: {exc}"
            )

    def remove_selected(self) -> bool:
        """Remove the selected account after confirmation, and delete its keys."""
        account_id = self._editing_id
        if account_id is None or self._doc is None:
            return False
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Remove account",
            f"Remove {account_id}?\n\nguard-app stops watching it and deletes its API keys "
            f"from the keyring. Positions on the exchange are not touched.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setObjectName("confirm-remove")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        answer = box.exec()
        box.deleteLater()
        if answer != QMessageBox.StandardButton.Yes:
            return False
        trial = self._doc.copy()
        trial.remove_account(account_id)
        try:
            config = trial.save()
        except ConfigError as exc:
            self.form_error.set_error(f"{account_id} was not removed: {exc.problem}")
            return False
        self._forget_keys(account_id)
        log.info("accounts: removed %s from %s", account_id, self.config_path)
        self._editing_id = None
        self._reload()
        self.status.setText(f"Removed {account_id} and its keys.")
        self.saved.emit(config)
        return True

    # ---- test connection ----

    def start_test(self) -> None:
        """Check the form's account and keys against the exchange, without blocking."""
        if self._test_task is not None and not self._test_task.done():
            return
        data, _, local = self._form_data()
        try:
            if local:
                raise ConfigError("", "fix the marked fields first")
            account = validate_account(data, "")
        except ConfigError:
            self.test_result.setText("Fix the marked fields first.")
            return
        keys = self._entered_keys()
        stored = self._editing_id is not None and self._key_status.get(self._editing_id) == STORED
        if keys is None and not stored:
            self.test_result.setText("Enter the API key and secret first.")
            return
        if account.sandbox and not sandbox_offered(account.exchange):
            self.test_result.setText("sandbox not offered by this exchange: untick 'Sandbox'")
            return
        stored_id = self._editing_id if keys is None else None
        self.test_result.setText("Testing… (loading markets and reading the account)")
        self.test_button.setEnabled(False)
        self.cancel_test_button.setEnabled(True)
        # A strong reference: the loop only keeps a weak one to running tasks.
        self._test_task = asyncio.ensure_future(self._run_test(account, keys, stored_id))
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
            keys = await asyncio.to_thread(self._secrets.get, stored_id)
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
        dust = f" (and {check.dust} dust)" if check.dust else ""
        return f"OK: {check.positions} positions found{dust}"

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
