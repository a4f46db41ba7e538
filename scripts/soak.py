#!/usr/bin/env python3
"""Soak test: one gateway under a steady mixed load for a chosen time (docs/benchmarks.md).

Starts `gatehouse run` in a fresh temporary data directory with `--simulate 200` (BLE tags),
starts 50 reference devices (`gatehouse-device`), claims each through the API, sends one task
per device per minute (round robin, so a task leaves every 60/50 s) and prints one row a minute:
the gateway's RSS/PSS, CPU over the last minute, threads, the store's queue depth, rows written,
bus lag, MQTT clients, tasks by state and the database size. At the end: a Markdown table and a
verdict on whether memory stayed flat in the steady state (the second half of the run).

    make soak ARGS="--minutes 30"
    python3 scripts/soak.py --minutes 30 --bin-dir /path/to/target/release

Builds nothing (`make soak` builds first). Exits 1 if the gateway or any device process died,
2 if the set-up failed. Ctrl-C stops everything and still prints the table so far.
Python 3 standard library only; Linux only (reads /proc).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class SetupError(Exception):
    pass


class Stop(Exception):
    """SIGTERM/SIGHUP: stop like Ctrl-C."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30, help="how long to run the load (default 30)")
    p.add_argument("--bin-dir", default=os.path.join(REPO, "target", "release"),
                   help="where gatehouse and gatehouse-device are (default target/release)")
    p.add_argument("--tags", type=int, default=200, help="simulated BLE tags (default 200)")
    p.add_argument("--devices", type=int, default=50, help="reference devices (default 50)")
    p.add_argument("--interval", default="5s", help="devices' telemetry interval (default 5s)")
    p.add_argument("--sample", type=float, default=60, help="seconds between rows (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--table-every", type=int, default=1,
                   help="in the final Markdown table, keep every Nth row (and the last; default 1)")
    p.add_argument("--keep", action="store_true",
                   help="keep the whole data directory (default: keep only the logs, delete the database)")
    return p.parse_args()


# --- /proc --------------------------------------------------------------------------------------

def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out  # sizes in KiB


def proc_pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return None


# --- HTTP ---------------------------------------------------------------------------------------

def http_json(method, url, body=None, timeout=15):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text


# --- processes ----------------------------------------------------------------------------------

class Device:
    def __init__(self, args, index, mqtt, http, directory):
        self.id = f"soak-{index:03d}"
        self.events = {}
        self.claim_code = None
        self.cond = threading.Condition()
        state = os.path.join(directory, f"{self.id}.json")
        self.log_path = os.path.join(directory, f"{self.id}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [os.path.join(args.bin_dir, "gatehouse-device"), "--id", self.id, "--name", f"Soak {index}",
             "--mqtt", mqtt, "--api", f"http://{http}", "--interval", args.interval, "--state", state],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            name = event.get("event", "?")
            with self.cond:
                self.events[name] = self.events.get(name, 0) + 1
                if name == "pending":
                    self.claim_code = event.get("claimCode")
                self.cond.notify_all()

    def wait_for(self, name, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.events.get(name):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def stderr_tail(self, lines=5):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""


def stop_process(proc, grace=10):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


# --- the run ------------------------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="gatehouse-soak-")
        self.gateway_log = os.path.join(self.dir, "gatehouse.log")
        self.gateway = None
        self.devices = []
        self.rows = []
        self.failures = []
        self.api = None
        self.task_posts = {"ok": 0, "refused": 0, "error": 0}
        self.task_refusals = {}
        self.max_queue = 0
        self.interrupted = False

    # set-up

    def start_gateway(self):
        binary = os.path.join(self.args.bin_dir, "gatehouse")
        for name in ("gatehouse", "gatehouse-device"):
            if not os.access(os.path.join(self.args.bin_dir, name), os.X_OK):
                raise SetupError(f"{os.path.join(self.args.bin_dir, name)} is missing: run "
                                 "`cargo build --release -p gateway-core --bin gatehouse --bin gatehouse-device` "
                                 "or give --bin-dir")
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        command = [binary, "run", "--data-dir", data,
                   "--mqtt", "127.0.0.1:0", "--mqtt-tls", "off", "--mqtt-ws", "off", "--mqtt-wss", "off",
                   "--http", "127.0.0.1:0", "--ingest", "off", "--no-ble",
                   "--simulate", str(self.args.tags), "--seed", str(self.args.seed)]
        log = open(self.gateway_log, "wb")
        self.gateway = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        runtime_path = os.path.join(data, "gatehouse.runtime.json")
        deadline = time.monotonic() + 60
        while True:
            if self.gateway.poll() is not None:
                raise SetupError(f"gatehouse exited during start-up ({self.gateway.returncode}):\n{self.log_tail()}")
            try:
                with open(runtime_path) as f:
                    runtime = json.load(f)  # written in one go but not atomically: retry until it parses
                break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SetupError(f"gatehouse wrote no {runtime_path} within 60 s:\n{self.log_tail()}")
            time.sleep(0.1)
        self.mqtt, self.http = runtime["mqtt"], runtime["http"]
        self.api = f"http://{self.http}"
        print(f"# {' '.join(command)}", flush=True)
        print(f"# gatehouse pid {self.gateway.pid}: mqtt://{self.mqtt} http://{self.http}; "
              f"data and logs in {self.dir}", flush=True)

    def start_devices(self, batch=10):
        directory = os.path.join(self.dir, "devices")
        os.makedirs(directory)
        began = time.monotonic()
        for first in range(0, self.args.devices, batch):
            group = [Device(self.args, i, self.mqtt, self.http, directory)
                     for i in range(first, min(first + batch, self.args.devices))]
            self.devices.extend(group)
            for device in group:
                if not device.wait_for("pending", 60):
                    raise SetupError(f"{device.id} showed no claim code within 60 s:\n{device.stderr_tail()}")
                status, body = http_json("POST", f"{self.api}/api/claims", {"code": device.claim_code})
                if status != 200:
                    raise SetupError(f"claiming {device.id} answered {status}: {body}")
            for device in group:
                if not device.wait_for("connected", 60):
                    raise SetupError(f"{device.id} did not connect after its claim within 60 s:\n"
                                     f"{device.stderr_tail()}")
        print(f"# {len(self.devices)} devices claimed and connected in {time.monotonic() - began:.1f} s",
              flush=True)

    # measuring

    def health(self):
        try:
            status, body = http_json("GET", f"{self.api}/api/health", timeout=10)
            return body if status == 200 and isinstance(body, dict) else None
        except (OSError, ValueError):
            return None

    def db_bytes(self, health):
        path = (health or {}).get("store", {}).get("database") or os.path.join(self.dir, "data", "gatehouse.db")
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(path + suffix)
            except OSError:
                pass
        return total

    def sample(self, elapsed, last):
        pid = self.gateway.pid
        status = proc_status(pid)
        pss = proc_pss_kib(pid)
        ticks = proc_cpu_ticks(pid)
        now = time.monotonic()
        cpu = None
        if ticks is not None and last is not None and now > last[1]:
            cpu = (ticks - last[0]) / CLK_TCK / (now - last[1]) * 100
        health = self.health() or {}
        store, mqtt, bus, tasks, memory = (health.get(k) or {} for k in ("store", "mqtt", "bus", "tasks", "memory"))
        heap, sqlite = memory.get("heapInUseBytes"), memory.get("sqliteBytes")
        device_rss = sum(proc_status(d.proc.pid).get("VmRSS", 0) for d in self.devices if d.proc.poll() is None)
        row = {
            "min": elapsed / 60,
            "rss": status.get("VmRSS", 0) / 1024,
            "hwm": status.get("VmHWM", 0) / 1024,
            "anon": status["RssAnon"] / 1024 if "RssAnon" in status else None,
            "file": status["RssFile"] / 1024 if "RssFile" in status else None,
            "pss": None if pss is None else pss / 1024,
            "heap": None if heap is None else heap / MIB,
            "sqlite": None if sqlite is None else sqlite / MIB,
            "other": None if heap is None or sqlite is None else (heap - sqlite) / MIB,
            "cpu": cpu,
            "threads": status.get("Threads"),
            "queue": store.get("queueDepth"),
            "queue_max": max(self.max_queue, store.get("queueDepth") or 0),
            "rows": store.get("rowsWritten"),
            "write_errors": store.get("writeErrors"),
            "lagged": bus.get("lagged"),
            "clients": mqtt.get("clientsConnected"),
            "online": health.get("devicesOnline"),
            "tasks": tasks,
            "db": self.db_bytes(health) / MIB,
            "dev_rss": device_rss / 1024,
            "dev_alive": sum(1 for d in self.devices if d.proc.poll() is None),
        }
        self.max_queue = 0
        return row, (ticks, now)

    @staticmethod
    def tasks_cell(t):
        if not t:
            return "?"
        done = sum(t.get(k, 0) for k in ("succeeded", "failed", "rejected", "timedOut", "expired", "canceled"))
        parts = [f"{t.get('created', 0)} made", f"{t.get('succeeded', 0)} ok"]
        for key, label in (("failed", "failed"), ("rejected", "rejected"), ("timedOut", "timed out"),
                           ("expired", "expired"), ("canceled", "canceled"), ("resent", "resent")):
            if t.get(key):
                parts.append(f"{t[key]} {label}")
        parts.append(f"{max(t.get('created', 0) - done, 0)} open")
        return ", ".join(parts)

    COLUMNS = ["min", "RSS MiB", "anon MiB", "file MiB", "PSS MiB", "heap MiB", "SQLite MiB", "CPU %", "threads", "queue now/max", "rows written", "bus lagged",
               "MQTT clients", "tasks", "DB+WAL MiB"]

    def cells(self, row):
        fmt = lambda v, spec: "?" if v is None else format(v, spec)
        queue = f"{fmt(row['queue'], 'd')}/{row['queue_max']}"
        return [minute(row["min"]),
                f"{row['rss']:.1f}", fmt(row["anon"], ".1f"), fmt(row["file"], ".1f"), fmt(row["pss"], ".1f"),
                fmt(row.get("heap"), ".1f"), fmt(row.get("sqlite"), ".1f"), fmt(row["cpu"], ".1f"), fmt(row["threads"], "d"),
                queue, fmt(row["rows"], ",d"), fmt(row["lagged"], "d"), fmt(row["clients"], "d"),
                self.tasks_cell(row["tasks"]), f"{row['db']:.1f}"]

    def print_row(self, row):
        print("  ".join(f"{c}={v}" for c, v in zip(self.COLUMNS, self.cells(row)))
              + f"  devices={row['dev_alive']}/{len(self.devices)} (RSS {row['dev_rss']:.0f} MiB)", flush=True)

    # the load

    def send_task(self, device, n):
        if (n // len(self.devices)) % 2 == 0:
            body = {"command": "set_interval", "params": {"seconds": max(1, int(parse_seconds(self.args.interval)))}}
        else:
            body = {"command": "identify", "params": {"seconds": 1}}
        try:
            status, answer = http_json("POST", f"{self.api}/api/devices/{device.id}/tasks", body)
        except (OSError, ValueError) as error:
            self.task_posts["error"] += 1
            self.task_refusals[str(error)] = self.task_refusals.get(str(error), 0) + 1
            return
        if status == 201:
            self.task_posts["ok"] += 1
        else:
            self.task_posts["refused"] += 1
            key = f"{status} {answer.get('error', answer) if isinstance(answer, dict) else answer}"[:160]
            self.task_refusals[key] = self.task_refusals.get(key, 0) + 1

    def check_alive(self):
        if self.gateway.poll() is not None:
            self.failures.append(f"gatehouse exited with {self.gateway.returncode}")
            return False
        dead = [d for d in self.devices if d.proc.poll() is not None]
        if dead:
            for d in dead:
                self.failures.append(f"device {d.id} exited with {d.proc.returncode}: {d.stderr_tail(3)}")
            return False
        return True

    def run(self):
        duration = self.args.minutes * 60
        start = time.monotonic()
        row, last = self.sample(0, None)
        self.rows.append(row)
        self.print_row(row)
        task_gap = 60.0 / len(self.devices) if self.devices else None
        next_task = start
        next_sample = start + self.args.sample
        next_poll = start + 5
        n = 0
        while True:
            now = time.monotonic()
            if not self.check_alive():
                if self.gateway.poll() is None:
                    row, last = self.sample(now - start, last)
                    self.rows.append(row)
                    self.print_row(row)
                break
            if now >= next_poll:
                health = self.health()
                if health:
                    self.max_queue = max(self.max_queue, health.get("store", {}).get("queueDepth") or 0)
                next_poll += 5
            if now >= next_sample or now - start >= duration:
                row, last = self.sample(now - start, last)
                self.rows.append(row)
                self.print_row(row)
                next_sample += self.args.sample
                if now - start >= duration - 0.5:
                    break
            if task_gap and now >= next_task and now - start < duration:
                self.send_task(self.devices[n % len(self.devices)], n)
                n += 1
                next_task += task_gap
            wake = min(next_sample, next_poll, start + duration, next_task if task_gap else next_sample)
            time.sleep(max(0.0, min(wake - time.monotonic(), 1.0)))

    # the report

    def final_task_states(self):
        states = {}
        for device in self.devices:
            try:
                status, tasks = http_json("GET", f"{self.api}/api/devices/{device.id}/tasks?limit=10000")
            except OSError:
                return None
            if status != 200 or not isinstance(tasks, list):
                return None
            for task in tasks:
                states[task.get("state", "?")] = states.get(task.get("state", "?"), 0) + 1
        return states

    def log_summary(self):
        counts = {"ERROR": 0, "WARN": 0}
        distinct = {}
        try:
            with open(self.gateway_log, errors="replace") as f:
                for line in f:
                    line = ANSI.sub("", line).rstrip()
                    for level in counts:
                        if re.search(rf"\b{level}\b", line[:60]):
                            counts[level] += 1
                            # Drop the timestamp so repeats of one message group together.
                            key = re.sub(r"^\S+\s+", "", line)
                            key = re.sub(r"\d+", "N", key)[:200]
                            distinct[key] = distinct.get(key, 0) + 1
        except OSError:
            pass
        return counts, sorted(distinct.items(), key=lambda kv: -kv[1])[:8]

    def report(self):
        rows = self.rows
        print()
        print(f"## Soak: {self.args.tags} simulated tags + {len(self.devices)} reference devices, "
              f"{rows[-1]['min']:.1f} min" if rows else "## Soak: no samples")
        print()
        every = max(1, self.args.table_every)
        print("| " + " | ".join(self.COLUMNS) + " |")
        print("|" + "|".join(" ---: " for _ in self.COLUMNS[:-2]) + "| --- | ---: |")
        for i, row in enumerate(rows):
            if i % every == 0 or i == len(rows) - 1:
                print("| " + " | ".join(self.cells(row)) + " |")
        print()
        measured = [r for r in rows[1:] if r["cpu"] is not None]
        if measured:
            cpu = sum(r["cpu"] for r in measured) / len(measured)
            print(f"- gateway CPU: {cpu:.1f} % of one core on average (max {max(r['cpu'] for r in measured):.1f} %)")
        if rows:
            print(f"- peak RSS (VmHWM): {rows[-1]['hwm']:.1f} MiB; devices' RSS together: {rows[-1]['dev_rss']:.0f} MiB")
            print(f"- store queue depth: max {max((r['queue_max'] or 0) for r in rows)} "
                  f"(sampled every 5 s); write errors: {rows[-1]['write_errors']}; bus lagged: {rows[-1]['lagged']}")
            first, final = rows[0], rows[-1]
            if final["min"] > 0 and first["rows"] is not None and final["rows"] is not None:
                print(f"- rows written: {final['rows']:,} ({final['rows'] / (final['min'] * 60):.0f}/s); "
                      f"DB+WAL {first['db']:.1f} → {final['db']:.1f} MiB")
        print(f"- task requests: {self.task_posts['ok']} accepted, {self.task_posts['refused']} refused, "
              f"{self.task_posts['error']} failed to reach the API")
        for key, count in sorted(self.task_refusals.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  - {count} × {key}")
        states = self.final_task_states() if self.gateway.poll() is None else None
        if states is not None:
            print("- tasks by state at the end: " + ", ".join(f"{v} {k}" for k, v in sorted(states.items())))
        counts, distinct = self.log_summary()
        print(f"- gateway log: {counts['ERROR']} ERROR, {counts['WARN']} WARN lines ({self.gateway_log})")
        for key, count in distinct:
            print(f"  - {count} × {key}")
        self.verdict()
        for failure in self.failures:
            print(f"- FAILURE: {failure}")

    def verdict(self):
        rows = [r for r in self.rows if r["rss"]]
        if len(rows) < 3:
            print("- memory: too few samples for a verdict")
            return
        # Warm-up, then steady state. While the first half runs, SQLite's page caches fill up to
        # their bound (2 MiB per connection), the allocator's arenas and the broker's buffers
        # reach their working size. The second half is the steady state: it must be flat.
        end = rows[-1]
        mid = next(r for r in rows if r["min"] >= end["min"] / 2 - 1e-6)
        steady = [r for r in rows if r["min"] >= mid["min"]]

        def change(key, base, window):
            growth = end[key] - base[key]
            pct = growth / base[key] * 100 if base[key] else 0
            known = [r for r in window if r.get(key) is not None]
            slope = least_squares_slope([r["min"] for r in known], [r[key] for r in known]) * 60
            text = (f"{base[key]:.1f} MiB at minute {minute(base['min'])} → {end[key]:.1f} MiB at minute "
                    f"{minute(end['min'])}: {growth:+.1f} MiB ({pct:+.1f} %), trend {slope:+.1f} MiB/h")
            return growth, text

        growth, text = change("rss", rows[0], rows)
        print(f"- memory, whole run: RSS {text}")
        growth, text = change("rss", mid, steady)
        flat = abs(growth) <= max(1.0, mid["rss"] * 0.03)
        print(f"- memory, steady state (second half): RSS {text}; "
              + ("**flat** (within max(1 MiB, 3 %))" if flat else "**NOT flat** (moved more than max(1 MiB, 3 %))"))
        for key, label in (("anon", "anonymous (heap, stacks)"), ("file", "file-backed (the binary's code paged in)"),
                           ("pss", "PSS"), ("heap", "heap in use (allocator's count)"),
                           ("sqlite", "of which SQLite (page caches ≤ 2 MiB per connection, statements)"),
                           ("other", "heap in use apart from SQLite")):
            if mid.get(key) is not None and end.get(key) is not None:
                print(f"  - {label}: {change(key, mid, steady)[1]}")

    # clean-up

    def cleanup(self):
        for device in self.devices:
            if device.proc.poll() is None:
                try:
                    device.proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        for device in self.devices:
            stop_process(device.proc, grace=5)
            device.log.close()
        stop_process(self.gateway, grace=15)
        if not self.args.keep:
            data = os.path.join(self.dir, "data")
            for name in os.listdir(data) if os.path.isdir(data) else []:
                if name.endswith((".db", ".db-wal", ".db-shm")):
                    try:
                        os.remove(os.path.join(data, name))
                    except OSError:
                        pass
            print(f"# logs kept in {self.dir} (database deleted; --keep keeps it)", flush=True)
        else:
            print(f"# data directory kept: {self.dir}", flush=True)


def minute(value):
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def parse_seconds(text):
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        return 5
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def least_squares_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main():
    args = parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("soak.py reads /proc: Linux only")

    def on_signal(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup, keep ignoring it
        signal.signal(signal.SIGHUP, on_signal)
    soak = Soak(args)
    code = 0
    try:
        soak.start_gateway()
        soak.start_devices()
        print(f"# load: {args.tags} simulated tags, {len(soak.devices)} devices sending every {args.interval}, "
              f"one task per device per minute (round robin); {args.minutes:g} min, a row every {args.sample:g} s",
              flush=True)
        soak.run()
    except SetupError as error:
        print(f"soak: set-up failed: {error}", file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, Stop) as stop:
        print(f"\n# interrupted ({stop or 'Ctrl-C'}): stopping", flush=True)
        soak.interrupted = True
        code = 130
    try:
        if soak.rows:
            soak.report()
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        soak.cleanup()
    if soak.failures:
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
