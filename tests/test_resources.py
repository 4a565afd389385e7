"""Tests for the bundled icons, the resource resolver and the Linux desktop metadata.

The .desktop and AppStream files are checked with the real freedesktop tools
(desktop-file-validate, appstreamcli). scripts/setup-system.sh installs them, so in
CI (env CI set) a missing tool is a failure, not a skip.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import guard_app
from guard_app import resources
from guard_app.resources import (
    ICON_NAMES,
    STATE_COLOURS,
    TRAY_ICON_FOR_STATE,
    icon_path,
    resource_path,
    resource_roots,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGING = REPO_ROOT / "packaging"
APP_ID = "io.github.guardapp.GuardApp"
DESKTOP_FILE = PACKAGING / f"{APP_ID}.desktop"
METAINFO_FILE = PACKAGING / f"{APP_ID}.metainfo.xml"
SVG_NS = "{http://www.w3.org/2000/svg}"
HEX_COLOUR = re.compile(r"^#[0-9a-f]{6}$")


def _require_tool(name: str) -> str:
    """Path of a system tool; skip locally when absent, fail in CI where setup installs it."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: run scripts/setup-system.sh test")
        pytest.skip(f"{name} not installed (scripts/setup-system.sh test installs it)")
    return found


def _parse_xml(path: Path) -> ET.Element:
    """Parse one of the repository's own XML files (trusted input, so no defusedxml)."""
    return ET.parse(path).getroot()  # noqa: S314


def _relative_luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_relative_luminance(a), _relative_luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# --- icons ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ICON_NAMES)
def test_every_icon_resolves_to_a_well_formed_svg(name: str) -> None:
    path = icon_path(name)
    assert path.is_file()
    assert path.name == f"{name}.svg"
    root = _parse_xml(path)
    assert root.tag == f"{SVG_NS}svg"
    view_box = [float(v) for v in root.attrib["viewBox"].replace(",", " ").split()]
    assert len(view_box) == 4
    assert view_box[2] > 0 and view_box[3] > 0
    # Square, so the icon is not squashed in a tray slot or a launcher grid.
    assert view_box[2] == view_box[3]


def test_icon_path_accepts_a_name_with_the_svg_suffix() -> None:
    assert icon_path("tray-ok.svg") == icon_path("tray-ok")


@pytest.mark.parametrize(("state", "icon_name"), sorted(TRAY_ICON_FOR_STATE.items()))
def test_tray_icon_shield_is_filled_with_its_state_colour(state: str, icon_name: str) -> None:
    assert icon_name in ICON_NAMES
    root = _parse_xml(icon_path(icon_name))
    shield = root.find(f"{SVG_NS}path")
    assert shield is not None, f"{icon_name}: the first shape should be the shield"
    assert shield.attrib["fill"].lower() == STATE_COLOURS[state]


def test_tray_icons_share_one_shield_silhouette() -> None:
    shapes = {
        name: _parse_xml(icon_path(name)).find(f"{SVG_NS}path").attrib["d"]  # type: ignore[union-attr]
        for name in TRAY_ICON_FOR_STATE.values()
    }
    assert len(set(shapes.values())) == 1, shapes


@pytest.mark.gui
@pytest.mark.parametrize("name", ICON_NAMES)
def test_qt_renders_every_icon_at_tray_size(name: str) -> None:
    """QtSvg supports only SVG Tiny: an unsupported feature would render blank or warn."""
    pytest.importorskip("PySide6.QtSvg")
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(icon_path(name)))
    assert renderer.isValid()
    image = QImage(22, 22, QImage.Format.Format_ARGB32)
    image.fill(0)
    painter = QPainter(image)
    renderer.render(painter, QRectF(0, 0, 22, 22))
    painter.end()
    # Transparent corners (no background square), an opaque middle (the shield).
    assert image.pixelColor(0, 0).alpha() == 0
    assert image.pixelColor(11, 11).alpha() == 255


# --- palette -------------------------------------------------------------------------


def test_state_colours_have_every_state_as_a_hex_colour() -> None:
    assert set(STATE_COLOURS) == {"ok", "over_cap", "unwinding", "error", "no_keys", "dust"}
    for state, colour in STATE_COLOURS.items():
        assert HEX_COLOUR.match(colour), f"{state}: {colour!r} is not #rrggbb (lower case)"
    assert len(set(STATE_COLOURS.values())) == len(STATE_COLOURS), "two states share a colour"


@pytest.mark.parametrize("background", ["#ffffff", "#1e1e1e"])
def test_state_colours_stand_out_on_light_and_dark_windows(background: str) -> None:
    for state, colour in STATE_COLOURS.items():
        ratio = _contrast(colour, background)
        assert ratio >= 3.0, f"{state} {colour} on {background}: contrast {ratio:.2f} < 3"


# --- resolver ------------------------------------------------------------------------


def test_missing_resource_names_the_file_and_every_place_searched() -> None:
    with pytest.raises(FileNotFoundError) as caught:
        resource_path("icons/no-such-icon.svg")
    message = str(caught.value)
    assert "icons/no-such-icon.svg" in message
    for root in resource_roots():
        assert str(root / "icons" / "no-such-icon.svg") in message


def test_missing_icon_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-icon.svg"):
        icon_path("no-such-icon")


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../pyproject.toml", "icons/../../x"])
def test_resource_names_outside_the_folder_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="inside resources/"):
        resource_path(bad)


def test_source_checkout_resolves_to_the_repository_folder() -> None:
    # This suite runs from a checkout (plain or editable install): the files come from
    # <repo>/resources, the folder that pyproject.toml ships as package data.
    assert icon_path("guard-app") == REPO_ROOT / "resources" / "icons" / "guard-app.svg"


def test_frozen_bundle_is_searched_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = tmp_path / "resources" / "icons" / "tray-ok.svg"
    bundled.parent.mkdir(parents=True)
    bundled.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>')
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert icon_path("tray-ok") == bundled
    # Anything the bundle lacks still fails loudly, naming the bundle folder.
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "resources"))):
        resource_path("icons/missing-from-bundle.svg")


def test_installed_layout_is_found_as_package_data(tmp_path: Path) -> None:
    """Lay out guard_app as a wheel installs it and resolve from there, in a fresh Python."""
    site = tmp_path / "site"
    package = site / "guard_app"
    (package / "resources" / "icons").mkdir(parents=True)
    shutil.copy(Path(guard_app.__file__), package / "__init__.py")
    shutil.copy(Path(resources.__file__), package / "resources.py")
    shutil.copy(icon_path("tray-ok"), package / "resources" / "icons" / "tray-ok.svg")
    code = "import guard_app.resources as r\nprint(r.__file__)\nprint(r.icon_path('tray-ok'))\n"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module_file, found = done.stdout.split()
    assert Path(module_file) == package / "resources.py"
    assert Path(found) == package / "resources" / "icons" / "tray-ok.svg"


def test_resolver_does_not_import_qt() -> None:
    source = Path(resources.__file__).read_text(encoding="utf-8")
    assert "PySide6" not in source and "QtGui" not in source


# --- desktop metadata ----------------------------------------------------------------


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(DESKTOP_FILE, encoding="utf-8")
    return parser["Desktop Entry"]


def test_desktop_file_passes_desktop_file_validate() -> None:
    tool = _require_tool("desktop-file-validate")
    done = subprocess.run([tool, str(DESKTOP_FILE)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "error" not in output.lower(), output


def test_metainfo_passes_appstreamcli_validate() -> None:
    tool = _require_tool("appstreamcli")
    done = subprocess.run(
        [tool, "validate", "--no-net", str(METAINFO_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_desktop_file_launches_the_installed_command() -> None:
    entry = _desktop_entry()
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert entry["Exec"].split()[0] in scripts
    assert entry["Icon"] == APP_ID
    assert "Finance" in entry["Categories"].split(";")


def test_metainfo_matches_the_desktop_file_and_the_package() -> None:
    root = _parse_xml(METAINFO_FILE)
    assert root.findtext("id") == APP_ID
    assert root.findtext("launchable") == DESKTOP_FILE.name
    assert root.findtext("metadata_license") == "CC0-1.0"
    assert root.findtext("project_license") == "MIT"
    releases = root.findall("releases/release")
    assert releases, "metainfo lists no release"
    # The newest release (first) is the version the package reports.
    assert releases[0].attrib["version"] == guard_app.__version__
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", releases[0].attrib["date"])
