#!/usr/bin/env bash
# Results bit-identical across a refactoring (issue 15): builds BASE (a commit, default HEAD) in a
# temporary worktree and this working tree, runs the same configs with both binaries on the CPU,
# and compares the run folders byte for byte (scripts/compare_runs.py: metrics.csv and
# eval-sizes.csv but their seconds, every checkpoint's tensors and metadata but its random id).
#   scripts/check_identical.sh [BASE] [--keep]
# Configs: configs/cpu_progressive.ini on 5% of Imagenette (rrc, fit_one_cycle, fine_tune, TTA)
# and configs/cpu_tricks.ini (progressive resizing with label smoothing, mixup and fastai's
# transforms, fine_tune, FixRes, eval at two sizes, TTA). Both run from this tree's root with its
# configs. Measured 10 minutes on the 2-core machine beside other work; run it alone.
# Exit 0 when every run is identical; 1 when one differs; 2 on a usage or build error.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "check_identical.sh: $*" >&2; exit 2; }
base=HEAD; keep=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        -*) fail "unknown option $arg" ;;
        *) base=$arg ;;
    esac
done
commit=$(git rev-parse --verify -q "$base^{commit}") || fail "$base: not a commit"
[ -d ../shared/data/imagenette2-224 ] || fail "no ../shared/data/imagenette2-224 (see ../shared/data/README.md)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-identical.XXXXXX")
cleanup() {
    git worktree remove --force "$tmp/base" >/dev/null 2>&1 || true
    if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
git worktree add --detach -q "$tmp/base" "$commit" || fail "cannot check out $commit"
echo "building $base (${commit:0:12}) and this tree (CPU only)"
make -C "$tmp/base" -j2 CUDA=0 train >"$tmp/base-build.log" 2>&1 || fail "building $base failed: $tmp/base-build.log"
# this tree into the temporary folder too, leaving build/ and ./train as they are
make -j2 CUDA=0 BUILD="$tmp/this-build" TRAIN="$tmp/this-train" "$tmp/this-train" >"$tmp/this-build.log" 2>&1 ||
    fail "building this tree failed: $tmp/this-build.log"

status=0
run_pair() { # NAME CONFIG SETS...
    local name=$1 config=$2; shift 2
    for side in base this; do
        local bin="$tmp/this-train"
        [ "$side" = base ] && bin="$tmp/base/train"
        "$bin" "$config" "$@" --set run.device=cpu --set "run.out_dir=$tmp/$side-runs" --set "run.name=$name" \
            >"$tmp/$side-$name.log" 2>&1 || fail "$side: $config failed: $tmp/$side-$name.log"
    done
    echo "== $name ($config $*)"
    python3 scripts/compare_runs.py "$tmp/base-runs/$name" "$tmp/this-runs/$name" || status=1
}
run_pair progressive configs/cpu_progressive.ini --set data.fraction=0.05
run_pair tricks configs/cpu_tricks.ini
if [ "$status" = 0 ]; then echo "check_identical: every run identical to $base"; else echo "check_identical: runs differ from $base"; fi
exit "$status"
