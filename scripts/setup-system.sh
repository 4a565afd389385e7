#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages guard-app needs, only those missing.
#   scripts/setup-system.sh test   keyring (gnome-keyring + dbus), Xvfb + openbox + trayer
#                                  (a real desktop with a window manager and a tray),
#                                  desktop-file tools, PostgreSQL (the tests start a throwaway cluster)
#   scripts/setup-system.sh demo   the libraries a real Qt window needs (xcb plugin)
# Uses apt-get as root, or sudo when available; otherwise prints the command to run.
set -euo pipefail

want=${1:-test}
gui_libs=(libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
          libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-xinerama0 libxcb-randr0
          libegl1 libgl1 libfontconfig1 libdbus-1-3 libglib2.0-0)
case "$want" in
  test) pkgs=(dbus dbus-x11 gnome-keyring xvfb xauth imagemagick trayer openbox xdotool
              desktop-file-utils appstream postgresql "${gui_libs[@]}") ;;
  demo) pkgs=("${gui_libs[@]}") ;;
  *) echo "usage: $0 test|demo" >&2; exit 2 ;;
esac

# A Python without ensurepip (Debian's split python3) needs python3-venv for `make`.
py=${PYTHON:-python3}
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  pkgs+=(python3-venv)
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup-system: not a Debian/Ubuntu system; install the equivalents of: ${pkgs[*]}" >&2
  exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "setup-system: missing Debian packages: ${missing[*]}" >&2
  echo "setup-system: run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "setup-system: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
