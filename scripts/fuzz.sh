#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of gateway-core's parsers of outside input.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Installs cargo-fuzz if it is missing, builds every target once (fuzz/target), replays the
# inputs of earlier findings (fuzz/regressions/<target>/), then fuzzes each target for the given
# time (default 30 s) from its committed seeds (fuzz/corpus/<target>/) plus what earlier runs on
# this machine found (fuzz/target/corpus/<target>/, not committed). Prints one summary line per
# target and exits non-zero if any target crashed, hung, ran out of memory or failed a check;
# the input that did it is saved under fuzz/artifacts/<target>/. fuzz/README.md has the rest
# (targets, reproducing a finding, longer runs: `make fuzz ARGS="600"`).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(ruuvi_ble ruuvi_gateway_http ruuvi_gateway_mqtt registration device_messages ha_discovery mqtt_packets
    http_api)

seconds="${1:-30}"
[[ $# -gt 0 ]] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -lt 1 ]]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]   (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${ALL_TARGETS[@]}")
for target in "${targets[@]}"; do
    if [[ ! -f "fuzz/fuzz_targets/$target.rs" ]]; then
        echo "unknown fuzz target '$target' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# No sanitizer (-s none): the code under test is safe Rust, and AddressSanitizer would double
# the build time and halve the speed. Without one, every flag cargo-fuzz passes is stable, so the
# stable toolchain builds the targets (no nightly, no RUSTC_BOOTSTRAP).
# FUZZ_BUILD=release (the default): optimised (-O), with debug assertions and overflow checks (-a).
# FUZZ_BUILD=dev: unoptimised, about 30% less to compile and several times fewer executions per
# second; what CI uses, where the cold build of gateway-core's ~450 crates dominates the time.
case "${FUZZ_BUILD:-release}" in
release)
    build_flags=(-O -a -s none)
    bin_dir="fuzz/target/x86_64-unknown-linux-gnu/release"
    ;;
dev)
    build_flags=(--dev -a -s none)
    bin_dir="fuzz/target/x86_64-unknown-linux-gnu/debug"
    ;;
*)
    echo "FUZZ_BUILD must be release or dev" >&2
    exit 2
    ;;
esac

started=$(date +%s)
echo "== building fuzz targets (${FUZZ_BUILD:-release})"
(cd fuzz && cargo fuzz build "${build_flags[@]}")
echo "== built in $(($(date +%s) - started)) s"

logs="fuzz/target/logs"
mkdir -p "$logs"
failed=()
summary=()
for target in "${targets[@]}"; do
    bin="$bin_dir/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$artifacts"
    # libFuzzer flags shared by the replay and the run: a finding's input is written to
    # $artifacts; one input may take at most 30 s (timeout) and 2 GiB (out-of-memory).
    common=(-artifact_prefix="$artifacts/" -timeout=30 -rss_limit_mb=2048)

    regressions=()
    if [[ -d "fuzz/regressions/$target" ]]; then
        while IFS= read -r -d '' file; do regressions+=("$file"); done \
            < <(find "fuzz/regressions/$target" -type f -print0 | sort -z)
    fi
    if [[ ${#regressions[@]} -gt 0 ]]; then
        # Given files rather than folders, libFuzzer runs each once and stops at the first failure.
        if ! "$bin" "${common[@]}" "${regressions[@]}" >"$logs/$target.replay.log" 2>&1; then
            tail -n 40 "$logs/$target.replay.log"
            summary+=("$(printf '%-20s FAILED replaying fuzz/regressions/%s (log: %s)' "$target" "$target" \
                "$logs/$target.replay.log")")
            failed+=("$target")
            continue
        fi
    fi

    work="fuzz/target/corpus/$target"
    mkdir -p "$work"
    status=0
    # New inputs go to the first folder (the local work corpus); the committed seeds are read only.
    "$bin" "${common[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        "$work" "fuzz/corpus/$target" >"$logs/$target.log" 2>&1 || status=$?
    log="$logs/$target.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    line=$(printf '%-20s %10s runs %7s/s  cov %6s  corpus %-12s %3s regression input(s)' "$target" "${runs:-?}" \
        "${speed:-?}" "${cov:-?}" "${corp:-?}" "${#regressions[@]}")
    if [[ $status -ne 0 ]]; then
        tail -n 60 "$log"
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        line="$line  FAILED (exit $status; input: ${artifact:-see $log})"
        failed+=("$target")
    fi
    summary+=("$line")
    echo "$line"
done

echo "== fuzzing summary (${seconds} s per target, $(($(date +%s) - started)) s in all)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "== FAILED: ${failed[*]}; reproduce with $bin_dir/<target> <input> (fuzz/README.md)"
fi
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[[ ${#failed[@]} -eq 0 ]]
