# scripts/gpu_env.sh: sourced (not run) by every GPU script. Finds the CUDA toolkit, cuDNN, cuBLAS
# and libjpeg wherever a GPU machine keeps them, once, and says what it found.
#
#   . scripts/gpu_env.sh           # sets GPU_MAKE_ARGS (an array) and exports LD_LIBRARY_PATH
#   make "${GPU_MAKE_ARGS[@]}" train
#   gpu_preflight                  # prints what was found; returns 1 when the CUDA build cannot work
#
# Where it looks, first found wins:
#   nvcc     $NVCC, PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, /usr/local/cuda-*/bin,
#            site-packages/nvidia/cu13/bin; cudart beside it, else site-packages/nvidia/cu13/lib
#   cuDNN    $CUDA_HOME/include + lib64, /usr/include (+ x86_64-linux-gnu) + /usr/lib/x86_64-linux-gnu,
#            then PyTorch's wheel nvidia-cudnn-cu13: site-packages/nvidia/cudnn/{include,lib}
#   cuBLAS   $CUDA_HOME/include + lib64 (or targets/x86_64-linux/lib), then the CUDA 13 wheels'
#            site-packages/nvidia/cu13/{include,lib}, then the CUDA 12 ones' nvidia/cublas/{include,lib}
#   libjpeg  the system's (the -dev package), else gpu-deps/ (Debian's libjpeg62-turbo and -dev,
#            unpacked by scripts/gpu_deps.sh here and carried), else none: the build gets JPEG=0
#            (everything but JPEG decoding works; the GPU suites' JPEG cases skip, saying so).
#            GPU_DEPS_DIR names another folder than gpu-deps/.
# site-packages = the folders on $PYTHON's sys.path (PYTHON defaults to python3), or
# CNNTRAIN_SITE_DIRS (colon-separated) when set; tests/test_gpu_scripts.sh uses it with a fake wheel tree.
# Libraries found outside the toolkit go on LD_LIBRARY_PATH (cuDNN loads its engine libraries by
# name at run time) and into GPU_MAKE_ARGS, which the Makefile also writes into the binary's run path.

gpu_env_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# first existing file among the arguments (globs allowed)
gpu_env_first() {
    local f
    for f in "$@"; do [ -e "$f" ] && { echo "$f"; return 0; }; done
    return 1
}

gpu_env_site_dirs() {
    if [ -n "${CNNTRAIN_SITE_DIRS:-}" ]; then
        tr ':' '\n' <<<"$CNNTRAIN_SITE_DIRS"
    else
        "${PYTHON:-python3}" -c 'import sys; print("\n".join(p for p in sys.path if p))' 2>/dev/null
    fi
}

# gpu_env_site_first PATH...: the first site folder's first existing PATH (globs allowed)
gpu_env_site_first() {
    local d rel f
    while IFS= read -r d; do
        for rel in "$@"; do
            f=$(gpu_env_first "$d"/$rel) && { echo "$f"; return 0; }
        done
    done < <(gpu_env_site_dirs)
    return 1
}

# gpu_env_wheel SUBDIR HEADER LIBGLOB: "include-dir|lib-dir|site" of the first site folder holding
# SUBDIR/include/HEADER and SUBDIR/lib/LIBGLOB
gpu_env_wheel() {
    local d lib
    while IFS= read -r d; do
        [ -f "$d/$1/include/$2" ] || continue
        lib=$(gpu_env_first "$d/$1/lib/"$3) || continue
        echo "$d/$1/include|$(dirname "$lib")|$d"
        return 0
    done < <(gpu_env_site_dirs)
    return 1
}

gpu_env_find() {
    GPU_ENV_PROBLEMS=()
    local py_site_note="" hit lib
    # nvcc and the toolkit
    local nv
    nv=${NVCC:-$(command -v nvcc 2>/dev/null)} ||
        true
    [ -n "$nv" ] || nv=$(gpu_env_first "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" /usr/local/cuda/bin/nvcc \
        /usr/local/cuda-*/bin/nvcc) || nv=""
    [ -n "$nv" ] || nv=$(gpu_env_site_first nvidia/cu13/bin/nvcc) || nv=""
    GPU_ENV_NVCC=$nv
    if [ -n "$nv" ]; then
        GPU_ENV_CUDA_HOME=${CUDA_HOME:-$(cd "$(dirname "$nv")/.." && pwd)}
    else
        GPU_ENV_CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
        GPU_ENV_PROBLEMS+=("nvcc not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda*/bin, site-packages/nvidia/cu13/bin)")
    fi
    local ch=$GPU_ENV_CUDA_HOME
    lib=$(gpu_env_first "$ch"/lib64/libcudart.so* "$ch"/targets/x86_64-linux/lib/libcudart.so* "$ch"/lib/libcudart.so*) &&
        GPU_ENV_CUDA_LIBDIR=$(dirname "$lib") || GPU_ENV_CUDA_LIBDIR=""
    # a toolkit with nvcc but no runtime library: the wheels'
    if [ -z "$GPU_ENV_CUDA_LIBDIR" ] &&
        lib=$(gpu_env_site_first 'nvidia/cu13/lib/libcudart.so*' 'nvidia/cuda_runtime/lib/libcudart.so*'); then
        GPU_ENV_CUDA_LIBDIR=$(dirname "$lib")
    fi
    [ -n "$GPU_ENV_CUDA_LIBDIR" ] ||
        GPU_ENV_PROBLEMS+=("libcudart.so not found under $ch (lib64, targets/x86_64-linux/lib) or site-packages/nvidia/cu13/lib")

    # cuDNN: the toolkit's or the system's, else PyTorch's wheel
    GPU_ENV_CUDNN_INC="" GPU_ENV_CUDNN_LIBDIR="" GPU_ENV_CUDNN_FROM=""
    local inc
    for inc in "$ch/include" /usr/include /usr/include/x86_64-linux-gnu; do
        [ -f "$inc/cudnn.h" ] || continue
        lib=$(gpu_env_first "$inc"/../lib64/libcudnn.so* "$inc"/../lib/libcudnn.so* "$GPU_ENV_CUDA_LIBDIR"/libcudnn.so* \
            /usr/lib/x86_64-linux-gnu/libcudnn.so*) || continue
        GPU_ENV_CUDNN_INC=$inc GPU_ENV_CUDNN_LIBDIR=$(cd "$(dirname "$lib")" && pwd) GPU_ENV_CUDNN_FROM="system"
        break
    done
    if [ -z "$GPU_ENV_CUDNN_INC" ] && hit=$(gpu_env_wheel nvidia/cudnn cudnn.h 'libcudnn.so*'); then
        IFS='|' read -r GPU_ENV_CUDNN_INC GPU_ENV_CUDNN_LIBDIR py_site_note <<<"$hit"
        GPU_ENV_CUDNN_FROM="Python wheel nvidia-cudnn in $py_site_note"
    fi
    [ -n "$GPU_ENV_CUDNN_INC" ] || GPU_ENV_PROBLEMS+=("cuDNN not found (cudnn.h + libcudnn.so* in $ch, /usr, or site-packages/nvidia/cudnn)")

    # cuBLAS: the toolkit's, else the wheels'
    GPU_ENV_CUBLAS_INC="" GPU_ENV_CUBLAS_LIBDIR="" GPU_ENV_CUBLAS_FROM=""
    if [ -f "$ch/include/cublas_v2.h" ] && lib=$(gpu_env_first "$GPU_ENV_CUDA_LIBDIR"/libcublas.so*); then
        GPU_ENV_CUBLAS_INC=$ch/include GPU_ENV_CUBLAS_LIBDIR=$GPU_ENV_CUDA_LIBDIR GPU_ENV_CUBLAS_FROM="CUDA toolkit"
    elif hit=$(gpu_env_wheel nvidia/cu13 cublas_v2.h 'libcublas.so*') ||
        hit=$(gpu_env_wheel nvidia/cublas cublas_v2.h 'libcublas.so*'); then
        IFS='|' read -r GPU_ENV_CUBLAS_INC GPU_ENV_CUBLAS_LIBDIR py_site_note <<<"$hit"
        GPU_ENV_CUBLAS_FROM="Python wheel nvidia-cublas in $py_site_note"
    else
        GPU_ENV_PROBLEMS+=("cuBLAS not found (cublas_v2.h + libcublas.so* in $ch or site-packages/nvidia/cu13, nvidia/cublas)")
    fi

    # libjpeg: the system's, else the carried Debian packages, else none
    local probe='#include <stdio.h>
#include <jpeglib.h>
int main(void) { struct jpeg_error_mgr e; return jpeg_std_error(&e) == 0; }'
    local deps=${GPU_DEPS_DIR:-$gpu_env_root/gpu-deps}
    GPU_ENV_JPEG=0 GPU_ENV_JPEG_INC="" GPU_ENV_JPEG_LIBDIR="" GPU_ENV_JPEG_FROM="not found"
    if printf '%s\n' "$probe" | ${CC:-cc} -x c - -o /dev/null -ljpeg 2>/dev/null; then
        GPU_ENV_JPEG=1 GPU_ENV_JPEG_FROM="system (jpeglib.h $(gpu_env_first /usr/include/jpeglib.h /usr/local/include/jpeglib.h || echo 'on the compiler path'))"
    elif [ -f "$deps/usr/include/jpeglib.h" ] &&
        printf '%s\n' "$probe" | ${CC:-cc} -x c - -I"$deps/usr/include" -I"$deps/usr/include/x86_64-linux-gnu" \
            -L"$deps/usr/lib/x86_64-linux-gnu" -o /dev/null -ljpeg 2>/dev/null; then
        GPU_ENV_JPEG=1 GPU_ENV_JPEG_INC="$deps/usr/include $deps/usr/include/x86_64-linux-gnu"
        GPU_ENV_JPEG_LIBDIR=$deps/usr/lib/x86_64-linux-gnu GPU_ENV_JPEG_FROM="carried Debian packages in $deps"
    fi

    GPU_MAKE_ARGS=(CUDA=1)
    [ -z "$GPU_ENV_NVCC" ] || GPU_MAKE_ARGS+=("NVCC=$GPU_ENV_NVCC" "CUDA_HOME=$GPU_ENV_CUDA_HOME")
    [ -z "$GPU_ENV_CUDA_LIBDIR" ] || GPU_MAKE_ARGS+=("CUDA_LIBDIR=$GPU_ENV_CUDA_LIBDIR")
    [ -z "$GPU_ENV_CUDNN_INC" ] || GPU_MAKE_ARGS+=("CUDNN_INC=$GPU_ENV_CUDNN_INC" "CUDNN_LIBDIR=$GPU_ENV_CUDNN_LIBDIR")
    [ -z "$GPU_ENV_CUBLAS_INC" ] || GPU_MAKE_ARGS+=("CUBLAS_INC=$GPU_ENV_CUBLAS_INC" "CUBLAS_LIBDIR=$GPU_ENV_CUBLAS_LIBDIR")
    GPU_MAKE_ARGS+=("JPEG=$GPU_ENV_JPEG")
    [ -z "$GPU_ENV_JPEG_INC" ] || GPU_MAKE_ARGS+=("JPEG_INC=$GPU_ENV_JPEG_INC" "JPEG_LIBDIR=$GPU_ENV_JPEG_LIBDIR")

    # the run-time path: every library folder outside the default search (the toolkit's is in the
    # binary's run path too, but cuDNN's engine libraries are opened by name)
    local d add=""
    for d in "$GPU_ENV_CUDNN_LIBDIR" "$GPU_ENV_CUBLAS_LIBDIR" "$GPU_ENV_CUDA_LIBDIR" "$GPU_ENV_JPEG_LIBDIR"; do
        [ -n "$d" ] || continue
        case ":$add:${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *) add=${add:+$add:}$d ;; esac
    done
    [ -z "$add" ] || export LD_LIBRARY_PATH="$add${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# "9.10.2" from cudnn_version.h in folder $1
gpu_env_cudnn_version() {
    local h=$1/cudnn_version.h
    [ -f "$h" ] || h=$1/cudnn.h
    awk '/#define CUDNN_MAJOR /{a=$3} /#define CUDNN_MINOR /{b=$3} /#define CUDNN_PATCHLEVEL /{c=$3}
         END {if (a != "") print a "." b "." c; else print "version unknown"}' "$h" 2>/dev/null
}

# Everything a GPU call should print before it builds: returns 1 when the CUDA build cannot work.
gpu_preflight() {
    local smi
    echo "== preflight (scripts/gpu_env.sh) $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname 2>/dev/null)"
    echo "commit:      $(git -C "$gpu_env_root" log --oneline -1 2>/dev/null || echo '?')"
    if [ -n "$GPU_ENV_NVCC" ]; then
        echo "nvcc:        $GPU_ENV_NVCC ($("$GPU_ENV_NVCC" --version 2>&1 | grep -m1 -o 'release [^,]*, V[0-9.]*' || echo 'no version'))"
    else
        echo "nvcc:        NOT FOUND"
    fi
    echo "CUDA home:   $GPU_ENV_CUDA_HOME (cudart in ${GPU_ENV_CUDA_LIBDIR:-NOT FOUND})"
    if ! command -v nvidia-smi >/dev/null; then
        echo "GPU:         none visible (no nvidia-smi)"
    elif smi=$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1); then
        echo "GPU:         $smi (name, memory, driver, compute capability)"
    else
        echo "GPU:         none visible (nvidia-smi: $(head -1 <<<"$smi"))"
    fi
    if [ -n "$GPU_ENV_CUDNN_INC" ]; then
        echo "cuDNN:       $(gpu_env_cudnn_version "$GPU_ENV_CUDNN_INC"), from the $GPU_ENV_CUDNN_FROM"
        echo "             cudnn.h in $GPU_ENV_CUDNN_INC; $(cd "$GPU_ENV_CUDNN_LIBDIR" && ls libcudnn*.so* | tr '\n' ' ')in $GPU_ENV_CUDNN_LIBDIR"
    else
        echo "cuDNN:       NOT FOUND"
    fi
    if [ -n "$GPU_ENV_CUBLAS_INC" ]; then
        echo "cuBLAS:      from the $GPU_ENV_CUBLAS_FROM: cublas_v2.h in $GPU_ENV_CUBLAS_INC; $(cd "$GPU_ENV_CUBLAS_LIBDIR" && ls libcublas.so* | tr '\n' ' ')in $GPU_ENV_CUBLAS_LIBDIR"
    else
        echo "cuBLAS:      NOT FOUND"
    fi
    if [ "$GPU_ENV_JPEG" = 1 ]; then
        echo "libjpeg:     $GPU_ENV_JPEG_FROM"
    else
        echo "libjpeg:     NOT FOUND (no jpeglib.h + libjpeg.so on the system, no gpu-deps/): building with JPEG=0:"
        echo "             everything runs but JPEG decoding; the suites' JPEG cases skip. To have it, run"
        echo "             scripts/gpu_deps.sh on the development machine and carry gpu-deps"
    fi
    echo "sanitizer:   $(gpu_env_first "$GPU_ENV_CUDA_HOME/bin/compute-sanitizer" "$GPU_ENV_CUDA_HOME/compute-sanitizer/compute-sanitizer" || command -v compute-sanitizer || echo 'compute-sanitizer not found')"
    echo "python:      $(command -v "${PYTHON:-python3}" || echo none) $("${PYTHON:-python3}" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>/dev/null || echo '(no torch)')"
    echo "run-time library path (LD_LIBRARY_PATH): ${LD_LIBRARY_PATH:-(empty)}"
    echo "make arguments: ${GPU_MAKE_ARGS[*]}"
    if [ ${#GPU_ENV_PROBLEMS[@]} -gt 0 ]; then
        printf 'PROBLEM: %s\n' "${GPU_ENV_PROBLEMS[@]}"
        return 1
    fi
    return 0
}

gpu_env_find
