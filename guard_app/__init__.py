"""guard-app: a desktop safety net that keeps crypto trading accounts under their caps.

The app's name (config/data directories, keyring service, window title) and the
process exit codes live here, once, for every layer to import.
"""

from enum import IntEnum

__version__ = "0.1.0"
APP_NAME = "guard-app"


class ExitCode(IntEnum):
    """Process exit codes of every ``guard-app`` command (docs: CLI contract)."""

    OK = 0
    FAILED = 1  # an account failed (``run --once``, ``status``) or a confirmation was declined
    USAGE = 2  # bad usage or config
