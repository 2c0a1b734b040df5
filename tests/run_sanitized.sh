#!/usr/bin/env bash
# The unit tests built with AddressSanitizer + UndefinedBehaviorSanitizer (`make test-sanitize`
# builds them in DIR/tests and the trainer as DIR/train), then a short end-to-end run of the
# sanitized trainer: generated JPEGs, a config with a training, a TTA and an eval stage. Sanitizer
# reports go to files, since some tests capture stderr; any report fails the run.
#
# Left out under the sanitizers (SANITIZE_ALL=1 runs them too), to keep `make test` short on 2
# cores: test_train and test_imagenette (training runs: 10 to 20 minutes each under ASan),
# test_models (3 minutes, mostly a training loop over ops that test_cpu_ops checks sanitized) and
# test_crash (it kills and resumes the unsanitized ./train). The end-to-end run below covers the
# trainer's path (config, listing, loader, training, resume checkpoint, --resume, TTA, eval).
# A program that runs over SANITIZE_TIMEOUT seconds (300) fails: shrink it or list it here.
# Usage: tests/run_sanitized.sh DIR
set -u
cd "$(dirname "$0")/.."
dir=$1
skip=" test_train test_imagenette test_models test_crash "
[ "${SANITIZE_ALL:-0}" = 1 ] && skip=""
limit=${SANITIZE_TIMEOUT:-300}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
export ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1"
export UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1"

failed=()
ran=()
# One program: passes when it exits 0 and the sanitizers wrote nothing.
check() {
    local name=$1
    shift
    local start=$SECONDS
    if declare -F "$1" >/dev/null; then "$@" >"$logs/out" 2>&1; else timeout -s KILL "$limit" "$@" >"$logs/out" 2>&1; fi
    local rc=$?
    if [ $rc -ne 0 ] || ls "$logs"/asan.* "$logs"/ubsan.* >/dev/null 2>&1; then
        tail -60 "$logs/out"
        cat "$logs"/asan.* "$logs"/ubsan.* 2>/dev/null
        rm -f "$logs"/asan.* "$logs"/ubsan.*
        [ $rc -eq 137 ] && echo "$name ran over $limit s under the sanitizers: shrink it, or leave it out in $0"
        echo "== $name (sanitized): FAILED (exit $rc)"
        failed+=("$name")
    else
        echo "== $name (sanitized): passed in $((SECONDS - start)) s"
    fi
    ran+=("$name")
}

for t in "$dir"/tests/test_*; do
    name=$(basename "$t")
    if [[ "$skip" == *" $name "* ]]; then
        echo "== $name (sanitized): left out (SANITIZE_ALL=1 runs it)"
        continue
    fi
    check "$name" "$t"
done

# End to end: 10 classes x 4 generated images, training stopped after 3 steps (run.stop_after) and
# resumed, then TTA and eval at two sizes.
e2e() {
    local out rc run
    out=$(mktemp -d)
    "$dir/train" demo-data --out "$out/data" --train 4 --valid 2 --size 24 >/dev/null || return 1
    printf '%s\n' "[data]" "path = $out/data" "[model]" "arch = xresnet18" "[run]" "device = cpu" \
        "out_dir = $out/runs" "stop_after = 3" "[stage fit]" "type = fit_one_cycle" "epochs = 2" "size = 16" \
        "batch = 8" "[stage tta]" "type = tta" "n = 2" "[stage sizes]" "type = eval" "sizes = 16,24" >"$out/run.ini"
    timeout -s KILL "$limit" "$dir/train" "$out/run.ini" >"$out/log" 2>&1
    rc=$?
    run=$(sed -n 's/.*--resume \([^ ]*\).*/\1/p' "$out/log" | tail -1)
    if [ $rc -lt 128 ] && [ -n "$run" ]; then
        timeout -s KILL "$limit" "$dir/train" --resume "$run" --set run.stop_after=0 >>"$out/log" 2>&1
        rc=$?
        [ $rc -eq 0 ] && [ ! -s "$run/final.safetensors" ] && rc=1
    else
        rc=1
    fi
    [ $rc -ne 0 ] && cat "$out/log"
    rm -rf "$out"
    return $rc
}
check "train (config run, stopped and resumed)" e2e

[ -n "${TEST_SUMMARY:-}" ] && echo "sanitized-runs $(( ${#ran[@]} - ${#failed[@]} )) ${#failed[@]}" >>"$TEST_SUMMARY"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED under the sanitizers: ${failed[*]}"
    exit 1
fi
echo "all ${#ran[@]} sanitized runs passed: no ASan or UBSan report, no leak"
