#!/usr/bin/env bash
# A short CPU training run (forward, backward, AdamW, checkpoint write) under valgrind: no invalid
# accesses, no definite or indirect leaks. Skips, saying so, where valgrind is not installed.
set -u
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
    echo "test_valgrind: skipped: valgrind is not installed (apt-get install valgrind)"
    exit 0
fi
# valgrind 3.19 knows no AVX-512, and the CUDA libraries' loader trips it: build a plain x86-64-v3,
# CPU-only copy for it.
vg=build/valgrind
make --no-print-directory -s BUILD=$vg TRAIN=$vg/train CUDA=0 OPT="-O2 -march=x86-64-v3" $vg/train >/dev/null || exit 1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --quiet --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    $vg/train smoke --device cpu --steps 3 --batch 4 --size 16 --valid 4 --out "$out" >"$out/log" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ ! -s "$out/final.safetensors" ]; then
    cat "$out/log"
    echo "test_valgrind: FAILED (valgrind exit $rc)"
    exit 1
fi
echo "test_valgrind: 3 training steps and a checkpoint write under valgrind: no errors, no leaks"
