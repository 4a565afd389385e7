"""Find guard-app's bundled files (icons) wherever the app runs, and its state colours.

The top-level ``resources/`` folder of the source tree is the single home of the
app's data files. One resolver finds it, trying in order:

1. **Frozen by PyInstaller**: ``sys._MEIPASS/resources`` (the spec lists it in ``datas``).
2. **Installed** (wheel, distro package): ``guard_app/resources/``, where
   ``pyproject.toml`` ships the folder as package data.
3. **Source checkout** (also ``pip install -e .``): ``<repository>/resources``.

The import name ``guard_app.resources`` is this module; the data folder has no
``__init__.py``. This module must not import Qt: the GUI builds ``QIcon`` objects from
these paths, and the core and the command line use it without a display.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

__all__ = [
    "ICON_NAMES",
    "STATE_COLOURS",
    "TRAY_ICON_FOR_STATE",
    "icon_path",
    "resource_path",
    "resource_roots",
]

# One palette for the tray, the accounts table and the charts. Every shade keeps at
# least 3:1 contrast (WCAG non-text) against both white and a dark (#1e1e1e) window,
# so a state reads the same in light and dark themes; the icons add a glyph on top so
# the state never depends on colour alone.
STATE_COLOURS: dict[str, str] = {
    "ok": "#2e9e5b",  # green: every account under its caps
    "over_cap": "#c08400",  # amber: an account is over a cap, the enforcer is acting
    "unwinding": "#d63b3b",  # red: a forced unwind is closing positions
    "error": "#9b4dca",  # purple: the guard cannot do its job (exchange/keyring error)
    "no_keys": "#7a869a",  # slate: an account has no API keys yet
    "dust": "#8a929f",  # grey: positions too small to close (below the exchange minimum)
}

# The icons the app ships, by name (file name without ".svg").
ICON_NAMES: tuple[str, ...] = (
    "guard-app",
    "tray-ok",
    "tray-over-cap",
    "tray-unwinding",
    "tray-error",
)

# Which tray icon shows each state that has one ("no_keys" and "dust" are table-only).
TRAY_ICON_FOR_STATE: dict[str, str] = {
    "ok": "tray-ok",
    "over_cap": "tray-over-cap",
    "unwinding": "tray-unwinding",
    "error": "tray-error",
}

_RESOURCES_DIR = "resources"


def resource_roots() -> list[Path]:
    """The folders searched for resources, in the order they are tried.

    A folder that does not exist is still listed, so an error can say where it looked.
    """
    package = Path(__file__).resolve().parent  # .../guard_app
    meipass = getattr(sys, "_MEIPASS", None)
    frozen = [Path(meipass) / _RESOURCES_DIR] if meipass is not None else []
    return [*frozen, package / _RESOURCES_DIR, package.parent / _RESOURCES_DIR]


def resource_path(relative: str) -> Path:
    """Return the path of a bundled file, e.g. ``resource_path("icons/tray-ok.svg")``.

    ``relative`` uses forward slashes and must stay inside the resources folder.
    Raises ``FileNotFoundError`` naming the file and every place searched, and
    ``ValueError`` for an absolute path or one that climbs out with ``..``.
    """
    parts = _safe_parts(relative)
    for root in resource_roots():
        candidate = root.joinpath(*parts)
        if candidate.is_file():
            return candidate
    searched = "\n".join(f"  - {root.joinpath(*parts)}" for root in resource_roots())
    raise FileNotFoundError(
        f"guard-app could not find its bundled file {relative!r}. Looked in:\n{searched}\n"
        "The installation is incomplete: reinstall guard-app (or, from a source checkout, "
        "run it from the repository so that resources/ is next to guard_app/)."
    )


def icon_path(name: str) -> Path:
    """Return the path of an SVG icon by name, e.g. ``icon_path("tray-ok")``.

    ``name`` is the file name without ``.svg`` (see :data:`ICON_NAMES`); a name that
    already ends in ``.svg`` is accepted. Raises ``FileNotFoundError`` if it is missing.
    """
    file_name = name if name.endswith(".svg") else f"{name}.svg"
    return resource_path(f"icons/{file_name}")


def _safe_parts(relative: str) -> tuple[str, ...]:
    """Split a resource name into path parts, refusing anything outside the folder."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if not relative or pure.is_absolute() or ".." in pure.parts:
        raise ValueError(
            f"resource name {relative!r} must be a relative path inside resources/ "
            "(for example 'icons/tray-ok.svg')"
        )
    return pure.parts
