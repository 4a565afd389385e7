#!/usr/bin/env bash
# Take docs/screenshot.png: the app on the built-in demo simulator, after a few cycles.
#
#   scripts/screenshot.sh [OUTPUT.png] [--dark] [--unwind USER] [--wait SECONDS]
#
# Runs under a throwaway X server (xvfb-run, 1440x900) so it works headless and
# anyone can rerun it. Needs xvfb and ImageMagick's `import`. The demo's simulated
# strategy keeps opening positions, so the picture shows the enforcer at work.
set -euo pipefail
cd "$(dirname "$0")/.."
out="docs/screenshot.png"
if [[ $# -gt 0 && "$1" != --* ]]; then out="$1"; shift; fi
mkdir -p "$(dirname "$out")"
if [[ -z "${_GUARD_APP_IN_XVFB:-}" ]]; then
    for tool in xvfb-run import; do
        command -v "$tool" >/dev/null || { echo "$0: '$tool' not found (apt install xvfb imagemagick)" >&2; exit 2; }
    done
    _GUARD_APP_IN_XVFB=1 exec xvfb-run -a -s "-screen 0 1440x900x24" "$0" "$out" "$@"
fi
exec .venv/bin/python - "$out" "$@" <<'PY'
"""Start the demo app, wait for a few enforcer cycles, grab the screen, quit."""
import argparse
import subprocess
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from guard_app.gui.app import build_app
from guard_app.gui.theme import apply_theme
from guard_app.sim.demo import start_demo

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--dark", action="store_true")
p.add_argument("--unwind", default=None)
p.add_argument("--wait", type=float, default=14.0)
args = p.parse_args()

app = QApplication(sys.argv[:1])
apply_theme(app, dark=True if args.dark else None)
world = start_demo(interval=5.0, strategy_interval=3.0)
# The app as `guard-app demo` builds it (Xvfb has no system tray, so no tray icon).
parts = build_app(world.config, world.data_dir, world.keys, config_path=world.config_path)
window = parts.window
window.setGeometry(0, 0, 1440, 900)
window.show()
if args.unwind:
    def unwind() -> None:
        parts.host.set_forced_unwind(args.unwind, True, by="gui", reason="screenshot")
        parts.model.refresh_flags()

    QTimer.singleShot(int(args.wait * 500), unwind)


def shoot() -> None:
    app.processEvents()
    subprocess.run(["import", "-window", "root", args.out], check=True)  # noqa: S603,S607
    print(f"wrote {args.out}")
    parts.shutdown()
    world.stop()
    app.quit()


QTimer.singleShot(int(args.wait * 1000), shoot)
app.exec()
PY
