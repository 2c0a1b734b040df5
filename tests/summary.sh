#!/usr/bin/env bash
# The last line of `make test`: the phases' counts added up ("PHASE PASSED FAILED" lines that
# tests/run_all.sh, tests/run_sanitized.sh and tests/fuzz/run.sh wrote to FILE). A phase that wrote
# nothing did not run to its end (its build failed): it counts as one failure. Exit 1 on any failure.
# Usage: tests/summary.sh FILE PHASE...
set -u
file=$1
shift
passed=0 failed=0 parts=()
for phase in "$@"; do
    line=$(grep "^$phase " "$file" 2>/dev/null | tail -1)
    if [ -z "$line" ]; then
        failed=$((failed + 1))
        parts+=("$phase: did not run to its end")
        continue
    fi
    read -r _ p f <<<"$line"
    passed=$((passed + p))
    failed=$((failed + f))
    parts+=("$phase $p/$((p + f))")
done
detail=$(printf '%s; ' "${parts[@]}")
echo "make test: $passed passed, $failed failed (${detail%; })"
[ "$failed" -eq 0 ]
