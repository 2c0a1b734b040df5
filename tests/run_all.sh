#!/usr/bin/env bash
# Run every test binary given on the command line from the repository root; report each and fail
# if any failed. Used by `make test`.
set -u
cd "$(dirname "$0")/.."
failed=()
for t in "$@"; do
    start=$(date +%s)
    if "$t"; then
        echo "== $(basename "$t"): passed in $(( $(date +%s) - start )) s"
    else
        echo "== $(basename "$t"): FAILED"
        failed+=("$(basename "$t")")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all ${#} test programs passed"
