#!/usr/bin/env bash
# The calls of a GPU window (README, "GPU window plan"). Device time is short (15 minutes a session,
# the machine's start included; 10 minutes a call), so every call has a time budget, every phase a
# limit cut to what is left of it, and the logs are packed after every phase: a call that is cut
# short still brings back what ran.
#
# Call 1, the whole verdict (about 5 minutes; budget 420 s):
#   scripts/gpu_check.sh
#     preflight (scripts/gpu_env.sh: nvcc, driver, GPU, cuDNN, cuBLAS, libjpeg, library path),
#     build (make CUDA=1: ./train and the GPU suites), a 2-step probe of the cuda backend with
#     cuDNN's choices logged, every GPU suite (make test-gpu: none hides another), one benchmark
#     pair (resnet50, 224 px, bf16, batch 256: our img/s beside PyTorch's channels-last bf16), and
#     our step again with the trainer's two waits a step (train bench --reads step)
# Call 2, with what is left, one of:
#   scripts/gpu_check.sh --debug [SUITE[:PART] ...]
#     the suites (default: all; e.g. gpu_parity:fp16) again with CUDA_LAUNCH_BLOCKING=1, cuDNN's and
#     cuBLAS's own logs (warnings and errors) and CNNTRAIN_CUDNN_LOG=1
#   scripts/gpu_check.sh --sanitizer --no-bench
#     the suites in quick mode under compute-sanitizer's memcheck (API errors raised inside cuDNN
#     and cuBLAS not reported)
#   scripts/gpu_check.sh --no-suites --bench-full
#     the benchmark at 128 and 224 px for resnet50 and xresnet50
# Options: --budget SECONDS (default 420), --no-suites, --no-bench, --bench-steps N (default 20),
#          --bench-full, --sanitizer, --debug.
# Comes back ($OUT, else runs/gpu_check): summary.txt (the preflight, every verdict, the first
# FAIL lines, the benchmark table), logs.tgz (every log), bench_table.txt. At most 4 files: the
# device tool brings back 8. Raw files stay in runs/gpu_check/work.
# Exit status: the number of failed phases.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

budget=420 suites=1 bench=1 bench_steps=20 bench_full=0 sanitize=0 debug=0 debug_list=()
while [ $# -gt 0 ]; do
    case "$1" in
    --budget) budget=$2; shift 2 ;;
    --no-suites) suites=0; shift ;;
    --no-bench) bench=0; shift ;;
    --bench-steps) bench_steps=$2; shift 2 ;;
    --bench-full) bench_full=1; shift ;;
    --sanitizer) sanitize=1; shift ;;
    --debug) debug=1; shift
        while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do debug_list+=("$1"); shift; done ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
    esac
done
[[ "$budget" =~ ^[0-9]+$ && "$bench_steps" =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget and --bench-steps take numbers" >&2; exit 2; }

out=${OUT:-runs/gpu_check}
work=runs/gpu_check/work
rm -rf "$work"
mkdir -p "$out" "$work"
summary=$out/summary.txt
: >"$summary"
failed=0
start=$SECONDS

say() { printf '%s\n' "$*" | tee -a "$summary"; }
left() { echo $((budget - (SECONDS - start))); }
# logs.tgz: every log so far, replaced whole (a call cut short keeps the last complete one)
pack() {
    tar -czf "$out/logs.tgz.part" -C "$work" . 2>/dev/null && mv -f "$out/logs.tgz.part" "$out/logs.tgz"
    cp "$summary" "$work/summary.txt" 2>/dev/null || true
}

# phase NAME SECONDS CMD...: CMD with a limit cut to the budget left (10 s kept for packing), its
# output in work/NAME.log, one summary line. Skipped, saying so, when too little time is left.
phase() {
    local name=$1 limit=$2
    shift 2
    local room=$(($(left) - 10))
    if [ "$room" -lt 15 ]; then
        say "$(printf '%-14s %-44s' "$name" "SKIPPED: the budget is spent")"
        failed=$((failed + 1))
        return 99
    fi
    [ "$limit" -le "$room" ] || limit=$room
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1
    rc=$?
    local verdict=passed
    if [ $rc -ne 0 ]; then
        verdict="FAILED (exit $rc$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo ", stopped at its ${limit} s limit"))"
        failed=$((failed + 1))
    fi
    say "$(printf '%-14s %-44s %4d s' "$name" "$verdict" $((SECONDS - t0)))"
    pack
    return $rc
}

# ---- preflight: what this machine has (always printed, even when the rest cannot run)
. scripts/gpu_env.sh
gpu_preflight >"$work/preflight.log" 2>&1
pre=$?
tee -a "$summary" <"$work/preflight.log"
pack
if [ $pre -ne 0 ]; then
    say "gpu_check: the preflight found no way to build the CUDA backend (PROBLEM lines above); stopping"
    exit 1
fi
if grep -q '^GPU: *none visible' "$work/preflight.log"; then
    # the build would take minutes and every suite would only say it skipped
    say "gpu_check: no GPU visible on this machine: nothing to check here (run it on the GPU machine); stopping"
    exit 1
fi

# ---- build: ./train and the GPU suites, with what gpu_env.sh found
gpu_suites=()
for f in tests/gpu/*.c; do gpu_suites+=("build/tests/gpu/$(basename "$f" .c)"); done
if ! phase build 240 make -j"$(nproc)" "${GPU_MAKE_ARGS[@]}" train "${gpu_suites[@]}"; then
    grep -E 'error|Error|warning' "$work/build.log" | head -20 | sed 's/^/  /' | tee -a "$summary"
    say "gpu_check: the build failed (work/build.log in logs.tgz); stopping"
    exit "$failed"
fi
{ ./train --version; ldd ./train | grep -E 'cudnn|cublas|cudart|jpeg' | sed 's/ (0x[0-9a-f]*)$//'; } 2>&1 |
    sed 's/^/  /' | tee -a "$summary"

run_suites_debug() {
    local item suite part
    [ ${#debug_list[@]} -gt 0 ] || for s in "${gpu_suites[@]}"; do debug_list+=("$(basename "$s")"); done
    for item in "${debug_list[@]}"; do
        suite=${item%%:*} part=""
        [ "$suite" = "$item" ] || part=${item#*:}
        [ -x "build/tests/gpu/$suite" ] || { say "debug: no suite $suite (have: ${gpu_suites[*]##*/})"; continue; }
        local tag=debug-$suite${part:+-$part}
        phase "$tag" 200 env CUDA_LAUNCH_BLOCKING=1 CNNTRAIN_CUDNN_LOG=1 \
            CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG="$work/$tag.cudnn.log" \
            CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG="$work/$tag.cublas.log" \
            "build/tests/gpu/$suite" ${part:+"$part"}
        grep -hE '^FAIL|error|cnntrain: ' "$work/$tag.log" | head -15 | sed 's/^/  /' | tee -a "$summary"
        # the libraries' logs can be large: keep their ends
        for f in "$work/$tag.cudnn.log" "$work/$tag.cublas.log"; do
            [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 4000000 ] && { tail -c 4000000 "$f" >"$f.tail"; mv "$f.tail" "$f"; }
        done
        pack
    done
}

if [ $debug = 1 ]; then
    run_suites_debug
else
    # ---- the cuda backend at all: two steps of a tiny model, cuDNN's choices logged
    phase probe 60 env CNNTRAIN_CUDNN_LOG=1 ./train bench xresnet_tiny --device cuda --precision bf16 --size 32 \
        --batch 4 --steps 2 --warmup 1
    { grep -E '^RESULT|cudnn (forward|backward)|warning' "$work/probe.log" | head -12; grep -vE '^RESULT|^cnntrain: cudnn' "$work/probe.log" | tail -3; } |
        sed 's/^/  /' | tee -a "$summary"

    # ---- every suite, whatever fails (tests/gpu/run.sh: a log each, dead suites run again part by part)
    if [ $suites = 1 ]; then
        reserve=$([ $bench = 1 ] && echo 100 || echo 0)
        suite_limit=$(($(left) - reserve - 20))
        [ "$suite_limit" -le 300 ] || suite_limit=300
        phase test-gpu "$suite_limit" make "${GPU_MAKE_ARGS[@]}" test-gpu GPU_LOG_DIR="$work/suites" \
            GPU_SUITE_SECONDS=$((suite_limit > 40 ? suite_limit - 20 : 20))
        grep -vE '^(cc|nvcc|/.*nvcc|ar|make)\b' "$work/test-gpu.log" | grep -E '^(gpu_|    |test-gpu)' |
            head -40 | sed 's/^/  /' | tee -a "$summary"
    fi
    if [ $sanitize = 1 ]; then
        phase sanitizer 240 make "${GPU_MAKE_ARGS[@]}" test-gpu-sanitize GPU_LOG_DIR="$work/suites"
        grep -E '^(gpu_|    |test-gpu)|ERROR SUMMARY' "$work/sanitizer.log" | head -30 | sed 's/^/  /' | tee -a "$summary"
    fi
fi

# ---- speed against PyTorch on this GPU
if [ $bench = 1 ] && [ $debug = 0 ]; then
    if [ $bench_full = 1 ]; then models="resnet50 xresnet50" sizes="128 224"; else models=resnet50 sizes=224; fi
    phase bench 240 scripts/bench_gpu.sh --no-build --models "$models" --sizes "$sizes" --precision bf16 \
        --batch 256 --steps "$bench_steps" --warmup 5 --out "$work/bench"
    if [ -f "$work/bench/table.txt" ]; then
        cp "$work/bench/table.txt" "$out/bench_table.txt"
        sed 's/^/  /' "$out/bench_table.txt" | tee -a "$summary"
    else
        tail -15 "$work/bench.log" | sed 's/^/  /' | tee -a "$summary"
    fi
    # what the trainer's two waits a step (loss read, gradient check) cost: the same step with them
    phase bench-reads 60 ./train bench resnet50 --device cuda --precision bf16 --batch 256 --size 224 \
        --steps "$bench_steps" --warmup 5 --reads step
    grep -h '^RESULT' "$work/bench/ours-resnet50-224.txt" "$work/bench-reads.log" 2>/dev/null |
        sed 's/^/  /' | tee -a "$summary"
fi

say "gpu_check: $failed phase(s) failed, $((SECONDS - start)) s of the ${budget} s budget; logs in logs.tgz ($out)"
pack
exit "$failed"
