"""The accounts dialog's rules without widgets: key status, checks, save, rename, remove.

Keys go to the in-memory key store the demo uses (no D-Bus needed); the keyring's own
failures are raised by a store that refuses, as a locked or absent keyring does. The
dialog with the real keyring is tests/gui/test_accounts_dialog.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guard_app.core.config import load_config
from guard_app.core.errors import ConfigError
from guard_app.core.secrets import (
    ApiKeys,
    KeyringUnavailableError,
    MemorySecretStore,
    UnreadableKeysError,
)
from guard_app.gui.model.accounts_editor import (
    KEYRING_DOWN,
    MISSING,
    STORED,
    UNREADABLE,
    AccountsEditor,
    ConnectionTestPlan,
    account_to_form,
    describe_test_result,
    place_config_error,
)

KEYS = ApiKeys(api_key="k-1234", secret="s-5678")


def form(**changes: str) -> dict[str, str]:
    texts = {"id": "a1", "user": "alice", "exchange": "binance", "market": "spot",
             "max_positions": "3", "api_key": "k-1234", "secret": "s-5678"}
    texts.update(changes)
    return texts


class RefusingStore(MemorySecretStore):
    """A key store whose keyring is down for writes (or for everything)."""

    def __init__(self, *, reads_fail: bool = False, unreadable: str = "") -> None:
        super().__init__()
        self.reads_fail = reads_fail
        self.unreadable = unreadable

    def get(self, account_id: str) -> ApiKeys | None:
        if self.reads_fail:
            raise KeyringUnavailableError("no Secret Service on the session bus")
        if account_id == self.unreadable:
            raise UnreadableKeysError(account_id, "not JSON")
        return super().get(account_id)

    def set(self, account_id: str, keys: ApiKeys) -> None:
        raise KeyringUnavailableError("no Secret Service on the session bus")

    def delete(self, account_id: str) -> bool:
        raise KeyringUnavailableError("no Secret Service on the session bus")


def saved_editor(tmp_path: Path, store: MemorySecretStore | None = None) -> AccountsEditor:
    editor = AccountsEditor(tmp_path / "config.toml", store or MemorySecretStore())
    assert editor.reload() == ""
    editor.new_account()
    assert editor.save(form(), False).config is not None
    editor.reload()
    return editor


def test_a_new_account_is_saved_with_its_keys_only_in_the_key_store(tmp_path: Path) -> None:
    store = MemorySecretStore()
    editor = saved_editor(tmp_path, store)
    assert store.get("a1") == KEYS
    text = (tmp_path / "config.toml").read_text()
    assert "k-1234" not in text and "s-5678" not in text
    assert [a.id for a in load_config(tmp_path / "config.toml").accounts] == ["a1"]
    assert editor.key_status == {"a1": STORED}
    assert editor.list_rows() == [("a1", "a1   binance spot · alice   ✓ keys")]


def test_an_account_with_stored_keys_shows_them_as_stored_not_as_fields(tmp_path: Path) -> None:
    editor = saved_editor(tmp_path)
    texts, sandbox = editor.select("a1") or ({}, True)
    assert texts["id"] == "a1" and texts["max_positions"] == "3" and texts["api_key"] == ""
    assert sandbox is False
    box = editor.keys_box("binance")
    assert box.text == "keys stored ✓" and box.replace_visible and box.visible == ()
    editor.entering_keys = True  # "Replace keys…"
    assert editor.keys_box("okx").visible == ("api_key", "secret", "password")
    assert editor.keys_box("binance").visible == ("api_key", "secret")
    assert editor.select("gone") is None


def test_key_status_tells_missing_unreadable_and_keyring_down_apart(tmp_path: Path) -> None:
    saved_editor(tmp_path)
    (tmp_path / "config.toml").write_text(
        (tmp_path / "config.toml").read_text()
        + '\n[[accounts]]\nid = "b2"\nuser = "bob"\nexchange = "binance"\nmax_positions = 2\n')
    editor = AccountsEditor(tmp_path / "config.toml", RefusingStore(unreadable="a1"))
    editor.reload()
    assert editor.key_status == {"a1": UNREADABLE, "b2": MISSING}
    assert editor.keyring_error is None
    editor.select("a1")
    assert editor.keys_box("binance").text == "⚠ the stored keys are unreadable: enter them again"
    editor.select("b2")
    assert "no keys stored" in editor.keys_box("binance").text

    down = AccountsEditor(tmp_path / "config.toml", RefusingStore(reads_fail=True))
    down.reload()
    assert down.key_status == {"a1": KEYRING_DOWN, "b2": KEYRING_DOWN}
    assert isinstance(down.keyring_error, KeyringUnavailableError)
    assert "keys can't be read or stored now" in down.keys_box("binance").text


def test_the_check_names_the_field_and_the_missing_half_of_the_keys(tmp_path: Path) -> None:
    editor = AccountsEditor(tmp_path / "config.toml", MemorySecretStore())
    editor.reload()
    editor.new_account()
    assert editor.check(form(), False).valid
    bad = editor.check(form(max_positions="many", secret=""), False)
    assert not bad.valid
    assert "max_positions" in bad.errors
    assert bad.errors["secret"] == "enter the secret that goes with this key"
    okx = editor.check(form(exchange="okx"), False)
    assert okx.errors == {"password": "this exchange needs the key's passphrase"}
    assert not okx.valid
    assert editor.check(form(ccxt="{nope"), False).errors["ccxt"].startswith("not valid JSON")


def test_a_sandbox_the_exchange_lacks_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    editor = AccountsEditor(tmp_path / "config.toml", MemorySecretStore())
    editor.reload()
    editor.new_account()
    from guard_app.exchanges.catalog import exchange_ids, sandbox_offered

    without = next(e for e in exchange_ids() if not sandbox_offered(e))
    check = editor.check(form(exchange=without), True)
    assert "sandbox not offered" in check.errors["sandbox"]
    assert editor.plan_test(form(exchange=without), True) == (
        "sandbox not offered by this exchange: untick 'Sandbox'")


def test_renaming_moves_the_keys_to_the_new_id(tmp_path: Path) -> None:
    store = MemorySecretStore()
    editor = saved_editor(tmp_path, store)
    editor.select("a1")
    outcome = editor.save(form(id="a2", api_key="", secret=""), False)
    assert outcome.config is not None and outcome.account_id == "a2"
    assert store.get("a2") == KEYS and store.get("a1") is None


def test_a_file_edited_on_disk_is_not_overwritten_and_new_keys_are_removed_again(
    tmp_path: Path,
) -> None:
    store = MemorySecretStore()
    editor = saved_editor(tmp_path, store)
    path = tmp_path / "config.toml"
    by_hand = path.read_text() + "# edited by hand\n"
    path.write_text(by_hand)
    editor.new_account()
    outcome = editor.save(form(id="b2", user="bob"), False)
    assert outcome.config is None
    assert "changed on disk" in outcome.form_error
    assert path.read_text() == by_hand
    assert store.get("b2") is None  # stored for the save, removed when the write failed
    assert store.get("a1") == KEYS


def test_keys_the_keyring_refuses_save_nothing(tmp_path: Path) -> None:
    editor = AccountsEditor(tmp_path / "config.toml", RefusingStore())
    editor.reload()
    editor.new_account()
    outcome = editor.save(form(), False)
    assert outcome.config is None
    assert outcome.errors["api_key"].startswith("the keys could not be stored, nothing was saved")
    assert isinstance(outcome.keyring_error, KeyringUnavailableError)
    assert not (tmp_path / "config.toml").exists()


def test_remove_drops_the_account_and_its_keys(tmp_path: Path) -> None:
    store = MemorySecretStore()
    editor = saved_editor(tmp_path, store)
    editor.select("a1")
    outcome = editor.remove("a1")
    assert outcome.config is not None and outcome.config.accounts == ()
    assert store.get("a1") is None and editor.editing_id is None


def test_a_test_uses_typed_keys_or_the_stored_ones_and_says_what_is_missing(
    tmp_path: Path,
) -> None:
    editor = saved_editor(tmp_path)
    editor.new_account()
    assert editor.plan_test(form(api_key="", secret=""), False) == (
        "Enter the API key and secret first.")
    assert editor.plan_test(form(max_positions="x"), False) == "Fix the marked fields first."
    typed = editor.plan_test(form(), False)
    assert isinstance(typed, ConnectionTestPlan) and typed.keys == KEYS and typed.stored_id is None
    editor.select("a1")
    stored = editor.plan_test(form(api_key="", secret=""), False)
    assert isinstance(stored, ConnectionTestPlan) and stored.keys is None and stored.stored_id == "a1"
    assert stored.account.id == "a1"


def test_form_texts_and_result_words() -> None:
    texts, sandbox = account_to_form(
        {"id": "a1", "ignore_assets": ["BNB", "FDUSD"], "ccxt": {"timeout": 20000},
         "sandbox": True}, 12)
    assert texts["ignore_assets"] == "BNB, FDUSD" and texts["user_max_positions"] == "12"
    assert '"timeout": 20000' in texts["ccxt"] and sandbox is True
    assert texts["market"] == "spot" and texts["quote"] == ""
    assert describe_test_result(4, 0) == "OK: 4 positions found"
    assert describe_test_result(4, 2) == "OK: 4 positions found (and 2 dust)"
    assert describe_test_result(1, 0, ["coinspot cannot list open orders"]) == (
        "OK: 1 positions found\nNote: coinspot cannot list open orders")
    assert place_config_error(ConfigError("accounts[0].ccxt.apiKey", "not allowed")) == (
        "ccxt", "apiKey: not allowed")
    assert place_config_error(ConfigError("", "boom")) == (None, "boom")


@pytest.mark.parametrize("edit", ["rename", "keep"])
def test_an_edited_account_keeps_its_stored_keys_when_none_are_typed(
    tmp_path: Path, edit: str,
) -> None:
    store = MemorySecretStore()
    editor = saved_editor(tmp_path, store)
    editor.select("a1")
    assert editor.entered_keys(form()) is None  # stored keys: the fields are not read
    new_id = "a9" if edit == "rename" else "a1"
    assert editor.save(form(id=new_id, max_positions="5"), False).config is not None
    assert store.get(new_id) == KEYS
