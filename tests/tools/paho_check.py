#!/usr/bin/python3
"""Drives Debian's python3-paho-mqtt (a real third-party MQTT client) against the gateway.

Usage: paho_check.py HOST PORT USERNAME PASSWORD PROTOCOL MODE [TOPIC [COUNT]]
  PROTOCOL: 311 or 5
  MODE connect:   prints the CONNACK code as an integer
  MODE subscribe: subscribes to TOPIC and prints one JSON line per message until COUNT arrived
Exit status 0 when the mode's goal was reached, 1 otherwise.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

host, port, username, password, protocol, mode = sys.argv[1:7]
topic = sys.argv[7] if len(sys.argv) > 7 else None
count = int(sys.argv[8]) if len(sys.argv) > 8 else 1
version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311

done = threading.Event()
state = {"connack": None, "received": 0, "ok": False}


def code(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


def on_connect(client, userdata, flags, rc, properties=None):
    state["connack"] = code(rc)
    if mode == "connect" or state["connack"] != 0:
        state["ok"] = state["connack"] == 0
        done.set()
    else:
        client.subscribe(topic, qos=1)


def on_message(client, userdata, message):
    print(json.dumps({"topic": message.topic, "payload": message.payload.decode("utf-8", "replace")}), flush=True)
    state["received"] += 1
    if state["received"] >= count:
        state["ok"] = True
        done.set()


def on_disconnect(client, userdata, rc, properties=None):
    done.set()


client = mqtt.Client(client_id="paho-check", protocol=version)
if username:
    client.username_pw_set(username, password)
client.on_connect = on_connect
client.on_message = on_message
client.on_disconnect = on_disconnect
client.connect(host, int(port), keepalive=10)
client.loop_start()
done.wait(20)
client.loop_stop()
if mode == "connect":
    print(state["connack"])
sys.exit(0 if state["ok"] else 1)
