#!/usr/bin/env bash
# CPU training speed of ./train against PyTorch on the same machine: forward + backward + AdamW
# step, images/s, peak memory, ratio; against Debian's PyTorch 1.13 (/usr/bin/python3, python3-torch)
# and PyTorch 2.x from the package index (reference-env/, scripts/setup_reference.sh), each where
# present. Usage: scripts/bench_cpu.sh [STEPS]   (from the repo root, after `make`; time it alone)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5}
cases=("xresnet18 64 64" "resnet50 64 32" "resnet50 128 32" "xresnet18 128 64")
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
peer() {  # PYTHON MODEL SIZE BATCH -> "img_per_s peak_rss_mib" or "- -"
    local py=$1; shift
    local out
    if [ -x "$py" ] && out=$("$py" scripts/bench_cpu_torch.py "$@" "$steps" 2>/dev/null); then
        echo "$(echo "$out" | field img_per_s) $(echo "$out" | field peak_rss_mib)"
    else
        echo "- -"
    fi
}
ratio() { if [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; fi; }
printf '%-10s %5s %6s %11s %11s %7s %11s %7s %10s %10s %10s\n' model size batch "ours img/s" "1.13 img/s" ratio \
    "2.x img/s" ratio "ours MiB" "1.13 MiB" "2.x MiB"
for c in "${cases[@]}"; do
    set -- $c
    ours=$(./train bench "$1" --size "$2" --batch "$3" --steps "$steps")
    o_ips=$(echo "$ours" | field img_per_s)
    o_rss=$(echo "$ours" | field peak_rss_mib)
    read -r a_ips a_rss <<<"$(peer /usr/bin/python3 "$@")"
    read -r b_ips b_rss <<<"$(peer reference-env/bin/python "$@")"
    printf '%-10s %5s %6s %11s %11s %7s %11s %7s %10s %10s %10s\n' "$1" "$2" "$3" "$o_ips" "$a_ips" \
        "$(ratio "$o_ips" "$a_ips")" "$b_ips" "$(ratio "$o_ips" "$b_ips")" "$o_rss" "$a_rss" "$b_rss"
done
v2=$(reference-env/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "not installed")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(./train --version | tail -1); PyTorch 2.x: $v2"
