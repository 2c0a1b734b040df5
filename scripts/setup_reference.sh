#!/usr/bin/env bash
# setup_reference.sh: the reference environment, fastai itself and PyTorch 2.x from the Python
# package index, in the ignored folder reference-env/ (or $1). Used by the scripts that make
# tests/ref/fastai_*.safetensors, by scripts/fastai_side_by_side.sh and by scripts/bench_cpu.sh.
# Never needed by `make test` or CI: what the tests need from it is committed under tests/ref/.
#
# The versions are pinned (top level here, everything else in scripts/reference-requirements.txt,
# the `pip freeze` of the environment the committed files were made with). PyPI's torch for Linux
# brings its CUDA libraries (about 4 GB on disk); the CPU is what the scripts use.
#   scripts/setup_reference.sh [DIR]      then: reference-env/bin/python scripts/...
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-reference-env}
pins=(fastai==2.8.12 fastcore==2.2.41 torch==2.15.0 torchvision==0.29.2 timm==1.0.31)
lock=scripts/reference-requirements.txt
if [ -e "$dir" ] && [ ! -e "$dir/.cnntrain-reference" ]; then
    echo "setup_reference.sh: $dir exists and was not made by this script; give another DIR" >&2
    exit 2
fi
if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
    touch "$dir/.cnntrain-reference"
fi
"$dir/bin/python" -m pip install -q --upgrade pip
if [ -s "$lock" ]; then
    "$dir/bin/python" -m pip install -q -r "$lock"
else
    "$dir/bin/python" -m pip install -q "${pins[@]}"
fi
"$dir/bin/python" - <<'PY'
import fastai, torch, torchvision, timm
print(f"reference-env: fastai {fastai.__version__}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, timm {timm.__version__}, "
      f"threads {torch.get_num_threads()}, mkldnn {torch.backends.mkldnn.is_available()}")
PY
