#!/usr/bin/env bash
# Builds the desktop app's .deb and .rpm with the prebuilt Tauri CLI (npm @tauri-apps/cli@2).
#   scripts/package-desktop.sh            release build + bundles (target/release/bundle/{deb,rpm})
#   scripts/package-desktop.sh --debug    bundles the debug binary `cargo build --workspace` made
#                                         (what `make test` installs and starts)
# AppImage needs downloads from GitHub and is built on release machines (docs/packaging.md).
set -euo pipefail
cd "$(dirname "$0")/.."
tauri=ui/node_modules/.bin/tauri
[ -x "$tauri" ] || { echo "the Tauri CLI is missing: run scripts/setup.sh test (npm ci in ui/)" >&2; exit 1; }
[ -f ui/dist/index.html ] || { echo "the web UI is not built: run scripts/setup.sh run" >&2; exit 1; }
# cargo builds the binary (the CLI's own `tauri build` would build the workspace's default
# members, which are the headless crates); `tauri bundle` then packages it.
if [ "${1:-}" = "--debug" ]; then
  [ -x target/debug/gatehouse-desktop ] || cargo build -p gatehouse-desktop
  "$tauri" bundle --debug --bundles deb,rpm --ci
  profile=debug
else
  cargo build --release -p gatehouse-desktop
  "$tauri" bundle --bundles deb,rpm --ci
  profile=release
fi
for f in target/$profile/bundle/deb/*.deb target/$profile/bundle/rpm/*.rpm; do
  printf '%s  %s\n' "$(du -h "$f" | cut -f1)" "$f"
done
