"""API keys in the OS keyring: the only module that talks to ``keyring``.

Layout (a contract other tools rely on): service ``guard-app``, username = account id,
password = a JSON object ``{"apiKey": ..., "secret": ..., "password": ...}`` with
``password`` only where the exchange needs one.

There is never a plaintext fallback: keyring's ``fail``/``null`` backends and the
file-based backends of ``keyrings.alt`` are refused with an error saying how to get a
real keyring. Every keyring failure becomes a SecretStoreError whose message a person
can act on and which never contains key material.

The calls block (D-Bus round trips, and on a desktop possibly an unlock prompt), so
async code should run them in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import keyring
import keyring.errors
from keyring.backend import KeyringBackend

from guard_app.core.errors import SecretStoreError

NO_KEYRING_MESSAGE = (
    "no OS keyring is available: on Linux install and start gnome-keyring (Secret Service) "
    "or KWallet and log in to a desktop session; on macOS and Windows the system keychain "
    "is used. guard-app never stores API keys in a plain file"
)
LOCKED_MESSAGE = (
    "the keyring is locked: unlock it (log in to your desktop session, or unlock the "
    "'Login' keyring in your keyring manager) and retry"
)


class KeyringUnavailableError(SecretStoreError):
    """No usable OS keyring: none installed or running, or only an insecure backend."""


class KeyringLockedError(SecretStoreError):
    """The keyring exists but is locked and was not unlocked."""


class UnreadableKeysError(SecretStoreError):
    """Something is stored for an account but it isn't valid guard-app keys JSON."""

    def __init__(self, account_id: str, problem: str) -> None:
        self.account_id = account_id
        super().__init__(
            f"keys stored for {account_id} are unreadable ({problem}): set them again with "
            f"'guard-app keys set {account_id}'"
        )


_HIDDEN = "<hidden>"
_JSON_FIELDS = ("apiKey", "secret", "password")


@dataclass(frozen=True, slots=True, repr=False)
class ApiKeys:
    """One account's exchange credentials. Its repr and str never show the values."""

    api_key: str
    secret: str
    password: str | None = None

    def __post_init__(self) -> None:
        # Messages name the field only: the value may be a secret.
        for name in ("api_key", "secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        if self.password is not None and not isinstance(self.password, str):
            raise ValueError("password must be a string or None")

    def __repr__(self) -> str:
        password = "None" if self.password is None else _HIDDEN
        return f"ApiKeys(api_key={_HIDDEN}, secret={_HIDDEN}, password={password})"

    __str__ = __repr__

    def to_ccxt(self) -> dict[str, str]:
        """The credential part of a ccxt constructor config."""
        config = {"apiKey": self.api_key, "secret": self.secret}
        if self.password:
            config["password"] = self.password
        return config

    def to_json(self) -> str:
        """The keyring password string (the stored layout)."""
        return json.dumps(self.to_ccxt(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, account_id: str) -> ApiKeys:
        """Parse the stored layout strictly; UnreadableKeysError names the problem only."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise UnreadableKeysError(account_id, "not a JSON object") from None
        if not isinstance(data, dict):
            raise UnreadableKeysError(account_id, "not a JSON object")
        # Unknown field names are not echoed: a mangled entry may use a secret as a name.
        unknown = sum(1 for k in data if k not in _JSON_FIELDS)
        if unknown:
            expected = ", ".join(_JSON_FIELDS)
            raise UnreadableKeysError(
                account_id, f"{unknown} unexpected field(s); expected only {expected}"
            )
        for name in ("apiKey", "secret"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise UnreadableKeysError(account_id, f"{name} is missing or empty")
        password = data.get("password")
        if password is not None and not isinstance(password, str):
            raise UnreadableKeysError(account_id, "password is not a string")
        return cls(api_key=data["apiKey"], secret=data["secret"], password=password or None)


class SecretStore:
    """API keys per account in the OS keyring (service ``guard-app``).

    ``backend`` picks a keyring backend explicitly (tests); by default keyring's own
    choice is used (which honours PYTHON_KEYRING_BACKEND and keyringrc.cfg). An
    insecure or non-functional backend is refused on every call.
    """

    SERVICE = "guard-app"
    _PROBE_USERNAME = "guard-app availability check"

    def __init__(self, service: str = SERVICE, backend: KeyringBackend | None = None) -> None:
        self.service = service
        self._backend = backend

    def __repr__(self) -> str:
        return f"SecretStore(service={self.service!r}, backend={self._backend_name()})"

    def get(self, account_id: str) -> ApiKeys | None:
        """The keys stored for ``account_id``, or None when nothing is stored."""
        backend = self._usable_backend()
        try:
            raw = backend.get_password(self.service, account_id)
        except Exception as exc:
            raise _translate(exc, f"reading the keys of {account_id}") from None
        if raw is None:
            return None
        return ApiKeys.from_json(raw, account_id)

    def set(self, account_id: str, keys: ApiKeys) -> None:
        """Store (or replace) the keys of ``account_id``."""
        if not account_id:
            raise ValueError("account_id must not be empty")
        backend = self._usable_backend()
        try:
            backend.set_password(self.service, account_id, keys.to_json())
        except Exception as exc:
            raise _translate(exc, f"storing the keys of {account_id}", keys) from None

    def delete(self, account_id: str) -> bool:
        """Remove the keys of ``account_id``; True if anything was stored."""
        backend = self._usable_backend()
        deleted = False
        try:
            # Look first: backends signal "nothing there" and real failures with the
            # same PasswordDeleteError. The loop removes stray duplicates too.
            for _ in range(8):
                if backend.get_password(self.service, account_id) is None:
                    break
                backend.delete_password(self.service, account_id)
                deleted = True
        except Exception as exc:
            raise _translate(exc, f"deleting the keys of {account_id}") from None
        return deleted

    #: Keyring username of the desk database's password (``guard-app state password``).
    STATE_DB_USERNAME = "state-db"

    def state_password(self) -> str | None:
        """The shared state database's password, or None when none is stored."""
        backend = self._usable_backend()
        try:
            return backend.get_password(self.service, self.STATE_DB_USERNAME)
        except Exception as exc:
            raise _translate(exc, "reading the state database password") from None

    def set_state_password(self, password: str) -> None:
        """Store (or replace) the shared state database's password."""
        if not password:
            raise ValueError("the state database password must not be empty")
        backend = self._usable_backend()
        try:
            backend.set_password(self.service, self.STATE_DB_USERNAME, password)
        except Exception as exc:
            raise _translate(exc, "storing the state database password") from None

    def check_available(self) -> None:
        """Raise SecretStoreError unless the keyring can be used right now (e.g. unlocked)."""
        backend = self._usable_backend()
        try:
            backend.get_password(self.service, self._PROBE_USERNAME)
        except Exception as exc:
            raise _translate(exc, "opening the keyring") from None

    # ---- backend selection ----

    def _backend_name(self) -> str:
        backend = self._backend
        if backend is None:
            return "default"
        return f"{type(backend).__module__}.{type(backend).__qualname__}"

    def _usable_backend(self) -> KeyringBackend:
        try:
            backend = self._backend if self._backend is not None else keyring.get_keyring()
        except Exception as exc:
            raise _translate(exc, "opening the keyring") from None
        refusal = _refusal(backend)
        if refusal:
            raise KeyringUnavailableError(f"{NO_KEYRING_MESSAGE} ({refusal})")
        return backend


def _refusal(backend: KeyringBackend) -> str | None:
    """Why ``backend`` must not hold API keys, or None if it is a real keyring."""
    from keyring.backends import chainer, fail, null

    if isinstance(backend, fail.Keyring):
        return "keyring found no backend"
    if isinstance(backend, null.Keyring):
        return "the keyring is switched off (null backend)"
    if isinstance(backend, chainer.ChainerBackend):
        members = list(backend.backends)
        if not members:
            return "keyring found no backend"
        for member in members:
            reason = _refusal(member)
            if reason:
                return reason
        return None
    cls = type(backend)
    module = cls.__module__
    if module == "keyrings.alt" or module.startswith("keyrings.alt."):
        return f"{module}.{cls.__name__} keeps secrets in a file, not an OS keyring"
    if "plaintext" in cls.__name__.lower():
        return f"{module}.{cls.__name__} stores secrets in plain text"
    return None


def _translate(exc: BaseException, doing: str, keys: ApiKeys | None = None) -> SecretStoreError:
    """One actionable SecretStoreError for a keyring failure, with no key material."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, SecretStoreError):
        return exc
    if isinstance(exc, keyring.errors.KeyringLocked) or names & {
        "LockedException",
        "PromptDismissedException",
    }:
        return KeyringLockedError(LOCKED_MESSAGE)
    if isinstance(exc, keyring.errors.NoKeyringError):
        return KeyringUnavailableError(NO_KEYRING_MESSAGE)
    detail = _redact(f"{type(exc).__name__}: {exc}", keys)
    if names & {"SecretServiceNotAvailableException", "DBusErrorResponse"} or isinstance(
        exc, keyring.errors.InitError | OSError
    ):
        return KeyringUnavailableError(
            f"the OS keyring did not answer while {doing} ({detail}): make sure it is "
            f"running (on Linux: gnome-keyring or KWallet in your desktop session) and retry"
        )
    return SecretStoreError(f"the OS keyring failed while {doing} ({detail}); retry, and "
                            f"check the keyring manager if it keeps failing")


def _redact(text: str, keys: ApiKeys | None) -> str:
    # Backends don't put the stored value in their errors, but we don't rely on that.
    if keys is None:
        return text
    for value in (keys.to_json(), keys.api_key, keys.secret, keys.password):
        if value:
            text = text.replace(value, _HIDDEN)
    return text
