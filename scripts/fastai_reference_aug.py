"""fastai_reference_aug.py: fastai's own transforms (fastai.vision.augment, fastai.vision.core), run
with fixed parameters and drawn many times, as the reference of tests/test_augment.c; written once
to tests/ref/fastai_aug.safetensors (well under 1 MB). Run with the reference venv
(scripts/setup_reference.sh):

    /work/main/reference-env/bin/python scripts/fastai_reference_aug.py

Images (uint8 HWC): src 40x30 and tall 30x40 (random), grad 48x48 and gradw 56x40 (linear
gradients), img80 80x60 and img45 45x70 (random; non-square sources larger than the outputs, as
cassava's 400x300 at 64-128 px).

Batch transforms (float32 as fastai computes them: _init_mat is float32; output CHW in 0..255):
  fa*  aug_transforms' parts with fixed draws, composed by fastai's own setup_aug_tfms and applied
       by calling the transforms: Flip(draw=), Warp(draw_x=, draw_y=), Rotate(draw=),
       Zoom(draw=, draw_x=, draw_y=) (p=1 so the draw is kept), with size= (min_scale 1: one
       grid_sample from the item to size x size), then Brightness(draw=) + Contrast(draw=).
       params: flip rot zoom col row warp_x warp_y brightness contrast; size: size, image
       (0 src, 1 tall), prepooled (1 when _grid_sample's "smoother downwards resampling" hack
       fired: F.interpolate(mode='area') before grid_sample, which cnntrain does not do);
       out_plain: the same with that hack switched off (F.interpolate made the identity).
  fr*  the same transforms with size=None (min_scale < 1: the affine output is item-sized), then
       RandomResizedCropGPU(size, min_scale=0.75, ratio=(1,1)) with its box fixed (before_call
       replaced): fastai resamples twice, cnntrain once; on linear gradients, and once on random
       pixels with the affine part the identity. crop: x y w h size image (0 grad, 1 gradw, 2 src)
       prepooled.
Item transforms on PIL images (uint8 HWC outputs):
  rrct*  RandomResizedCrop(size, min_scale=0.35) on the training set with its box fixed (tl and
         cp_size set in a replaced before_call), after FlipItem (p=1) when flip: params left top
         w h size flip image(0 img80, 1 img45)
  rrcv*  RandomResizedCrop(size) on the validation set (split_idx=1): the whole image squashed
         to size + ceil(0.14 size / 8) * 8, then the centre: params size image
  rsc*   Resize(size, method='crop'), training (pcts set) and validation (split_idx=1, pcts
         0.5): params size pct_x pct_y image (float32)
  rss*   Resize(size, method='squish'): params size image
  (Resize(method='pad') has no cnntrain equivalent and is not stored.)
  fp*    the Imagenette recipe's path: Resize(presize, method='crop') on img80/img45 (pcts fixed on
         the training set, the validation set's centre), then on that uint8 item either the fa
         transforms with fixed draws (kind 0, min_scale 1) or aug_transforms(size, min_scale=0.35)
         on the validation set (kind 1: RandomResizedCropGPU's centre crop), each shrinking the
         item more than 2x, so _grid_sample area-pools: params presize pct_x pct_y image size kind
         pooled, then the 9 draws as fa's (zeros for kind 1); out CHW 0..255
Distributions of fastai's own draws (N draws each, quantities below; for each: x = the reference
sample's quantiles at 0.05, 0.10, ..., 0.95, lt/le = the reference's fraction < and <= each x,
p = the fraction applied (value != neutral), n = the number of values the quantiles are over):
  da075.*  aug_transforms(size=64, min_scale=0.75) (defaults otherwise) on a batch of N items
           460x460 (Resize(460)'s item): the partials in its AffineCoordTfm.aff_fs (flip_mat,
           rotate_mat, zoom_mat), its _WarpCoord, its LightingTfm's _BrightnessLogit and
           _ContrastLogit, called as before_call calls them; its RandomResizedCropGPU's
           before_call N times (fastai draws one box per batch); Resize(460).before_call's pcts.
           flip (p only), rotate (degrees), zoom, zoom_col, zoom_row (of applied zooms: the
           centre is only visible in the matrix then), warp_x, warp_y, brightness, contrast,
           crop_area (fraction of the item), crop_cx, crop_cy (crop centre / item side),
           item_pct_x, item_pct_y
  da100.*  aug_transforms(size=64) (min_scale 1): the same without crop_*
  drrc.*   RandomResizedCrop(64, min_scale=0.35).before_call on a 400x300 PIL image N times and
           FlipItem(0.5).before_call: area (fraction of the image), aspect (w/h), cx, cy (crop
           centre / image side), flip (p only)
  drrct.*  the same on a 300x400 image
"""
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F

import fastai
import fastai.vision.augment as A
from fastai.vision.core import PILImage, TensorImage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_torch  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref", "fastai_aug.safetensors")
N_DRAWS = 20000

rng = np.random.default_rng(20261204)
random.seed(20261204)
torch.manual_seed(20261204)
tensors = {}


def put(name, **kv):
    for k, v in kv.items():
        tensors[f"{name}.{k}"] = v


def i32(*v):
    return torch.tensor(v, dtype=torch.int32)


def f32(*v):
    return torch.tensor(v, dtype=torch.float32)


# ---- _grid_sample's hack: count (and optionally switch off) its F.interpolate pre-pooling
_interp = F.interpolate
pool = {"calls": 0, "off": False}


def counting_interpolate(x, *a, **kw):
    pool["calls"] += 1
    return x if pool["off"] else _interp(x, *a, **kw)


A.F.interpolate = counting_interpolate  # A.F is torch.nn.functional: patch for this script only


def batch_of(img_u8):
    """uint8 HWC numpy -> fastai's (1, 3, H, W) float TensorImage in 0..1 (IntToFloatTensor)."""
    return TensorImage(torch.from_numpy(img_u8).permute(2, 0, 1).float().div(255)[None].contiguous())


def batch_tfms(flip, rot, zoom, col, row, wx, wy, b, c, size):
    tk = dict(size=size)
    res = [A.Flip(p=1.0, draw=[float(flip)], **tk), A.Warp(p=1.0, draw_x=[wx], draw_y=[wy], **tk),
           A.Rotate(p=1.0, draw=[rot], **tk), A.Zoom(p=1.0, draw=[zoom], draw_x=[col], draw_y=[row], **tk),
           A.Brightness(p=1.0, draw=[b]), A.Contrast(p=1.0, draw=[c])]
    return A.setup_aug_tfms(res)


def run_batch(x, tfms):
    for t in tfms:  # as a Pipeline calls them: sorted by order (affine 30, crop 30, lighting 40)
        x = t(x, split_idx=0)
    return x[0].double().mul(255).float().contiguous()


def fixed_crop(size, x0, y0, w, h):
    t = A.RandomResizedCropGPU(size, min_scale=0.75, ratio=(1, 1))

    def before_call(b, split_idx):
        t.do, t.tl, t.cp_size = True, (y0, x0), (h, w)
    t.before_call = before_call
    return t


src = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)   # H=30, W=40
tall = np.ascontiguousarray(rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8))
yy, xx = np.mgrid[0:48, 0:48]
grad = np.stack([2 * xx + 3 * yy, 3 * xx + 2 * yy, 235 - 2 * xx - 3 * yy], axis=-1).astype(np.uint8)
yy, xx = np.mgrid[0:40, 0:56]
gradw = np.stack([2 * xx + 3 * yy, 130 + xx - 2 * yy, 235 - 3 * xx - yy], axis=-1).astype(np.uint8)
img80 = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
img45 = rng.integers(0, 256, size=(70, 45, 3), dtype=np.uint8)
for name, im in (("src", src), ("tall", tall), ("grad", grad), ("gradw", gradw), ("img80", img80), ("img45", img45)):
    tensors[name] = torch.from_numpy(im)

# ---- fa: one pass (min_scale 1)
fa_cases = [  # flip, rotate, zoom, col, row, warp_x, warp_y, brightness, contrast, size, image
    (1, 30.0, 1.05, 0.3, 0.6, 0.15, -0.1, 0.5, 1.0, 24, 0),
    (0, -7.0, 1.1, 0.2, 0.9, 0.0, 0.0, 0.6, 1.2, 20, 0),
    (0, 0.0, 1.0, 0.5, 0.5, -0.2, 0.2, 0.42, 0.85, 22, 1),
    (1, 10.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.5, 1.0, 30, 1),
    (1, -4.0, 1.07, 0.8, 0.1, 0.05, 0.12, 0.55, 1.1, 17, 0),
    (0, 3.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.5, 1.0, 12, 0),     # item > 2 x size: fastai pre-pools
    (1, 0.0, 1.02, 0.5, 0.5, 0.1, 0.0, 0.5, 1.0, 14, 1),    # ditto, tall
]
for i, (flip, rot, zoom, col, row, wx, wy, b, c, size, im) in enumerate(fa_cases):
    img = (src, tall)[im]
    pool["calls"], pool["off"] = 0, False
    y = run_batch(batch_of(img), batch_tfms(flip, rot, zoom, col, row, wx, wy, b, c, size))
    pooled = pool["calls"]
    pool["off"] = True
    y_plain = run_batch(batch_of(img), batch_tfms(flip, rot, zoom, col, row, wx, wy, b, c, size))
    pool["off"] = False
    put(f"fa{i}", params=f32(flip, rot, zoom, col, row, wx, wy, b, c), size=i32(size, im, 1 if pooled else 0),
        out=y, out_plain=y_plain)

# ---- fr: affine at item size, then RandomResizedCropGPU's second resampling
fr_cases = [  # flip, rotate, zoom, col, row, warp_x, warp_y, brightness, contrast, crop x, y, w, size, image
    (1, 8.0, 1.08, 0.4, 0.7, 0.1, -0.12, 0.5, 1.0, 5, 3, 40, 24, 0),
    (0, -10.0, 1.0, 0.5, 0.5, 0.0, 0.2, 0.45, 1.15, 0, 0, 48, 26, 0),
    (0, 3.0, 1.1, 0.9, 0.1, 0.0, 0.0, 0.5, 1.0, 9, 2, 37, 30, 0),
    (1, -6.0, 1.05, 0.3, 0.2, 0.08, 0.05, 0.58, 0.9, 11, 2, 36, 28, 1),    # non-square item 56x40
    (0, 5.0, 1.0, 0.5, 0.5, -0.1, 0.0, 0.5, 1.0, 0, 0, 40, 32, 1),
    (0, 4.0, 1.03, 0.6, 0.4, 0.0, 0.0, 0.5, 1.0, 2, 1, 44, 20, 0),         # crop > 2 x size: pre-pooled
    (0, 0.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.5, 1.0, 9, 3, 26, 12, 2),          # ditto, identity affine, src
]
for i, (flip, rot, zoom, col, row, wx, wy, b, c, cx, cy, cw, size, im) in enumerate(fr_cases):
    img = (grad, gradw, src)[im]
    tf = batch_tfms(flip, rot, zoom, col, row, wx, wy, b, c, None)
    tf = [tf[0], fixed_crop(size, cx, cy, cw, cw), tf[1]]
    pool["calls"] = 0
    y = run_batch(batch_of(img), tf)
    put(f"fr{i}", params=f32(flip, rot, zoom, col, row, wx, wy, b, c),
        crop=i32(cx, cy, cw, cw, size, im, 1 if pool["calls"] else 0), out=y)


# ---- item transforms on PIL images
def pil_out(im):
    return torch.from_numpy(np.asarray(im).copy())


def fixed_rrc(size, left, top, w, h):
    t = A.RandomResizedCrop(size, min_scale=0.35)

    def before_call(b, split_idx):
        t.orig_sz = A._get_sz(b)
        t.final_size, t.tl, t.cp_size = t.size, (left, top), (w, h)
    t.before_call = before_call
    return t


imgs = (img80, img45)
for i, (left, top, w, h, size, flip, im) in enumerate([(7, 5, 60, 45, 32, 0, 0), (0, 0, 80, 60, 24, 1, 0),
                                                       (20, 9, 41, 50, 32, 0, 0), (3, 11, 40, 52, 24, 0, 1),
                                                       (0, 20, 45, 36, 20, 1, 1)]):
    x = PILImage.create(imgs[im])
    if flip:
        x = A.FlipItem(p=1.0)(x, split_idx=0)
    y = fixed_rrc(size, left, top, w, h)(x, split_idx=0)
    put(f"rrct{i}", params=i32(left, top, w, h, size, flip, im), out=pil_out(y))
for i, (size, im) in enumerate([(32, 0), (24, 0), (20, 1), (40, 1)]):
    y = A.RandomResizedCrop(size, min_scale=0.35)(PILImage.create(imgs[im]), split_idx=1)
    put(f"rrcv{i}", params=i32(size, im), out=pil_out(y))
def resize_crop(size, px, py, split, img):
    """fastai's Resize(size, method='crop') of a PIL image: on the training set (split 0) with its
    crop position fixed at (px, py) (float32, as the C side stores them), else the validation
    set's centre. Returns (PIL image, px, py)."""
    t = A.Resize(size, method="crop")
    px, py = float(np.float32(px)), float(np.float32(py))
    if split == 0:
        def before_call(b, split_idx):
            t.pcts = (px, py)
        t.before_call = before_call
    return t(PILImage.create(img), split_idx=split), px, py


for i, (size, px, py, im) in enumerate([(32, 0.33, 0.7, 0), (24, 0.9, 0.1, 1), (40, 0.5, 0.5, 0), (20, 0.5, 0.5, 1),
                                        (17, 0.0, 0.99, 1), (64, 0.5, 0.25, 1)]):
    y, px, py = resize_crop(size, px, py, 1 if (px, py) == (0.5, 0.5) else 0, imgs[im])
    put(f"rsc{i}", params=f32(size, px, py, im), out=pil_out(y))
for i, (size, im) in enumerate([(32, 0), (24, 1), (50, 0)]):
    y = A.Resize(size, method="squish")(PILImage.create(imgs[im]), split_idx=0)
    put(f"rss{i}", params=i32(size, im), out=pil_out(y))

# ---- fp: the Imagenette recipe's path, Resize(presize) on a PIL image (the uint8 item), then the
# batch transforms shrinking it more than 2x, where _grid_sample area-pools first
fp_cases = [  # presize, pct_x, pct_y, image, size, kind, draws (flip rot zoom col row warp_x warp_y b c)
    (48, 0.3, 0.7, 0, 20, 0, (1, 6.0, 1.05, 0.4, 0.6, 0.1, -0.05, 0.55, 1.1)),
    (46, 0.8, 0.2, 1, 18, 0, (0, -8.0, 1.0, 0.5, 0.5, 0.0, 0.15, 0.5, 1.0)),
    (48, 0.5, 0.5, 0, 20, 1, None),
    (40, 0.5, 0.5, 1, 16, 1, None),
]
rng_state = random.getstate(), torch.get_rng_state()  # the draws below keep their streams
for i, (P, px, py, im, size, kind, draws) in enumerate(fp_cases):
    item, px, py = resize_crop(P, px, py, 1 if kind == 1 else 0, imgs[im])
    x = batch_of(np.asarray(item).copy())
    pool["calls"] = 0
    if kind == 0:  # aug_transforms(size, min_scale=1) with fixed draws, training
        y = run_batch(x, batch_tfms(*draws, size))
    else:  # aug_transforms(size, min_scale=0.35) on the validation set: RandomResizedCropGPU's centre
        for tf in A.aug_transforms(size=size, min_scale=0.35):
            x = tf(x, split_idx=1)
        y = x[0].double().mul(255).float().contiguous()
    put(f"fp{i}", params=f32(P, px, py, im, size, kind, 1 if pool["calls"] else 0, *(draws or (0,) * 9)), out=y)
random.setstate(rng_state[0])
torch.set_rng_state(rng_state[1])

# ---- distributions
QS = np.arange(1, 20) / 20.0


def put_dist(name, values, neutral=None, applied=None):
    v = np.asarray(values, dtype=np.float64).astype(np.float32)
    n_all = len(v)
    if applied is None:
        applied = np.ones(n_all, bool) if neutral is None else (v != np.float32(neutral))
    p = applied.mean()
    v = v[applied]
    xq = np.quantile(v, QS, method="inverted_cdf").astype(np.float32)
    lt = np.array([(v < q).mean() for q in xq])
    le = np.array([(v <= q).mean() for q in xq])
    put(name, x=torch.from_numpy(xq), lt=torch.from_numpy(lt.astype(np.float32)),
        le=torch.from_numpy(le.astype(np.float32)), p=f32(p), n=i32(len(v)))


def put_p(name, applied):
    put(name, p=f32(np.mean(applied)), n=i32(len(applied)))


def dist_aug(prefix, min_scale):
    tfms = A.aug_transforms(size=64, min_scale=min_scale)
    aff = next(t for t in tfms if isinstance(t, A.AffineCoordTfm))
    lig = next(t for t in tfms if isinstance(t, A.LightingTfm))
    x = torch.zeros(N_DRAWS, 3, 2, 2)  # the draws read only the batch size
    names = [f.func.__name__ for f in aff.aff_fs]
    assert names == ["flip_mat", "rotate_mat", "zoom_mat"], names
    mf, mr, mz = (f(x) for f in aff.aff_fs)
    put_p(f"{prefix}.flip", (mf[:, 0, 0] < 0).numpy())
    put_dist(f"{prefix}.rotate", torch.atan2(mr[:, 0, 1].double(), mr[:, 0, 0].double()).mul(180 / math.pi).numpy(), 0.0)
    s = mz[:, 0, 0].double()
    zoomed = (s != 1).numpy()
    put_dist(f"{prefix}.zoom", (1 / s).numpy(), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        put_dist(f"{prefix}.zoom_col", ((mz[:, 0, 2].double() / (1 - s) + 1) / 2).numpy(), applied=zoomed)
        put_dist(f"{prefix}.zoom_row", ((mz[:, 1, 2].double() / (1 - s) + 1) / 2).numpy(), applied=zoomed)
    (wc,) = aff.coord_fs
    wc.before_call(x)
    # targ_pts[:, 1] = (-1 + y_t, 1 + x_t)
    put_dist(f"{prefix}.warp_x", (wc.targ_pts[:, 1, 1] - 1).double().numpy(), 0.0)
    put_dist(f"{prefix}.warp_y", (wc.targ_pts[:, 1, 0] + 1).double().numpy(), 0.0)
    fb, fc = lig.fs
    fb.before_call(x)
    fc.before_call(x)
    put_dist(f"{prefix}.brightness", fb.change.double().numpy(), 0.5)
    put_dist(f"{prefix}.contrast", fc.change.double().numpy(), 1.0)
    crops = [t for t in tfms if isinstance(t, A.RandomResizedCropGPU)]
    assert len(crops) == (min_scale != 1)
    if crops:
        item = torch.zeros(1, 3, 460, 460)
        boxes = []
        for _ in range(N_DRAWS):
            crops[0].before_call(item, 0)
            (h, w), (t0, l0) = crops[0].cp_size, crops[0].tl
            boxes.append((l0, t0, w, h))
        b = np.array(boxes, dtype=np.float64)
        put_dist(f"{prefix}.crop_area", b[:, 2] * b[:, 3] / (460 * 460))
        put_dist(f"{prefix}.crop_cx", (b[:, 0] + b[:, 2] / 2) / 460)
        put_dist(f"{prefix}.crop_cy", (b[:, 1] + b[:, 3] / 2) / 460)
    rs = A.Resize(460)
    pcts = []
    for _ in range(N_DRAWS):
        rs.before_call(None, 0)
        pcts.append(rs.pcts)
    pcts = np.array(pcts)
    put_dist(f"{prefix}.item_pct_x", pcts[:, 0])
    put_dist(f"{prefix}.item_pct_y", pcts[:, 1])


def dist_rrc(prefix, W, H):
    img = PILImage.create(np.zeros((H, W, 3), np.uint8))
    t = A.RandomResizedCrop(64, min_scale=0.35)
    fl = A.FlipItem(0.5)
    boxes, flips = [], []
    for _ in range(N_DRAWS):
        t.before_call(img, 0)
        (w, h), (l0, t0) = t.cp_size, t.tl
        boxes.append((l0, t0, w, h))
        fl.before_call(img, 0)
        flips.append(fl.do)
    b = np.array(boxes, dtype=np.float64)
    put_dist(f"{prefix}.area", b[:, 2] * b[:, 3] / (W * H))
    put_dist(f"{prefix}.aspect", b[:, 2] / b[:, 3])
    put_dist(f"{prefix}.cx", (b[:, 0] + b[:, 2] / 2) / W)
    put_dist(f"{prefix}.cy", (b[:, 1] + b[:, 3] / 2) / H)
    put_p(f"{prefix}.flip", np.array(flips))


dist_aug("da075", 0.75)
dist_aug("da100", 1.0)
dist_rrc("drrc", 400, 300)
dist_rrc("drrct", 300, 400)

st_torch.save(tensors, OUT, metadata={"generator": "scripts/fastai_reference_aug.py", "fastai": fastai.__version__,
                                      "torch": torch.__version__, "draws": str(N_DRAWS)})
print(f"wrote {OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")
for k in sorted(tensors):
    if k.endswith(".size") or k.endswith(".crop"):
        print(k, tensors[k].tolist())
