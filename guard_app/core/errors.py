"""guard-app's own error types.

The broker adapter translates every ccxt exception into one of these (it is the only
module that knows ccxt); the enforcer and the CLI only know these. Each error carries
a message written for a trader: what happened, to which account, what happens next.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What kind of failure an account (or the app) hit: decides how it is retried and
    how it is shown. Every error class below carries its kind (``GuardError.kind``)."""

    TEMPORARY = "temporary"  # network, timeout, maintenance: retried next cycle
    RATE_LIMITED = "rate_limited"  # the exchange asked us to slow down: parked as asked
    NEEDS_USER = "needs_user"  # key refused or lacks a permission: a person must act
    NO_KEYS = "no_keys"  # nothing stored in the keyring for the account
    KEYRING = "keyring"  # the OS keyring failed, is locked or missing
    CONFIG = "config"  # the config (or an account setting) is unusable
    STATE = "state"  # the state database is unusable
    REJECTED = "rejected"  # the exchange refused an order
    INTERNAL = "internal"  # a bug in guard-app


class GuardError(Exception):
    """Base class of every error guard-app raises on purpose."""

    kind: ErrorKind = ErrorKind.INTERNAL


class ConfigError(GuardError):
    """The config file is unusable. ``key`` names the offending key (dotted path)."""

    kind = ErrorKind.CONFIG

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


class SecretStoreError(GuardError):
    """The OS keyring can't be used (missing backend, locked, refused).

    The message says what a person can do about it; there is never a plaintext fallback.
    """

    kind = ErrorKind.KEYRING


class StateError(GuardError):
    """The state database is unreadable or corrupt. Forced-unwind flags must not be lost."""

    kind = ErrorKind.STATE


class BrokerError(GuardError):
    """Something went wrong talking to an exchange for one account.

    ``reason`` is the exchange's own words (code and message) where it gave any.
    """

    kind = ErrorKind.TEMPORARY
    retry: str = "retrying next cycle"

    def __init__(
        self, account_id: str, reason: str, *, code: str | None = None, symbol: str | None = None
    ) -> None:
        self.account_id = account_id
        self.reason = reason
        self.code = code
        self.symbol = symbol
        super().__init__(reason)

    def describe(self) -> str:
        """One line for logs and the GUI."""
        what = f" {self.symbol}" if self.symbol else ""
        return f"{self.account_id}:{what} {self.reason}"


class TemporaryBrokerError(BrokerError):
    """Network trouble, timeouts, exchange maintenance: retried next cycle."""


class RateLimitedError(TemporaryBrokerError):
    """The exchange asked us to slow down (429, 418 ban, -1003).

    ``retry_after`` is in seconds when the exchange said how long, else None.
    """

    kind = ErrorKind.RATE_LIMITED

    def __init__(
        self,
        account_id: str,
        reason: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        symbol: str | None = None,
    ) -> None:
        super().__init__(account_id, reason, code=code, symbol=symbol)
        self.retry_after = retry_after


class OrderUnknownError(TemporaryBrokerError):
    """A close order was sent but the answer was lost: it may have executed.

    The position must be re-read before another close is sent.
    """


class NeedsUserError(BrokerError):
    """Authentication or permission failure: a person must fix the keys."""

    kind = ErrorKind.NEEDS_USER

    retry = "needs you: check the API key and its permissions"


class PermissionDeniedError(NeedsUserError):
    """The key was accepted but lacks a permission (reading, trading) for this action."""


class SandboxUnavailableError(BrokerError):
    """The account asks for a sandbox/testnet the exchange does not offer."""

    kind = ErrorKind.CONFIG


class OrderRejectedError(BrokerError):
    """The exchange refused a close order (insufficient funds, filters, reduce-only)."""

    kind = ErrorKind.REJECTED
