#!/usr/bin/env bash
# GPU training speed of ./train against PyTorch, in one go on the same GPU: one training step
# (forward + backward + AdamW) on synthetic data, images/s and peak memory, for each model and size.
#
#   scripts/bench_gpu.sh [--steps 50] [--warmup 10] [--batch 256] [--sizes "128 224"]
#                        [--models "resnet50 xresnet50"] [--precision bf16] [--data device|host]
#                        [--python python3] [--out DIR] [--no-build] [--build-only]
#
# Ours:    ./train bench MODEL --device cuda --precision P --batch B --size S --data D (its RESULT line).
# PyTorch: scripts/bench_gpu_torch.py (eager, channels-last, autocast to P, fused AdamW).
# Data:    device (default): on both sides the batch is on the device before the timed steps, as
#          training has it (our trainer uploads uint8 batches on a copy stream while the previous
#          step runs and augments on the device); host: both copy a host float32 batch every step.
# Memory:  "ours peak" is what our cuda backend hands out through ops->alloc (weights, gradients,
#          moments, activations; not its private cuDNN workspace and scratch buffers, which it does
#          not expose, nor the CUDA context); "PyTorch peak" is torch.cuda.max_memory_allocated.
#          The "GPU used" columns are nvidia-smi's memory.used above the idle baseline, sampled every
#          0.2 s while each run lasts: the whole process (context, workspaces, caching allocator) for
#          both. When our backend computes in another dtype than asked, PyTorch is
#          run in that dtype too and a like-for-like ratio is printed.
# Needs an NVIDIA GPU with nvidia-smi, nvcc + cuDNN (make CUDA=1) and a CUDA build of PyTorch
# (python3, or PYTHON=...). TRAIN=path benchmarks another binary than ./train.
# Raw outputs go to DIR (default runs/bench_gpu-<time>); the table is also DIR/table.txt.
# --build-only: the checks and the build (make CUDA=1 train with what scripts/gpu_env.sh finds), then exit.
set -euo pipefail
cd "$(dirname "$0")/.."

steps=50 warmup=10 batch=256 sizes="128 224" models="resnet50 xresnet50" precision=bf16 data=device
py=${PYTHON:-python3} train=${TRAIN:-./train} out="" build=1 build_only=0
usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --build-only) build_only=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bench_gpu.sh: unknown option '$1'" >&2; usage ;;
    esac
done
fail() { echo "bench_gpu.sh: $*" >&2; exit 1; }
case "$precision" in fp32|fp16|bf16) ;; *) fail "--precision $precision: choose fp32, fp16 or bf16" ;; esac
for n in "$steps" "$warmup" "$batch" $sizes; do [[ "$n" =~ ^[0-9]+$ ]] || fail "'$n' is not a number"; done

# ---- a GPU, our cuda backend and a CUDA PyTorch, or a clear stop
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this benchmark needs an NVIDIA GPU machine"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1) || true
[ -n "$gpu" ] || fail "nvidia-smi lists no GPU ($(nvidia-smi -L 2>&1 | head -1))"
# nvcc, cuDNN, cuBLAS and libjpeg wherever this machine keeps them (PyTorch's wheels included),
# and the run-time library path for ./train: scripts/gpu_env.sh, as every GPU script does
. scripts/gpu_env.sh
mkdir -p build
if [ "$build" = 1 ]; then
    make -j"$(nproc)" "${GPU_MAKE_ARGS[@]}" train >build/bench_gpu_build.log 2>&1 ||
        { tail -30 build/bench_gpu_build.log >&2; fail "make CUDA=1 train failed (output above, all of it in build/bench_gpu_build.log)"; }
    grep -E '^cnntrain build|CUDA backend' build/bench_gpu_build.log || true
fi
version=$("$train" --version) || fail "$train --version failed"
[[ "$version" == *"backends:"*cuda* ]] || fail "$train has no cuda backend (build with make CUDA=1 train): $version"
probe=$("$train" bench xresnet_tiny --device cuda --size 32 --batch 2 --steps 1 --warmup 0 2>&1) ||
    { echo "$probe" >&2; fail "the cuda backend is unusable (a 2-image xresnet_tiny step failed, output above)"; }
"$py" -c 'import torch, torchvision, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    fail "$py: torch/torchvision missing or torch.cuda.is_available() is False (set PYTHON= or --python)"
if [ "$build_only" = 1 ]; then
    echo "ready: $gpu; $("$train" --version | tr '\n' ' ')"
    exit 0
fi

[ -n "$out" ] || out=runs/bench_gpu-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
echo "GPU: $gpu; $("$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())')"
echo "raw outputs: $out"

# key=value from the last RESULT line of a file
kv() { { grep '^RESULT ' "$2" || true; } | tail -1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }
used_now() { { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null || true; } | awk 'NR == 1 {print $1 + 0}'; }

# run NAME CMD...: output in $out/NAME.txt; peak nvidia-smi memory.used above the idle baseline in $out/NAME.gpu
run() {
    local name=$1; shift
    local base; base=$(used_now); base=${base:-0}
    "$@" >"$out/$name.txt" 2>&1 &
    local pid=$!
    ( while kill -0 "$pid" 2>/dev/null; do used_now; sleep 0.2; done ) >"$out/$name.smi" &
    local spid=$! rc=0
    wait "$pid" || rc=$?
    wait "$spid" || true
    awk -v b="$base" '$1+0 > m {m = $1+0} END {print (m > b ? m - b : "-")}' "$out/$name.smi" >"$out/$name.gpu"
    if [ "$rc" != 0 ]; then
        echo "  $name failed (exit $rc):" >&2
        tail -5 "$out/$name.txt" >&2
    fi
    return 0
}

# ---- the same models on both sides: parameter counts must agree
for m in $models; do
    o=$("$train" info "$m" | sed -n 's/^parameters: //p' | tr -d ,)
    t=$("$py" scripts/bench_gpu_torch.py "$m" --params | sed -n 's/.*params=//p')
    if [ "$o" = "$t" ]; then echo "$m: $o parameters on both sides"
    else echo "WARNING: $m has $o parameters in ./train but $t in bench_gpu_torch.py: not the same network" >&2; fi
done

rows=() t1=""
for m in $models; do
    for s in $sizes; do
        tag=$m-$s
        echo "== $m at $s px, batch $batch"
        run "ours-$tag" "$train" bench "$m" --device cuda --precision "$precision" --batch "$batch" --size "$s" \
            --steps "$steps" --warmup "$warmup" --data "$data"
        run "torch-$tag" "$py" scripts/bench_gpu_torch.py "$m" --device cuda --precision "$precision" --batch "$batch" \
            --size "$s" --steps "$steps" --warmup "$warmup" --data "$data"
        [ -n "$t1" ] || t1=$out/torch-$tag.txt
        grep -h -v '^RESULT ' "$out/ours-$tag.txt" "$out/torch-$tag.txt" | sed 's/^/  /' || true
        o_dt=$(kv compute "$out/ours-$tag.txt"); o_dt=${o_dt:-?}
        same="-"
        if [ "$o_dt" != "$precision" ] && [ "$o_dt" != "?" ]; then
            run "torch-$o_dt-$tag" "$py" scripts/bench_gpu_torch.py "$m" --device cuda --precision "$o_dt" \
                --batch "$batch" --size "$s" --steps "$steps" --warmup "$warmup" --data "$data"
            same=$(kv img_s "$out/torch-$o_dt-$tag.txt")
        fi
        rows+=("$m|$s|$o_dt|$(kv img_s "$out/ours-$tag.txt")|$(kv img_s "$out/torch-$tag.txt")|$same|$(kv peak_mib "$out/ours-$tag.txt")|$(kv peak_mib "$out/torch-$tag.txt")|$(cat "$out/ours-$tag.gpu")|$(cat "$out/torch-$tag.gpu")")
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else printf "-" }'; }
{
    echo
    echo "batch $batch, $steps timed steps after $warmup; PyTorch $precision autocast=$(kv autocast "$t1"), channels_last=$(kv channels_last "$t1"), AdamW $(kv adamw "$t1"), data on the $data, torch $(kv torch "$t1")"
    printf '%-10s %4s %6s %10s %11s %6s %13s %7s %10s %12s %10s %12s\n' model size ours "ours img/s" "torch img/s" ratio \
        "torch@ours dt" ratio "ours peak" "torch peak" "ours GPU" "torch GPU"
    printf '%-10s %4s %6s %10s %11s %6s %13s %7s %10s %12s %10s %12s\n' "" "" dtype "" "" "" "img/s" "same dt" "MiB alloc" \
        "MiB alloc" "MiB used" "MiB used"
    for r in "${rows[@]}"; do
        IFS='|' read -r m s dt oi ti si op tp og tg <<<"$r"
        printf '%-10s %4s %6s %10s %11s %6s %13s %7s %10s %12s %10s %12s\n' "$m" "$s" "$dt" "${oi:--}" "${ti:--}" \
            "$(ratio "$oi" "$ti")" "$si" "$(ratio "$oi" "$si")" "${op:--}" "${tp:--}" "$og" "$tg"
    done
    echo "ratio = ours / PyTorch (above 1: ours is faster). ours peak = our backend's ops->alloc blocks only;"
    echo "GPU used = nvidia-smi memory.used above idle while the run lasted (whole process, both sides)."
    echo "Reference (the issue, one H100): PyTorch eager bf16 channels-last resnet50, 10,748 img/s at 128 px, 3,987 at 224 px."
    echo "GPU: $gpu"
} | tee "$out/table.txt"
