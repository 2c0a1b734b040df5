"""augment_reference.py: reference outputs for tests/test_augment.c, written once to
tests/ref/aug_ref.safetensors (about 200 KB). Run with Debian's PyTorch:

    /usr/bin/python3 scripts/augment_reference.py

Every case stores its source image (uint8 HWC), its parameters and torch's output (float32 CHW in
0..255 units, computed in float64):
  rc*   torchvision F.resized_crop (tensor path, bilinear, antialias on: PIL's filter without its
        uint8 rounding), optionally F.hflip
  rcp*  the same cases with antialias off: plain bilinear, for the sampler with Warp.aa off
  rcc*  torchvision F.resize(short side, antialias on) + F.center_crop
  pilrc* torchvision's RandomResizedCrop on a PIL image, as the PyTorch peers run it: PIL crop +
        resize(BILINEAR, antialiased) (+ FLIP_LEFT_RIGHT), uint8
  cc*   torchvision F.center_crop, including crops larger than the image (zero padding)
(fastai's own transforms are the reference of scripts/fastai_reference_aug.py, in
tests/ref/fastai_aug.safetensors.)
"""
import os
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_torch  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref", "aug_ref.safetensors")

rng = np.random.default_rng(20240611)
tensors = {}


def chw(img_u8):
    """uint8 HWC numpy -> float64 CHW tensor in 0..255."""
    return torch.from_numpy(img_u8).permute(2, 0, 1).to(torch.float64).contiguous()


def put(name, **kv):
    for k, v in kv.items():
        if isinstance(v, torch.Tensor) and v.dtype == torch.float64:
            v = v.to(torch.float32)
        tensors[f"{name}.{k}"] = v


src = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)   # H=30, W=40
tall = np.ascontiguousarray(src.transpose(1, 0, 2))           # H=40, W=30
tensors["src"] = torch.from_numpy(src)
tensors["tall"] = torch.from_numpy(tall)

# ---- torchvision resized_crop (+ hflip): params left, top, w, h, size, flip
for i, (left, top, w, h, size, flip) in enumerate([(5, 3, 25, 20, 16, 0), (0, 0, 40, 30, 16, 0),
                                                    (30, 10, 10, 8, 24, 0), (7, 2, 21, 27, 12, 1),
                                                    (1, 1, 37, 13, 20, 1)]):
    for name, aa in (("rc", True), ("rcp", False)):
        y = TF.resized_crop(chw(src), top, left, h, w, [size, size], TF.InterpolationMode.BILINEAR, antialias=aa)
        if flip:
            y = TF.hflip(y)
        put(f"{name}{i}", params=torch.tensor([left, top, w, h, size, flip], dtype=torch.int32), out=y)

# ---- torchvision Resize(round(ratio*size)) + CenterCrop(size): params size, tall; ratio f32
for i, (size, ratio, use_tall) in enumerate([(16, 1.25, 0), (15, 1.0, 0), (17, 1.25, 0), (15, 1.5, 1), (22, 1.0, 1)]):
    img = tall if use_tall else src
    r = int(round(np.float32(ratio) * size))
    y = TF.resize(chw(img), [r], TF.InterpolationMode.BILINEAR, antialias=True)
    y = TF.center_crop(y, [size, size])
    put(f"rcc{i}", params=torch.tensor([size, use_tall], dtype=torch.int32),
        ratio=torch.tensor([ratio], dtype=torch.float32), out=y)

# ---- torchvision CenterCrop(size) of the unresized image (zero padding when larger)
for i, (size, use_tall) in enumerate([(8, 0), (7, 0), (31, 0), (42, 0), (9, 1), (32, 1)]):
    img = tall if use_tall else src
    y = TF.center_crop(chw(img), [size, size])
    put(f"cc{i}", params=torch.tensor([size, use_tall], dtype=torch.int32), out=y)


# ---- torchvision RandomResizedCrop's resized_crop on a PIL image (the peers' data pipeline):
# PIL crops, then resizes with its antialiased bilinear filter, in two uint8 passes; params
# left, top, w, h, size, flip, tall
for i, (left, top, w, h, size, flip, use_tall) in enumerate([(0, 0, 40, 30, 11, 0, 0), (3, 2, 35, 27, 10, 1, 0),
                                                              (5, 3, 25, 20, 16, 0, 0), (2, 1, 23, 37, 9, 1, 1),
                                                              (1, 4, 28, 33, 20, 0, 1), (6, 0, 33, 30, 31, 1, 0)]):
    img = Image.fromarray(tall if use_tall else src)
    out = TF.resized_crop(img, top, left, h, w, [size, size], TF.InterpolationMode.BILINEAR)
    if flip:
        out = TF.hflip(out)
    put(f"pilrc{i}", params=torch.tensor([left, top, w, h, size, flip, use_tall], dtype=torch.int32),
        out=torch.from_numpy(np.asarray(out).copy()))

st_torch.save(tensors, OUT, metadata={"generator": "scripts/augment_reference.py",
                                      "torch": torch.__version__})
print(f"wrote {OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")
