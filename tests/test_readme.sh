#!/usr/bin/env bash
# Every command line README.md shows, run on small data, so the README cannot drift (part of make test).
# 1. Extracts the command lines: indented code-block lines starting with ./train, make, scripts/,
#    bash, time (./train, or run(command="...") (its command), a usage line's continuation lines
#    ([--flag ...] indented further) joined to it; and inline `...` spans starting with ./train,
#    time (./train, /usr/bin/time -v ./train or make. `time` wrappers are dropped, `a && b` runs as parts.
# 2. Each part must match a row of COMMANDS below (else the test fails: a new README command needs a
#    row), which says how it is checked: run (must exit 0), config (a training run shrunk by --set:
#    small data, batch 4, size 32, one step), resume (one more step), gpu (must fail with the no-GPU
#    message; skipped where a GPU is present), help (an inline mention: the subcommand's --help must
#    list every flag shown), make (a real Makefile target), syntax (bash -n only: the script downloads).
#    Before running, optional [brackets] are filled in as shown, `a|b` takes a, a positional `A|B|C`
#    runs once per alternative, VALUES shrinks expensive flag values, PLACEHOLDERS maps every
#    upper-case placeholder (an unmapped one fails), PATHS maps the README's example paths.
# Everything runs in a temporary folder holding links to ./train, configs/ and scripts/: the
# repository's runs/ and data/ are never touched. README=FILE checks another copy of the README.
set -u
cd "$(dirname "$0")/.." || exit 1
root=$PWD
readme=${README:-$root/README.md}
# a memory file system where there is room: the runs' checkpoints are written with fsync, which on a
# shared disk costs more than the runs themselves
if [ -z "${TMPDIR:-}" ] && [ -w /dev/shm ] && [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt 2000000 ]; then
    tmp=$(mktemp -d -p /dev/shm)
else
    tmp=$(mktemp -d)
fi
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS
fails=0

# ---- the table: README command (a bash glob) -> how it is checked [| extra arguments | message]
# The first row that matches wins. Globs name the command, not its optional flags, so a flag made
# optional or added keeps its row; a new subcommand, script or config needs one.
COMMANDS=(
    "make|make"
    "make *|make"
    "./train --version|run"
    "./train --help-config|run"
    "./train info MODEL*|run"
    "./train bench MODEL*--device cuda*|gpu||no NVIDIA GPU"
    "./train bench MODEL*|run"
    "./train bench|help"
    "./train bench --*|help"
    "./train eval CHECKPOINT*|run"
    "./train eval CKPT*|run"
    "./train eval runs/*|run"
    "./train smoke|run|--steps 2 --batch 4 --valid 16"
    "./train smoke *|run|--valid 16"
    "./train demo-data|run|--train 8 --valid 4 --size 32"
    "./train demo-data *|run"
    "./train show-batch *|run"
    "./train bench-loader *|run"
    "./train predict CHECKPOINT *|run"
    "./train predict CKPT *|run"
    "./train lr_find CONFIG*|run|--set train.size=32 --set train.batch=4"
    "./train --resume runs/*|resume|--set run.stop_after=1"
    "./train configs/*.ini*run.device=cuda*|gpu||no NVIDIA GPU"
    "./train configs/*.ini*|config"
    "./train CONFIG*|config"
    "scripts/gpu_deps.sh*|syntax"
    "scripts/bench_gpu.sh*|gpu||nvidia-smi not found"
    "scripts/gpu_end_to_end.sh*|gpu|--results e2e|nvidia-smi not found"
    "bash scripts/gpu_check.sh*|gpu||no GPU visible on this machine: nothing to check"
    "mpirun *./train configs/*.ini*|mpi"
)
# placeholders (whole words) -> small values; DIR and FILE get the command's number
PLACEHOLDERS=(
    "CHECKPOINT=runs/fixture/final.safetensors" "CKPT=runs/fixture/final.safetensors"
    "PATH=demo" "MODEL=xresnet18" "M=xresnet_tiny" "CONFIG=configs/smoke.ini" "NAME=train"
    "IMAGE=demo/val/disc/0.jpg" "FOLDER=demo/val" "CSV=csvset/few.csv"
    "N=2" "S=32" "B=4" "K=3" "C=2" "P=40" "R=1.14" "DIR=out-#" "FILE=out-#.csv"
)
# flags whose values (shown or placeholder) are too big for a test -> small values
VALUES=("--sizes=32,40" "--size=32" "--steps=2" "--iters=6" "--batch=4" "--train=8" "--valid=4" "--warmup=1")
# `--flag ...` (the README's "one of several") -> a value
ELLIPSIS=("--transform=fastai")
# the README's example paths -> the fixtures below (sed -E expressions)
PATHS='s#runs/cpu_progressive-[0-9-]+/final\.safetensors#runs/fixture/final.safetensors#g
s#runs/x/final\.safetensors#runs/fixture/final.safetensors#g
s#runs/cpu_progressive-[0-9-]+#runs/resumable#g
s#\.\./shared/data/imagenette2-224#demo#g
s#\.\./shared/data/cassava-mini#csvset#g
s#/tmp/data/imagenette2-224#demo#g'

# ---- extraction
extract_blocks() {
    awk '
    function strip(s) { sub(/ +#.*$/, "", s); sub(/   .*$/, "", s); sub(/ +$/, "", s); return s }
    function flush() { if (cur != "") print cur; cur = "" }
    /^    / {
        line = $0; sub(/^ +/, "", line)
        if (cur != "" && match($0, /[^ ]/) > 6 && line ~ /^(\[|--)/) { cur = cur " " strip(line); next }
        flush()
        if (line ~ /^run\(command="/) { sub(/^run\(command="/, "", line); sub(/".*$/, "", line) }
        if (line ~ /^(\.\/train( |$)|make( |$)|scripts\/|bash |time \(\.\/train|mpirun )/) cur = strip(line)
        next
    }
    { flush() }
    END { flush() }' "$readme"
}
extract_inline() {
    # shellcheck disable=SC2016 # the backticks are the README's, not a command substitution
    tr '\n' ' ' <"$readme" | grep -o '`[^`]*`' | sed 's/^`//; s/`$//' | tr -s ' ' |
        grep -E '^(\./train |time \(\./train|/usr/bin/time -v \./train |make( |$))'
}

# mpirun lines: as root here and in CI, on 2 cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

# ---- fixtures, in the sandbox: links to the program, configs and scripts; small data; a checkpoint
sandbox=$tmp/work
mkdir -p "$sandbox/data"
ln -s "$root/train" "$sandbox/train"
ln -s "$root/configs" "$sandbox/configs"
ln -s "$root/scripts" "$sandbox/scripts"
cd "$sandbox" || exit 1
# shellcheck disable=SC2046 # shrink prints separate arguments
setup() {
    ./train demo-data --out demo --train 8 --valid 4 --size 32 &&
        ln -s ../demo data/demo && # configs/smoke.ini's data
        mkdir -p csvset/train_images && echo "image_id,label,is_val" >csvset/train.csv &&
        for f in demo/train/*/*.jpg demo/val/*/*.jpg; do
            split=${f#demo/} split=${split%%/*} class=${f%/*} class=${class##*/} id=${class}_${split}_${f##*/}
            cp "$f" "csvset/train_images/$id" && echo "$id,$class,$([ "$split" = val ] && echo True || echo False)" >>csvset/train.csv
        done &&
        head -11 csvset/train.csv >csvset/few.csv && # ten images for predict
        ./train configs/smoke.ini --set data.path=demo --set train.epochs=1 --set train.size=32 --set train.batch=8 \
            --set run.name=fixture &&
        ./train configs/cpu_progressive.ini $(shrink configs/cpu_progressive.ini) --set run.name=resumable
}

# shrink CONFIG: --set overrides that keep the config's stages and keys but make its run one step
# on the small data: every stage's batch 4 and size 32 (an eval stage's sizes 32,40)
shrink() {
    local format
    format=$(awk -F' *= *' '/^\[/{s=$0} s=="[data]" && $1=="format"{print $2}' "$1")
    printf -- '--set run.stop_after=1 --set data.path=%s' "$([ "$format" = csv ] && echo csvset || echo demo)"
    awk -F' *= *' '/^\[stage /{n=$0; sub(/^\[stage /,"",n); sub(/\]$/,"",n)} n!="" && $1=="type"{print n, $2; n=""}' "$1" |
        while read -r name type; do
            printf ' --set %s.batch=4' "$name"
            if [ "$type" = eval ]; then printf ' --set %s.sizes=32,40' "$name"; else printf ' --set %s.size=32' "$name"; fi
        done
}

lookup() { # lookup KEY TABLE...: the value of KEY=VALUE in the table, or status 1
    local key=$1 row
    shift
    for row in "$@"; do [ "${row%%=*}" = "$key" ] && { printf '%s' "${row#*=}"; return 0; }; done
    return 1
}

# concrete KIND NUMBER COMMAND: the command with brackets, alternatives, values and placeholders
# filled in; one line per variant (a positional A|B|C); status 1 and a message for a placeholder
# without an entry
concrete() {
    local kind=$1 num=$2 text=$3 tokens=() variants=("") i tok prev v alt
    text=$(sed -E "$PATHS" <<<"$text" | tr -d '[]')
    while [[ $text =~ ^\ *(\"[^\"]*\"|[^ ]+) ]]; do
        tokens+=("${BASH_REMATCH[1]}")
        text=${text:${#BASH_REMATCH[0]}}
    done
    prev=""
    for tok in "${tokens[@]}"; do
        if [ "$tok" = "..." ]; then
            if [[ $prev == --* ]] && v=$(lookup "$prev" "${ELLIPSIS[@]}"); then tok=$v; else prev=$tok; continue; fi
        elif [[ $tok == *"|"* && $tok =~ ^[A-Z|]+$ ]]; then # a positional A|B|C: one run each
            local next=()
            for alt in ${tok//|/ }; do
                v=$(lookup "$alt" "${PLACEHOLDERS[@]}") || { echo "placeholder $alt has no entry in PLACEHOLDERS"; return 1; }
                for i in "${!variants[@]}"; do next+=("${variants[i]} ${v//#/$num}"); done
            done
            variants=("${next[@]}")
            prev=$tok
            continue
        elif [[ $tok == *"|"* && $tok != \"* ]]; then
            tok=${tok%%|*}
        fi
        if [[ $prev == --* && $kind != gpu ]] && v=$(lookup "$prev" "${VALUES[@]}"); then tok=$v; fi
        if [[ $tok =~ ^[A-Z][A-Z_]*$ ]]; then
            v=$(lookup "$tok" "${PLACEHOLDERS[@]}") || { echo "placeholder $tok has no entry in PLACEHOLDERS"; return 1; }
            tok=${v//#/$num}
        fi
        for i in "${!variants[@]}"; do variants[i]="${variants[i]} $tok"; done
        prev=$tok
    done
    printf '%s\n' "${variants[@]# }"
}

gpu_present() { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }
makedb=$tmp/make-db
make_targets() {
    [ -f "$makedb" ] || make -C "$root" -pq .readme-probe >"$makedb" 2>/dev/null
    awk '/^# Not a target/{skip=1; next} /^[A-Za-z0-9_.\/-]+:/{ if (!skip) { split($0, a, ":"); print a[1] } } {skip=0}' "$makedb"
}

result() { # result OK|FAIL SECONDS TEXT
    printf '%-4s %5.1f s  %s\n' "$1" "$2" "$3"
    [ "$1" = FAIL ] && fails=$((fails + 1))
    return 0
}

# check NUMBER PART: one command part as the table says
check() {
    local num=$1 part=$2 row pattern kind extra message found="" t0 log cmd lines rc
    for row in "${COMMANDS[@]}"; do
        pattern=${row%%|*}
        # shellcheck disable=SC2053 # the pattern is a glob
        if [[ $part == $pattern ]]; then found=$row; break; fi
    done
    if [ -z "$found" ]; then
        result FAIL 0 "$part: no row in tests/test_readme.sh's COMMANDS (say how to test it there)"
        return
    fi
    IFS='|' read -r _ kind extra message <<<"$found"
    t0=$EPOCHREALTIME
    log=$tmp/log-$num
    case $kind in
    make)
        local goal goals
        read -r -a goals <<<"${part#make}"
        [ ${#goals[@]} -gt 0 ] || goals=(all)
        for goal in "${goals[@]}"; do
            [[ $goal == *=* ]] && continue
            if make_targets | grep -qxF "$goal"; then
                result ok "$(elapsed "$t0")" "$part: make target '$goal' exists"
            else
                result FAIL "$(elapsed "$t0")" "$part: '$goal' is not a Makefile target"
            fi
        done
        return ;;
    syntax)
        local script=${part%% *}
        if [ -x "$root/$script" ] && bash -n "$root/$script"; then
            result ok "$(elapsed "$t0")" "$part: not run (it downloads packages with apt-get); exists, executable, bash -n passes"
        else
            result FAIL "$(elapsed "$t0")" "$part: $script missing, not executable or not valid bash"
        fi
        return ;;
    help)
        local sub flag missing=""
        read -r _ sub _ <<<"$part"
        if ! ./train "$sub" --help </dev/null >"$log" 2>&1; then
            result FAIL "$(elapsed "$t0")" "$part: ./train $sub --help failed: $(tail -1 "$log")"
            return
        fi
        # shellcheck disable=SC2013 # flags are words
        for flag in $(grep -oE -- '--[a-z][a-z0-9-]*' <<<"$part"); do grep -qE -- "(^|[^a-z-])$flag([^a-z-]|\$)" "$log" || missing="$missing $flag"; done
        if [ -n "$missing" ]; then result FAIL "$(elapsed "$t0")" "$part: ./train $sub --help lists no$missing"
        else result ok "$(elapsed "$t0")" "$part: ./train $sub --help lists it"; fi
        return ;;
    esac
    if [ "$kind" = mpi ] && ! { command -v mpirun >/dev/null && ./train --version | grep -q '^mpi: .*MPI'; }; then
        result skip 0 "$part: mpirun absent, or ./train built without MPI"
        return
    fi
    if gpu_present && [ "$kind" = gpu ]; then
        result skip 0 "$part: needs the GPU (a GPU is present: run it in the GPU window)"
        return
    fi
    if ! lines=$(concrete "$kind" "$num" "$part"); then
        result FAIL 0 "$part: $lines"
        return
    fi
    while read -r cmd; do
        [ -n "$extra" ] && cmd="$cmd $extra"
        if [[ $kind == config || $kind == mpi || ($kind == gpu && $cmd == "./train "*.ini*) ]]; then
            # the shrinking overrides right after the config, the README's own after them
            local ini
            ini=$(grep -oE '[^ ]+\.ini' <<<"$cmd" | head -1)
            cmd=${cmd/"$ini"/"$ini $(shrink "$ini")"}
        fi
        echo "\$ $cmd"
        t0=$EPOCHREALTIME
        timeout 120 bash -c "$cmd" </dev/null >"$log" 2>&1
        rc=$?
        if [ "$kind" = gpu ]; then
            if [ $rc -ne 0 ] && grep -qE -- "$message" "$log"; then
                result ok "$(elapsed "$t0")" "$part: refused without a GPU (exit $rc): $(grep -m1 -E -- "$message" "$log" | cut -c1-100)"
            else
                show_log "$log"
                result FAIL "$(elapsed "$t0")" "$part: expected a failure saying /$message/ without a GPU, got exit $rc"
            fi
        elif [ $rc -eq 0 ]; then
            result ok "$(elapsed "$t0")" "$part"
        else
            show_log "$log"
            result FAIL "$(elapsed "$t0")" "$part: exit $rc"
        fi
        # the run folders this command made (up to 300 MB each) go; the fixtures stay
        find runs -mindepth 1 -maxdepth 1 ! -name fixture ! -name resumable -exec rm -rf {} +
    done <<<"$lines"
}
show_log() { # the first lines (the error, before any usage text) and the last
    if [ "$(wc -l <"$1")" -le 8 ]; then cat "$1"; else head -3 "$1"; echo "  [...]"; tail -4 "$1"; fi
}
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

if ! setup >"$tmp/setup.log" 2>&1; then
    tail -20 "$tmp/setup.log"
    echo "test_readme: FAIL: making the fixtures (demo data, a CSV set, a checkpoint, a stopped run) failed"
    exit 1
fi
echo "fixtures: demo/ (folder layout), csvset/ (CSV layout), runs/fixture (a finished run), runs/resumable (a stopped one) in $((SECONDS - started)) s"

mapfile -t commands < <(extract_blocks; extract_inline)
mapfile -t unique < <(printf '%s\n' "${commands[@]}" | awk '!seen[$0]++')
echo "README.md shows ${#commands[@]} command lines (${#unique[@]} different)"
[ ${#unique[@]} -ge 20 ] || { echo "test_readme: FAIL: fewer than 20 command lines found: is the extraction broken?"; exit 1; }
num=0
declare -A checked # a part shown twice (./train smoke, the demo in `time (...)`) runs once
for line in "${unique[@]}"; do
    echo "-- README: $line"
    body=$line
    [[ $body =~ ^time\ \((.*)\)$ ]] && body=${BASH_REMATCH[1]}
    body=${body#/usr/bin/time -v }
    body=${body// && /$'\n'}
    while read -r part; do
        num=$((num + 1))
        if [ -n "${checked[$part]:-}" ]; then
            result ok 0 "$part: as #${checked[$part]} above"
            continue
        fi
        checked[$part]=$num
        echo "#$num"
        check "$num" "$part"
    done <<<"$body"
done
echo "test_readme: ${#unique[@]} README command lines, $fails failed, $((SECONDS - started)) s"
[ $fails -eq 0 ]
