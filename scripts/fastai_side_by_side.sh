#!/usr/bin/env bash
# fastai itself against ./train on one config, several seeds each, same data and cores (issue 14):
#   scripts/fastai_side_by_side.sh CONFIG [--seeds "1 2 3"] [--only ours|fastai|both] [--results DIR]
#                                  [--set section.key=value ...]
# Needs `make` (./train) and scripts/setup_reference.sh (reference-env/). Runs are sequential, ours
# first for each seed, each timed from start to exit (time it alone: the 2 cores are shared).
# Prints one row per run and the mean ± sample standard deviation of the accuracy after the last
# epoch, of the TTA accuracy and of the wall time per side, and the wall-time ratio fastai/ours.
# Logs and RESULT lines stay in --results, a new folder (default runs/side-by-side-<time>/).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "fastai_side_by_side.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] || fail "usage: scripts/fastai_side_by_side.sh CONFIG [--seeds \"1 2 3\"] [--only ours|fastai|both] [--results DIR] [--set k=v ...]"
config=$1; shift
seeds="1 2 3"; only=both; results=""; sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        *) fail "unknown argument $1" ;;
    esac
done
case "$only" in ours|fastai|both) ;; *) fail "--only $only: ours, fastai or both" ;; esac
[ -f "$config" ] || fail "$config: no such config"
results=${results:-runs/side-by-side-$(date +%Y%m%d-%H%M%S)}
# a new folder only: its logs and rows.txt would overwrite files of the same names
[ ! -e "$results" ] || fail "$results exists; give --results a new folder"
py=reference-env/bin/python
if [ "$only" != ours ] && [ ! -x "$py" ]; then fail "no $py: run scripts/setup_reference.sh first"; fi
if [ "$only" != fastai ] && [ ! -x ./train ]; then fail "no ./train: run make first"; fi
mkdir -p "$results"

# timed NAME CMD...: NAME.log and the wall seconds in NAME.wall
timed() {
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$results/$name.log" 2>&1 || fail "$name failed; its log: $results/$name.log"
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }' >"$results/$name.wall"
}
# ours: accuracy after the last training epoch and the tta row, from the run's metrics.csv (percent)
ours_result() {
    awk -F, 'NR > 1 && $3 == "tta" { tta = $6 } NR > 1 && $3 != "tta" { last = $6 }
             END { printf "%.2f %s\n", 100 * last, tta == "" ? "-" : sprintf("%.2f", 100 * tta) }' "$1/metrics.csv"
}
fastai_result() {
    sed -n 's/^RESULT accuracy=\([^ ]*\) tta_accuracy=\([^ ]*\) .*/\1 \2/p' "$1"
}

rows=()
for s in $seeds; do
    if [ "$only" != fastai ]; then
        timed "ours-$s" ./train "$config" "${sets[@]}" --set "run.seed=$s" --set "run.out_dir=$results" \
            --set "run.name=ours-$s-run"
        rows+=("ours $s $(ours_result "$results/ours-$s-run") $(cat "$results/ours-$s.wall")")
        echo "${rows[-1]}"
    fi
    if [ "$only" != ours ]; then
        timed "fastai-$s" "$py" scripts/fastai_recipe.py "$config" "${sets[@]}" --seed "$s"
        rows+=("fastai $s $(fastai_result "$results/fastai-$s.log") $(cat "$results/fastai-$s.wall")")
        echo "${rows[-1]}"
    fi
done
printf '%s\n' "${rows[@]}" >"$results/rows.txt"
echo
echo "config: $config ${sets[*]}"
printf '%-8s %-6s %-14s %-14s %-14s\n' side runs "accuracy %" "TTA %" "wall s"
awk '{ n[$1]++; for (k = 3; k <= 5; k++) if ($k != "-") { s[$1, k] += $k; q[$1, k] += $k * $k; c[$1, k]++ } }
     function ms(side, k,   m, v) { if (!c[side, k]) return "-"; m = s[side, k] / c[side, k]
         v = c[side, k] > 1 ? (q[side, k] - c[side, k] * m * m) / (c[side, k] - 1) : 0
         return sprintf("%.2f ± %.2f", m, sqrt(v > 0 ? v : 0)) }
     END { for (side in n) printf "%-8s %-6d %-14s %-14s %-14s\n", side, n[side], ms(side, 3), ms(side, 4), ms(side, 5)
           if (c["ours", 5] && c["fastai", 5])
               printf "wall-time ratio fastai / ours: %.2fx\n", (s["fastai", 5] / c["fastai", 5]) / (s["ours", 5] / c["ours", 5]) }' \
    "$results/rows.txt"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); results in $results"
