#!/usr/bin/env python3
"""Writes the committed seed corpora, fuzz/corpus/<target>/<name>, from real valid examples:
Ruuvi's official test vectors (shared/reference/ruuvi.md), the Ruuvi Gateway's HTTP and MQTT
formats, the device messages of docs/protocol.md, Home Assistant discovery configs, MQTT 3.1.1 and
5 packet streams, and HTTP API requests as docs/api.md describes them.

Run it again after changing a seed here: `python3 fuzz/seeds.py` (it replaces the seed files it
writes and leaves every other file in corpus/ alone)."""

import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- Ruuvi BLE ---------------------------------------------------------------------------------
PAYLOADS = {
    "df5_valid": "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
    "df5_max": "057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F",
    "df5_min": "058001000000008001800180010000000000CBB8334C884F",
    "df5_invalid": "058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF",
    "df3_valid": "03291A1ECE1EFC18F94202CA0B53",
    "df3_max": "03FF7F63FFFF7FFF7FFF7FFFFFFF",
    "df3_min": "0300FF6300008001800180010000",
    "c5_valid": "C512FC5394C37CAC364200CDCBB8334C884F",
    "c5_invalid": "C58000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
    "df6_valid": "06170C5668C79E007000C90501D9FFCD004C884F",
    "df6_max": "067FFF9C40FFFE27109C40FAFAFEFFFF074C8F4F",
    "df6_odd_lsb": "067FFF9C40FFFE27109C40FAFBFEFFFFC14C8F4F",
    "e1_valid": "E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F",
    "e1_max": "E17FFF9C40FFFE27102710271027109C40FAFADC28F0FFFFFFFFFFFE3FFFFFFFFFFFCBB8334C884F",
    "e1_invalid": "E18000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFFFFFFFFFFFFFFFF",
}


def msd(payload_hex):
    payload = bytes.fromhex(payload_hex)
    return bytes([len(payload) + 3, 0xFF, 0x99, 0x04]) + payload


for name, payload in PAYLOADS.items():
    flags = bytes.fromhex("020106")
    if name.startswith("e1"):
        # Extended advertising: manufacturer data first, then the service UUID 0xFC98.
        write("ruuvi_ble", name, msd(payload) + bytes.fromhex("030398FC"))
    elif name.startswith("df6"):
        write("ruuvi_ble", name, flags + bytes.fromhex("030398FC") + msd(payload))
    else:
        write("ruuvi_ble", name, flags + msd(payload))
write("ruuvi_ble", "bare_df5_payload", bytes.fromhex(PAYLOADS["df5_valid"]))
write("ruuvi_ble", "company_id_then_payload", bytes.fromhex("9904" + PAYLOADS["c5_valid"]))
write("ruuvi_ble", "df5_with_rssi_byte", bytes.fromhex("020106") + msd(PAYLOADS["df5_valid"] + "C6"))
write("ruuvi_ble", "other_vendor", bytes.fromhex("0201061AFF4C000215FDA50693A4E24FB1AFCFC6EB0764782500010002C5"))
write("ruuvi_ble", "truncated", bytes.fromhex("0201061BFF99040512FC"))

# --- Ruuvi Gateway HTTP POST and MQTT ----------------------------------------------------------
AD_DF5 = "0201061BFF9904" + PAYLOADS["df5_valid"]
AD_E1 = msd(PAYLOADS["e1_valid"]).hex().upper() + "030398FC"
write("ruuvi_gateway_http", "gateway_post", compact({"data": {
    "coordinates": "", "timestamp": 1795607761, "nonce": 2636366621, "gw_mac": "C8:25:2D:8E:9C:2C",
    "tags": {
        "CB:B8:33:4C:88:4F": {"rssi": -71, "timestamp": 1795607760, "ble_phy": "1M", "ble_chan": 37, "data": AD_DF5},
        "d7:0b:1e:2a:33:4c": {"rssi": "-72", "timestamp": "1795607759", "data": AD_E1},
        "C6:A5:B9:E0:AD:08": {"rssi": -73, "counter": 1011, "data": "0201061BFF99040512"},
    }}}))
write("ruuvi_gateway_http", "raw_and_decoded", compact({"data": {
    "gw_mac": "C8:25:2D:8E:9C:2C", "timestamp": "1795607761",
    "tags": {"CB:B8:33:4C:88:4F": {"rssi": -60, "timestamp": 1795607761, "data": AD_DF5, "dataFormat": 5,
                                    "temperature": 24.3, "humidity": 53.49, "pressure": 100044}}}}))
write("ruuvi_gateway_http", "no_timestamps", compact({"data": {
    "gw_mac": "C8:25:2D:8E:9C:2C", "tags": {"CB:B8:33:4C:88:4F": {"rssi": -60, "counter": 7, "data": AD_DF5}}}}))
write("ruuvi_gateway_http", "bad_entries", compact({"data": {"gw_mac": "C8:25:2D:8E:9C:2C", "timestamp": None, "tags": {
    "not-a-mac": {"data": "00"}, "C6:A5:B9:E0:AD:09": {"data": "0G"}, "C6:A5:B9:E0:AD:0E": "0201",
    "C6:A5:B9:E0:AD:0D": {"rssi": -99999, "data": "00"}}}}))

GW = "AA:CC:EE:00:11:22"
TAG = "CB:B8:33:4C:88:4F"
mqtt_messages = {
    "advert": (f"ruuvi/{GW}/{TAG}", {"gw_mac": GW, "rssi": -70, "aoa": [], "gwts": 1795607761, "ts": 1795607760,
                                      "data": AD_DF5, "coords": ""}),
    "advert_strings": (f"ruuvi/{GW.lower()}/{TAG.lower()}", {"gw_mac": GW, "rssi": "-70", "gwts": "1795607761",
                                                               "ts": "1795607760", "data": AD_E1}),
    "advert_counter": (f"ruuvi/{GW}/{TAG}", {"gw_mac": GW, "rssi": -70, "cnt": "1011", "data": AD_DF5}),
    "advert_old_topic": (f"ruuvi/{TAG}", {"gw_mac": GW, "rssi": -70, "ts": 1795607760, "data": AD_DF5}),
    "decoded_only": (f"ruuvi/{GW}/{TAG}", {"gw_mac": GW, "rssi": -70, "dataFormat": 5, "temperature": 24.3}),
    "status_online": (f"ruuvi/{GW}/gw_status", {"state": "online"}),
    "status_offline": (f"custom/prefix/{GW}/gw_status", {"state": "offline"}),
}
for name, (topic, payload) in mqtt_messages.items():
    write("ruuvi_gateway_mqtt", name, topic + "\n" + compact(payload))

# --- Device registration and messages (docs/protocol.md) ---------------------------------------
REGISTRATION = {
    "deviceId": "esp32-a1b2", "name": "Kitchen sensor", "type": "sensor", "model": "ESP32-C3 DevKit",
    "manufacturer": "Acme", "firmware": "1.2.0", "hardware": "rev B", "registrationToken": "0123456789abcdef0123",
    "capabilities": {
        "telemetry": [{"name": "temperature", "unit": "°C", "type": "number"}, {"name": "door", "type": "boolean"}],
        "commands": [{"name": "reboot", "description": "Restart"},
                     {"name": "set_interval", "parameters": {"type": "object", "properties": {
                         "seconds": {"type": "integer", "minimum": 1}}, "required": ["seconds"]}}]}}
write("registration", "protocol_example", json.dumps(REGISTRATION, ensure_ascii=False, indent=1))
full = json.loads(json.dumps(REGISTRATION))
full["capabilities"]["telemetry"] += [{"name": "count", "type": "integer"}, {"name": "mode", "type": "string"}]
full["capabilities"]["commands"].append({"name": "set_mode", "description": "Mode", "parameters": {
    "type": "object", "properties": {"mode": {"enum": ["eco", "comfort", 3, True]}}}})
full["capabilities"]["config"] = {"type": "object", "properties": {
    "interval": {"type": "integer", "minimum": 1, "maximum": 86400},
    "label": {"type": "string", "maxLength": 32, "pattern": "^[a-z]+$"}}, "additionalProperties": False}
write("registration", "every_type_select_and_config", compact(full))
minimal = {"deviceId": "door-1", "name": "Door", "type": "contact", "registrationToken": "abcdefghijklmnop",
           "capabilities": {"telemetry": [], "commands": []}}
write("registration", "minimal", compact(minimal))
refs = json.loads(json.dumps(minimal))
refs["capabilities"]["commands"] = [{"name": "calibrate", "parameters": {
    "$defs": {"offset": {"type": "number", "minimum": -10, "maximum": 10}},
    "type": "object", "properties": {"t": {"$ref": "#/$defs/offset"}, "h": {"$ref": "#/$defs/offset"}},
    "oneOf": [{"required": ["t"]}, {"required": ["h"]}]}}]
write("registration", "schema_refs", compact(refs))

device_messages = {
    "telemetry": {"temperature": 21.5, "door": False, "ts": 1795607761308},
    "telemetry_all_types": {"temperature": 21.5, "door": True, "count": 3, "mode": "eco"},
    "telemetry_null": {"temperature": None},
    "alert": {"severity": "warning", "code": "door_open", "message": "Door open for 5 min", "details": {"minutes": 5}},
    "alert_ts": {"severity": "critical", "message": "Overheating", "ts": 1795607761308},
    "response_delivered": {"taskId": "01939c4e-7d1a-7c3e-9b1e-5f0a1b2c3d4e", "attempt": 1, "status": "delivered"},
    "response_progress": {"taskId": "01939c4e-7d1a-7c3e-9b1e-5f0a1b2c3d4e", "attempt": 1, "status": "in_progress",
                          "progress": 40, "message": "flashing", "extendMs": 120000},
    "response_succeeded": {"taskId": "01939c4e-7d1a-7c3e-9b1e-5f0a1b2c3d4e", "attempt": 1, "status": "succeeded",
                           "result": {"interval": 10}},
    "response_failed": {"taskId": "t1", "attempt": 2, "status": "failed", "message": "sensor not responding"},
    "response_rejected": {"taskId": "t1", "status": "rejected", "message": "busy: door is open"},
    "config_applied": {"version": 3, "status": "applied"},
    "config_rejected": {"version": 3, "status": "rejected", "message": "interval below this hardware's minimum"},
    "webhook_emqx": {"id": "1", "clientid": "esp-1", "username": "esp-1", "topic": "devices/home/esp-1/telemetry",
                     "payload": "{\"temperature\":21.5,\"door\":true}", "qos": 1, "timestamp": 1795607761308,
                     "node": "emqx@127.0.0.1"},
    "webhook_batch": [{"topic": "devices/home/a/telemetry", "payload": {"temperature": 1}},
                      {"topic": "devices/lab/b/telemetry", "payload": "{}"},
                      {"topic": "devices/home/c/status", "payload": "{}"}],
}
for name, value in device_messages.items():
    write("device_messages", name, compact(value))

# --- Home Assistant discovery ------------------------------------------------------------------
ha = {
    "tasmota_single": ("homeassistant/sensor/kitchen01/temperature/config", {
        "name": "Kitchen Temperature", "stat_t": "tele/kitchen/SENSOR", "uniq_id": "kitchen_T",
        "dev": {"ids": ["kitchen01"], "name": "Kitchen", "mf": "Tasmota", "mdl": "Sonoff TH"},
        "unit_of_meas": "°C", "dev_cla": "temperature", "val_tpl": "{{value_json['AM2301'].Temperature}}"}),
    "base_topic": ("homeassistant/binary_sensor/hall/door/config", {
        "~": "esphome/hall", "name": "Hall door", "stat_t": "~/door/state", "dev": {"connections": [["mac", "aa:bb:cc:dd:ee:ff"]]},
        "dev_cla": "door"}),
    "device_based": ("homeassistant/device/garage/config", {
        "dev": {"ids": "garage-node", "name": "Garage", "sw": "2024.6"}, "o": {"name": "ESPHome"},
        "stat_t": "garage/state",
        "cmps": {"t": {"p": "sensor", "val_tpl": "{{ value_json.t | float }}", "unit_of_meas": "°C"},
                 "h": {"p": "sensor", "val_tpl": "{{ value_json['h'] }}", "stat_t": "garage/h"},
                 "b": {"p": "button", "cmd_t": "garage/press"}}}),
    "own_export": ("homeassistant/device/gatehouse_ruuvi-cbb8334c884f/config", {
        "device": {"identifiers": ["gatehouse_ruuvi-cbb8334c884f"]}, "origin": {"name": "Gatehouse"}, "components": {}}),
}
for name, (topic, payload) in ha.items():
    write("ha_discovery", name, topic + "\n" + compact(payload))
write("ha_discovery", "removal", "homeassistant/sensor/kitchen01/temperature/config\n")
write("ha_discovery", "template_array", "{{ value_json.sensors[1].value | float }}\n{\"sensors\":[{\"value\":1},{\"value\":\"2.5\"}]}")
write("ha_discovery", "ha_button_press", "gatehouse/home/ha/esp32-a1b2/reboot/set\nPRESS")
write("ha_discovery", "ha_select", "gatehouse/home/ha/esp32-a1b2/set_mode/set\neco")


# --- MQTT packet streams -----------------------------------------------------------------------
def varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text):
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(client_id, v5=False, username=None, password=None, will=None, clean=True, keep_alive=60):
    flags = (0x02 if clean else 0) | (0x80 if username else 0) | (0x40 if password else 0)
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    body = s("MQTT") + bytes([5 if v5 else 4, flags]) + struct.pack(">H", keep_alive)
    if v5:
        props = bytes([0x11]) + struct.pack(">I", 3600) + bytes([0x21]) + struct.pack(">H", 20)
        body += varint(len(props)) + props
    body += s(client_id)
    if will:
        if v5:
            body += varint(0)
        body += s(will[0]) + s(will[1])
    if username:
        body += s(username)
    if password:
        body += s(password)
    return packet(0x10, body)


def publish(topic, payload, qos=0, pkid=1, retain=False, v5=False, props=b""):
    body = s(topic)
    if qos:
        body += struct.pack(">H", pkid)
    if v5:
        body += varint(len(props)) + props
    return packet(0x30 | (qos << 1) | int(retain), body + (payload.encode() if isinstance(payload, str) else payload))


def subscribe(pkid, filters, v5=False):
    body = struct.pack(">H", pkid) + (varint(0) if v5 else b"")
    for topic, options in filters:
        body += s(topic) + bytes([options])
    return packet(0x82, body)


def unsubscribe(pkid, filters, v5=False):
    body = struct.pack(">H", pkid) + (varint(0) if v5 else b"")
    for topic in filters:
        body += s(topic)
    return packet(0xA2, body)


PINGREQ = bytes([0xC0, 0x00])
DISCONNECT = bytes([0xE0, 0x00])
TELEMETRY = compact({"temperature": 21.5, "door": False})
streams = {
    "device_v4": connect("esp32-a1b2", username="esp32-a1b2", password="0123456789abcdef")
    + publish("devices/home/esp32-a1b2/telemetry", TELEMETRY)
    + publish("devices/home/esp32-a1b2/status", "online", qos=1, pkid=7, retain=True)
    + subscribe(8, [("devices/home/esp32-a1b2/commands", 1), ("devices/home/#", 0)])
    + publish("devices/home/esp32-a1b2/command_response", compact(device_messages["response_succeeded"]), qos=1, pkid=9)
    + PINGREQ + DISCONNECT,
    "device_v5": connect("esp32-a1b2", v5=True, username="esp32-a1b2", password="secret")
    + publish("devices/home/esp32-a1b2/telemetry", TELEMETRY, qos=1, pkid=3, v5=True,
              props=bytes([0x01, 0x01, 0x03]) + s("application/json"))
    + publish("devices/home/esp32-a1b2/alert", compact(device_messages["alert"]), v5=True)
    + subscribe(4, [("devices/home/esp32-a1b2/config", 0x05)], v5=True)
    + publish("devices/home/esp32-a1b2/config_reported", compact(device_messages["config_applied"]), v5=True)
    + unsubscribe(5, ["devices/home/esp32-a1b2/config"], v5=True) + bytes([0xE0, 0x01, 0x00]),
    "denied_qos2": connect("esp32-a1b2", username="esp32-a1b2", password="x", will=("devices/home/esp32-a1b2/status", "offline", 1, True))
    + publish("devices/home/other/telemetry", TELEMETRY, qos=2, pkid=11)
    + bytes([0x62, 0x02, 0x00, 0x0B]) + DISCONNECT,
    "receiver": connect("C8:25:2D:8E:9C:2C", username="gw-attic", password="x")
    + publish(f"ruuvi/C8:25:2D:8E:9C:2C/{TAG}", compact(mqtt_messages["advert"][1]))
    + publish("ruuvi/C8:25:2D:8E:9C:2C/gw_status", compact({"state": "online"}), retain=True) + DISCONNECT,
    "provisioning": connect("esp32-a1b2", username="provision", password="x")
    + subscribe(1, [("provisioning/home/esp32-a1b2/reply", 1)])
    + publish("provisioning/home/esp32-a1b2/register", compact(REGISTRATION), qos=1, pkid=2) + DISCONNECT,
    "homeassistant_v5": connect("home-assistant", v5=True, username="ha", password="x", keep_alive=0)
    + subscribe(1, [("homeassistant/#", 0), ("devices/home/+/telemetry", 0), ("$share/g/gatehouse/home/#", 1)], v5=True)
    + publish("gatehouse/home/ha/esp32-a1b2/reboot/set", "PRESS", v5=True)
    + publish("homeassistant/status", "online", v5=True) + PINGREQ,
    "empty_client_id": connect("", clean=True) + PINGREQ,
}
for name, data in streams.items():
    write("mqtt_packets", name, data)

# --- HTTP API requests -------------------------------------------------------------------------
TAG_ID = "ruuvi-cbb8334c884f"
LAN = "fuzz-esp32"
requests = {
    "health": "GET /api/health",
    "devices_filtered": "GET /api/devices?state=active&kind=ruuvi_tag&online=true",
    "readings": f"GET /api/devices/{TAG_ID}/readings?from=-24h&to=now&bucket=5m&fields=temperature,humidity",
    "readings_rfc3339": f"GET /api/devices/{TAG_ID}/readings?from=2026-11-24T12:00:00Z&to=1795608000000&bucket=60000",
    "export_json": f"GET /api/devices/{TAG_ID}/export?from=-7d&format=json",
    "receivers": f"GET /api/devices/{TAG_ID}/receivers",
    "adopt": f"POST /api/devices/{TAG_ID}/adopt\n" + compact(
        {"name": "Kitchen", "room": "Kitchen", "calibration": {"temperature": -0.5, "humidity": 2, "pressure": 100}}),
    "rule_create": "POST /api/alert-rules\n" + compact(
        {"name": "Kitchen too warm", "devices": "ruuvi-*", "field": "temperature", "condition": "above",
         "threshold": 30, "clearAt": 29, "for": "5m", "severity": "critical"}),
    "rule_silent": "PUT /api/alert-rules/1\n" + compact(
        {"name": "Quiet", "devices": LAN, "condition": "silent", "for": "10m"}),
    "alerts": "GET /api/alerts?device=fuzz-esp32&state=active&unacknowledged=true&limit=5",
    "task_create": f"POST /api/devices/{LAN}/tasks\n" + compact(
        {"command": "set_interval", "params": {"seconds": 10}, "expiresIn": "1h", "ackTimeout": "30s",
         "executionTimeout": "2m", "retries": {"timedOut": 2, "failed": 1}}),
    "task_select": f"POST /api/devices/{LAN}/tasks\n" + compact({"command": "set_mode", "params": {"mode": "eco"}}),
    "tasks_list": f"GET /api/devices/{LAN}/tasks?state=queued&limit=10",
    "config_put": f"PUT /api/devices/{LAN}/config\n" + compact({"interval": 60, "label": "hall"}),
    "capabilities_put": f"PUT /api/devices/{LAN}/capabilities\n" + compact(full["capabilities"]),
    "details_patch": f"PATCH /api/devices/{LAN}\n" + compact({"name": "Hall sensor", "room": "Hall"}),
    "register": "POST /api/devices/register\n" + compact(minimal),
    "claim": "POST /api/claims\n" + compact({"code": "7KQ4M-2XDAB"}),
    "pairing": "POST /api/pairing\n" + compact({"minutes": 3}),
    "audit": f"GET /api/audit?device={LAN}&limit=20",
    "settings_put": "PUT /api/settings\n" + compact(
        {"site": "lab", "retention": "30d", "ruuviOutput": True, "ruuviOutputMode": "ruuvi_raw_and_decoded",
         "receiversHttpListen": "0.0.0.0:8081"}),
    "launch": "GET /api/auth/launch?ticket=abcdef",
    "login": "POST /api/auth/login\n" + compact({"password": "correct horse battery"}),
    "task_unknown": "GET /api/tasks/01939c4e-7d1a-7c3e-9b1e-5f0a1b2c3d4e",
    "metrics": "GET /metrics",
    "ui_file": "GET /index.html",
    "ui_traversal": "GET /%2e%2e/secret.txt",
}
for name, text in requests.items():
    write("http_api", name, text)
