#!/usr/bin/env bash
# Everything a GPU session should check first, in one call of under 10 minutes on the lent H100
# (device time is short: 30 minutes a session, 10 a command): build with CUDA, the GPU suites
# (make test-gpu: every op against the CPU backend in fp32/fp16/bf16, on-device augmentation and
# upload, 50 training steps on both backends), the same suites in quick mode under
# compute-sanitizer, and a short benchmark against PyTorch. Each phase has its own time limit, so
# one that hangs does not take the others' time; each writes its log to OUT (default $OUT, else
# runs/gpu_check), at most 8 files, as the device tool brings back.
#
#   scripts/gpu_check.sh [--skip-sanitizer] [--skip-bench] [--bench-steps 20]
#
# Exit status: 0 when every phase that ran passed; else the number of failed phases.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

sanitize=1 bench=1 bench_steps=20
while [ $# -gt 0 ]; do
    case "$1" in
    --skip-sanitizer) sanitize=0; shift ;;
    --skip-bench) bench=0; shift ;;
    --bench-steps) bench_steps=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown option '$1' (--skip-sanitizer, --skip-bench, --bench-steps N)" >&2; exit 2 ;;
    esac
done
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
jobs=$(nproc)
failed=0
summary="$out/summary.txt"
: >"$summary"

# phase NAME SECONDS COMMAND...: runs it with a limit, its output to OUT/NAME.log, one summary line
phase() {
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    local verdict="passed"
    [ $rc -eq 0 ] || { verdict="FAILED (exit $rc$([ $rc -eq 124 ] && echo ", over ${limit} s"))"; failed=$((failed + 1)); }
    printf '%-10s %-40s %4d s\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$summary"
    return $rc
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1
  nvcc --version 2>&1 | tail -1; git log --oneline -1 2>/dev/null; } | sed 's/^/# /' | tee -a "$summary"

phase build 300 make -j"$jobs" CUDA=1 train || { echo "the build failed: see $out/build.log"; exit 1; }
phase test-gpu 240 make -j"$jobs" CUDA=1 test-gpu
grep -hE "FAIL|failed\)|skipped" "$out/test-gpu.log" | head -20 | sed 's/^/  /' | tee -a "$summary"
if [ $sanitize = 1 ]; then
    # quick mode (CNNTRAIN_GPU_QUICK=1, set by the Makefile) under compute-sanitizer's memcheck
    phase sanitizer 240 make -j"$jobs" CUDA=1 test-gpu-sanitize
    grep -hE "ERROR SUMMARY|FAIL" "$out/sanitizer.log" | head -10 | sed 's/^/  /' | tee -a "$summary"
fi
if [ $bench = 1 ]; then
    phase bench 300 scripts/bench_gpu.sh --no-build --steps "$bench_steps" --warmup 5 --out "$out/bench"
    [ -f "$out/bench/table.txt" ] && cp "$out/bench/table.txt" "$out/bench_table.txt" && sed 's/^/  /' "$out/bench_table.txt" | tee -a "$summary"
    rm -rf "$out/bench" # raw outputs would exceed what comes back; the table and the log stay
fi
echo "gpu_check: $failed phase(s) failed; logs in $out" | tee -a "$summary"
exit $failed
