"""API keys in the OS keyring: the only module that talks to ``keyring``.

Layout (a contract other tools rely on): service ``guard-app``, username = account id,
password = a JSON object ``{"apiKey": ..., "secret": ..., "password": ...}`` with
``password`` only where the exchange needs one. The remote API's bearer token is the
entry with username ``api-token`` (password = the token itself).

There is never a plaintext fallback: keyring's ``fail``/``null`` backends and the
file-based backends of ``keyrings.alt`` are refused with an error saying how to get a
real keyring. Every keyring failure becomes a SecretStoreError whose message a person
can act on and which never contains key material.

One place at a time (issue 9 item 11): gnome-keyring misbehaves when one process
reads it from several threads at once ("Prompt dismissed", "Set changed size during
iteration"). So every keyring call of this process goes through one lock, async code
reads keys with :meth:`SecretStore.aget` on ONE worker thread shared by every store,
what was read is kept until the keys change (``set``/``delete`` of any store in this
process drop it; a change made by another process is picked up after
``KEYS_REREAD_SECONDS``), and a failing keyring call is retried twice with a short
back-off before it is reported.

:class:`MemorySecretStore` implements the same small protocol
(:class:`SecretStoreProtocol`) in memory, for the demo and for tests that don't need
D-Bus. It never touches the OS keyring.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import keyring
import keyring.errors
from keyring.backend import KeyringBackend

from guard_app import APP_NAME
from guard_app.core.errors import SecretStoreError

T = TypeVar("T")

# The one list of credential field names (ccxt's ``requiredCredentials`` and the
# spellings people use for them). The config refuses them in ``[accounts.ccxt]``, the
# journal refuses them in its data, the broker strips them from user settings.
CREDENTIAL_KEYS = frozenset(
    {"apiKey", "secret", "password", "uid", "login", "twofa", "privateKey",
     "walletAddress", "token", "secretKey", "passphrase"}
)


def _normalised(name: object) -> str:
    return str(name).lower().replace("_", "").replace("-", "")


_CREDENTIAL_NAMES = frozenset(_normalised(k) for k in CREDENTIAL_KEYS)


def is_credential_key(name: object) -> bool:
    """True for a field name that holds a credential, however it is spelt
    (``apiKey``, ``api_key``, ``APIKEY``, ``pass-phrase``...)."""
    return _normalised(name) in _CREDENTIAL_NAMES


# A change made by another process (``guard-app keys set`` while the app runs) is
# noticed after at most this long; changes made in this process are seen at once.
KEYS_REREAD_SECONDS = 10.0
# Back-off before the 2nd and 3rd try of a failing keyring call.
RETRY_BACKOFF_SECONDS = (0.05, 0.25)

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


class SecretReader(Protocol):
    """What the enforcer and ``status`` need: read one account's keys."""

    def get(self, account_id: str) -> ApiKeys | None:
        """The keys of ``account_id`` (blocking), or None when nothing is stored."""
        ...

    async def aget(self, account_id: str) -> ApiKeys | None:
        """The same, without blocking the event loop."""
        ...


class SecretStoreProtocol(SecretReader, Protocol):
    """A place to keep API keys: the OS keyring, or memory for the demo and tests."""

    def set(self, account_id: str, keys: ApiKeys) -> None:
        """Store (or replace) the keys of ``account_id``."""
        ...

    def delete(self, account_id: str) -> bool:
        """Remove the keys of ``account_id``; True if anything was stored."""
        ...

    def check_available(self) -> None:
        """Raise SecretStoreError unless the store can be used right now."""
        ...

    def get_api_token(self) -> str | None:
        """The remote API's bearer token, or None when none was created."""
        ...

    def set_api_token(self, token: str) -> None:
        """Store (or replace) the remote API's bearer token."""
        ...


class MemorySecretStore:
    """Keys held in memory only: the demo's fake simulator keys, and tests without D-Bus.

    Real keys never go through this class: nothing here survives the process.
    """

    def __init__(self, keys: dict[str, ApiKeys] | None = None) -> None:
        self._keys = dict(keys or {})
        self._api_token: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemorySecretStore({len(self._keys)} accounts)"

    def get(self, account_id: str) -> ApiKeys | None:
        with self._lock:
            return self._keys.get(account_id)

    async def aget(self, account_id: str) -> ApiKeys | None:
        return self.get(account_id)

    def set(self, account_id: str, keys: ApiKeys) -> None:
        if not account_id:
            raise ValueError("account_id must not be empty")
        with self._lock:
            self._keys[account_id] = keys

    def delete(self, account_id: str) -> bool:
        with self._lock:
            return self._keys.pop(account_id, None) is not None

    def check_available(self) -> None:
        return None

    def get_api_token(self) -> str | None:
        with self._lock:
            return self._api_token

    def set_api_token(self, token: str) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        with self._lock:
            self._api_token = token


class _KeyringGate:
    """The process's one door to the OS keyring: a lock every call holds, one worker
    thread for async reads, and the keys read so far."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        # (service, backend, account id) -> (keys or None, monotonic time read)
        self.cache: dict[tuple[str, str, str], tuple[ApiKeys | None, float]] = {}

    def executor(self) -> ThreadPoolExecutor:
        with self.lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="guard-keyring")
            return self._executor


_GATE = _KeyringGate()


class SecretStore:
    """API keys per account in the OS keyring (service ``guard-app``).

    ``backend`` picks a keyring backend explicitly (tests); by default keyring's own
    choice is used (which honours PYTHON_KEYRING_BACKEND and keyringrc.cfg). An
    insecure or non-functional backend is refused on every call.
    """

    SERVICE = APP_NAME
    _PROBE_USERNAME = "guard-app availability check"

    def __init__(self, service: str = SERVICE, backend: KeyringBackend | None = None) -> None:
        self.service = service
        self._backend = backend
        self._backend_id = "default" if backend is None else str(id(backend))

    def __repr__(self) -> str:
        return f"SecretStore(service={self.service!r}, backend={self._backend_name()})"

    def get(self, account_id: str) -> ApiKeys | None:
        """The keys stored for ``account_id``, or None when nothing is stored (blocking:
        always asks the keyring, and refreshes what :meth:`aget` keeps)."""
        backend = self._usable_backend()
        with _GATE.lock:
            raw = self._call(
                lambda: backend.get_password(self.service, account_id),
                f"reading the keys of {account_id}",
            )
            keys = None if raw is None else ApiKeys.from_json(raw, account_id)
            _GATE.cache[(self.service, self._backend_id, account_id)] = (keys, time.monotonic())
        return keys

    async def aget(self, account_id: str) -> ApiKeys | None:
        """The keys of ``account_id`` without blocking the loop: what was read before if
        it is fresh (see module doc), else one read on the process's keyring thread."""
        cached = self._cached(account_id)
        if cached is not None:
            return cached[0]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_GATE.executor(), self._read_once, account_id)

    def _read_once(self, account_id: str) -> ApiKeys | None:
        # Several coroutines may have queued the same read: the first one does it.
        cached = self._cached(account_id)
        return cached[0] if cached is not None else self.get(account_id)

    def _cached(self, account_id: str) -> tuple[ApiKeys | None] | None:
        with _GATE.lock:
            entry = _GATE.cache.get((self.service, self._backend_id, account_id))
        if entry is None or time.monotonic() - entry[1] > KEYS_REREAD_SECONDS:
            return None
        return (entry[0],)

    def forget(self, account_id: str | None = None) -> None:
        """Drop what was read (one account, or all) by any store of this service: the
        next ``aget`` asks the keyring. For a "keys changed" notice from elsewhere."""
        with _GATE.lock:
            for key in [k for k in _GATE.cache if k[0] == self.service
                        and (account_id is None or k[2] == account_id)]:
                del _GATE.cache[key]

    def set(self, account_id: str, keys: ApiKeys) -> None:
        """Store (or replace) the keys of ``account_id``."""
        if not account_id:
            raise ValueError("account_id must not be empty")
        backend = self._usable_backend()
        with _GATE.lock:
            self.forget(account_id)
            self._call(
                lambda: backend.set_password(self.service, account_id, keys.to_json()),
                f"storing the keys of {account_id}", keys,
            )

    def delete(self, account_id: str) -> bool:
        """Remove the keys of ``account_id``; True if anything was stored."""
        backend = self._usable_backend()

        def remove() -> bool:
            deleted = False
            # Look first: backends signal "nothing there" and real failures with the
            # same PasswordDeleteError. The loop removes stray duplicates too.
            for _ in range(8):
                if backend.get_password(self.service, account_id) is None:
                    break
                backend.delete_password(self.service, account_id)
                deleted = True
            return deleted

        with _GATE.lock:
            self.forget(account_id)
            return self._call(remove, f"deleting the keys of {account_id}")

    # ---- other secrets of the app: the API token, the desk database's password ----

    API_TOKEN_USERNAME = "api-token"  # noqa: S105 - a keyring username, not a secret
    #: Keyring username of the desk database's password (``guard-app state password``).
    STATE_DB_USERNAME = "state-db"

    def _get_entry(self, username: str, doing: str) -> str | None:
        """A secret of the app by keyring username (blocking: always asks the keyring, so a
        change by another process is seen at the next call)."""
        backend = self._usable_backend()
        with _GATE.lock:
            raw = self._call(lambda: backend.get_password(self.service, username), doing)
        return raw or None

    def _set_entry(self, username: str, value: str, doing: str) -> None:
        if not value:
            raise ValueError(f"{doing}: the value must not be empty")
        backend = self._usable_backend()
        try:
            with _GATE.lock:
                self._call(lambda: backend.set_password(self.service, username, value), doing)
        except SecretStoreError as exc:
            # Backends don't echo what they were given, but we don't rely on that.
            if value in str(exc):
                raise type(exc)(str(exc).replace(value, _HIDDEN)) from None
            raise

    def get_api_token(self) -> str | None:
        """The remote API's bearer token, or None when none was created."""
        return self._get_entry(self.API_TOKEN_USERNAME, "reading the API token")

    def set_api_token(self, token: str) -> None:
        """Store (or replace) the remote API's bearer token."""
        self._set_entry(self.API_TOKEN_USERNAME, token, "storing the API token")

    def state_password(self) -> str | None:
        """The shared state database's password, or None when none is stored."""
        return self._get_entry(self.STATE_DB_USERNAME, "reading the state database password")

    def set_state_password(self, password: str) -> None:
        """Store (or replace) the shared state database's password."""
        self._set_entry(self.STATE_DB_USERNAME, password, "storing the state database password")

    def check_available(self) -> None:
        """Raise SecretStoreError unless the keyring can be used right now (e.g. unlocked)."""
        backend = self._usable_backend()
        with _GATE.lock:
            self._call(lambda: backend.get_password(self.service, self._PROBE_USERNAME),
                       "opening the keyring")

    @staticmethod
    def _call(action: Callable[[], T], doing: str, keys: ApiKeys | None = None) -> T:
        """Run one keyring call, retrying a failure twice (gnome-keyring has transient
        ones: "Prompt dismissed", "Set changed size during iteration")."""
        for backoff in (*RETRY_BACKOFF_SECONDS, None):
            try:
                return action()
            except Exception as exc:
                if backoff is None:
                    raise _translate(exc, doing, keys) from None
            time.sleep(backoff)
        raise AssertionError("unreachable")  # pragma: no cover

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
