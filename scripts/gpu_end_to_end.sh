#!/usr/bin/env bash
# A whole recipe on one GPU, ours against PyTorch: ./train CONFIG (cuda) and
# scripts/torch_imagenette_progressive.py CONFIG (the same schedule in PyTorch, see its header) on
# the same data, each timed from start to exit, then accuracy (after the last epoch, and with TTA),
# seconds per epoch and wall time side by side.
#
#   scripts/gpu_end_to_end.sh --data DIR [--config configs/imagenette_progressive.ini]
#        [--precision bf16] [--only both|ours|torch] [--results /tmp/e2e] [--out DIR]
#        [--set section.key=value ...] [--python python3] [--no-build] [--device cuda|cpu]
#
# --data: the folder layout's root (DIR/train/<class>/*.JPEG, DIR/val/...). --precision: both
# sides (ours: --set run.precision, PyTorch: autocast); ours computes in fp32 where its backend has
# no such path, and the table says so. --only runs one side and keeps its result in --results, so
# the two can run in separate calls; the table shows whatever --results holds. --out: a copy of
# both runs' metrics.csv, logs and the table (e.g. $OUT on the device machine). --set goes to both
# (e.g. --set "stage small.epochs=1" for a quick try). --device cpu is for trying this script on a
# machine without a GPU (tiny settings only).
#
# Getting the data there. The GPU machine receives only the working tree (64 MiB a call, carried
# ignored paths included; the tree itself is about 7 MiB) and nothing else: ../shared/data stays
# behind. Files written outside the repo there persist between calls only while the machine stays
# warm (about 30 s after a call), so make the calls back to back:
#   1. here:  scripts/pack_data.sh ../shared/data/imagenette2-224
#             -> data-parts/imagenette2-224/part-000.tar .. part-002.tar (<= 50 MiB each, ignored by git)
#   2. there, one call per part, carry ["data-parts/imagenette2-224/part-000.tar"] and so on:
#             scripts/unpack_data.sh data-parts/imagenette2-224 /tmp/data/imagenette2-224
#      (exit 3: parts still to come; 0: complete and checked). The first call can also build:
#             ...; scripts/bench_gpu.sh --build-only
#   3. there, in the call of the last part or the next one:
#             scripts/gpu_end_to_end.sh --data /tmp/data/imagenette2-224 --out $OUT
#      A call may run at most 10 minutes: if both sides do not fit, run --only ours in one call
#      and --only torch in the next (the results stay in /tmp/e2e while the machine is warm).
#   4. here: rm -r data-parts/imagenette2-224
# Nothing here has run on a GPU yet.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
data="" config=configs/imagenette_progressive.ini precision=bf16 only=both results=/tmp/e2e out="" build=1
device=cuda py=${PYTHON:-python3} train=${TRAIN:-./train}
sets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --data) data=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --python) py=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --device) device=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "gpu_end_to_end.sh: unknown option '$1'" >&2; usage ;;
    esac
done
fail() { echo "gpu_end_to_end.sh: $*" >&2; exit 1; }
case "$only" in both|ours|torch) ;; *) fail "--only $only: choose both, ours or torch" ;; esac
case "$precision" in fp32|fp16|bf16) ;; *) fail "--precision $precision: choose fp32, fp16 or bf16" ;; esac
case "$device" in cuda|cpu) ;; *) fail "--device $device: cuda or cpu" ;; esac
[ -n "$data" ] || fail "--data DIR is required (see the top of this script for getting the data onto the GPU machine)"
if [ ! -d "$data/train" ] || [ ! -d "$data/val" ]; then
    fail "$data: no train/ and val/ folders in it (unpacked completely? scripts/unpack_data.sh says)"
fi
[ -f "$config" ] || fail "$config: no such config"
data=$(cd "$data" && pwd)
mkdir -p "$results"
results=$(cd "$results" && pwd)

if [ "$device" = cuda ]; then
    # a GPU, the cuda build of ./train and a CUDA PyTorch, or a clear stop (bench_gpu.sh's checks)
    if [ "$build" = 1 ]; then scripts/bench_gpu.sh --build-only --python "$py"
    else scripts/bench_gpu.sh --build-only --no-build --python "$py"; fi
    # cuDNN from PyTorch's wheel, when that is where the build found it
    # shellcheck source=/dev/null
    . scripts/gpu_env.sh
fi

# run NAME CMD...: wall time from start to exit; NAME.log and NAME.result in $results
timed() {
    local name=$1; shift
    echo "== $name: $*"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    "$@" 2>&1 | tee "$results/$name.log" || rc=$?
    t1=$(date +%s.%N)
    [ "$rc" = 0 ] || fail "$name failed (exit $rc); its log: $results/$name.log"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' >"$results/$name.wall"
}

stamp=$(date +%Y%m%d-%H%M%S)
common=(--set "data.path=$data" --set "run.device=$device" "${sets[@]}")
if [ "$only" != torch ]; then
    rm -f "$results/ours.dir"
    timed ours "$train" "$config" "${common[@]}" --set "run.precision=$precision" --set "run.out_dir=$results" \
        --set "run.name=ours-$stamp"
    echo "$results/ours-$stamp" >"$results/ours.dir"
fi
if [ "$only" != ours ]; then
    rm -f "$results/torch.dir"
    tp=(--precision "$precision")
    if [ "$device" = cpu ]; then tp=(--workers 2); fi  # the CPU computes in fp32, as ./train does there
    timed torch "$py" scripts/torch_imagenette_progressive.py "$config" "${common[@]}" "${tp[@]}" --out "$results" \
        --set "run.name=torch-$stamp"
    echo "$results/torch-$stamp" >"$results/torch.dir"
fi

# ---- the table, from metrics.csv (stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size)
# last: accuracy after the last training epoch; tta: the tta row; per size: mean seconds an epoch
summary() {  # DIR -> "last tta epochs secs_by_size"
    awk -F, 'NR > 1 && $3 == "tta" { tta = $6 }
             NR > 1 && $3 != "tta" { last = $6; n++; s[$8] += $7; c[$8]++ }
             END { m = 0; for (k in s) key[++m] = k + 0
                   for (i = 2; i <= m; i++) for (j = i; j > 1 && key[j - 1] > key[j]; j--) { t = key[j]; key[j] = key[j - 1]; key[j - 1] = t }
                   sz = ""; for (i = 1; i <= m; i++) sz = sz sprintf("%s%dpx %.1f s", sz == "" ? "" : ", ", key[i], s[key[i]] / c[key[i]])
                   printf "%s|%s|%d|%s\n", last == "" ? "-" : last, tta == "" ? "-" : tta, n, sz == "" ? "-" : sz }' "$1/metrics.csv"
}
side() {  # ours|torch -> "precision|last|tta|epochs|per-epoch|wall"
    local d
    d=$(cat "$results/$1.dir" 2>/dev/null || true)
    if [ -z "$d" ] || [ ! -f "$d/metrics.csv" ]; then echo "-|-|-|-|not run|-"; return; fi
    local prec
    if [ "$1" = ours ]; then
        prec=$(sed -n 's/.* on [a-z]* in \([a-z0-9]*\);.*/\1/p' "$results/ours.log" | head -1)
    else
        prec=$(sed -n 's/.*images; \([a-z0-9]*\)\( autocast\)*, .*/\1/p' "$results/torch.log" | head -1)
    fi
    echo "${prec:-?}|$(summary "$d")|$(cat "$results/$1.wall")"
}
IFS='|' read -r o_prec o_last o_tta o_n o_sec o_wall <<<"$(side ours)"
IFS='|' read -r t_prec t_last t_tta t_n t_sec t_wall <<<"$(side torch)"
table=$(
    echo
    echo "$config on $data ($device), precision asked: $precision"
    printf '%-22s %-28s %-28s\n' "" "ours (./train)" "PyTorch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')"
    printf '%-22s %-28s %-28s\n' "computed in" "$o_prec" "$t_prec"
    printf '%-22s %-28s %-28s\n' "accuracy, last epoch" "$o_last" "$t_last"
    printf '%-22s %-28s %-28s\n' "accuracy with TTA" "$o_tta" "$t_tta"
    printf '%-22s %-28s %-28s\n' "epochs" "$o_n" "$t_n"
    printf '%-22s %-28s %-28s\n' "seconds an epoch" "$o_sec" "$t_sec"
    printf '%-22s %-28s %-28s\n' "wall time, s" "$o_wall" "$t_wall"
    if [ "$o_wall" != - ] && [ "$t_wall" != - ]; then
        awk -v a="$o_wall" -v b="$t_wall" 'BEGIN { printf "ours takes %.2fx PyTorch'"'"'s wall time\n", a / b }'
    fi
    echo "(seed, fastai on full-size Imagenette: 87.7%, with TTA 88.2%; this data set is the 224-px copy)"
    if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'; fi
)
echo "$table"
if [ -n "$out" ]; then
    mkdir -p "$out"
    echo "$table" >"$out/e2e_table.txt"
    for s in ours torch; do
        d=$(cat "$results/$s.dir" 2>/dev/null || true)
        if [ -n "$d" ] && [ -f "$d/metrics.csv" ]; then cp "$d/metrics.csv" "$out/e2e_${s}_metrics.csv"; fi
        if [ -f "$results/$s.log" ]; then cp "$results/$s.log" "$out/e2e_$s.log"; fi
    done
    echo "copied the table, metrics and logs to $out"
fi
