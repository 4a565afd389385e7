"""One keyring caller at a time (issue 9 item 11), on the real Secret Service:
async reads go through one worker thread, what was read is kept until the keys
change, and a transient failure is retried before it is reported."""

from __future__ import annotations

import asyncio
import threading
import time

import keyring
import pytest
from keyring.backend import KeyringBackend

from guard_app.core.errors import SecretStoreError
from guard_app.core.secrets import ApiKeys, MemorySecretStore, SecretStore, SecretStoreProtocol

ACCOUNTS = [f"serial-{i}" for i in range(7)]


class Watched(KeyringBackend):
    """The real Secret Service backend, with a count of calls in flight at once and
    optional failures injected before the real call."""

    priority = -100  # never chosen by keyring itself

    def __init__(self, fail_first: int = 0, error: Exception | None = None) -> None:
        super().__init__()
        self.real = keyring.get_keyring()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.reads = 0
        self.fail_left = fail_first
        self.error = error or RuntimeError("Set changed size during iteration")

    def _enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            failing, self.fail_left = self.fail_left > 0, max(0, self.fail_left - 1)
        if failing:
            self._leave()
            raise self.error
        time.sleep(0.005)  # widen the window in which a second caller would overlap

    def _leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def get_password(self, service: str, username: str) -> str | None:
        self._enter()
        try:
            self.reads += 1
            return self.real.get_password(service, username)
        finally:
            self._leave()

    def set_password(self, service: str, username: str, password: str) -> None:
        self._enter()
        try:
            self.real.set_password(service, username, password)
        finally:
            self._leave()

    def delete_password(self, service: str, username: str) -> None:
        self._enter()
        try:
            self.real.delete_password(service, username)
        finally:
            self._leave()


def keys(n: int) -> ApiKeys:
    return ApiKeys(f"serial-key-{n}", f"serial-secret-{n}")


def test_concurrent_reads_reach_the_keyring_one_at_a_time(secret_store: SecretStore) -> None:
    for n, account in enumerate(ACCOUNTS):
        secret_store.set(account, keys(n))
    backend = Watched()
    store = SecretStore(backend=backend)

    async def read_all() -> list[ApiKeys | None]:
        # seven accounts at once from the loop, plus blocking reads from other threads
        threads = [asyncio.to_thread(store.get, a) for a in ACCOUNTS[:3]]
        results = await asyncio.gather(*(store.aget(a) for a in ACCOUNTS), *threads)
        return list(results[: len(ACCOUNTS)])

    got = asyncio.run(read_all())

    assert got == [keys(n) for n in range(len(ACCOUNTS))]
    assert backend.max_in_flight == 1


def test_keys_are_kept_until_they_change(secret_store: SecretStore) -> None:
    secret_store.set("serial-cache", keys(1))
    backend = Watched()
    store = SecretStore(backend=backend)

    async def twice() -> tuple[ApiKeys | None, ApiKeys | None]:
        return await store.aget("serial-cache"), await store.aget("serial-cache")

    first, second = asyncio.run(twice())
    assert first == second == keys(1)
    assert backend.reads == 1  # the second read came from what was kept
    # Keys changed through another SecretStore of this process (e.g. the accounts
    # dialog): the next read sees them at once.
    SecretStore().set("serial-cache", keys(2))
    assert asyncio.run(store.aget("serial-cache")) == keys(2)
    SecretStore().delete("serial-cache")
    assert asyncio.run(store.aget("serial-cache")) is None


def test_a_transient_keyring_failure_is_retried(secret_store: SecretStore) -> None:
    secret_store.set("serial-retry", keys(3))
    backend = Watched(fail_first=2)
    store = SecretStore(backend=backend)

    assert asyncio.run(store.aget("serial-retry")) == keys(3)
    assert backend.fail_left == 0


def test_a_lasting_keyring_failure_is_reported_without_key_material(
    secret_store: SecretStore,
) -> None:
    backend = Watched(fail_first=10)
    store = SecretStore(backend=backend)

    with pytest.raises(SecretStoreError) as caught:
        asyncio.run(store.aget("serial-broken"))
    assert "reading the keys of serial-broken" in str(caught.value)
    assert backend.fail_left == 7  # three tries, then reported


def test_memory_store_keeps_the_protocol() -> None:
    store: SecretStoreProtocol = MemorySecretStore()
    assert store.get("m") is None
    store.set("m", keys(4))
    assert asyncio.run(store.aget("m")) == keys(4)
    assert store.delete("m") is True and store.delete("m") is False
    assert "serial-secret" not in repr(store)
    store.check_available()
