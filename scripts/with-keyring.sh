#!/usr/bin/env bash
# Run a command against a real, throwaway, unlocked Secret Service keyring.
#
#   scripts/with-keyring.sh CMD [ARGS...]
#
# Starts a private D-Bus session (dbus-run-session) with its own
# gnome-keyring-daemon whose keyring lives in a temporary directory, unlocked
# with a throwaway password, so tests exercise the same backend Linux desktop
# users have (keyring's SecretService backend) without touching anyone's real
# keyring. The temporary directory is removed afterwards and CMD's exit code is
# passed through. Inside such a session already (GUARD_APP_KEYRING_READY=1),
# CMD is simply exec'd.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

if [[ "${GUARD_APP_KEYRING_READY:-}" == "1" ]]; then
    exec "$@"
fi

# Second stage: we are inside dbus-run-session; start the keyring and run CMD.
if [[ "${_GUARD_APP_KEYRING_STAGE:-}" == "inner" ]]; then
    # Give CMD the real stderr back (fd 3); the bus daemon keeps /dev/null for its
    # chatter (fd-limit warnings, prompter activation logs).
    exec 2>&3 3>&-
    unset _GUARD_APP_KEYRING_STAGE
    tmp="$_GUARD_APP_KEYRING_TMP"
    unset _GUARD_APP_KEYRING_TMP
    : >"$tmp/session-started"
    # A throwaway home for the keyring: an existing login.keyring with another
    # password would stay locked and make every keyring call fail.
    export XDG_DATA_HOME="$tmp/data"
    export XDG_RUNTIME_DIR="$tmp/runtime"
    mkdir -p "$XDG_DATA_HOME" "$XDG_RUNTIME_DIR"
    chmod 700 "$XDG_RUNTIME_DIR"
    # --unlock creates the login keyring with this password and unlocks it;
    # --start then attaches to that daemon and prints its environment.
    export_daemon_env() {
        # The daemon prints VAR=value lines (no 'export'); take only those.
        local line
        while IFS= read -r line; do
            if [[ "$line" =~ ^[A-Z_][A-Z0-9_]*= ]]; then
                export "${line?}"
            fi
        done
    }
    # Not a secret: the keyring is throwaway. Tests use it to unlock after locking.
    export GUARD_APP_TEST_KEYRING_PASSWORD="guard-app-test-keyring"
    export_daemon_env < <(printf '%s' "$GUARD_APP_TEST_KEYRING_PASSWORD" \
        | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)
    export_daemon_env < <(gnome-keyring-daemon --start --components=secrets 2>/dev/null)
    export PYTHON_KEYRING_BACKEND=keyring.backends.SecretService.Keyring
    export GUARD_APP_KEYRING_READY=1
    if [[ -n "$_GUARD_APP_DISPLAY" ]]; then export DISPLAY="$_GUARD_APP_DISPLAY"; fi
    if [[ -n "$_GUARD_APP_WAYLAND_DISPLAY" ]]; then
        export WAYLAND_DISPLAY="$_GUARD_APP_WAYLAND_DISPLAY"
    fi
    unset _GUARD_APP_DISPLAY _GUARD_APP_WAYLAND_DISPLAY
    status=0
    "$@" || status=$?
    # The daemon belongs to this D-Bus session; stop it so the session can end.
    if [[ -n "${GNOME_KEYRING_PID:-}" ]]; then
        kill "$GNOME_KEYRING_PID" 2>/dev/null || true
    fi
    exit "$status"
fi

for tool in dbus-run-session gnome-keyring-daemon; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: '$tool' not found: install dbus and gnome-keyring (Debian: apt install dbus gnome-keyring)" >&2
        exit 2
    fi
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/guard-app-keyring.XXXXXX")"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
# An interrupted run still removes the throwaway keyring (EXIT runs on these exits).
trap 'exit 130' INT
trap 'exit 143' TERM

status=0
# The bus (and so the keyring's unlock prompter it would activate) gets no display:
# a locked keyring must fail at once in tests, not wait on a prompt window (e.g. on
# Xvfb). CMD gets the display back in the inner stage.
_GUARD_APP_KEYRING_STAGE=inner _GUARD_APP_KEYRING_TMP="$tmp" \
    _GUARD_APP_DISPLAY="${DISPLAY-}" _GUARD_APP_WAYLAND_DISPLAY="${WAYLAND_DISPLAY-}" \
    env -u DISPLAY -u WAYLAND_DISPLAY dbus-run-session -- "$BASH" "$0" "$@" \
    3>&2 2>/dev/null || status=$?
if [[ ! -e "$tmp/session-started" ]]; then
    echo "$0: dbus-run-session could not start a D-Bus session (exit $status)" >&2
    [[ "$status" -ne 0 ]] || status=1
fi
exit "$status"
