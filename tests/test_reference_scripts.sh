#!/usr/bin/env bash
# The fastai reference scripts' refusals, without the reference environment (issue 14): they must
# stop with a message that names the problem before any work. What needs fastai itself is skipped
# here and says so; the committed tests/ref/fastai_*.safetensors are what make test compares.
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0
check() {  # NAME EXPECTED_RC PATTERN CMD...
    local name=$1 want=$2 pat=$3; shift 3
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" = "$want" ] && grep -q -- "$pat" <<<"$out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1)); echo "FAIL $name: exit $rc (want $want), output:"; echo "$out" | tail -5
    fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/theirs"; echo keep >"$tmp/theirs/file"
check "setup refuses a folder it did not make" 2 "was not made by this script" scripts/setup_reference.sh "$tmp/theirs"
[ "$(cat "$tmp/theirs/file")" = keep ] || { fail=$((fail + 1)); echo "FAIL: setup_reference.sh touched $tmp/theirs"; }
check "side by side: no config" 2 "no such config" scripts/fastai_side_by_side.sh "$tmp/none.ini"
check "side by side: an existing results folder" 2 "give --results a new folder" \
    scripts/fastai_side_by_side.sh configs/cpu_progressive.ini --results "$tmp/theirs"
[ "$(ls "$tmp/theirs")" = file ] || { fail=$((fail + 1)); echo "FAIL: fastai_side_by_side.sh wrote into $tmp/theirs"; }
check "side by side: bad --only" 2 "ours, fastai or both" scripts/fastai_side_by_side.sh configs/cpu_progressive.ini --only x
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    py=/usr/bin/python3
    check "recipe refuses a fixres stage" 1 "type = fixres" $py scripts/fastai_recipe.py configs/cpu_cassava_fixres.ini
    check "recipe refuses a fastai head" 1 "arch = xresnet18_fastai_head" $py scripts/fastai_recipe.py configs/cpu_scratch_cassava.ini
    check "recipe refuses an lr range" 1 "an lr range" $py scripts/fastai_recipe.py configs/cpu_progressive.ini \
        --set "stage small.lr=1e-4..1e-3"
    check "recipe: unknown key" 1 "unknown key" $py scripts/fastai_recipe.py configs/cpu_progressive.ini --set "run.nope=1"
    if $py -c 'import fastai' 2>/dev/null; then
        echo "fastai is installed for $py: the no-fastai message is not checked"
    else
        check "recipe without fastai" 1 "setup_reference.sh" $py scripts/fastai_recipe.py configs/cpu_progressive.ini
    fi
else
    echo "skipped: fastai_recipe.py's checks (no /usr/bin/python3 with torch)"
fi
[ -x reference-env/bin/python ] || echo "skipped: the fastai runs themselves (no reference-env/; scripts/setup_reference.sh)"
echo "reference scripts: $pass passed, $fail failed"
[ "$fail" = 0 ]
