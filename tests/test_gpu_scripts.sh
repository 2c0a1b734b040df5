#!/usr/bin/env bash
# The GPU scripts, without a GPU.
# 1. scripts/gpu_env.sh on fake machines: a toolkit without cuDNN and cuBLAS, whose
# cuDNN and cuBLAS are PyTorch's CUDA 13 wheels laid out under a fake site-packages; libjpeg from the
# system, from carried Debian packages (gpu-deps/), or nowhere (JPEG=0). Checks what it finds, what
# the preflight prints, and that the Makefile turns GPU_MAKE_ARGS into the right compile and link
# flags (make -n).
# 2. tests/gpu/run.sh (make test-gpu's runner) on fake suites: one that passes, one that skips, one
# that fails, one that dies half-way (run again part by part), one that hangs (time limit): every
# suite runs, each has its log, and the combined status fails.
# 3. ./train bench, which bench_gpu.sh times against PyTorch: --data device (the batch uploaded once,
# as training's device feed has it) trains on the same numbers as --data host (uploaded each step).
# Part of make test.
set -u
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check NAME: passes when the previous command succeeded
    if [ "$1" = 0 ]; then echo "ok   $2"; else echo "FAIL $2"; fails=$((fails + 1)); fi
}
has() { grep -qF -- "$2" <<<"$1"; }

# a toolkit: nvcc that prints a version, cudart, no cuDNN or cuBLAS
cuda=$tmp/cuda
mkdir -p "$cuda/bin" "$cuda/include" "$cuda/lib64"
printf '#!/bin/sh\necho "Cuda compilation tools, release 13.0, V13.0.88"\n' >"$cuda/bin/nvcc"
chmod +x "$cuda/bin/nvcc"
touch "$cuda/lib64/libcudart.so.13" "$cuda/include/cuda_runtime.h"
# PyTorch's wheels: nvidia-cudnn-cu13 and the CUDA 13 cuBLAS, versioned libraries only
site=$tmp/site-packages
mkdir -p "$site/nvidia/cudnn/include" "$site/nvidia/cudnn/lib" "$site/nvidia/cu13/include" "$site/nvidia/cu13/lib"
touch "$site/nvidia/cudnn/include/cudnn.h" "$site/nvidia/cudnn/lib/libcudnn.so.9" \
    "$site/nvidia/cudnn/lib/libcudnn_cnn.so.9" "$site/nvidia/cu13/include/cublas_v2.h" \
    "$site/nvidia/cu13/lib/libcublas.so.13" "$site/nvidia/cu13/lib/libcublasLt.so.13"
printf '#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 8\n#define CUDNN_PATCHLEVEL 1\n' >"$site/nvidia/cudnn/include/cudnn_version.h"

# env VAR=... bash: source gpu_env.sh, print the preflight and the make arguments
probe() {
    env -u NVCC -u LD_LIBRARY_PATH PATH=/usr/bin:/bin CUDA_HOME="$cuda" CNNTRAIN_SITE_DIRS="/nonexistent:$site" "$@" \
        bash -c '. scripts/gpu_env.sh; gpu_preflight; echo "preflight rc=$?"; echo "ARGS ${GPU_MAKE_ARGS[*]}"' 2>&1
}

out=$(probe)
show=$out # printed at the end when a check failed
has "$out" "nvcc:        $cuda/bin/nvcc (release 13.0, V13.0.88)"; check $? "finds nvcc in CUDA_HOME and its version"
has "$out" "cuDNN:       9.8.1, from the Python wheel nvidia-cudnn in $site"; check $? "finds cuDNN in the wheel, with its version"
has "$out" "libcudnn.so.9 libcudnn_cnn.so.9 in $site/nvidia/cudnn/lib"; check $? "lists the cuDNN libraries"
has "$out" "cuBLAS:      from the Python wheel nvidia-cublas in $site"; check $? "finds cuBLAS in the CUDA 13 wheel"
has "$out" "run-time library path (LD_LIBRARY_PATH): $site/nvidia/cudnn/lib:$site/nvidia/cu13/lib:$cuda/lib64"
check $? "puts the wheels' library folders on LD_LIBRARY_PATH"
has "$out" "CUDNN_INC=$site/nvidia/cudnn/include CUDNN_LIBDIR=$site/nvidia/cudnn/lib"; check $? "passes cuDNN's folders to make"
has "$out" "preflight rc=0"; check $? "the preflight passes when everything is found"
has "$out" "libjpeg:     system"; check $? "libjpeg from the system"

# the Makefile with those arguments: include and library folders, the versioned libraries by name
args=$(sed -n 's/^ARGS //p' <<<"$out")
eval "set -- $(printf '%q ' $args)"
mk=$(make -n -B BUILD="$tmp/build" TRAIN="$tmp/train" "$@" "$tmp/train" 2>&1)
has "$mk" "-I$site/nvidia/cudnn/include"; check $? "make: nvcc and cc get the wheel's cudnn.h folder"
has "$mk" "-l:libcudnn.so.9"; check $? "make: links the wheel's libcudnn.so.9 by name"
has "$mk" "-l:libcublas.so.13"; check $? "make: links the wheel's libcublas.so.13 by name"
has "$mk" "-Wl,-rpath,$site/nvidia/cudnn/lib"; check $? "make: the wheel's folder is in the run path"
has "$mk" "-ljpeg"; check $? "make: links libjpeg"

# a toolkit with nvcc but without its runtime library: cudart from the CUDA 13 wheel
cuda2=$tmp/cuda-nort
mkdir -p "$cuda2/bin" "$cuda2/include"
cp "$cuda/bin/nvcc" "$cuda2/bin/"
touch "$site/nvidia/cu13/lib/libcudart.so.13"
out=$(env -u NVCC PATH=/usr/bin:/bin CUDA_HOME="$cuda2" CNNTRAIN_SITE_DIRS="$site" \
    bash -c '. scripts/gpu_env.sh; gpu_preflight; echo "preflight rc=$?"' 2>&1)
show="$show"$'\n'"$out"
has "$out" "CUDA home:   $cuda2 (cudart in $site/nvidia/cu13/lib)"; check $? "cudart from the wheel when the toolkit has none"
rm "$site/nvidia/cu13/lib/libcudart.so.13"

# no cuDNN anywhere: the preflight says so and fails
out=$(env CNNTRAIN_SITE_DIRS=/nonexistent bash -c "CUDA_HOME=$cuda; export CUDA_HOME; PATH=/usr/bin:/bin; . scripts/gpu_env.sh; gpu_preflight; echo rc=\$?" 2>&1)
has "$out" "PROBLEM: cuDNN not found"; check $? "no cuDNN: the preflight names it"
has "$out" "rc=1"; check $? "no cuDNN: the preflight fails"
mk=$(make -n CUDA=1 CUDA_HOME="$cuda" NVCC="$cuda/bin/nvcc" CUDNN_INC=/nonexistent BUILD="$tmp/build" 2>&1)
has "$mk" "cudnn.h was not found"; check $? "no cuDNN: make CUDA=1 stops with a message"

# libjpeg only as carried Debian packages: a compiler that finds jpeglib.h only through gpu-deps
deps=$tmp/deps
mkdir -p "$deps/usr/include/x86_64-linux-gnu" "$deps/usr/lib/x86_64-linux-gnu"
touch "$deps/usr/include/jpeglib.h" "$deps/usr/lib/x86_64-linux-gnu/libjpeg.so"
printf '#!/bin/sh\nfor a; do [ "$a" = "-I%s/usr/include" ] && exit 0; done\nexit 1\n' "$deps" >"$tmp/cc"
chmod +x "$tmp/cc"
out=$(probe CC="$tmp/cc" GPU_DEPS_DIR="$deps")
has "$out" "libjpeg:     carried Debian packages in $deps"; check $? "libjpeg from the carried gpu-deps"
has "$out" "JPEG=1 JPEG_INC=$deps/usr/include $deps/usr/include/x86_64-linux-gnu JPEG_LIBDIR=$deps/usr/lib/x86_64-linux-gnu"
check $? "passes the carried libjpeg's folders to make"
# and nowhere: JPEG=0, said plainly
out=$(probe CC=false GPU_DEPS_DIR="$tmp/none")
has "$out" "libjpeg:     NOT FOUND"; check $? "no libjpeg: the preflight says so"
has "$out" "JPEG=0"; check $? "no libjpeg: the build gets JPEG=0"
has "$out" "preflight rc=0"; check $? "no libjpeg does not fail the preflight"

# ---- 2. the suite runner
suites=$tmp/suites
mkdir -p "$suites"
fake() { # fake NAME BODY: a suite program
    printf '#!/usr/bin/env bash\nn=%s\n[ "${1:-}" = --list ] && { echo a; echo b; exit 0; }\n%s\n' "$1" "$2" >"$suites/$1"
    chmod +x "$suites/$1"
}
fake s1_pass 'echo "PASS x"; echo "$n: 4 cases, 0 failed"'
fake s2_skip 'echo "$n: no usable GPU (none); skipped"'
fake s3_fail 'echo "FAIL conv bad"; echo "$n: 4 cases, 1 failed"; exit 1'
fake s4_dies 'if [ "${1:-}" = b ]; then echo "cnntrain: cuDNN error 3"; exit 1; fi
if [ "${1:-}" = a ]; then echo "PASS a"; echo "$n: 1 cases, 0 failed"; exit 0; fi
echo "PASS first"; echo "cnntrain: cuDNN error 3"; exit 1'
fake s5_hangs 'sleep 30'
out=$(GPU_SUITE_SECONDS=2 bash tests/gpu/run.sh "$tmp/logs" "$suites"/s1_pass "$suites"/s2_skip "$suites"/s3_fail \
    "$suites"/s4_dies "$suites"/s5_hangs 2>&1)
rc=$?
show="$show"$'\n'"$out"
[ $rc -ne 0 ]; check $? "runner: a failing suite fails the whole run"
has "$out" "s1_pass         0 s  passed: 4 cases, 0 failed"; check $? "runner: a passing suite"
has "$out" "s2_skip         0 s  skipped: no usable GPU (none); skipped"; check $? "runner: a skipped suite"
has "$out" "FAILED (exit 1): 4 cases, 1 failed"; check $? "runner: a failing suite after the ones before"
has "$out" "    FAIL conv bad"; check $? "runner: shows the FAIL lines"
has "$out" "DIED (exit 1) without its summary; the log ends: cnntrain: cuDNN error 3"; check $? "runner: a suite that dies"
has "$out" "part a                   0 s  exit 0: s4_dies: 1 cases, 0 failed"; check $? "runner: the parts run alone"
has "$out" "part b                   0 s  exit 1: no summary: cnntrain: cuDNN error 3"; check $? "runner: the dying part, alone, named"
has "$out" "TIMED OUT after 2 s"; check $? "runner: a hanging suite is stopped"
has "$out" "test-gpu: 5 suites: 1 passed, 1 skipped, 3 failed (s3_fail s4_dies s5_hangs)"; check $? "runner: the combined status"
[ -s "$tmp/logs/s1_pass.log" ] && grep -q "PASS a" "$tmp/logs/s4_dies.log"; check $? "runner: one log per suite, parts appended"

# ---- 3. the benchmark's two data modes
if [ -x ./train ]; then
    b1=$(./train bench xresnet_tiny --size 24 --batch 4 --steps 3 --classes 5 --data device 2>&1 | grep '^RESULT')
    b2=$(./train bench xresnet_tiny --size 24 --batch 4 --steps 3 --classes 5 --data host 2>&1 | grep '^RESULT')
    show="$show"$'\n'"$b1"$'\n'"$b2"
    has "$b1" "data=device" && has "$b2" "data=host"; check $? "bench: RESULT says where the data was"
    l1=$(grep -o 'loss=[^ ]*' <<<"$b1") l2=$(grep -o 'loss=[^ ]*' <<<"$b2")
    [ -n "$l1" ] && [ "$l1" = "$l2" ]; check $? "bench: --data device and --data host train on the same batch ($l1, $l2)"
    b3=$(./train bench xresnet_tiny --size 24 --batch 4 --steps 3 --classes 5 --reads step 2>&1 | grep '^RESULT')
    show="$show"$'\n'"$b3"
    has "$b3" "reads=step $(grep -o 'img_s' <<<"$b3")" && [ "$(grep -o 'loss=[^ ]*' <<<"$b3")" = "$l1" ]
    check $? "bench: --reads step (the trainer's two waits a step) trains the same numbers"
    ./train bench xresnet_tiny --data disk >/dev/null 2>&1
    [ $? = 2 ]; check $? "bench: --data disk is refused"
else
    echo "FAIL ./train is not built"; fails=$((fails + 1))
fi

if [ $fails -gt 0 ]; then
    echo "what the scripts printed:"
    echo "$show" | sed 's/^/    /'
    echo "test_gpu_scripts: $fails check(s) failed"
    exit 1
fi
echo "test_gpu_scripts: all checks passed"
