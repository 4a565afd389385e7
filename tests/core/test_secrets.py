"""SecretStore on the real Secret Service (gnome-keyring), and its refusals.

Run via ``scripts/with-keyring.sh .venv/bin/pytest tests/core/test_secrets.py``.
"""

from __future__ import annotations

import json

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import SecretService, chainer, fail, null

from guard_app.core.errors import SecretStoreError
from guard_app.core.secrets import (
    LOCKED_MESSAGE,
    ApiKeys,
    KeyringLockedError,
    KeyringUnavailableError,
    SecretStore,
    UnreadableKeysError,
)
from tests.fixtures.keyring_fixtures import StoreKeys

SECRET = "s3cr3t-DO-NOT-LEAK-9f8e7d"
API_KEY = "ak-DO-NOT-LEAK-1a2b3c"
PASSPHRASE = "pp-DO-NOT-LEAK-4d5e6f"
KEYS = ApiKeys(api_key=API_KEY, secret=SECRET, password=PASSPHRASE)
MATERIAL = (SECRET, API_KEY, PASSPHRASE)


def assert_no_key_material(text: str) -> None:
    for value in MATERIAL:
        assert value not in text


# ---- ApiKeys ----


def test_api_keys_repr_and_str_hide_every_value() -> None:
    for text in (repr(KEYS), str(KEYS), f"{KEYS}", f"{[KEYS]}"):
        assert_no_key_material(text)
        assert "<hidden>" in text
    assert "password=None" in repr(ApiKeys("a" * 8, "b" * 8))


def test_api_keys_to_ccxt() -> None:
    assert KEYS.to_ccxt() == {"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE}
    assert ApiKeys("k", "s").to_ccxt() == {"apiKey": "k", "secret": "s"}


@pytest.mark.parametrize(("api_key", "secret"), [("", SECRET), (API_KEY, ""), (None, SECRET)])
def test_api_keys_reject_empty_values_without_echoing_them(
    api_key: str, secret: str
) -> None:
    with pytest.raises(ValueError, match="must be a non-empty string") as caught:
        ApiKeys(api_key=api_key, secret=secret)
    assert_no_key_material(str(caught.value))


# ---- the real Secret Service ----


def test_set_get_delete_round_trip(secret_store: SecretStore) -> None:
    assert secret_store.get("rt-account") is None
    secret_store.set("rt-account", KEYS)
    assert secret_store.get("rt-account") == KEYS
    assert secret_store.delete("rt-account") is True
    assert secret_store.get("rt-account") is None
    assert secret_store.delete("rt-account") is False


def test_keys_without_password_round_trip(secret_store: SecretStore) -> None:
    keys = ApiKeys("key-only", "secret-only")
    secret_store.set("no-pass", keys)
    got = secret_store.get("no-pass")
    assert got == keys and got is not None and got.password is None


def test_stored_layout_is_the_documented_contract(secret_store: SecretStore) -> None:
    secret_store.set("layout-account", KEYS)
    raw = keyring.get_password("guard-app", "layout-account")
    assert raw is not None
    assert json.loads(raw) == {"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE}
    secret_store.set("layout-nopass", ApiKeys("k", "s"))
    assert json.loads(keyring.get_password("guard-app", "layout-nopass") or "") == {
        "apiKey": "k",
        "secret": "s",
    }


def test_keys_written_by_another_tool_in_the_layout_are_read(secret_store: SecretStore) -> None:
    keyring.set_password("guard-app", "external", '{"apiKey": "k1", "secret": "s1"}')
    assert secret_store.get("external") == ApiKeys("k1", "s1")


def test_set_replaces_and_accounts_are_separate(secret_store: SecretStore) -> None:
    secret_store.set("acct-a", ApiKeys("a-key", "a-secret"))
    secret_store.set("acct-b", ApiKeys("b-key", "b-secret"))
    secret_store.set("acct-a", ApiKeys("a-key-2", "a-secret-2"))
    assert secret_store.get("acct-a") == ApiKeys("a-key-2", "a-secret-2")
    assert secret_store.get("acct-b") == ApiKeys("b-key", "b-secret")
    assert secret_store.delete("acct-a") is True
    assert secret_store.get("acct-b") == ApiKeys("b-key", "b-secret")


def test_other_services_are_not_touched(secret_store: SecretStore) -> None:
    keyring.set_password("some-other-app", "shared-name", "theirs")
    try:
        secret_store.set("shared-name", ApiKeys("k", "s"))
        assert secret_store.delete("shared-name") is True
        assert keyring.get_password("some-other-app", "shared-name") == "theirs"
    finally:
        keyring.delete_password("some-other-app", "shared-name")


def test_stored_keys_fixture(stored_keys: StoreKeys, secret_store: SecretStore) -> None:
    keys = stored_keys("fixture-account")
    assert secret_store.get("fixture-account") == keys
    assert stored_keys("fixture-2", KEYS) == KEYS == secret_store.get("fixture-2")


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        (f"not json {SECRET}", "not a JSON object"),
        (json.dumps([SECRET]), "not a JSON object"),
        (json.dumps(SECRET), "not a JSON object"),
        (json.dumps({"apiKey": API_KEY}), "secret is missing or empty"),
        (json.dumps({"apiKey": "", "secret": SECRET}), "apiKey is missing or empty"),
        (json.dumps({"apiKey": API_KEY, "secret": 12345}), "secret is missing or empty"),
        (json.dumps({"apiKey": API_KEY, "secret": SECRET, "password": 7}), "password is not"),
        (json.dumps({"apiKey": API_KEY, "secret": SECRET, SECRET: PASSPHRASE}), "unexpected"),
    ],
    ids=["text", "list", "string", "no-secret", "empty-key", "secret-int", "password-int",
         "extra-field"],
)
def test_malformed_stored_keys_name_the_account_not_the_content(
    secret_store: SecretStore, stored: str, problem: str
) -> None:
    keyring.set_password("guard-app", "mangled", stored)
    with pytest.raises(UnreadableKeysError) as caught:
        secret_store.get("mangled")
    message = str(caught.value)
    assert message.startswith("keys stored for mangled are unreadable (")
    assert problem in message
    assert "guard-app keys set mangled" in message
    assert_no_key_material(message)
    # A JSON parse error holds the stored text: it must not be chained for display.
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    # Deleting mangled keys still works, so the person can start over.
    assert secret_store.delete("mangled") is True


def test_check_available_passes_on_an_unlocked_keyring(secret_store: SecretStore) -> None:
    secret_store.check_available()


@pytest.mark.usefixtures("locked_keyring")
def test_locked_keyring_is_reported_as_locked_without_key_material() -> None:
    store = SecretStore()
    for attempt in (
        store.check_available,
        lambda: store.get("any-account"),
        lambda: store.set("any-account", KEYS),
        lambda: store.delete("any-account"),
    ):
        with pytest.raises(KeyringLockedError) as caught:
            attempt()
        assert str(caught.value) == LOCKED_MESSAGE
        assert "the keyring is locked" in str(caught.value)
        assert_no_key_material(str(caught.value))


def test_keyring_is_usable_again_after_the_locked_test(secret_store: SecretStore) -> None:
    secret_store.set("after-lock", KEYS)
    assert secret_store.get("after-lock") == KEYS


# ---- refused backends: never a plaintext or silent fallback ----


class PlaintextKeyring(KeyringBackend):
    """Stands in for keyrings.alt's PlaintextKeyring: it must never receive a write."""

    # Subclasses of KeyringBackend register themselves with keyring; a negative
    # priority keeps keyring from ever choosing this one as the default backend.
    priority = -100

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.writes.append(password)

    def delete_password(self, service: str, username: str) -> None:
        raise AssertionError("must not be called")


@pytest.mark.parametrize(
    "backend",
    [fail.Keyring(), null.Keyring(), PlaintextKeyring()],
    ids=["fail", "null", "plaintext"],
)
def test_insecure_or_missing_backends_are_refused(backend: KeyringBackend) -> None:
    store = SecretStore(backend=backend)
    for attempt in (
        store.check_available,
        lambda: store.get("acct"),
        lambda: store.set("acct", KEYS),
        lambda: store.delete("acct"),
    ):
        with pytest.raises(KeyringUnavailableError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith("no OS keyring is available: on Linux install and start")
        assert "gnome-keyring" in message
        assert_no_key_material(message)
    if isinstance(backend, PlaintextKeyring):
        assert backend.writes == []


def test_chainer_with_only_fail_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [fail.Keyring()])
    store = SecretStore(backend=chainer.ChainerBackend())
    with pytest.raises(KeyringUnavailableError, match="no OS keyring is available"):
        store.check_available()


def test_secret_service_without_a_bus_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real Secret Service backend whose D-Bus session doesn't exist.
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/guard-app-bus")
    store = SecretStore(backend=SecretService.Keyring())
    with pytest.raises(KeyringUnavailableError) as caught:
        store.set("acct", KEYS)
    message = str(caught.value)
    assert "the OS keyring did not answer while storing the keys of acct" in message
    assert "make sure it is running" in message
    assert_no_key_material(message)
    with pytest.raises(SecretStoreError, match="did not answer while opening the keyring"):
        store.check_available()


def test_store_repr_has_no_secrets() -> None:
    assert repr(SecretStore()) == "SecretStore(service='guard-app', backend=default)"
