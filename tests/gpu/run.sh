#!/usr/bin/env bash
# tests/gpu/run.sh LOGDIR SUITE...: runs every GPU suite and never stops at a failure (make test-gpu).
# Each suite runs with a time limit (GPU_SUITE_SECONDS, default 300) and writes its whole output to
# LOGDIR/NAME.log. A suite that dies without its summary line (a fatal CUDA, cuDNN or cuBLAS error
# exits the process) is run again part by part (`SUITE PART`, tests/gpu/suite.h), each part's
# output appended to its log, so that one fatal error hides none of the other parts.
# GPU_WRAP: a command to run each suite under (make test-gpu-sanitize: compute-sanitizer).
# Prints a line per suite (and per part run again), the first FAIL lines, and a combined verdict.
# Exit status: 0 when no suite failed (skipped suites do not fail), else 1.
set -u
logdir=$1
shift
mkdir -p "$logdir"
limit=${GPU_SUITE_SECONDS:-300}
wrap=(${GPU_WRAP:-})
passed=() skipped=() failed=()

# run_one LOG ARGS...: the suite (under GPU_WRAP) with the time limit, output appended to LOG
run_one() {
    local log=$1
    shift
    timeout --kill-after=10 "$limit" "${wrap[@]}" "$@" >>"$log" 2>&1
}

# summary_of LOG NAME [FROM]: the verdict line a suite prints last, in LOG from line FROM on:
# "NAME: N cases, M failed" / "NAME: N checks, M failed" / "NAME: ...; skipped"
summary_of() { tail -n +"${3:-1}" "$1" | grep -E "^$2: ([0-9]+ (cases|checks), [0-9]+ failed|.*skipped$)" | tail -1; }

for suite in "$@"; do
    name=$(basename "$suite")
    log=$logdir/$name.log
    : >"$log"
    t0=$SECONDS
    run_one "$log" "$suite"
    rc=$?
    sum=$(summary_of "$log" "$name")
    dt=$((SECONDS - t0))
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        verdict="TIMED OUT after ${limit} s (the log ends: $(tail -1 "$log"))"
        failed+=("$name")
    elif [ -z "$sum" ]; then
        verdict="DIED (exit $rc) without its summary; the log ends: $(tail -1 "$log")"
        failed+=("$name")
    elif [[ "$sum" == *skipped ]]; then
        verdict="skipped: ${sum#"$name: "}"
        skipped+=("$name")
    elif [ $rc -eq 0 ]; then
        verdict="passed: ${sum#"$name: "}"
        passed+=("$name")
    else
        verdict="FAILED (exit $rc): ${sum#"$name: "}"
        failed+=("$name")
    fi
    printf '%-12s %4d s  %s\n' "$name" "$dt" "$verdict"
    grep -E '^FAIL|ERROR SUMMARY: [1-9]|========= (Invalid|Program hit|Error)' "$log" | head -15 | sed 's/^/    /'
    # died: every part again on its own, so the parts after the fatal one still run
    if [ -z "$sum" ] && [ $rc -ne 124 ] && [ $rc -ne 137 ]; then
        for part in $("$suite" --list 2>/dev/null); do
            echo "== part $part alone" >>"$log"
            from=$(($(wc -l <"$log") + 1))
            t0=$SECONDS
            run_one "$log" "$suite" "$part"
            prc=$?
            psum=$(summary_of "$log" "$name" "$from")
            printf '    part %-16s %4d s  exit %d: %s\n' "$part" $((SECONDS - t0)) $prc "${psum:-no summary: $(tail -1 "$log")}"
        done
    fi
done

n=$#
echo "test-gpu: $n suites: ${#passed[@]} passed, ${#skipped[@]} skipped, ${#failed[@]} failed${failed[*]:+ (${failed[*]})}; logs in $logdir"
if [ ${#skipped[@]} -eq "$n" ] && [ "$n" -gt 0 ]; then
    echo "test-gpu: no usable GPU here: every suite skipped. On a GPU machine it would run:"
    for suite in "$@"; do echo "    $(basename "$suite") (parts: $("$suite" --list 2>/dev/null | tr '\n' ' '))"; done
fi
[ ${#failed[@]} -eq 0 ]
