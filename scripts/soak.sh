#!/usr/bin/env bash
# Soak run: many short epochs of a tiny model on generated data (CPU), sampling the trainer's
# resident memory and open file descriptors once a second. Fails if either keeps growing after the
# warm-up: resident memory at the end more than 10% above its value after the first fifth of the
# run, or more descriptors than then (two more allowed: a checkpoint write in progress). Usage: scripts/soak.sh [EPOCHS (default 300)]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-300}
work=$(mktemp -d /tmp/cnn_soak_XXXXXX)
trap 'rm -rf "$work"' EXIT
./train demo-data --out "$work/data" --train 4 --valid 2 --size 32 > /dev/null
cat > "$work/soak.ini" <<INI
[data]
path = $work/data
[model]
arch = xresnet_tiny
[run]
device = cpu
threads = 2
out_dir = $work/runs
[stage soak]
type = fit_one_cycle
epochs = $epochs
size = 32
batch = 16
INI
./train "$work/soak.ini" > "$work/out.txt" 2>&1 &
pid=$!
samples="$work/samples.txt"
while kill -0 "$pid" 2> /dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2> /dev/null || true)
    fds=$(ls "/proc/$pid/fd" 2> /dev/null | wc -l || true)
    [ -n "$rss" ] && echo "$(date +%s) $rss $fds" >> "$samples"
    sleep 1
done
wait "$pid"
done_epochs=$(($(cat "$work"/runs/*/metrics.csv | wc -l) - 1))
[ "$done_epochs" = "$epochs" ] || { echo "soak: FAILED: $done_epochs of $epochs epochs in metrics.csv"; cat "$work/out.txt"; exit 1; }
n=$(wc -l < "$samples")
awk -v n="$n" -v epochs="$epochs" '
    NR == 1 { t0 = $1 }
    NR == int(n / 5) + 1 { rss_w = $2; fds_w = $3 }
    { if ($2 > rss_max) rss_max = $2; if ($3 > fds_max) fds_max = $3; rss_last = $2; fds_last = $3; t1 = $1 }
    END {
        printf "soak: %d epochs in %d s; resident memory %d KiB after warm-up, %d KiB at the end (max %d); open descriptors %d after warm-up, %d at the end (max %d)\n",
               epochs, t1 - t0, rss_w, rss_last, rss_max, fds_w, fds_last, fds_max
        # the end against the warm-up (a checkpoint write holds a descriptor or two for a moment)
        if (rss_last > 1.10 * rss_w || fds_last > fds_w + 2) { print "soak: FAILED: growth after the warm-up"; exit 1 }
        print "soak: flat"
    }' "$samples"
