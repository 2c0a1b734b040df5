#!/usr/bin/env bash
# Run libFuzzer targets, each for SECONDS, from a scratch copy of its seed corpus
# (tests/fuzz/corpus/NAME) with its dictionary (tests/fuzz/NAME.dict); print the executions of
# each and fail if any found a crash, a leak or a broken check. A failing input is kept as
# BIN_DIR/crashes/NAME-...: once fixed, add it to tests/fuzz/regress/NAME/, where
# tests/test_fuzz_inputs.c replays it in every `make test`.
# Usage: tests/fuzz/run.sh SECONDS BIN...   (make fuzz builds the BINs)
set -u
cd "$(dirname "$0")/../.."
secs=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for bin in "$@"; do
    name=$(basename "$bin")
    t=${name#fuzz_}
    crashes=$(dirname "$bin")/crashes
    mkdir -p "$work/$t" "$work/tmp" "$crashes"
    opts=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$crashes/$t-")
    [ -f "tests/fuzz/$t.dict" ] && opts+=(-dict="tests/fuzz/$t.dict")
    # the CSV listing reports every bad row on stderr: closed for the target (libFuzzer keeps its own)
    [ "$t" = csv ] && opts+=(-close_fd_mask=2)
    TMPDIR=$work/tmp "$bin" "${opts[@]}" "$work/$t" "tests/fuzz/corpus/$t" >"$work/$t.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -1)
    if [ $rc -ne 0 ]; then
        tail -40 "$work/$t.log"
        echo "== $name: FAILED after ${runs:-?} executions (input in $crashes/)"
        failed+=("$name")
    else
        echo "== $name: ${runs:-?} executions in $secs s, ${cov:-cov ?}, corpus $(ls "$work/$t" | wc -l) inputs: no crash"
    fi
done
[ -n "${TEST_SUMMARY:-}" ] && echo "fuzz-targets $(( $# - ${#failed[@]} )) ${#failed[@]}" >>"$TEST_SUMMARY"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: all ${#} targets ran ${secs} s each without a crash"
