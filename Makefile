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
	$(CARGO) test --workspace

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
