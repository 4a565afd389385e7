"""What to do when the OS keyring is locked or missing, in words for each platform.

guard-app keeps API keys only in the OS keyring (never a plain file), so when the
keyring can't be used the accounts dialog shows one of these texts: what happened and
the concrete steps on this platform. Accounts whose keys can't be read stay listed,
marked, and the others keep being enforced.
"""

from __future__ import annotations

import sys

from guard_app.core.errors import SecretStoreError
from guard_app.core.secrets import KeyringLockedError

_LOCKED = {
    "linux": (
        "Unlock your login keyring: open 'Passwords and Keys' (Seahorse) or KDE Wallet "
        "Manager, right-click the 'Login' keyring and choose Unlock, then press Retry. "
        "It normally unlocks when you log in to your desktop with your password."
    ),
    "darwin": (
        "Unlock your login keychain: open Keychain Access, select the 'login' keychain "
        "and choose File > Unlock Keychain \"login\", then press Retry."
    ),
    "win32": (
        "Windows Credential Manager can't be reached in this session: sign in to Windows "
        "with your own account (not a service or remote session without a profile), "
        "then press Retry."
    ),
}
_MISSING = {
    "linux": (
        "guard-app needs a Secret Service keyring. Install gnome-keyring (Debian/Ubuntu: "
        "'sudo apt install gnome-keyring') or KWallet, log in to a desktop session so it "
        "starts, then restart guard-app. On a machine without a desktop, run guard-app "
        "inside 'dbus-run-session' with 'gnome-keyring-daemon --unlock' started first."
    ),
    "darwin": (
        "guard-app stores keys in the macOS Keychain. Run it as your logged-in user "
        "(not over a plain SSH session), check Keychain Access opens, then press Retry."
    ),
    "win32": (
        "guard-app stores keys in Windows Credential Manager (Control Panel > "
        "Credential Manager). Run it as your own signed-in user, then press Retry."
    ),
}


def _platform_key(platform: str) -> str:
    if platform.startswith("linux") or platform.startswith("freebsd"):
        return "linux"
    if platform == "darwin":
        return "darwin"
    if platform in ("win32", "cygwin"):
        return "win32"
    return "linux"


def keyring_title(error: SecretStoreError) -> str:
    """A short headline for the problem."""
    if isinstance(error, KeyringLockedError):
        return "The keyring is locked"
    return "No usable keyring"


def keyring_help(error: SecretStoreError, platform: str | None = None) -> str:
    """What to do about ``error`` on ``platform`` (default: this machine)."""
    key = _platform_key(platform or sys.platform)
    steps = (_LOCKED if isinstance(error, KeyringLockedError) else _MISSING)[key]
    return (
        f"{keyring_title(error)}: {error}\n\n{steps}\n\n"
        "Until then, accounts whose keys can't be read are marked and skipped; "
        "the other accounts keep being enforced. API keys are never stored in a file."
    )
