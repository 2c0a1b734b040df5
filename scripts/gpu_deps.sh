#!/usr/bin/env bash
# Run on the development machine before a GPU window: unpacks Debian's libjpeg62-turbo and
# libjpeg62-turbo-dev (headers, libjpeg.so) into gpu-deps/ (ignored by git), so that a GPU machine
# without the -dev package builds with JPEG decoding: carry gpu-deps in the device call
# (scripts/gpu_env.sh looks there). About 1 MB. Nothing is installed on this machine.
#
#   scripts/gpu_deps.sh [DIR]      (default: gpu-deps in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-gpu-deps}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt-get download runs as _apt
(cd "$tmp" && apt-get download libjpeg62-turbo libjpeg62-turbo-dev >/dev/null) ||
    { echo "gpu_deps.sh: apt-get download failed (run apt-get update first?)" >&2; exit 1; }
mkdir -p "$dest"
for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$dest"; done
rm -rf "$dest/usr/share"
ls "$dest/usr/include/jpeglib.h" "$dest"/usr/lib/x86_64-linux-gnu/libjpeg.so* >/dev/null
echo "gpu_deps.sh: $(du -sh "$dest" | cut -f1) in $dest: $(cd "$dest" && find . -name 'jpeglib.h' -o -name 'libjpeg.so*' | tr '\n' ' ')"
