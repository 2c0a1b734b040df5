#!/usr/bin/env bash
# Reassemble a data folder from the parts scripts/pack_data.sh made: extract every part present
# in PARTS_DIR into DEST_DIR (skipping parts already extracted there), check each part's files
# against its sha256 manifest, and, once every part is in, every file against the full manifest.
#
#   scripts/unpack_data.sh PARTS_DIR DEST_DIR [--delete]
#
# Meant for the GPU machine, where each call carries one part (see scripts/gpu_end_to_end.sh):
# run it in every call; DEST_DIR (outside the repo, e.g. /tmp/data/imagenette2-224) collects the
# parts while the machine stays warm. --delete removes each part's tar once it checks out.
# Exit status: 0 complete and intact; 3 not complete yet (it says which parts are missing);
# 1 a checksum or tar error. DEST_DIR/.parts/ holds the manifests (hidden: the data loaders of
# ./train and the PyTorch scripts skip names starting with '.').
set -euo pipefail

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
parts="" dest="" delete=0
while [ $# -gt 0 ]; do
    case "$1" in
    --delete) delete=1; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "unpack_data.sh: unknown option '$1'" >&2; usage ;;
    *) if [ -z "$parts" ]; then parts=$1; elif [ -z "$dest" ]; then dest=$1; else usage; fi; shift ;;
    esac
done
fail() { echo "unpack_data.sh: $*" >&2; exit 1; }
if [ -z "$parts" ] || [ -z "$dest" ]; then usage; fi
export LC_ALL=C
mkdir -p "$dest"
shopt -s nullglob
for tarf in "$parts"/part-*.tar; do
    k=$(basename "$tarf" .tar); k=${k#part-}
    if [ -e "$dest/.parts/part-$k.ok" ]; then
        echo "part-$k: already unpacked in $dest"
    else
        tar -xf "$tarf" -C "$dest" || fail "$tarf: tar failed"
        [ -f "$dest/.parts/part-$k.sha256" ] || fail "$tarf: no .parts/part-$k.sha256 inside (not a pack_data.sh part?)"
        (cd "$dest" && sha256sum --quiet --strict -c ".parts/part-$k.sha256") || fail "part-$k: checksums differ (above)"
        touch "$dest/.parts/part-$k.ok"
        echo "part-$k: $(wc -l <"$dest/.parts/part-$k.sha256") files unpacked and checked"
    fi
    if [ "$delete" = 1 ]; then rm -f "$tarf"; fi
done
if [ ! -f "$dest/.parts/COUNT" ]; then
    echo "$dest: part-000 has not arrived yet (it holds the list of parts)"
    exit 3
fi
n=$(cat "$dest/.parts/COUNT")
missing=()
for ((i = 0; i < n; i++)); do
    k=$(printf '%03d' "$i")
    [ -e "$dest/.parts/part-$k.ok" ] || missing+=("part-$k")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "$dest: $((n - ${#missing[@]})) of $n parts unpacked; still to come: ${missing[*]}"
    exit 3
fi
if [ ! -e "$dest/.parts/complete" ]; then
    (cd "$dest" && sha256sum --quiet --strict -c .parts/ALL.sha256) || fail "$dest: the full manifest does not check out (above)"
    touch "$dest/.parts/complete"
fi
echo "$dest: complete, $(wc -l <"$dest/.parts/ALL.sha256") files in $n parts, checksums match"
