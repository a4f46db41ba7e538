# The two commands: `make run` starts the gateway, `make test` runs every test.
# Both install what is missing first and can be repeated.

CARGO ?= cargo

.PHONY: run test build bench bench-tasks fmt clippy

run:
	./scripts/setup.sh run
	$(CARGO) build --release -p gateway-core --bin gatehouse
	./scripts/run.sh $(ARGS)

test:
	./scripts/setup.sh test
	cd ui && npm test --silent
	$(CARGO) build --workspace --bins
	./scripts/package-desktop.sh --debug
	$(CARGO) test --workspace

# Coverage-guided fuzzing of every parser of outside input (fuzz/README.md): each target for
# ARGS seconds (default 30), e.g. `make fuzz ARGS=600` or `make fuzz ARGS="300 mqtt_packets"`.
.PHONY: fuzz
fuzz:
	./scripts/fuzz.sh $(ARGS)

# The desktop app (window + tray) with the same flags as `gatehouse run`, e.g. ARGS="--simulate 10".
.PHONY: desktop
desktop:
	./scripts/setup.sh desktop
	$(CARGO) build --release -p gatehouse-desktop
	./target/release/gatehouse-desktop $(ARGS)

# The desktop app's budget (docs/benchmarks.md): cold start to first chart, RSS with the window
# open and 10 simulated tags, under Xvfb with WebKitWebDriver; prints Markdown rows.
.PHONY: bench-desktop
bench-desktop:
	./scripts/setup.sh test
	./scripts/package-desktop.sh
	$(CARGO) test -p gatehouse-tests --test desktop -- --ignored bench_desktop_budget --nocapture --test-threads 1

bench:
	./scripts/setup.sh run
	$(CARGO) run --release -p gateway-core --bin gatehouse-bench -- all

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Gatehouse's broker against Mosquitto under the same MQTT load (Markdown report on stdout).
# Tries a 65536 open-file limit and falls back to the hard limit where it cannot be raised.
.PHONY: bench-broker
bench-broker:
	./scripts/setup.sh test
	$(CARGO) build --release -p gateway-core --bin gatehouse --bin gatehouse-loadgen
	bash -c 'ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; ./target/release/gatehouse-loadgen $(ARGS)'

# Task delivery end to end: 1,000 tasks over 100 claimed devices through the real API and broker
# (Markdown report on stdout). `ARGS="--devices 100 --tasks 1000"` changes the load.
bench-tasks:
	./scripts/setup.sh run
	$(CARGO) build --release -p gateway-core --bin gatehouse --bin gatehouse-taskbench
	./target/release/gatehouse-taskbench $(ARGS)

# Soak (docs/benchmarks.md): 200 simulated tags + 50 claimed reference devices with a task per
# device per minute; a row a minute (RSS, CPU, queue depth, DB size), a memory verdict at the end.
# `make soak ARGS="--minutes 30"`; `python3 scripts/soak.py --help` lists the options.
.PHONY: soak
soak:
	$(CARGO) build --release -p gateway-core --bin gatehouse --bin gatehouse-device
	python3 scripts/soak.py $(ARGS)

# The web UI's performance budget in headless Chromium: a 100,000-point uPlot draw, the overview
# with 100 simulated tags updating every second, first render (docs/benchmarks.md).
.PHONY: bench-ui
bench-ui:
	./scripts/setup.sh test
	$(CARGO) build --release -p gateway-core --bin gatehouse
	bash -c 'dir=$$(mktemp -d); ./target/release/gatehouse run --data-dir "$$dir" --no-ble --simulate 100 --seed 1 --http 127.0.0.1:18180 --mqtt 127.0.0.1:0 --mqtt-tls off --mqtt-ws off --mqtt-wss off --ui-dir ui/dist >"$$dir/log" 2>&1 & pid=$$!; sleep 3; (cd ui && node e2e/bench.mjs http://127.0.0.1:18180); status=$$?; kill $$pid; exit $$status'

# The headless daemon's Debian package (systemd service) in target/packages/; see
# docs/packaging.md. ARGS="--target aarch64-unknown-linux-gnu" cross-builds for a Raspberry Pi.
.PHONY: package-daemon
package-daemon:
	./scripts/setup.sh run
	./scripts/package-daemon.sh $(ARGS)
