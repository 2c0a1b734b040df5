#!/usr/bin/env bash
# Run every test binary given on the command line from the repository root, each one's output into
# BUILD/test-logs/NAME.log; one line per program, the end of the log of one that failed; fail if any
# failed. With TEST_SUMMARY set, adds "unit-programs PASSED FAILED" to that file (tests/summary.sh).
# Used by `make test`.
set -u
cd "$(dirname "$0")/.."
logs=${BUILD:-build}/test-logs
mkdir -p "$logs"
failed=()
for t in "$@"; do
    name=$(basename "$t")
    name=${name%.sh}
    start=$(date +%s)
    if "$t" >"$logs/$name.log" 2>&1; then
        echo "== $name: passed in $(( $(date +%s) - start )) s"
    else
        tail -60 "$logs/$name.log"
        echo "== $name: FAILED (the whole output: $logs/$name.log)"
        failed+=("$name")
    fi
done
[ -n "${TEST_SUMMARY:-}" ] && echo "unit-programs $(( $# - ${#failed[@]} )) ${#failed[@]}" >>"$TEST_SUMMARY"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all ${#} test programs passed"
