#!/usr/bin/env bash
# Data-parallel training on the CPU backend with 2 MPI ranks (issue 17; part of make test). Skipped,
# saying so, where mpirun is absent or ./train was built without MPI. Checks:
#  1. the process group's operations (tests/dist/dist_ops) with 2 and 3 ranks and as one process;
#     dist_abort and die() in one rank stop every rank (bounded by timeout);
# Every mpirun is bounded by `timeout`: a hang fails the test instead of stalling make test.
# BUILD: the build folder; TRAIN: the binary (./train).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TRAIN=${TRAIN:-./train}
ops=$BUILD/tests/dist/dist_ops
if ! command -v mpirun >/dev/null 2>&1; then
    echo "test_dist: skipped: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    exit 0
fi
if ! "$TRAIN" --version | grep -q '^mpi: Open MPI\|^mpi: MPICH\|^mpi: .*MPI [0-9]'; then
    echo "test_dist: skipped: $TRAIN was built without MPI ($("$TRAIN" --version | grep '^mpi:'))"
    exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN=(mpirun --oversubscribe)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-dist.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }
pass() { echo "ok: $*"; }

# ---- 1. the operations ----
for np in 2 3; do
    out=$(timeout 60 "${MPIRUN[@]}" -np $np "$ops" 2>&1)
    rc=$?
    n=$(grep -c "^dist_ops: ok (rank [0-9] of $np)" <<<"$out")
    if [ $rc -eq 0 ] && [ "$n" = $np ]; then pass "dist_ops with $np ranks"; else fail "dist_ops with $np ranks (rc $rc): $out"; fi
done
out=$("$ops" 2>&1)
[ $? -eq 0 ] && grep -q '^dist_ops: ok (rank 0 of 1)$' <<<"$out" && pass "dist_ops as one process" || fail "dist_ops as one process: $out"
for how in abort die; do
    start=$(date +%s)
    out=$(timeout 60 "${MPIRUN[@]}" -np 2 "$ops" $how 2>&1)
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "cnntrain: rank 1 of 2: deliberate" <<<"$out"; then
        pass "$how in rank 1 stopped both ranks (rc $rc, $(( $(date +%s) - start )) s)"
    else
        fail "$how in rank 1 (rc $rc; 124 = hung): $out"
    fi
done

if [ $failed -ne 0 ]; then echo "test_dist: FAILED"; exit 1; fi
echo "test_dist: all passed"
