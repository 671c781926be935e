#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 1 000 000), one target at a time,
# and prints each target's executions and executions per second.
#
#   fuzz/run.sh [RUNS] [TARGET...]
#
# A benchmark-style job, not part of CI's time budget: needs the nightly toolchain and
# `cargo install cargo-fuzz`. Each target starts from its committed seeds
# (`fuzz/seeds/<target>/`) plus the corpus earlier runs grew (`fuzz/corpus/<target>/`,
# not committed). Over-allocation and hangs are failures like panics: RSS above 2 GiB,
# one allocation above 2 GiB, or one input running longer than 10 s. A failing input is
# left in `fuzz/artifacts/<target>/`; keep it as a regression in
# `fuzz/regressions/<target>/` and replay it with
# `cargo +nightly fuzz run <target> fuzz/regressions/<target>/<file>`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."

runs=${1:-1000000}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(defs mbr gpt fat ext4 tar deb apt chunks placement)
fi

cargo +nightly fuzz build

summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/run.log"
    echo "== $t: $runs executions" >&2
    start=$(date +%s)
    status=0
    # Regressions are replayed first: a fixed bug must stay fixed.
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        cargo +nightly fuzz run "$t" fuzz/regressions/"$t"/* -- -runs=1 >/dev/null 2>&1 || {
            echo "$t: a regression in fuzz/regressions/$t/ fails again" >&2
            failed=1
        }
    fi
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -runs="$runs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    if [ "$status" -ne 0 ]; then
        failed=1
        line="$t: FAILED after ${execs:-?} executions (exit $status); see $log"
        grep -m3 -E '^==[0-9]+== ERROR|panicked at|Test unit written' "$log" >&2 || true
    else
        line="$t: ${execs:-?} executions, ${rate:-?} exec/s, peak RSS ${rss:-?} MB, ${secs} s"
    fi
    echo "$line" >&2
    summary+=("$line")
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"
