#!/usr/bin/env bash
# Run on the development machine before a GPU window; fills gpu-deps/ (ignored by git, about 6 MB),
# which the device calls carry (`carry: ["gpu-deps"]`):
# - Debian's libjpeg62-turbo and libjpeg62-turbo-dev (headers, libjpeg.so), unpacked, so that a GPU
#   machine without the -dev package builds with JPEG decoding (scripts/gpu_env.sh looks there);
# - gpu-deps/data: the real JPEGs tests/gpu/gpu_augment.c decodes (the first 16 of a few Imagenette
#   classes, its greyscale ones, 3 Cassava leaves), from ../shared/data, which does not travel.
# Nothing is installed on this machine.
#
#   scripts/gpu_deps.sh [DIR]      (default: gpu-deps in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
final=${1:-gpu-deps}
mark=.cnntrain-gpu-deps # says a folder was made here, so a later run may replace it
if [ -e "$final" ] && [ ! -f "$final/$mark" ]; then
    echo "gpu_deps.sh: $final exists and was not made by gpu_deps.sh (no $mark in it): not replaced" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 777 "$tmp" # apt-get download writes as the _apt user
(cd "$tmp" && apt-get download libjpeg62-turbo libjpeg62-turbo-dev >/dev/null) ||
    { echo "gpu_deps.sh: apt-get download failed (run apt-get update first?)" >&2; exit 1; }
dest=$tmp/deps # built whole here, then put in place
mkdir -p "$dest"
for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$dest"; done
rm -rf "$dest/usr/share"
ls "$dest/usr/include/jpeglib.h" "$dest"/usr/lib/x86_64-linux-gnu/libjpeg.so* >/dev/null
touch "$dest/$mark"
# the images gpu_augment reads (its lists: the first names in C order of these classes, grey_files)
src=../shared/data
if [ -d "$src/imagenette2-224/val" ]; then
    for c in n01440764 n02102040 n02979186 n03000684 n03028079 n03417042 n03425413 n03888257; do
        mkdir -p "$dest/data/imagenette2-224/val/$c"
        (cd "$src/imagenette2-224/val/$c" && ls | LC_ALL=C sort | head -16) |
            while read -r f; do cp "$src/imagenette2-224/val/$c/$f" "$dest/data/imagenette2-224/val/$c/"; done
    done
    sed -n '/grey_files\[\] = {/,/};/p' tests/gpu/gpu_augment.c | grep -o 'val/[^"]*' |
        while read -r f; do mkdir -p "$dest/data/imagenette2-224/$(dirname "$f")"; cp "$src/imagenette2-224/$f" "$dest/data/imagenette2-224/$f"; done
    mkdir -p "$dest/data/cassava-mini/train_images"
    (cd "$src/cassava-mini/train_images" && ls | LC_ALL=C sort | head -3) |
        while read -r f; do cp "$src/cassava-mini/train_images/$f" "$dest/data/cassava-mini/train_images/"; done
    echo "gpu_deps.sh: $(find "$dest/data" -type f | wc -l) images for gpu_augment"
else
    echo "gpu_deps.sh: $src/imagenette2-224 not found: gpu_augment will use generated images only"
fi
rm -rf "$final" # absent, or made by an earlier run (its mark)
mv "$dest" "$final"
echo "gpu_deps.sh: $(du -sh "$final" | cut -f1) in $final: $(cd "$final" && find . -name 'jpeglib.h' -o -name 'libjpeg.so*' | tr '\n' ' ')"
