#!/usr/bin/python3
"""Does a cnntrain resnet50 checkpoint load into torchvision and give our logits?

    /usr/bin/python3 scripts/check_torch_load.py CKPT IO

CKPT: a checkpoint written by cnntrain's ckpt_save (safetensors). IO: safetensors with "input"
(N,3,H,W F32) and "logits" (N,1000 F32), cnntrain's eval-mode logits on that input, and
optionally metadata "num_batches_tracked" (what every batch norm's counter must be).
The checkpoint's model tensors are loaded strictly into torchvision.models.resnet50(); its eval
logits (float64 maths) must match ours to a relative error ||ours - torch|| / ||torch|| <= 1e-4.
Exit status: 0 match, 1 mismatch or unreadable file (the error is printed), 77 torch missing
(tests/test_torch_load.c reports that as a skip).
"""
import json
import os
import struct
import sys

TOL = 1e-4

try:
    import numpy as np
    import torch
    import torchvision
except ImportError as e:
    print("check_torch_load: PyTorch is not importable (%s)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    from st_torch import load_file as st_load  # the project's reader, where it exists
except ImportError:
    st_load = None


def st_load_minimal(path):
    """Fallback reader: u64 LE header length, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = blob[base + b:base + e]
        dt = info["dtype"]
        if dt == "BF16":  # numpy has no bfloat16: widen the bits to float32
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}[dt])
        out[name] = torch.from_numpy(a.copy()).reshape(info["shape"])
    return out


def st_metadata(path):
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(hlen)).get("__metadata__", {})


def load(path):
    if st_load:
        got = st_load(path)
        if isinstance(got, dict):  # a name -> tensor dict, as safetensors.torch.load_file gives
            return got
    return st_load_minimal(path)


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip())
        return 1
    torch.set_num_threads(2)
    try:
        ckpt, io = load(sys.argv[1]), load(sys.argv[2])
    except (OSError, ValueError, KeyError) as e:
        print("check_torch_load: cannot read the files: %s" % e)
        return 1
    model = torchvision.models.resnet50()
    # The model file is a plain state dict: every key of resnet50 with its shape, and nothing else.
    try:
        model.load_state_dict(ckpt, strict=True)
    except RuntimeError as e:
        print("check_torch_load: load_state_dict(strict=True) failed: %s" % e)
        return 1
    state = ckpt
    nbt = [int(v) for k, v in state.items() if k.endswith("num_batches_tracked")]
    # IO may say how many train-mode forwards the model saw: every batch norm must have counted them.
    want_nbt = st_metadata(sys.argv[2]).get("num_batches_tracked")
    if want_nbt is not None and set(nbt) != {int(want_nbt)}:
        print("check_torch_load: num_batches_tracked %s in the checkpoint, expected %s everywhere" % (
            sorted(set(nbt)), want_nbt))
        return 1
    model = model.double().eval()
    with torch.no_grad():
        ref = model(io["input"].double())
    ours = io["logits"].double().reshape(ref.shape)
    err = ((ours - ref).norm() / ref.norm()).item()
    print("check_torch_load: %d tensors loaded strictly into torchvision resnet50 (num_batches_tracked %d..%d); "
          "eval logits relative error %.3g (tolerance %g)" % (len(state), min(nbt), max(nbt), err, TOL))
    if not err <= TOL:
        print("check_torch_load: MISMATCH: torch logits[0,:4] %s, ours %s" % (ref[0, :4].tolist(), ours[0, :4].tolist()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
