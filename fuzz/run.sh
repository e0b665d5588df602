#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) and prints the execution
# counts. The committed corpus (fuzz/corpus/TARGET, regressions included) is
# replayed first and read only: new inputs go to a scratch directory.
#   bash fuzz/run.sh 60            # CI
#   bash fuzz/run.sh 3600          # the nightly run (10M+ executions a target)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz needs nightly flags; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# Safe Rust: coverage guidance without AddressSanitizer keeps builds fast.
flags=(--sanitizer none --release --debug-assertions)
cargo fuzz build "${flags[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target" "corpus/$target"
    log="$scratch/$target.log"
    if cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || echo '?')
        printf 'fuzz %-20s %12s executions in %ss, no crash\n' "$target" "$runs" "$seconds"
    else
        status=1
        echo "fuzz $target: FAILED; the crashing input is under fuzz/artifacts/$target/"
        tail -40 "$log"
    fi
done
exit $status
