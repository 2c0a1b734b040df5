#!/usr/bin/env bash
# Split a data folder into standalone tar parts small enough to travel to the GPU machine one per
# call (each call carries at most 64 MiB: the working tree plus the carried paths), with sha256
# manifests, so scripts/unpack_data.sh can extract whatever parts have arrived and say when the
# folder is complete and intact.
#
#   scripts/pack_data.sh SRC_DIR [--out data-parts] [--max-mib 50]
#
# Writes OUT/NAME/part-000.tar, part-001.tar, ... (NAME = SRC_DIR's base name). Files go in sorted
# path order, each whole in one part; a part holds its files plus .parts/part-NNN.sha256 (their
# checksums), and part-000 also .parts/ALL.sha256 (every file) and .parts/COUNT (the number of
# parts). Tar is uncompressed (JPEGs do not compress). The default 50 MiB leaves room for the
# working tree in the 64 MiB of a call; the script says so when tree + part would not fit.
# data-parts/ is ignored by git (.gitignore). Delete the parts when done: rm -r OUT/NAME
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
src="" out=data-parts max_mib=50
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out=$2; shift 2 ;;
    --max-mib) max_mib=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "pack_data.sh: unknown option '$1'" >&2; usage ;;
    *) [ -z "$src" ] || usage; src=$1; shift ;;
    esac
done
fail() { echo "pack_data.sh: $*" >&2; exit 1; }
[ -n "$src" ] || usage
[ -d "$src" ] || fail "$src: not a folder"
if ! [[ "$max_mib" =~ ^[0-9]+$ ]] || [ "$max_mib" -lt 2 ]; then fail "--max-mib $max_mib: a whole number of MiB, at least 2"; fi
name=$(basename "$(cd "$src" && pwd)")
dest=$out/$name
[ ! -e "$dest" ] || fail "$dest exists: remove it first (rm -r $dest)"
export LC_ALL=C

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# every regular file (symbolic links followed), sorted; names with line breaks or tabs are refused
(cd "$src" && find -L . -type f -printf '%s\t%P\n') | sort -t $'\t' -k2 >"$work/files"
[ -s "$work/files" ] || fail "$src holds no files"
if grep -q $'\t.*\t' "$work/files"; then fail "$src: a file name holds a tab"; fi
nfiles=$(wc -l <"$work/files")
(cd "$src" && cut -f2 "$work/files" | tr '\n' '\0' | xargs -0 sha256sum) >"$work/ALL.sha256"
[ "$(wc -l <"$work/ALL.sha256")" = "$nfiles" ] || fail "checksumming $src failed"

# Assign files to parts. A tar member costs a 512-byte header (+1024 for a name over 100 bytes)
# and its data rounded up to 512; each file also adds a line to its part's manifest; part-000
# starts with the full manifest; 64 KiB stay free for the manifests' headers, the tar's end (1024
# zero bytes) and its rounding to 10 KiB records.
budget=$(( max_mib * 1048576 - 65536 ))
all=$(stat -c %s "$work/ALL.sha256")
awk -F '\t' -v budget="$budget" -v dir="$work" -v all="$all" '
    BEGIN { used = 2048 + int((all + 511) / 512) * 512 }
    { cost = 512 + (length($2) > 99 ? 1024 : 0) + int(($1 + 511) / 512) * 512 + 67 + length($2)
      if (cost > budget - 4096) {
          printf "pack_data.sh: %s (%d bytes) does not fit in a part\n", $2, $1 > "/dev/stderr"; exit 1 }
      if (used + cost > budget) { part++; used = 0 }
      used += cost
      printf "%s\n", $2 > sprintf("%s/list.%03d", dir, part) }' "$work/files" || fail "a file is larger than --max-mib"
nparts=$(find "$work" -name 'list.*' | wc -l)
mkdir -p "$dest" "$work/meta/.parts"
echo "$nparts" >"$work/meta/.parts/COUNT"
cp "$work/ALL.sha256" "$work/meta/.parts/ALL.sha256"
for list in "$work"/list.*; do
    k=${list##*.}
    # this part's checksums, in its own order
    awk 'NR == FNR { want[$0] = 1; next } { f = substr($0, 67); sub(/^\.\//, "", f); if (f in want) print }' \
        "$list" "$work/ALL.sha256" >"$work/meta/.parts/part-$k.sha256"
    extra=(".parts/part-$k.sha256")
    [ "$k" = 000 ] && extra+=(.parts/ALL.sha256 .parts/COUNT)
    tar -cf "$dest/part-$k.tar" --format=gnu --owner=0 --group=0 --numeric-owner --dereference \
        -C "$work/meta" "${extra[@]}" -C "$(cd "$src" && pwd)" -T "$list"
    size=$(stat -c %s "$dest/part-$k.tar")
    [ "$size" -le $(( max_mib * 1048576 )) ] || fail "$dest/part-$k.tar is $size bytes, over $max_mib MiB (a bug)"
    awk -v p="$dest/part-$k.tar" -v n="$(wc -l <"$list")" -v s="$size" 'BEGIN { printf "%s  %d files  %.1f MiB\n", p, n, s / 1048576 }'
done
total=$(du -sb "$dest" | cut -f1)
echo "$nfiles files of $src in $nparts parts under $dest ($(( total / 1048576 )) MiB)"
tree=$(git ls-files -z --cached --others --exclude-standard 2>/dev/null | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1 || echo 0)
if [ $(( ${tree:-0} + max_mib * 1048576 )) -gt $(( 64 * 1048576 )) ]; then
    echo "WARNING: the working tree ($(( ${tree:-0} / 1048576 )) MiB) + a $max_mib MiB part exceeds a call's 64 MiB: use a smaller --max-mib" >&2
fi
echo "On the GPU machine, one call per part, each carrying $dest/part-NNN.tar:"
echo "  scripts/unpack_data.sh $dest /tmp/data/$name"
