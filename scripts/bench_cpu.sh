#!/usr/bin/env bash
# CPU training speed of ./train against PyTorch on the same machine: forward + backward + AdamW
# step, images/s, peak memory, ratio. Usage: scripts/bench_cpu.sh [STEPS]   (from the repo root,
# after `make`; PyTorch side needs Debian's python3-torch, run as /usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5}
cases=("xresnet18 64 64" "resnet50 64 32" "resnet50 128 32" "xresnet18 128 64")
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
printf '%-10s %5s %6s %12s %12s %7s %14s %14s\n' model size batch "ours img/s" "torch img/s" ratio "ours peak MiB" "torch peak MiB"
for c in "${cases[@]}"; do
    set -- $c
    ours=$(./train bench "$1" --size "$2" --batch "$3" --steps "$steps")
    if theirs=$(/usr/bin/python3 scripts/bench_cpu_torch.py "$1" "$2" "$3" "$steps" 2>/dev/null); then
        t_ips=$(echo "$theirs" | field img_per_s)
        t_rss=$(echo "$theirs" | field peak_rss_mib)
    else
        t_ips=""; t_rss="-"
    fi
    o_ips=$(echo "$ours" | field img_per_s)
    o_rss=$(echo "$ours" | field peak_rss_mib)
    ratio=$([ -n "$t_ips" ] && awk -v a="$o_ips" -v b="$t_ips" 'BEGIN{printf "%.2fx", a/b}' || echo "-")
    printf '%-10s %5s %6s %12s %12s %7s %14s %14s\n' "$1" "$2" "$3" "$o_ips" "${t_ips:--}" "$ratio" "$o_rss" "$t_rss"
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(./train --version | tail -1)"
