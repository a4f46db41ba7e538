#!/usr/bin/env bash
# Starts the gateway built by `make run`, with simulated tags when no Bluetooth scanner can be
# used, and says where to look. Extra arguments go to `gatehouse run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/gatehouse"

args=(--ui-dir ui/dist)
if ls /sys/class/bluetooth/hci* >/dev/null 2>&1; then
  echo "Bluetooth adapter found: scanning for Ruuvi tags (status: /api/health, 'bluetooth')."
else
  echo "No Bluetooth adapter found: simulating 5 Ruuvi tags."
  args+=(--simulate 5 --no-ble)
fi

cat <<INFO

  Gatehouse is starting. Where to look:
    Web UI        http://127.0.0.1:8080/
    HTTP API      http://127.0.0.1:8080/api/health   and   /api/devices
    Live stream   ws://127.0.0.1:8080/api/live
    MQTT broker   127.0.0.1:1883   e.g.  mosquitto_sub -h 127.0.0.1 -t 'devices/#' -v
    Data          ~/.local/share/gatehouse/gatehouse.db   (change with --data-dir)
  Stop with Ctrl-C.

INFO
exec "$bin" run "${args[@]}" "$@"
