"""fastai_reference_models.py: reference files for cnntrain's models, from fastai's OWN classes.

Run with the reference venv (scripts/setup_reference.sh), from the repo root, AFTER
scripts/torch_reference.py (cnn_learner_resnet's body is that script's resnet_bottleneck file):

    /work/main/reference-env/bin/python scripts/fastai_reference_models.py

It regenerates its files bit for bit (fixed seeds, 2 threads, float64 maths). `make test` only reads
them. What it writes under tests/ref/:

  fastai_models.txt   every state_dict name and shape, in state_dict order, and the parameter count
                      of fastai's xresnet18/34/50 (n_out 1000), torchvision's resnet18/50 (1000) and
                      the model fastai's vision_learner builds (create_vision_model: create_body at
                      model_meta's cut + create_head with its defaults + apply_init) for xresnet50 and
                      resnet50 with 10 classes. tests/test_models.c builds ours, saves them with
                      ckpt_save and compares the file's names, shapes and order.
  param_counts.txt    "model classes params" for every registry model: xresnet* = fastai's XResNet,
                      resnet* = torchvision's, *_fastai_head = fastai's create_vision_model;
                      xresnet_tiny (stem 8-8-16) needs XResNetStem below: fastai's XResNet always
                      feeds its first stage 64 channels, whatever stem_szs ends with.
  (fastai's XResNet takes stem_szs and widen; block widths are int(w * widen) for w in 64..512 and
  the first stage's input is always 64, so every stem_szs below ends in 64.)
  xresnet_basic.*     fastai's XResNet(ResBlock, 1, [1,1,1,1], stem_szs=(8,8,64), widen=1/8), 10 classes
  xresnet_bottleneck.* fastai's XResNet(ResBlock, 4, [1,2,1,1], stem_szs=(8,8,64), widen=1/16), label
                      smoothing 0.1
  xresnet18_small.*   fastai's own xresnet18(n_out=10, widen=1/16, stem_szs=(4,8,64)): blocks 2-2-2-2
        <case>.weights.safetensors: the state_dict (BatchNorm gammas, betas and running statistics
        randomised so no path is dead: fastai's zero-init gammas would hide every gradient before them)
        <case>.io.safetensors: input, labels, train-mode logits, loss, grad.<param>, after.<bn>.running_*
        and num_batches_tracked, eval_logits; metadata as tests/test_parity.c reads it
  cnn_learner_xresnet.*  the model create_vision_model builds on xresnet_basic's network (its
        weights file loaded, as a pretrained body would be), lin_ftrs=[24]; the head exactly as fastai
        initialises it (apply_init(kaiming_normal_) on the Linears, BatchNorm1d weight 1, bias 1e-3)
  cnn_learner_resnet.*   the same on torchvision's ResNet (its own Bottleneck/forward, widths scaled
        by SmallResNet below) loaded from torch_reference.py's resnet_bottleneck weights, lin_ftrs=[32],
        smoothing 0.1
        For both: a batch of 8; the body's tensors are checked to be the loaded file's; fastai's
        head structure, eps/momentum and init are asserted (check_head); nn.Dropout layers are swapped for the same p with cnntrain's masks
        (rng_hash from torch_reference.py), the only change to fastai's model; the io file is as above.
  fastai_init.safetensors  a fresh create_vision_model(XResNet bottleneck body, 10, pretrained=False,
        lin_ftrs=[48]) state_dict, untouched: fastai's init (init_cnn on the body: Kaiming normal
        fan_in, every bias 0, the last BatchNorm of each block weight 0; the head's apply_init).
        tests/test_models.c compares cnntrain's model_init_host with it.
  fastai_init_xresnet.safetensors  the same for a fresh XResNet(ResBlock, 1, [1,1,1,1], n_out=10,
        stem_szs=(8,16,64), widen=1/8): the classifier's init (Kaiming normal weight, bias 0).

The references are computed in float64 from the float32 weights and inputs and stored as F32.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_torch  # noqa: E402
from torch_reference import dropout_mask, f32, randomise, rel, rng_hash, run_case  # noqa: E402  (the same io-file contents as the torchvision cases)

import warnings  # noqa: E402
warnings.filterwarnings("ignore", category=FutureWarning)
from fastai.layers import ResBlock  # noqa: E402
from fastai.vision.learner import create_vision_model, model_meta  # noqa: E402
from fastai.vision.models.xresnet import XResNet, xresnet18, xresnet34, xresnet50, xresnet101  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref")
CLASSES = 10


# ---------------------------------------------------------------- generalisations, where fastai's classes can't
class XResNetStem(XResNet):
    """fastai's XResNet, except that the first stage takes stem_szs[-1] channels: fastai's
    _make_blocks starts from 64//expansion (so x expansion = 64) whatever the stem is. Used only for
    the registry's xresnet_tiny (stem 8-8-16), which fastai's own class cannot build."""
    stem_out = 16

    def _make_blocks(self, layers, block_szs, sa, stride, **kwargs):
        return super()._make_blocks(layers, [self.stem_out // self.expansion] + block_szs[1:], sa, stride, **kwargs)


def xresnet_tiny(pretrained=False, n_out=1000, **kwargs):
    return XResNetStem(ResBlock, 1, [1, 1, 1, 1], n_out=n_out, stem_szs=(8, 8, 16), widen=0.25, **kwargs)


class SmallResNet(torchvision.models.ResNet):
    """torchvision's ResNet (its Bottleneck, BasicBlock, forward and init) with the stem and the stage
    widths scaled: torchvision fixes them at 64 and 64-128-256-512."""

    def __init__(self, block, layers, stem, widths, num_classes):
        self.small = (stem, dict(zip((64, 128, 256, 512), widths)))
        super().__init__(block, layers, num_classes=num_classes)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        stem, widths = self.small
        if planes == 64:  # the first stage: rebuild the stem at its width (same module names)
            self.inplanes = stem
            self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = self._norm_layer(stem)
        return super()._make_layer(block, widths[planes], blocks, stride, dilate)


def vision_model(arch, n_out, hidden=None):
    """What vision_learner(dls, arch, n_out=n_out, pretrained=False, lin_ftrs=...) puts in learn.model."""
    return create_vision_model(arch, n_out, pretrained=False, lin_ftrs=None if hidden is None else [hidden])


def count(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- cnntrain's dropout masks (src/base/rng.c)
class MaskedDropout(nn.Module):
    """nn.Dropout(p) with cnntrain's mask for dropout layer `stream` of a model run with dropout_seed:
    element i (NCHW order) kept when (rng_hash(key, i) >> 40) * 2^-24 >= p."""

    def __init__(self, p, stream, dropout_seed):
        super().__init__()
        self.p, self.key = p, int(rng_hash(dropout_seed, stream))

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(self.key, tuple(x.shape), self.p).to(x.dtype) / (1 - self.p)


# ---------------------------------------------------------------- 1: names, shapes, counts
def shape_text(t):
    return " ".join(str(d) for d in t.shape)


def models_txt():
    torch.manual_seed(0)
    models = [
        ("xresnet18", 1000, lambda: xresnet18(n_out=1000)),
        ("xresnet34", 1000, lambda: xresnet34(n_out=1000)),
        ("xresnet50", 1000, lambda: xresnet50(n_out=1000)),
        ("resnet18", 1000, lambda: torchvision.models.resnet18()),
        ("resnet50", 1000, lambda: torchvision.models.resnet50()),
        ("xresnet50_fastai_head", CLASSES, lambda: vision_model(xresnet50, CLASSES)),
        ("resnet50_fastai_head", CLASSES, lambda: vision_model(torchvision.models.resnet50, CLASSES)),
    ]
    lines = ["# fastai 2.8 / torchvision state_dicts: 'model NAME CLASSES PARAMS TENSORS', then per tensor",
             "# 'NAME DIM...' in state_dict order (num_batches_tracked: no dims). scripts/fastai_reference_models.py"]
    counts = {}
    for name, classes, make in models:
        m = make()
        sd = m.state_dict()
        counts[(name, classes)] = count(m)
        lines.append("model %s %d %d %d" % (name, classes, count(m), len(sd)))
        lines += ["%s %s" % (k, shape_text(v)) if v.dim() else k for k, v in sd.items()]
        print("%-24s %5d classes %10d params %4d tensors" % (name, classes, count(m), len(sd)))
    with open(os.path.join(OUT, "fastai_models.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return counts


def param_counts(known):
    lines = ["# model classes parameters: xresnet* fastai's XResNet, resnet* torchvision's, *_fastai_head fastai's",
             "# create_vision_model (vision_learner's model); xresnet_tiny via XResNetStem (scripts/fastai_reference_models.py)"]
    xr = {18: xresnet18, 34: xresnet34, 50: xresnet50, 101: xresnet101}
    tv = {d: getattr(torchvision.models, "resnet%d" % d) for d in (18, 34, 50, 101)}
    for classes in (1000, 10):
        rows = [("xresnet%d" % d, lambda f=f: f(n_out=classes)) for d, f in xr.items()]
        rows += [("resnet%d" % d, lambda f=f: f(num_classes=classes)) for d, f in tv.items()]
        rows += [("xresnet_tiny", lambda: xresnet_tiny(n_out=classes))]
        rows += [("xresnet%d_fastai_head" % d, lambda f=xr[d]: vision_model(f, classes)) for d in (18, 34, 50)]
        rows += [("xresnet_tiny_fastai_head", lambda: vision_model(xresnet_tiny, classes))]
        rows += [("resnet%d_fastai_head" % d, lambda f=f: vision_model(f, classes)) for d, f in tv.items()]
        for name, make in rows:
            n = count(make())
            if (name, classes) in known and known[(name, classes)] != n:
                sys.exit("%s: two counts" % name)
            lines.append("%s %d %d" % (name, classes, n))
    if "resnet50 1000 25557032" not in lines:
        sys.exit("torchvision resnet50 should have 25,557,032 parameters")
    with open(os.path.join(OUT, "param_counts.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- 2: parity cases
def aligned(tensors):
    """8-byte tensors (I64 num_batches_tracked, labels) first, so every tensor in the file is aligned
    to its element size (the C tests read them in place); otherwise in the given order."""
    return dict(sorted(tensors.items(), key=lambda kv: -kv[1].element_size()))


def write_case(name, model, state, x, y, smoothing, meta):
    ref = run_case(model.double(), x.double(), y, smoothing)
    model.float().load_state_dict(state)  # and again in fp32, for the noise floor
    got = run_case(model, x, y, smoothing)
    floor = max(rel(got[k], ref[k]) for k in ref if ref[k].is_floating_point())
    wpath = os.path.join(OUT, name + ".weights.safetensors")
    st_torch.save(aligned(state), wpath)
    io = {"input": x, "labels": y}
    io.update({k: f32(v) for k, v in ref.items()})
    iopath = os.path.join(OUT, name + ".io.safetensors")
    st_torch.save(aligned(io), iopath, {k: str(v) for k, v in meta.items()})
    print("%-20s %7d params, loss %.6f, fp32 vs fp64 worst rel err %.2e, %d + %d bytes" % (
        name, count(model), ref["loss"].item(), floor, os.path.getsize(wpath), os.path.getsize(iopath)))


def csv(v):
    return ",".join(str(int(a)) for a in v)


# name, expansion, layers, stem_szs, widen, input (n,c,h,w), smoothing, builder
XCASES = [
    ("xresnet_basic", 1, (1, 1, 1, 1), (8, 8, 64), 1 / 8, (4, 3, 40, 40), 0.0,
     lambda: XResNet(ResBlock, 1, [1, 1, 1, 1], n_out=CLASSES, stem_szs=(8, 8, 64), widen=1 / 8)),
    ("xresnet_bottleneck", 4, (1, 2, 1, 1), (8, 8, 64), 1 / 16, (4, 3, 35, 35), 0.1,
     lambda: XResNet(ResBlock, 4, [1, 2, 1, 1], n_out=CLASSES, stem_szs=(8, 8, 64), widen=1 / 16)),
    ("xresnet18_small", 1, (2, 2, 2, 2), (4, 8, 64), 1 / 16, (3, 3, 33, 33), 0.0,
     lambda: xresnet18(n_out=CLASSES, stem_szs=(4, 8, 64), widen=1 / 16)),
]


def xresnet_meta(exp, layers, stem, widen):
    # fastai: block_szs = [int(o*widen) for o in [64,128,256,512]] (inner widths), first stage input 64
    return {"expansion": exp, "layers": csv(layers), "stem": csv(stem),
            "widths": csv(int(o * widen) for o in (64, 128, 256, 512)), "classes": CLASSES}


def xresnet_cases():
    for idx, (name, exp, layers, stem, widen, shape, smoothing, make) in enumerate(XCASES):
        torch.manual_seed(100 + idx)
        model = make()
        assert model[4][0].convpath[0][0].in_channels == 64  # fastai: the first stage always takes 64
        g = torch.Generator().manual_seed(1000 + idx)
        randomise(model, g)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        x = torch.randn(shape, generator=g)
        y = torch.randint(0, CLASSES, (shape[0],), generator=g)
        meta = {"arch": "xresnet", "smoothing": repr(smoothing), **xresnet_meta(exp, layers, stem, widen)}
        write_case(name, model, state, x, y, smoothing, meta)


# name, body case, hidden (lin_ftrs=[hidden]), dropout seed, smoothing, input (n,c,h,w). A batch of 8:
# with fastai's head init, train-mode BatchNorm1d over 4 samples made the body's gradients
# ill-conditioned (float32 PyTorch itself 7e-5 off the float64 reference, near the tests' 1e-4).
LEARNER_CASES = [
    ("cnn_learner_resnet", "resnet_bottleneck", 32, 20240917, 0.1, (8, 3, 35, 35)),
    ("cnn_learner_xresnet", "xresnet_basic", 24, 77, 0.0, (8, 3, 32, 32)),
]
# torch_reference.py's resnet_bottleneck: torchvision Bottleneck, layers 1-2-1-1, stem 16, widths 8-16-16-32
TV_BODY = {"resnet_bottleneck": (4, (1, 2, 1, 1), 16, (8, 16, 16, 32))}


def masked(model, seed):
    """fastai's head with its nn.Dropout layers replaced by cnntrain's masks (same p, model order)."""
    head = model[1]
    drops = [k for k, mod in enumerate(head) if isinstance(mod, nn.Dropout)]
    for stream, k in enumerate(drops):
        head[k] = MaskedDropout(head[k].p, stream, seed)
    return model


def check_head(model, nf, hidden):
    """The head create_head builds with its defaults, and its init."""
    head = model[1]
    kinds = [type(x).__name__ for x in head]
    want = ["AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout",
            "Linear"]
    if kinds != want or head[3].p != 0.25 or head[7].p != 0.5 or head[2].num_features != 2 * nf:
        sys.exit("create_head structure differs: %s" % kinds)
    if head[4].bias is not None or head[8].bias is not None or head[4].out_features != hidden:
        sys.exit("create_head's Linears: expected no bias (bn=True) and %d hidden" % hidden)
    for bn in (head[2], head[6]):
        if bn.eps != 1e-5 or bn.momentum != 0.1 or not (bn.weight == 1).all() or not (bn.bias == 1e-3).all():
            sys.exit("create_head's BatchNorm1d: eps %g momentum %g" % (bn.eps, bn.momentum))


def learner_cases():
    xcases = {c[0]: c for c in XCASES}
    for idx, (name, body, hidden, seed, smoothing, shape) in enumerate(LEARNER_CASES):
        torch.manual_seed(3000 + idx)
        weights = st_torch.load(os.path.join(OUT, body + ".weights.safetensors"))
        if body in TV_BODY:
            exp, layers, stem, widths = TV_BODY[body]
            block = torchvision.models.resnet.Bottleneck if exp == 4 else torchvision.models.resnet.BasicBlock
            net = SmallResNet(block, list(layers), stem, widths, CLASSES)
            cut = -2  # model_meta[resnet50]['cut']
            meta = {"body": "resnet", "expansion": exp, "layers": csv(layers), "stem": "0,0,%d" % stem,
                    "widths": csv(widths), "classes": CLASSES}
        else:
            _, exp, layers, stem, widen, _, _, make = xcases[body]
            net = make()
            cut = -4  # model_meta[xresnet50]['cut']
            meta = {"body": "xresnet", **xresnet_meta(exp, layers, stem, widen)}
        net.load_state_dict(weights, strict=True)
        assert cut == model_meta[xresnet50 if body not in TV_BODY else torchvision.models.resnet50]["cut"]

        def arch(pretrained=False):
            return net
        model = create_vision_model(arch, CLASSES, pretrained=False, cut=cut, lin_ftrs=[hidden])
        nf = [m for m in model[0].modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
        check_head(model, nf, hidden)
        for k, v in model[0].state_dict().items():  # the body is the loaded network's, names "0." + its own
            if not torch.equal(v, weights[_body_name(k, body in TV_BODY)]):
                sys.exit("%s: body tensor %s is not the loaded one" % (name, k))
        masked(model, seed)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        g = torch.Generator().manual_seed(3000 + idx)
        x = torch.randn(shape, generator=g)
        y = torch.randint(0, CLASSES, (shape[0],), generator=g)
        meta.update({"arch": "cnn_learner", "smoothing": repr(smoothing), "hidden": hidden, "dropout_seed": seed,
                     "body_weights": body})
        write_case(name, model, state, x, y, smoothing, meta)


def _body_name(k, torchvision_body):
    """cnn_learner body name "K.rest" -> the plain network's name."""
    i, rest = k.split(".", 1)
    if not torchvision_body:
        return k
    return {"0": "conv1." + rest, "1": "bn1." + rest}.get(i) or "layer%d.%s" % (int(i) - 3, rest)


def init_files():
    """Fresh models, exactly as fastai initialises them: vision_learner's model on a bottleneck
    XResNet body (fastai_init) and a plain basic-block XResNet (fastai_init_xresnet)."""
    def arch(pretrained=False):
        return XResNet(ResBlock, 4, [1, 1, 1, 1], n_out=1000, stem_szs=(8, 16, 64), widen=1 / 16)
    for idx, (name, arch_meta, make, meta) in enumerate([
        ("fastai_init", "cnn_learner", lambda: create_vision_model(arch, CLASSES, pretrained=False, cut=-4, lin_ftrs=[48]),
         {"expansion": 4, "layers": "1,1,1,1", "stem": "8,16,64", "widths": "4,8,16,32", "hidden": 48}),
        ("fastai_init_xresnet", "xresnet",
         lambda: XResNet(ResBlock, 1, [1, 1, 1, 1], n_out=CLASSES, stem_szs=(8, 16, 64), widen=1 / 8),
         {"expansion": 1, "layers": "1,1,1,1", "stem": "8,16,64", "widths": "8,16,32,64"})]):
        torch.manual_seed(4000 + idx)
        model = make()
        path = os.path.join(OUT, name + ".safetensors")
        meta = {"arch": arch_meta, "classes": CLASSES, **meta}
        st_torch.save(aligned({k: v.clone() for k, v in model.state_dict().items()}), path,
                      {k: str(v) for k, v in meta.items()})
        print("%-20s %7d params, %d bytes" % (name, count(model), os.path.getsize(path)))


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    counts = models_txt()
    param_counts(counts)
    xresnet_cases()
    learner_cases()
    init_files()


if __name__ == "__main__":
    main()
