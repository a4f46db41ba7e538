#!/usr/bin/env bash
# Installs what `make run` or `make test` needs and is missing. Idempotent: a second run
# installs nothing. Usage: scripts/setup.sh run|test|desktop
set -euo pipefail

purpose="${1:-run}"

# System packages per purpose (Debian 12 / Ubuntu / Raspberry Pi OS names).
run_packages=(build-essential pkg-config ca-certificates curl)
# Node.js builds the web UI (Debian 12 ships Node 18, which the UI's toolchain supports).
command -v npm >/dev/null 2>&1 || run_packages+=(nodejs npm)
# mosquitto: broker comparison tests; python3-dbusmock + dbus-daemon: the fake BlueZ for the
# Bluetooth tests; chromium: the web UI tests (driven by playwright-core, no browser download).
test_packages=("${run_packages[@]}" mosquitto mosquitto-clients python3-paho-mqtt python3-dbusmock dbus-daemon chromium)
# openssl: the TLS tests try TLS 1.0/1.1 handshakes with its s_client (tests/security.rs).
test_packages+=(openssl)
# libfaketime: steps the daemon's wall clock while it runs (tests/clock.rs).
test_packages+=(libfaketime)
# The desktop app (Tauri 2): WebKitGTK and tray libraries to build it, Xvfb + WebKitWebDriver +
# ImageMagick + xwininfo to test its window, rpm to bundle the .rpm, systemd-analyze to verify
# the daemon package's unit.
desktop_packages=("${run_packages[@]}" libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev file)
test_packages+=("${desktop_packages[@]:${#run_packages[@]}}" xvfb xauth webkit2gtk-driver imagemagick x11-utils python3-xlib rpm systemd adduser)

case "$purpose" in
  run) wanted=("${run_packages[@]}") ;;
  test) wanted=("${test_packages[@]}") ;;
  desktop) wanted=("${desktop_packages[@]}") ;;
  *) echo "usage: $0 run|test|desktop" >&2; exit 2 ;;
esac

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${wanted[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
      sudo="sudo"
    fi
    say "installing system packages: ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
    # The tests start their own Mosquitto on free ports; a system service would take port 1883
    # from the gateway.
    if [[ " ${missing[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1; then
      $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
  fi
else
  say "not a Debian-based system: make sure these are installed: ${wanted[*]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    say "cargo is in ~/.cargo/bin; add it to PATH (source ~/.cargo/env)"
  else
    say "installing the Rust toolchain with rustup (https://rustup.rs)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
      || { echo "rustup failed; install Rust from https://rustup.rs and run this again" >&2; exit 1; }
  fi
  echo "Rust was installed: run 'source ~/.cargo/env' (or open a new shell) and repeat the command." >&2
  exit 1
fi

# The web UI: install its npm packages when the lock file changed, rebuild when a source changed.
ui_dir="$(dirname "$0")/../ui"
if [ ! -d "$ui_dir/node_modules" ] || [ "$ui_dir/package-lock.json" -nt "$ui_dir/node_modules/.package-lock.json" ]; then
  say "installing the web UI's npm packages"
  (cd "$ui_dir" && npm ci --no-audit --no-fund)
fi
if [ ! -f "$ui_dir/dist/index.html" ] || [ -n "$(find "$ui_dir/src" "$ui_dir/index.html" "$ui_dir/vite.config.ts" "$ui_dir/package-lock.json" -newer "$ui_dir/dist/index.html" 2>/dev/null | head -1)" ]; then
  say "building the web UI"
  (cd "$ui_dir" && npm run build --silent)
fi
