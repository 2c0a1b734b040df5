#!/usr/bin/python3
"""pth_to_safetensors.py: a PyTorch checkpoint (.pth / .pt) to a safetensors state dict that
cnntrain reads as starting weights (`[model] pretrained = FILE.safetensors`).

    /usr/bin/python3 scripts/pth_to_safetensors.py resnet50-0676ba61.pth resnet50.safetensors

Takes a plain state dict (what torchvision's model zoo files are), or a dict that wraps one under
"state_dict" or "model" (training scripts' checkpoints); with --full-pickle also a whole pickled
nn.Module (unpickling runs code from the file: only for files you trust). A "module." prefix that
every name shares (nn.DataParallel) is removed. Floating-point tensors are written as F32, integer
ones (num_batches_tracked) as they are. Nothing is downloaded. Needs torch and numpy, not the
safetensors package (the writer is scripts/st_torch.py).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_torch  # noqa: E402


def load(path, full_pickle):
    if not os.path.isfile(path):
        sys.exit("%s: no such file" % path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not full_pickle)
    except Exception as e:  # torch's unpickler raises several types
        hint = "" if full_pickle else " (a pickled model rather than a state dict? see --full-pickle)"
        sys.exit("%s: cannot read: %s%s" % (path, e, hint))
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                return inner.state_dict()
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        return obj
    sys.exit("%s: holds a %s, not a state dict" % (path, type(obj).__name__))


def convert(state):
    names = list(state)
    if names and all(n.startswith("module.") for n in names):
        state = {n[len("module."):]: v for n, v in state.items()}
    out, dropped = {}, []
    for name, v in state.items():
        if not isinstance(v, torch.Tensor):
            dropped.append(name)
            continue
        out[name] = v.detach().to(torch.float32) if v.is_floating_point() else v.detach()
    return out, dropped


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pth", help="PyTorch checkpoint")
    ap.add_argument("out", help="safetensors file to write")
    ap.add_argument("--full-pickle", action="store_true", help="allow a pickled nn.Module (runs code from the file)")
    args = ap.parse_args()
    state, dropped = convert(load(args.pth, args.full_pickle))
    if not state:
        sys.exit("%s: no tensors found" % args.pth)
    st_torch.save(state, args.out, metadata={"source": os.path.basename(args.pth),
                                            "converted_by": "scripts/pth_to_safetensors.py"})
    count = sum(v.numel() for v in state.values())
    print("%s: %d tensors, %d values -> %s" % (args.pth, len(state), count, args.out))
    if dropped:
        print("  left out (not tensors): %s" % ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        print("  looks like a torchvision ResNet (fc: %s)" % (list(state["fc.weight"].shape) if "fc.weight" in state else "none"))


if __name__ == "__main__":
    main()
