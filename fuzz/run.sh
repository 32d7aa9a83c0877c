#!/usr/bin/env bash
# Runs every fuzz target (or those in $TARGETS) for $SECONDS_PER_TARGET
# seconds each (default 5) with cargo-fuzz on the nightly toolchain.
#
# Corpora grow in fuzz/corpus/<target>/ (not committed), starting from the
# committed seeds in fuzz/seeds/<target>/. A crash leaves its input in
# fuzz/artifacts/<target>/; the script runs every target anyway and exits 1
# if any failed.
#
# SANITIZER (default none): the harnessed code is safe Rust, so AddressSanitizer
# mostly costs build time and speed here; SANITIZER=address for a careful run.
# Installs cargo-fuzz (about 1 min) when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-5}
SANITIZER=${SANITIZER:-none}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -s "$SANITIZER"

targets=${TARGETS:-$(cargo +nightly fuzz list)}
failed=()
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "== $t (${SECONDS_PER_TARGET}s)"
    if ! cargo +nightly fuzz run -s "$SANITIZER" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1; then
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: failing targets: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: all targets ran ${SECONDS_PER_TARGET}s without a finding"
