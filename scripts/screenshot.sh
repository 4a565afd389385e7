#!/usr/bin/env bash
# Take the README pictures of the app exactly as users start it, on a real X desktop.
#
#   scripts/screenshot.sh [OUTDIR]        (default: docs/)
#
# Starts a throwaway X server (Xvfb, 1440x900) with a window manager (openbox) and a
# system tray (trayer), then runs `guard-app demo` and `guard-app` the way a user does
# (HOME and XDG dirs in a temp dir, so no config: the first-run dialog), and grabs the
# whole screen with ImageMagick's `import -window root`:
#   screenshot.png        light desktop, the demo after a few cycles
#   screenshot-dark.png   dark desktop (GUARD_APP_THEME=dark), the same
#   screenshot-unwind.png a forced unwind of alice, clicked and confirmed with xdotool
#   screenshot-first-run.png  `guard-app` with no config: the welcome dialog
# Needs: scripts/setup-system.sh test (xvfb, openbox, trayer, imagemagick, xdotool).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
[[ -x "$py" ]] || py=python3
for tool in Xvfb openbox trayer import xdotool; do
    command -v "$tool" >/dev/null || { echo "$0: '$tool' not found (scripts/setup-system.sh test)" >&2; exit 2; }
done

display=":$(( 90 + RANDOM % 100 ))"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

Xvfb "$display" -screen 0 1440x900x24 -nolisten tcp >/dev/null 2>&1 & pids+=($!)
export DISPLAY=$display
for _ in $(seq 50); do xdotool getdisplaygeometry >/dev/null 2>&1 && break; sleep 0.1; done
openbox >/dev/null 2>&1 & pids+=($!)
trayer --edge top --align right --widthtype request --height 24 --transparent false \
    --tint 0x333333 >/dev/null 2>&1 & pids+=($!)
sleep 1

# One fresh user per picture: no config, no saved window geometry.
as_user() {  # as_user NAME -- command...
    local home="$tmp/$1"; shift
    mkdir -p "$home"
    exec env HOME="$home" XDG_CONFIG_HOME="$home/.config" XDG_DATA_HOME="$home/.local/share" \
        XDG_STATE_HOME="$home/.local/state" QT_QPA_PLATFORM=xcb "$@"
}

wait_window() {  # wait_window TITLE-REGEX: the window id once it is mapped
    local id=""
    for _ in $(seq 100); do
        id=$(xdotool search --onlyvisible --name "$1" 2>/dev/null | head -1) && [[ -n "$id" ]] && break
        sleep 0.2
    done
    [[ -n "$id" ]] || { echo "$0: no window '$1'" >&2; return 1; }
    echo "$id"
}

shoot() { import -window root "$out/$1"; echo "wrote $out/$1"; }

demo_picture() {  # demo_picture FILE THEME [unwind]
    local file=$1 theme=$2 unwind=${3:-}
    as_user "demo-$theme$unwind" env GUARD_APP_THEME="$theme" "$py" -m guard_app demo \
        >"$tmp/demo-$theme$unwind.log" 2>&1 & local app=$!
    pids+=($app)
    local win
    win=$(wait_window '^guard-app$')
    xdotool windowmove "$win" 0 0 windowsize "$win" 1400 860
    sleep 14  # a few enforcer cycles on the simulator
    if [[ -n "$unwind" ]]; then
        # As a trader does it: the red button, the name (the field has the focus), confirm.
        # The window fills the screen from the top left: alice's button is top right.
        xdotool mousemove --sync 1282 98 click 1  # below any notification bubble
        local dialog
        dialog=$(wait_window '^Forced Unwind alice') || { shoot unwind-failed.png; return 1; }
        xdotool windowactivate --sync "$dialog" type --delay 60 alice
        xdotool key --window "$dialog" Tab Tab space
        sleep 4
    fi
    shoot "$file"
    kill "$app" 2>/dev/null || true
    wait "$app" 2>/dev/null || true
}

if [[ -z "${ONLY_UNWIND:-}" ]]; then
    demo_picture screenshot.png light
    demo_picture screenshot-dark.png dark
fi
demo_picture screenshot-unwind.png light unwind

as_user first-run "$py" -m guard_app >"$tmp/first-run.log" 2>&1 & app=$!
pids+=($app)
wait_window '^Welcome to guard-app$' >/dev/null
sleep 1
shoot screenshot-first-run.png
kill "$app" 2>/dev/null || true
