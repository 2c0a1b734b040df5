"""compare_runs.py: two run folders of the same config, byte for byte where a refactoring must not
change anything (scripts/check_identical.sh). Python 3 standard library only.

    python3 scripts/compare_runs.py RUN_A RUN_B

Compared: metrics.csv and eval-sizes.csv row by row (every column but `seconds`), the same set of
checkpoints (*.safetensors), and in each the same tensors (name, dtype, shape, bytes) and the same
metadata but for the keys that record a moment rather than a result: checkpoint_id (random per
run), metrics_bytes and metrics_hash (of metrics.csv, whose seconds differ). Prints one line per
file and exits 1 at the first difference it reports (all of them are reported)."""
import csv
import json
import os
import struct
import sys

VOLATILE = {"checkpoint_id", "metrics_bytes", "metrics_hash"}


def rows(path):
    with open(path, newline="") as f:
        r = list(csv.reader(f))
    if not r:
        return [], []
    keep = [i for i, name in enumerate(r[0]) if name != "seconds"]
    return [r[0][i] for i in keep], [[row[i] for i in keep] for row in r[1:]]


def safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
    return {k: v for k, v in meta.items() if k not in VOLATILE}, tensors


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: compare_runs.py RUN_A RUN_B")
    a, b = sys.argv[1:]
    bad = 0

    def differ(msg):
        nonlocal bad
        bad += 1
        print("DIFFERENT " + msg)

    for name in ("metrics.csv", "eval-sizes.csv"):
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if not os.path.exists(pa) and not os.path.exists(pb):
            continue
        if not (os.path.exists(pa) and os.path.exists(pb)):
            differ(f"{name}: in one run only")
            continue
        (ha, ra), (hb, rb) = rows(pa), rows(pb)
        if ha != hb or len(ra) != len(rb):
            differ(f"{name}: columns {ha} / {hb}, {len(ra)} / {len(rb)} rows")
            continue
        diff = [i for i in range(len(ra)) if ra[i] != rb[i]]
        if diff:
            differ(f"{name}: row {diff[0] + 2}: {ra[diff[0]]} / {rb[diff[0]]} ({len(diff)} rows differ)")
        else:
            print(f"identical {name}: {len(ra)} rows")
    ca = sorted(f for f in os.listdir(a) if f.endswith(".safetensors"))
    cb = sorted(f for f in os.listdir(b) if f.endswith(".safetensors"))
    if ca != cb:
        differ(f"checkpoints: {ca} / {cb}")
    for name in sorted(set(ca) & set(cb)):
        (ma, ta), (mb, tb) = safetensors(os.path.join(a, name)), safetensors(os.path.join(b, name))
        keys = sorted(set(ma) | set(mb))
        mdiff = [k for k in keys if ma.get(k) != mb.get(k)]
        tdiff = sorted(k for k in set(ta) | set(tb) if ta.get(k) != tb.get(k))
        if mdiff:
            differ(f"{name}: metadata {mdiff[0]}: {str(ma.get(mdiff[0]))[:80]!r} / {str(mb.get(mdiff[0]))[:80]!r}")
        if tdiff:
            differ(f"{name}: tensor {tdiff[0]} ({len(tdiff)} of {len(ta)} differ)")
        if not mdiff and not tdiff:
            print(f"identical {name}: {len(ta)} tensors, {len(ma)} metadata keys")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
