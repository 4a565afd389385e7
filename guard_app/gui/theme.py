"""Light and dark looks that follow the system, one font scale, the state colours.

``apply_theme(app)`` is called by :func:`guard_app.gui.app.run_app` before the first
window exists (so charts and cards are built in the right colours), and again when the
desktop switches between light and dark. It picks Fusion (the same widgets everywhere), a palette,
a small style sheet for the few custom widgets (state pills, the Forced Unwind
button, cards) and pyqtgraph's background/foreground. Colours for states always
come from :data:`guard_app.resources.STATE_COLOURS`, so a state looks the same in
the pill, the table, the charts and the tray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from guard_app.resources import STATE_COLOURS

__all__ = ["THEME_ENV", "Theme", "apply_theme", "current_theme", "follow_system", "state_colour"]

#: ``light`` or ``dark`` forces a look; unset (or anything else) follows the desktop.
THEME_ENV = "GUARD_APP_THEME"

# Font scale (points relative to the system font): body, small notes, headings.
SMALL = -1
HEADING = 3
BIG_NUMBER = 6


@dataclass(frozen=True)
class Theme:
    """The handful of colours the custom widgets need."""

    dark: bool
    window: str
    card: str
    card_border: str
    text: str
    muted: str
    grid: str

    @property
    def name(self) -> str:
        return "dark" if self.dark else "light"


LIGHT = Theme(False, "#f4f5f7", "#ffffff", "#d9dce1", "#1d2330", "#667085", "#e3e6ea")
DARK = Theme(True, "#1e1e1e", "#272a30", "#3a3f47", "#e6e8eb", "#9aa3b2", "#343941")

_current = LIGHT


def state_colour(state: str) -> QColor:
    """The colour of an account state (``ok``, ``over_cap``, ..., ``dust``)."""
    return QColor(STATE_COLOURS.get(state, STATE_COLOURS["no_keys"]))


def current_theme() -> Theme:
    return _current


def _system_is_dark(app: QGuiApplication) -> bool:
    forced = os.environ.get(THEME_ENV, "").strip().lower()
    if forced in ("light", "dark"):
        return forced == "dark"
    try:
        scheme = QGuiApplication.styleHints().colorScheme()
        if scheme == Qt.ColorScheme.Dark:
            return True
        if scheme == Qt.ColorScheme.Light:
            return False
    except AttributeError:  # Qt < 6.5
        pass
    return app.palette().color(QPalette.ColorRole.Window).lightness() < 128


def _palette(t: Theme) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    accent = QColor("#3d7bd9")
    colours = {
        role.Window: t.window, role.WindowText: t.text, role.Base: t.card,
        role.AlternateBase: t.window, role.Text: t.text, role.Button: t.card,
        role.ButtonText: t.text, role.ToolTipBase: t.card, role.ToolTipText: t.text,
        role.PlaceholderText: t.muted, role.Mid: t.card_border,
    }
    for r, c in colours.items():
        p.setColor(r, QColor(c))
    p.setColor(role.Highlight, accent)
    p.setColor(role.HighlightedText, QColor("#ffffff"))
    p.setColor(role.Link, accent)
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, r, QColor(t.muted))
    return p


def _style_sheet(t: Theme) -> str:
    red = STATE_COLOURS["unwinding"]
    r, g, b = (int(red[i:i + 2], 16) for i in (1, 3, 5))
    red_tint = f"rgba({r}, {g}, {b}, 40)"  # idle: clearly red, calmer than the active state
    return f"""
QFrame[card="true"] {{ background: {t.card}; border: 1px solid {t.card_border};
    border-radius: 8px; }}
QLabel[role="muted"] {{ color: {t.muted}; }}
QLabel[role="title"] {{ font-weight: 600; }}
QLabel#pill {{ color: white; border-radius: 10px; padding: 2px 10px; font-weight: 700; }}
QPushButton[role="unwind"] {{
    background: {red_tint}; color: {red}; border: 2px solid {red}; border-radius: 6px;
    padding: 6px 18px; font-weight: 800;
}}
QPushButton[role="unwind"]:hover {{ background: {red}; color: white; }}
QPushButton[role="unwind-active"] {{
    background: {red}; color: white; border: 2px solid {red}; border-radius: 6px;
    padding: 6px 16px; font-weight: 800;
}}
QPushButton[role="destructive"] {{
    background: {red}; color: white; border-radius: 6px; padding: 6px 14px; font-weight: 700;
}}
QPushButton[role="destructive"]:disabled {{ background: {t.card_border}; color: {t.muted}; }}
QFrame[role="status-strip"] {{ background: {t.card}; border-bottom: 1px solid {t.card_border}; }}
QProgressBar {{ border: 1px solid {t.card_border}; border-radius: 4px; background: {t.window};
    text-align: center; height: 14px; }}
QTableView {{ border: none; gridline-color: {t.grid}; }}
"""


def apply_theme(app: QApplication, dark: bool | None = None) -> Theme:
    """Style ``app`` light or dark (``None``: follow the system). Returns the theme used."""
    global _current
    if dark is None:
        dark = _system_is_dark(app)
    theme = DARK if dark else LIGHT
    _current = theme
    app.setStyle("Fusion")
    app.setPalette(_palette(theme))
    app.setStyleSheet(_style_sheet(theme))
    pg.setConfigOptions(background=theme.card, foreground=theme.muted, antialias=True)
    return theme


def follow_system(app: QApplication) -> Theme:
    """Apply the desktop's look now and again whenever the desktop switches it.

    Widgets built later (cards, charts) take the new colours; the palette and the style
    sheet change at once for everything on screen.
    """
    theme = apply_theme(app)
    hints = QGuiApplication.styleHints()
    signal = getattr(hints, "colorSchemeChanged", None)  # Qt >= 6.5
    if signal is not None and not app.property("guardAppFollowsTheme"):
        signal.connect(lambda _scheme: apply_theme(app))
        app.setProperty("guardAppFollowsTheme", True)  # connect once per application
    return theme


def scaled_font(base: QFont, delta_points: int, *, bold: bool = False) -> QFont:
    """``base`` made ``delta_points`` larger (or smaller), one scale for the whole app."""
    font = QFont(base)
    size = base.pointSizeF() if base.pointSizeF() > 0 else 10.0
    font.setPointSizeF(max(6.0, size + delta_points))
    font.setBold(bold)
    return font
