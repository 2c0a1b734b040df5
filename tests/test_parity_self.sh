#!/usr/bin/env bash
# gpu_parity's self-check (part of make test): tests/gpu/gpu_parity with a second cpu backend
# standing in for cuda (CNNTRAIN_PARITY_SELF=1), so the parity harness itself and every row of
# tests/op_cases.h it runs are exercised on machines without a GPU. Every case must agree within
# 1e-6 (the rounding of a loss scale that is not a power of two). BUILD: the build folder.
set -u
cd "$(dirname "$0")/.."
bin=${BUILD:-build}/tests/gpu/gpu_parity
log=$(mktemp)
trap 'rm -f "$log"' EXIT
CNNTRAIN_PARITY_SELF=1 "$bin" >"$log" 2>&1
rc=$?
grep -E '^FAIL' "$log" | head -20
tail -2 "$log"
grep -qE '^gpu_parity: [0-9]+ cases, 0 failed \(cpu vs cpu self-check\)$' "$log" && [ $rc -eq 0 ]
