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
  fa*   fastai's batch affine+perspective in one pass: the grid of aug_transforms(size=...) with
        min_scale=1, written here from fastai's formulas: aff = flip @ rotate @ zoom with the
        aspect correction of _prepare_mat, F.affine_grid(align_corners=True), the homography of
        find_coeffs/apply_perspective, F.grid_sample(bilinear, reflection, align_corners=True)
  fr*   the same followed by RandomResizedCropGPU's second resampling (crop, identity grid to
        size): two bilinear passes, which cnntrain fuses into one; on a linear gradient the two
        agree up to the reflection's kinks
  pil*  fastai's item Resize(presize, Crop): PIL crop + resize(BILINEAR), uint8, upscaling and
        (antialiased) downscaling
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
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


# ---- fastai's affine + perspective grid, written from fastai.vision.augment's formulas
def fastai_coords(item_h, item_w, out_h, out_w, flip, rot, zoom, col, row, wx, wy):
    t = torch.float64
    f = torch.tensor([[-1.0 if flip else 1.0, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=t)
    th = rot * math.pi / 180
    r = torch.tensor([[math.cos(th), math.sin(th), 0], [-math.sin(th), math.cos(th), 0], [0, 0, 1]], dtype=t)
    s = 1 / zoom
    z = torch.tensor([[s, 0, (1 - s) * (2 * col - 1)], [0, s, (1 - s) * (2 * row - 1)], [0, 0, 1]], dtype=t)
    m = f @ r @ z
    m[0, 1] *= item_h / item_w
    m[1, 0] *= item_w / item_h
    coords = F.affine_grid(m[None, :2], (1, 3, out_h, out_w), align_corners=True)
    if wx or wy:
        orig = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=t)
        targ = torch.tensor([[-1 - wy, -1 - wx], [-1 + wy, 1 + wx], [1 + wy, -1 + wx], [1 - wy, 1 - wx]], dtype=t)
        rows = []
        for (p1x, p1y), (p2x, p2y) in zip(orig.tolist(), targ.tolist()):
            rows.append([p2x, p2y, 1, 0, 0, 0, -p1x * p2x, -p1x * p2y])
            rows.append([0, 0, 0, p2x, p2y, 1, -p1y * p2x, -p1y * p2y])
        c = torch.linalg.solve(torch.tensor(rows, dtype=t), orig.reshape(8))
        hmat = torch.cat([c, torch.ones(1, dtype=t)]).view(3, 3)
        pts = coords.view(-1, 2)
        p3 = pts @ hmat[:, :2].T + hmat[:, 2]
        coords = (p3[:, :2] / p3[:, 2:]).view(coords.shape)
    return coords


def grid(x, coords):
    return F.grid_sample(x[None], coords, mode="bilinear", padding_mode="reflection", align_corners=True)[0]


fa_cases = [  # flip, rotate, zoom, col, row, warp_x, warp_y, size, tall
    (1, 30.0, 1.05, 0.3, 0.6, 0.15, -0.1, 24, 0),
    (0, -7.0, 1.1, 0.2, 0.9, 0.0, 0.0, 20, 0),
    (0, 0.0, 1.0, 0.5, 0.5, -0.2, 0.2, 22, 1),
    (1, 10.0, 1.0, 0.5, 0.5, 0.0, 0.0, 30, 1),
]
for i, (flip, rot, zoom, col, row, wx, wy, size, use_tall) in enumerate(fa_cases):
    img = tall if use_tall else src
    x = chw(img)
    y = grid(x, fastai_coords(img.shape[0], img.shape[1], size, size, flip, rot, zoom, col, row, wx, wy))
    put(f"fa{i}", params=torch.tensor([flip, rot, zoom, col, row, wx, wy], dtype=torch.float32),
        size=torch.tensor([size, use_tall], dtype=torch.int32), out=y)

# ---- two passes (affine at item size, then RandomResizedCropGPU) on linear gradients
yy, xx = np.mgrid[0:48, 0:48]
grad = np.stack([2 * xx + 3 * yy, 3 * xx + 2 * yy, 235 - 2 * xx - 3 * yy], axis=-1).astype(np.uint8)
tensors["grad"] = torch.from_numpy(grad)
fr_cases = [  # flip, rotate, zoom, col, row, warp_x, warp_y, crop x, y, w, h, size
    (1, 8.0, 1.08, 0.4, 0.7, 0.1, -0.12, 5, 3, 40, 40, 24),
    (0, -10.0, 1.0, 0.5, 0.5, 0.0, 0.2, 0, 0, 48, 48, 26),
    (0, 3.0, 1.1, 0.9, 0.1, 0.0, 0.0, 9, 2, 37, 37, 30),
]
for i, (flip, rot, zoom, col, row, wx, wy, cx, cy, cw, ch, size) in enumerate(fr_cases):
    x = chw(grad)
    a = grid(x, fastai_coords(48, 48, 48, 48, flip, rot, zoom, col, row, wx, wy))
    crop = a[:, cy:cy + ch, cx:cx + cw]
    ident = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]], dtype=torch.float64)
    y = grid(crop, F.affine_grid(ident, (1, 3, size, size), align_corners=True))
    put(f"fr{i}", params=torch.tensor([flip, rot, zoom, col, row, wx, wy], dtype=torch.float32),
        crop=torch.tensor([cx, cy, cw, ch, size], dtype=torch.int32), out=y)

# ---- fastai Resize(presize, ResizeMethod.Crop) on PIL: upscaling (pil0-2), where PIL's bilinear
# has no antialiasing to differ by, and downscaling (pil3-5), where it has; params presize, pct_x,
# pct_y (f32), tall
for i, (presize, px, py, use_tall) in enumerate([(40, 0.3, 0.5, 0), (37, 0.0, 0.99, 1), (33, 0.75, 0.0, 0),
                                                 (12, 0.5, 0.5, 0), (19, 0.2, 0.7, 1), (8, 1.0, 0.0, 0)]):
    img = tall if use_tall else src
    h, w = img.shape[:2]
    px, py = float(np.float32(px)), float(np.float32(py))
    m = w / presize if w / presize < h / presize else h / presize
    cw = ch = int(m * presize)
    tl = (int(px * (w - cw)), int(py * (h - ch)))
    out = Image.fromarray(img).crop((tl[0], tl[1], tl[0] + cw, tl[1] + ch)).resize((presize, presize), Image.BILINEAR)
    put(f"pil{i}", params=torch.tensor([presize, px, py, use_tall], dtype=torch.float32),
        out=torch.from_numpy(np.asarray(out).copy()))

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
