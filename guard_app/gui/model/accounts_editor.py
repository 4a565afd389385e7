"""The accounts dialog's rules without widgets: what is edited, its checks, save and remove.

Qt-free (tested in tests/gui_model/test_accounts_editor.py without a QApplication):
:class:`AccountsEditor` holds the config document, the account being edited and each
account's key status, and answers in plain data (texts, errors per field, outcomes) that
the dialog only copies into its widgets. The save rules live here: keys are stored
before the config is written and removed again if the write fails, a renamed account's
keys follow it, and a file edited on disk since it was opened is not overwritten
(``ConfigDocument.save`` refuses it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard_app.core.config import AccountConfig, AppConfig, validate_account
from guard_app.core.config_writer import ConfigDocument
from guard_app.core.errors import ConfigError, SecretStoreError
from guard_app.core.secrets import ApiKeys, SecretStoreProtocol, UnreadableKeysError
from guard_app.exchanges.catalog import needs_passphrase, sandbox_offered
from guard_app.gui.keyring_help import keyring_title
from guard_app.gui.model.account_form import field_for_key, form_to_account

__all__ = [
    "KEY_FIELDS",
    "KEYRING_DOWN",
    "MISSING",
    "STORED",
    "UNREADABLE",
    "AccountsEditor",
    "FormCheck",
    "KeysBox",
    "Outcome",
    "ConnectionTestPlan",
    "account_to_form",
    "describe_test_result",
    "place_config_error",
]

# The name the dialog always logged under, so existing log filters keep matching.
log = logging.getLogger("guard_app.gui.accounts_dialog")

# Key status of an account, shown in the list and the keys box.
STORED, MISSING, UNREADABLE, KEYRING_DOWN = "stored", "missing", "unreadable", "keyring"
KEY_FIELDS = ("api_key", "secret", "password")
_LIST_MARKS = {STORED: "✓ keys", MISSING: "⚠ no keys", UNREADABLE: "⚠ keys unreadable",
               KEYRING_DOWN: "⚠ keyring unavailable"}
#: What the form shows for a new account.
NEW_ACCOUNT = {"exchange": "binance", "market": "spot"}


def account_to_form(data: Mapping[str, Any], user_cap: Any) -> tuple[dict[str, str], bool]:
    """(field texts, sandbox ticked) for an account table from the file."""
    def text(value: Any) -> str:
        return "" if value is None else str(value)

    assets = data.get("ignore_assets") or []
    ccxt_value = data.get("ccxt") or {}
    texts = {
        "id": text(data.get("id")), "user": text(data.get("user")),
        "exchange": text(data.get("exchange")), "market": text(data.get("market", "spot")),
        "quote": text(data.get("quote")), "max_positions": text(data.get("max_positions")),
        "max_notional": text(data.get("max_notional")), "user_max_positions": text(user_cap),
        "min_position_value": text(data.get("min_position_value")),
        "ignore_assets": (", ".join(str(a) for a in assets) if isinstance(assets, list)
                          else text(assets)),
        "ccxt": json.dumps(ccxt_value, indent=2) if ccxt_value else "",
    }
    texts.update(dict.fromkeys(KEY_FIELDS, ""))
    return texts, bool(data.get("sandbox", False))


def place_config_error(exc: ConfigError) -> tuple[str | None, str]:
    """(field to mark or None for the whole form, message) for a loader's ConfigError."""
    where, rest = field_for_key(exc.key)
    return where, f"{rest}: {exc.problem}" if rest else exc.problem


def describe_test_result(positions: int, dust: int, problems: Sequence[str] = ()) -> str:
    """The line shown after a connection test that worked, and what the exchange can't
    do (said now, plainly, rather than found out on a bad day)."""
    extra = f" (and {dust} dust)" if dust else ""
    notes = "".join(f"\nNote: {p}" for p in problems)
    return f"OK: {positions} positions found{extra}{notes}"


@dataclass
class FormCheck:
    """The form checked with the loader's rules: Save is enabled only when ``valid``."""

    valid: bool
    errors: dict[str, str] = field(default_factory=dict)  # field -> message
    form_error: str = ""  # a problem no single field owns


@dataclass
class Outcome:
    """What a save or remove did: ``config`` is the new AppConfig when the file was written."""

    config: AppConfig | None = None
    account_id: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    form_error: str = ""
    keyring_error: SecretStoreError | None = None  # show the keyring banner for it


@dataclass
class KeysBox:
    """The keys box: its status line, the Replace button, the key fields shown."""

    text: str
    replace_visible: bool
    visible: tuple[str, ...]


@dataclass
class ConnectionTestPlan:
    """A connection test ready to run: ``keys`` as typed, or the stored ones of ``stored_id``."""

    account: AccountConfig
    keys: ApiKeys | None
    stored_id: str | None


class AccountsEditor:
    """The accounts of one config file being edited, with their keys in a key store."""

    def __init__(self, config_path: Path, secrets: SecretStoreProtocol) -> None:
        self.config_path = Path(config_path)
        self.secrets = secrets
        self.doc: ConfigDocument | None = None
        self.editing_id: str | None = None  # None: a new account
        self.key_status: dict[str, str] = {}
        self.keyring_error: SecretStoreError | None = None
        self.entering_keys = True

    # ---- loading ----

    def reload(self) -> str:
        """Read the file again and the key status; the config problem ("" when none)."""
        try:
            self.doc = ConfigDocument.load(self.config_path)
        except ConfigError as exc:
            self.doc = None
            problem = f"Can't edit the config file: {exc}"
        else:
            problem = ""
        self.refresh_key_status()
        return problem

    def refresh_key_status(self) -> None:
        """Ask the key store about every account; ``keyring_error`` when it is down."""
        self.key_status.clear()
        self.keyring_error = None
        ids = self.account_ids()
        for account_id in ids:
            try:
                keys = self.secrets.get(account_id)
            except UnreadableKeysError:
                self.key_status[account_id] = UNREADABLE
                continue
            except SecretStoreError as exc:
                self.keyring_error = exc
                self.key_status.update(dict.fromkeys(ids, KEYRING_DOWN))
                break
            self.key_status[account_id] = STORED if keys is not None else MISSING
        if self.keyring_error is None and not ids:
            try:
                self.secrets.check_available()
            except SecretStoreError as exc:
                self.keyring_error = exc

    def account_ids(self) -> list[str]:
        return self.doc.account_ids() if self.doc else []

    def list_rows(self) -> list[tuple[str, str]]:
        """(account id, list line) for every account in the file."""
        rows = []
        for account_id in self.account_ids():
            data = (self.doc.account_data(account_id) if self.doc else None) or {}
            mark = _LIST_MARKS.get(self.key_status.get(account_id, MISSING), "")
            rows.append((account_id,
                         f"{account_id}   {data.get('exchange', '?')} {data.get('market', 'spot')}"
                         f" · {data.get('user', '?')}   {mark}"))
        return rows

    def select(self, account_id: str) -> tuple[dict[str, str], bool] | None:
        """Edit an existing account: its form (texts, sandbox), or None when it is gone."""
        data = self.doc.account_data(account_id) if self.doc else None
        if data is None or self.doc is None:
            return None
        self.editing_id = account_id
        user_cap = self.doc.user_caps(str(data.get("user", "")))[0]
        self.entering_keys = self.key_status.get(account_id) != STORED
        return account_to_form(data, user_cap)

    def new_account(self) -> tuple[dict[str, str], bool]:
        """Start a new account: its empty form (texts, sandbox)."""
        self.editing_id = None
        self.entering_keys = True
        return account_to_form(NEW_ACCOUNT, None)

    # ---- keys ----

    def keys_box(self, exchange: str) -> KeysBox:
        """What the keys box shows for the account being edited on ``exchange``."""
        status = self.key_status.get(self.editing_id or "", MISSING)
        existing = self.editing_id is not None
        if self.keyring_error is not None:
            text = f"⚠ {keyring_title(self.keyring_error)}: keys can't be read or stored now"
        elif existing and status == STORED and not self.entering_keys:
            text = "keys stored ✓"
        elif existing and status == STORED:
            text = "Enter the new keys; they replace the stored ones when you save."
        elif existing and status == UNREADABLE:
            text = "⚠ the stored keys are unreadable: enter them again"
        elif existing:
            text = "⚠ no keys stored: this account is skipped until you add them"
        else:
            text = "Enter the API key and secret (read and trade permissions, no withdrawals)."
        visible = tuple(key for key in KEY_FIELDS if self.entering_keys
                        and (key != "password" or needs_passphrase(exchange)))
        return KeysBox(text, existing and status == STORED and not self.entering_keys, visible)

    def entered_keys(self, texts: Mapping[str, str]) -> ApiKeys | None:
        """The keys typed in the form, or None when none (or only half) were typed."""
        if not self.entering_keys:
            return None
        api_key, secret = texts.get("api_key", "").strip(), texts.get("secret", "").strip()
        if not api_key or not secret:
            return None
        password = texts.get("password", "").strip() or None
        return ApiKeys(api_key=api_key, secret=secret, password=password)

    def _keys_stored(self, account_id: str | None) -> bool:
        return account_id is not None and self.key_status.get(account_id) == STORED

    # ---- the form as config data ----

    def form_data(self, texts: Mapping[str, str],
                  sandbox: bool) -> tuple[dict[str, Any], Any, dict[str, str]]:
        """(account table, user cap, errors found before the loader can look)."""
        existing = (self.doc.account_data(self.editing_id)
                    if self.doc and self.editing_id else None) or {}
        return form_to_account(texts, sandbox=sandbox, existing=existing)

    def trial(self, texts: Mapping[str, str],
              sandbox: bool) -> tuple[ConfigDocument, dict[str, Any]]:
        """The document with the form applied; ConfigError names the first problem."""
        if self.doc is None:
            raise ConfigError("", "the config file can't be edited (see above)")
        data, user_cap, _ = self.form_data(texts, sandbox)
        trial = self.doc.copy()
        trial.upsert_account(data, replace_id=self.editing_id)
        user = data.get("user")
        if isinstance(user, str):
            _, user_notional = trial.user_caps(user)
            trial.set_user_caps(user, user_cap, user_notional)
        trial.validate()
        return trial, data

    def check(self, texts: Mapping[str, str], sandbox: bool) -> FormCheck:
        """Check the form with the loader's rules and the keys' own; errors per field."""
        result = FormCheck(valid=self.doc is not None)
        _, _, local = self.form_data(texts, sandbox)
        if local:
            result.errors.update(local)
            result.valid = False
        elif self.doc is not None:
            try:
                self.trial(texts, sandbox)
            except ConfigError as exc:
                _place(result, exc)
                result.valid = False
        exchange = texts.get("exchange", "").strip()
        if self.entering_keys:
            api_key, secret = texts.get("api_key", "").strip(), texts.get("secret", "").strip()
            if api_key and not secret:
                result.errors["secret"] = "enter the secret that goes with this key"  # noqa: S105
                result.valid = False
            elif secret and not api_key:
                result.errors["api_key"] = "enter the API key that goes with this secret"
                result.valid = False
            elif (api_key and needs_passphrase(exchange)
                  and not texts.get("password", "").strip()):
                result.errors["password"] = "this exchange needs the key's passphrase"  # noqa: S105
                result.valid = False
        if sandbox and not sandbox_offered(exchange):  # a warning: the file may say so
            result.errors["sandbox"] = (
                "sandbox not offered by this exchange (ccxt knows no testnet URL for it)")
        return result

    # ---- saving and removing ----

    def save(self, texts: Mapping[str, str], sandbox: bool) -> Outcome:
        """Keys to the key store first, then the file; keys stored now go again on failure."""
        outcome = Outcome()
        try:
            trial, data = self.trial(texts, sandbox)
        except ConfigError as exc:
            _place(outcome, exc)
            return outcome
        new_id = outcome.account_id = str(data["id"])
        old_id = self.editing_id
        renamed = old_id is not None and old_id != new_id
        keys = self.entered_keys(texts)
        stored_new_entry = False
        try:
            if keys is None and renamed and self._keys_stored(old_id):
                keys = self.secrets.get(str(old_id))  # the keys follow the renamed account
            if keys is not None:
                stored_new_entry = self.secrets.get(new_id) is None
                self.secrets.set(new_id, keys)
        except SecretStoreError as exc:
            outcome.keyring_error = exc
            outcome.errors["api_key"] = f"the keys could not be stored, nothing was saved: {exc}"
            return outcome
        try:
            outcome.config = trial.save()  # refuses a file edited on disk meanwhile
        except ConfigError as exc:
            if stored_new_entry:
                self._forget_keys(new_id, outcome)
            _place(outcome, exc)
            return outcome
        if renamed:
            self._forget_keys(str(old_id), outcome)
        log.info("accounts: saved %s to %s", new_id, self.config_path)
        return outcome

    def remove(self, account_id: str) -> Outcome:
        """Remove an account from the file, then delete its keys."""
        outcome = Outcome(account_id=account_id)
        if self.doc is None:
            outcome.form_error = f"{account_id} was not removed: the config file can't be edited"
            return outcome
        trial = self.doc.copy()
        trial.remove_account(account_id)
        try:
            outcome.config = trial.save()
        except ConfigError as exc:
            outcome.form_error = f"{account_id} was not removed: {exc.problem}"
            return outcome
        self._forget_keys(account_id, outcome)
        log.info("accounts: removed %s from %s", account_id, self.config_path)
        self.editing_id = None
        return outcome

    def _forget_keys(self, account_id: str, outcome: Outcome) -> None:
        try:
            self.secrets.delete(account_id)
        except SecretStoreError as exc:
            outcome.keyring_error = exc
            outcome.form_error = (
                f"the keys of {account_id} could not be deleted from the keyring: {exc}")

    # ---- test connection ----

    def plan_test(self, texts: Mapping[str, str], sandbox: bool) -> ConnectionTestPlan | str:
        """The test to run for the form, or the line saying why it can't run yet."""
        data, _, local = self.form_data(texts, sandbox)
        if local:
            return "Fix the marked fields first."
        try:
            account = validate_account(data, "")
        except ConfigError:
            return "Fix the marked fields first."
        keys = self.entered_keys(texts)
        if keys is None and not self._keys_stored(self.editing_id):
            return "Enter the API key and secret first."
        if account.sandbox and not sandbox_offered(account.exchange):
            return "sandbox not offered by this exchange: untick 'Sandbox'"
        return ConnectionTestPlan(account, keys, self.editing_id if keys is None else None)


def _place(target: FormCheck | Outcome, exc: ConfigError) -> None:
    where, message = place_config_error(exc)
    if where is None:
        target.form_error = message
    else:
        target.errors[where] = message
