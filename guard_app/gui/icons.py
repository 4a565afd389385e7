"""The one place the GUI loads icon files: a cache of ``QIcon`` objects from resources.

Everything else asks here (``app_icon()``, ``tray_icon_for_state("over_cap")``), so an
icon file is read once and the state → icon mapping lives in one spot.
"""

from __future__ import annotations

from functools import cache

from PySide6.QtGui import QIcon

from guard_app.resources import TRAY_ICON_FOR_STATE, icon_path

APP_ICON = "guard-app"

# States without a tray icon of their own borrow the closest one: an account without
# keys is not being guarded (like an error); "pending" (not read yet) is not a problem.
_TRAY_FALLBACK: dict[str, str] = {
    "no_keys": "tray-error",
    "pending": "tray-ok",
    "stalled": "tray-error",
}


@cache
def icon(name: str) -> QIcon:
    """The bundled icon ``name`` (file name without ``.svg``), loaded once."""
    return QIcon(str(icon_path(name)))


def app_icon() -> QIcon:
    """The application / window icon."""
    return icon(APP_ICON)


def tray_icon_name(state: str) -> str:
    """Which tray icon shows ``state`` (an AccountState value, or ``"stalled"``)."""
    return TRAY_ICON_FOR_STATE.get(state) or _TRAY_FALLBACK.get(state, "tray-error")


def tray_icon_for_state(state: str) -> QIcon:
    """The tray icon for a state; unknown states show the error icon."""
    return icon(tray_icon_name(state))
