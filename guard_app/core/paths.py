"""Where guard-app keeps its config file and its data (state database, journal).

Paths come from platformdirs so they follow each platform's conventions. The
environment variables GUARD_APP_CONFIG and GUARD_APP_DATA_DIR override them, which
tests and the demo use to stay away from a person's real files.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_config_dir, user_data_dir

from guard_app import APP_NAME

__all__ = ["APP_NAME", "CONFIG_ENV", "DATA_DIR_ENV", "default_config_path", "default_data_dir"]
CONFIG_ENV = "GUARD_APP_CONFIG"
DATA_DIR_ENV = "GUARD_APP_DATA_DIR"


def default_config_path() -> Path:
    """The config file used when no ``--config`` is given."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def default_data_dir() -> Path:
    """The data directory used when no ``--data-dir`` is given (not created here)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(user_data_dir(APP_NAME, appauthor=False))
