#!/usr/bin/env bash
# Fuzz every parser of client input for a bounded time each, failing on
# the first crash:   fuzz/run.sh [SECONDS]   (default 30 s per target)
#
# Installs cargo-fuzz (crates.io) when it is missing. cargo fuzz passes
# nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take them. FUZZ_SANITIZER=none runs without AddressSanitizer.
# Findings go to fuzz/artifacts/<target>/ (reproduce with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`), the growing corpus to
# fuzz/corpus/<target>/ (both git-ignored); fuzz/seeds/<target>/ are
# starting inputs.
set -euo pipefail

secs=${1:-30}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

start=$SECONDS
echo "== building the fuzz targets"
cargo fuzz build "${sanitizer[@]}"
echo "== built in $((SECONDS - start)) s"

failed=()
for t in $(cargo fuzz list); do
    echo "== fuzzing $t for ${secs} s"
    mkdir -p "corpus/$t" "seeds/$t"
    if ! cargo fuzz run "${sanitizer[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -max_len=65536 -print_final_stats=1; then
        failed+=("$t")
    fi
done

echo "== fuzzing took $((SECONDS - start)) s in all"
if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: all targets ran ${secs} s each without a crash"
