"""compare_weights.py: a data-parallel run against the single-process run of the same config
(tests/test_dist.sh). Python 3 standard library only.

    python3 tests/dist/compare_weights.py RUN_ONE RUN_TWO

final.safetensors: the same tensors, every fp32 value within fp32 reduction-order tolerance
(|a - b| <= 1e-4 + 1e-3 |a|); metrics.csv: the same rows, train_loss, valid_loss and accuracy within
1e-4 (an empty one, of an eval stage, empty in both); every eval-*.csv of RUN_ONE: the same sizes,
accuracies and image counts, losses within 1e-5 (the ranks' sums add in another order). Prints the
largest relative difference; exits 1 when anything is out of tolerance."""
import csv
import glob
import json
import os
import struct
import sys


def close(a, b, tol):
    """Two CSV fields: both empty, or numbers within tol."""
    if a == "" or b == "":
        return a == b
    return abs(float(a) - float(b)) <= tol


def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, v in header.items():
        a, b = v["data_offsets"]
        if v["dtype"] == "F32":
            out[name] = struct.unpack("<%df" % ((b - a) // 4), data[8 + n + a:8 + n + b])
    return out


def main():
    one, two = sys.argv[1], sys.argv[2]
    A, B = tensors(one + "/final.safetensors"), tensors(two + "/final.safetensors")
    ok = sorted(A) == sorted(B) and len(A) > 10
    if not ok:
        print("the checkpoints hold different tensors (%d vs %d)" % (len(A), len(B)))
    worst, where, outside = 0.0, "", 0
    for name in A:
        for x, y in zip(A[name], B.get(name, ())):
            if not abs(x - y) <= 1e-4 + 1e-3 * abs(x):
                outside += 1
            r = abs(x - y) / (1e-6 + abs(x))
            if r > worst:
                worst, where = r, name
    if outside:
        print("%d values out of tolerance" % outside)
        ok = False
    with open(one + "/metrics.csv", newline="") as f:
        ra = list(csv.DictReader(f))
    with open(two + "/metrics.csv", newline="") as f:
        rb = list(csv.DictReader(f))
    if len(ra) != len(rb) or not ra:
        print("metrics.csv: %d rows vs %d" % (len(ra), len(rb)))
        ok = False
    for a, b in zip(ra, rb):
        for key in ("train_loss", "valid_loss", "accuracy"):
            if not close(a[key], b[key], 1e-4):
                print("metrics.csv differ: epoch %s %s: %s vs %s" % (a["epoch"], key, a[key], b[key]))
                ok = False
    for path in sorted(glob.glob(one + "/eval-*.csv")):
        other = os.path.join(two, os.path.basename(path))
        with open(path, newline="") as f:
            ea = list(csv.DictReader(f))
        try:
            with open(other, newline="") as f:
                eb = list(csv.DictReader(f))
        except OSError:
            eb = []
        same = len(ea) == len(eb) and all(
            a["size"] == b["size"] and a["images"] == b["images"] and a["accuracy"] == b["accuracy"] and
            close(a["loss"], b["loss"], 1e-5) for a, b in zip(ea, eb))
        if not same:
            print("%s differs from %s" % (path, other))
            ok = False
    print("%d tensors; largest relative difference %.2g (%s)" % (len(A), worst, where))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
