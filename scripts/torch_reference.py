#!/usr/bin/python3
"""PyTorch reference files for cnntrain's parity tests (tests/test_parity.c).

Run with Debian's PyTorch (torch 1.13, torchvision 0.14), from the repo root:

    /usr/bin/python3 scripts/torch_reference.py

It regenerates tests/ref/ bit for bit (fixed seeds, 2 threads, float64 maths). What it writes:
  <case>.weights.safetensors   the model's state_dict, as a PyTorch user would save it (F32)
  <case>.io.safetensors        input, labels, train-mode logits, loss, grad.<param> for every
                               parameter, after.<bn>.running_mean/var, eval_logits; metadata
                               arch, expansion, layers, stem, widths, classes, smoothing
  op_<name>.safetensors        one layer at real width: inputs, weights, upstream dy, outputs and
                               every gradient
  cnn_learner_<body>.*         fastai's cnn_learner model (body + create_head) on a reduced body
                               whose weights are the <body> case's, as a pretrained file would be;
                               dropout active, with cnntrain's masks (rng_hash below)
  param_counts.txt             "model classes params" for the registry's models

The references are computed in float64 from the float32 weights and inputs and stored as F32, so
the only error a test sees is its own fp32 rounding. The script also measures what float32
PyTorch itself gets wrong against that, to show the noise floor under the tests' 1e-4 tolerance.

It defines (a) fastai v2's XResNet / ResBlock / ConvLayer with fastai's module structure and
state_dict names, and (b) torchvision's ResNet with torchvision's names, both generalised so the
stem and stage widths are parameters; (b) is checked against torchvision.models at default widths;
(c) fastai's cnn_learner model, nn.Sequential(create_body(arch), create_head(nf, n_out)), built the
way fastai builds it (fastai itself is not installed here).
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "ref")
DEFAULT_WIDTHS = (64, 128, 256, 512)


# ---------------------------------------------------------------- safetensors
# Minimal writer (the format: u64 LE header length, JSON header padded with spaces to a multiple
# of 8, raw little-endian data). Tensors are laid out 8-byte types first, then by name, as the
# safetensors library does, so every tensor is aligned to its element size.
_ST_DTYPES = {torch.float32: ("F32", "<f4"), torch.int64: ("I64", "<i8"), torch.int32: ("I32", "<i4")}


def st_save(path, tensors, metadata=None):
    items = []
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        code, npdt = _ST_DTYPES[t.dtype]
        items.append((-t.element_size(), name, code, list(t.shape), t.numpy().astype(npdt).tobytes()))
    items.sort(key=lambda it: (it[0], it[1]))
    header, blobs, off = {}, [], 0
    for _, name, code, shape, raw in items:
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


# ---------------------------------------------------------------- fastai v2 XResNet
class ConvLayer(nn.Sequential):
    """fastai ConvLayer: conv (no bias, padding ks//2) -> BatchNorm -> optional ReLU; names .0 .1 .2."""

    def __init__(self, ni, nf, ks=3, stride=1, zero_bn=False, act=True, inplace=False):
        conv = nn.Conv2d(ni, nf, ks, stride=stride, padding=(ks - 1) // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        bn = nn.BatchNorm2d(nf)
        bn.bias.data.fill_(1e-3)  # fastai's BatchNorm; init_cnn sets it to 0 afterwards
        bn.weight.data.fill_(0.0 if zero_bn else 1.0)
        layers = [conv, bn]
        if act:
            layers.append(nn.ReLU(inplace=inplace))  # fastai's is not in place; benchmarks want it
        super().__init__(*layers)


class ResBlock(nn.Module):
    """fastai ResBlock: act(convpath(x) + idpath(x)). ni/nh/nf are actual channel counts (fastai
    passes them unexpanded and multiplies by expansion; same modules either way)."""

    def __init__(self, expansion, ni, nh, nf, stride=1, inplace=False):
        super().__init__()
        if expansion == 1:
            path = [ConvLayer(ni, nh, 3, stride=stride, inplace=inplace),
                    ConvLayer(nh, nf, 3, zero_bn=True, act=False)]
        else:
            path = [ConvLayer(ni, nh, 1, inplace=inplace),
                    ConvLayer(nh, nh, 3, stride=stride, inplace=inplace),
                    ConvLayer(nh, nf, 1, zero_bn=True, act=False)]
        self.convpath = nn.Sequential(*path)
        idpath = []
        if ni != nf:
            idpath.append(ConvLayer(ni, nf, 1, act=False))
        if stride != 1:  # fastai's pool_first: the pool goes in front of the conv
            idpath.insert(0, nn.AvgPool2d(stride, ceil_mode=True))
        self.idpath = nn.Sequential(*idpath)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.convpath(x) + self.idpath(x))


def init_cnn(m):
    """fastai's init_cnn: every bias 0 (batch norm's too), conv/linear weights Kaiming-normal."""
    if getattr(m, "bias", None) is not None:
        nn.init.constant_(m.bias, 0)
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight)
    for c in m.children():
        init_cnn(c)


class XResNet(nn.Sequential):
    """fastai v2 XResNet: 0,1,2 stem ConvLayers, 3 MaxPool, 4..7 stages, 8 pool, 9 flatten,
    10 dropout, 11 Linear. The first block's input is stem[-1] (fastai: 64 = stem default)."""

    def __init__(self, expansion, layers, stem=(32, 32, 64), widths=DEFAULT_WIDTHS, n_out=1000, p=0.0, inplace=False):
        szs = [3, *stem]
        mods = [ConvLayer(szs[i], szs[i + 1], 3, stride=2 if i == 0 else 1, inplace=inplace) for i in range(3)]
        mods.append(nn.MaxPool2d(3, 2, 1))
        ni = stem[-1]
        for i, n in enumerate(layers):
            nf = widths[i] * expansion
            blocks = []
            for b in range(n):
                blocks.append(ResBlock(expansion, ni, widths[i], nf, stride=2 if (i > 0 and b == 0) else 1, inplace=inplace))
                ni = nf
            mods.append(nn.Sequential(*blocks))
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p), nn.Linear(ni, n_out)]
        super().__init__(*mods)
        init_cnn(self)


# ---------------------------------------------------------------- torchvision ResNet, generalised
class TVBasic(nn.Module):
    def __init__(self, inplanes, planes, stride, expansion=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class TVBottleneck(nn.Module):
    """v1.5: the stride is on the 3x3 conv."""

    def __init__(self, inplanes, planes, stride, expansion=4):
        super().__init__()
        out = planes * expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + idt)


class TVResNet(nn.Module):
    def __init__(self, expansion, layers, stem=64, widths=DEFAULT_WIDTHS, num_classes=1000):
        super().__init__()
        block = TVBasic if expansion == 1 else TVBottleneck
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for i, n in enumerate(layers):
            blocks = []
            for b in range(n):
                blocks.append(block(inplanes, widths[i], 2 if (i > 0 and b == 0) else 1, expansion))
                inplanes = widths[i] * expansion
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


STD_LAYERS = {18: (1, (2, 2, 2, 2)), 34: (1, (3, 4, 6, 3)), 50: (4, (3, 4, 6, 3)), 101: (4, (3, 4, 23, 3))}


# ---------------------------------------------------------------- fastai's cnn_learner model
class AdaptiveConcatPool2d(nn.Module):
    """fastai's: max pool and average pool to 1x1, concatenated max first."""

    def __init__(self):
        super().__init__()
        self.ap = nn.AdaptiveAvgPool2d(1)
        self.mp = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


def fastai_batchnorm1d(nf):
    """fastai's BatchNorm(nf, ndim=1): weight 1, bias 1e-3."""
    bn = nn.BatchNorm1d(nf)
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.fill_(1e-3)
    return bn


def create_head(nf, n_out, hidden=512, ps=0.5):
    """fastai v2's create_head(nf, n_out) with its defaults (concat pool, BatchNorm first, no final
    BatchNorm, lin_ftrs=[hidden]): each LinBnDrop(ni, no, bn=True, p, act) is BatchNorm1d(ni),
    Dropout(p) when p != 0, Linear(ni, no, bias=False), act; they are spliced into one Sequential.
    nf is the pooled width (twice the body's). Then create_cnn_model's apply_init(head,
    kaiming_normal_): every non-BatchNorm layer with a weight, i.e. the Linears."""
    ftrs = [nf, hidden, n_out]
    drops = [ps / 2] * (len(ftrs) - 2) + [ps]
    acts = [nn.ReLU(inplace=True)] * (len(ftrs) - 2) + [None]
    layers = [AdaptiveConcatPool2d(), nn.Flatten()]
    for ni, no, p, act in zip(ftrs[:-1], ftrs[1:], drops, acts):
        layers.append(fastai_batchnorm1d(ni))
        if p != 0:
            layers.append(nn.Dropout(p))
        layers.append(nn.Linear(ni, no, bias=False))
        if act is not None:
            layers.append(act)
    head = nn.Sequential(*layers)
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    return head


def cnn_learner_model(arch_model, cut, n_out, hidden=512):
    """create_cnn_model: body = nn.Sequential(*children[:cut]) (resnet cut -2, xresnet -4), head on
    the body's width; the Learner's model is nn.Sequential(body, head)."""
    body = nn.Sequential(*list(arch_model.children())[:cut])
    nf = [m for m in body.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
    return nn.Sequential(body, create_head(2 * nf, n_out, hidden))


def check_cnn_learner_names():
    """The names cnntrain's models/cnn_learner.c writes, from a real construction."""
    m = cnn_learner_model(torchvision.models.resnet50(), -2, 10)
    keys = list(m.state_dict())
    want = ["0.0.weight", "0.1.weight", "0.4.0.conv1.weight", "0.4.0.downsample.0.weight", "0.7.2.bn3.bias",
            "1.2.weight", "1.2.bias", "1.2.running_mean", "1.2.num_batches_tracked", "1.4.weight", "1.6.weight",
            "1.6.running_var", "1.8.weight"]
    missing = [k for k in want if k not in keys]
    if missing or any(k.startswith("1.") and k.split(".")[1] not in "2468" for k in keys):
        sys.exit("cnn_learner names differ from what cnntrain expects: %s" % missing)
    head = m[1]
    kinds = [type(x).__name__ for x in head]
    if kinds != ["AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d",
                 "Dropout", "Linear"] or head[3].p != 0.25 or head[7].p != 0.5:
        sys.exit("create_head structure differs: %s" % kinds)
    x = XResNet(1, (2, 2, 2, 2))
    xm = cnn_learner_model(x, -4, 10)
    if "0.0.0.weight" not in xm.state_dict() or "0.4.0.convpath.0.0.weight" not in xm.state_dict():
        sys.exit("xresnet cnn_learner body names differ")
    print("cnn_learner model: names and head structure as models/cnn_learner.c builds them")


# ---------------------------------------------------------------- cnntrain's dropout masks
M64 = (1 << 64) - 1


def rng_hash(key, index):
    """src/rng.c rng_hash: splitmix64 output number index + 1 from state key (index: uint64 array)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def dropout_mask(seed, shape, p):
    """backend.h's mask: element i (NCHW order) kept when (rng_hash(seed, i) >> 40) * 2^-24 >= p."""
    n = int(np.prod(shape))
    u = (rng_hash(seed, np.arange(n, dtype=np.uint64)) >> np.uint64(40)).astype(np.float64) / 2.0 ** 24
    return torch.from_numpy((u >= float(np.float32(p))).reshape(shape))


class MaskedDropout(nn.Module):
    """nn.Dropout with cnntrain's mask for dropout layer `stream` of a model run with dropout_seed."""

    def __init__(self, p, stream, dropout_seed):
        super().__init__()
        self.p, self.key = p, int(rng_hash(dropout_seed, stream))

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(self.key, tuple(x.shape), self.p).to(x.dtype) / (1 - self.p)


def check_against_torchvision():
    """Our generalised ResNet at default widths = torchvision's: same keys in the same order, same
    shapes, and the same outputs once torchvision's weights are loaded into it."""
    torch.manual_seed(1)
    for depth in (18, 50):
        exp, layers = STD_LAYERS[depth]
        tv = getattr(torchvision.models, "resnet%d" % depth)().eval()
        ours = TVResNet(exp, layers).eval()
        a = [(k, tuple(v.shape)) for k, v in tv.state_dict().items()]
        b = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
        if a != b:
            sys.exit("generalised ResNet-%d differs from torchvision's state_dict: %s" % (
                depth, sorted(set(a) ^ set(b))[:5]))
        ours.load_state_dict(tv.state_dict(), strict=True)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            d = (ours(x) - tv(x)).abs().max().item()
        if d != 0.0:
            sys.exit("generalised ResNet-%d gives different outputs from torchvision's (max diff %g)" % (depth, d))
    print("generalised ResNet matches torchvision resnet18/resnet50 (keys, shapes, outputs)")


# ---------------------------------------------------------------- model cases
CASES = [
    # name, family, expansion, layers, stem, widths, input (n,c,h,w), smoothing
    ("xresnet_basic", "xresnet", 1, (1, 1, 1, 1), (8, 8, 16), (8, 16, 32, 64), (4, 3, 40, 40), 0.0),
    ("xresnet_bottleneck", "xresnet", 4, (1, 2, 1, 1), (8, 8, 16), (8, 16, 16, 32), (4, 3, 35, 35), 0.1),
    ("resnet_bottleneck", "resnet", 4, (1, 2, 1, 1), (0, 0, 16), (8, 16, 16, 32), (4, 3, 35, 35), 0.0),
    ("resnet_basic", "resnet", 1, (1, 1, 1, 1), (0, 0, 16), (8, 16, 32, 64), (3, 3, 33, 33), 0.0),
]
CLASSES = 10


def randomise_bn(m, g, tracked):
    """gamma in [0.5, 1.5), beta and the running mean ~ N(0, 0.1^2), running var in [0.5, 1.5)."""
    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    m.num_batches_tracked.fill_(tracked)


def randomise(model, g):
    """Every path live: BN gamma away from 0, random beta and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                randomise_bn(m, g, 3)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features ** 0.5
                m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * bound)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def run_case(model, x, y, smoothing):
    """Train-mode forward, loss, backward, then an eval-mode forward: everything the io file holds."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach()}
    for n, p in model.named_parameters():
        out["grad." + n] = p.grad.detach()
    for n, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out["after.%s.running_mean" % n] = m.running_mean.detach().clone()
            out["after.%s.running_var" % n] = m.running_var.detach().clone()
            out["after.%s.num_batches_tracked" % n] = m.num_batches_tracked.detach().clone()
    model.eval()
    with torch.no_grad():
        out["eval_logits"] = model(x)
    return out


def f32(t):
    return t.float() if t.is_floating_point() else t


def model_cases():
    sizes = {}
    for idx, (name, fam, exp, layers, stem, widths, shape, smoothing) in enumerate(CASES):
        g = torch.Generator().manual_seed(1000 + idx)
        if fam == "xresnet":
            model = XResNet(exp, layers, stem, widths, CLASSES)
        else:
            model = TVResNet(exp, layers, stem[2], widths, CLASSES)
        randomise(model, g)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        x = torch.randn(shape, generator=g)
        y = torch.randint(0, CLASSES, (shape[0],), generator=g)

        ref = run_case(model.double(), x.double(), y, smoothing)
        model.float().load_state_dict(state)  # and again in fp32, for the noise floor
        got = run_case(model, x, y, smoothing)
        floor = max(rel(got[k], ref[k]) for k in ref if ref[k].is_floating_point())

        wpath = os.path.join(OUT, name + ".weights.safetensors")
        st_save(wpath, state)
        io = {"input": x, "labels": y}
        io.update({k: f32(v) for k, v in ref.items()})
        meta = {"arch": fam, "expansion": exp, "layers": ",".join(map(str, layers)),
                "stem": ",".join(map(str, stem)), "widths": ",".join(map(str, widths)),
                "classes": CLASSES, "smoothing": repr(smoothing)}
        iopath = os.path.join(OUT, name + ".io.safetensors")
        st_save(iopath, io, meta)
        nparam = sum(p.numel() for p in model.parameters())
        sizes[name] = os.path.getsize(wpath) + os.path.getsize(iopath)
        print("%-20s %7d params, loss %.6f, fp32 torch vs fp64 worst rel err %.2e" % (
            name, nparam, ref["loss"].item(), floor))
    return sizes


# cnn_learner cases: name, body case (its weights are the body's), hidden width, dropout seed, smoothing
LEARNER_CASES = [
    ("cnn_learner_resnet", "resnet_bottleneck", 32, 20240917, 0.1),
    ("cnn_learner_xresnet", "xresnet_basic", 24, 77, 0.0),
]


def randomise_head(head, g):
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.BatchNorm1d):
                randomise_bn(m, g, 5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.in_features) ** 0.5)


def cnn_learner_cases():
    """fastai's cnn_learner model on a reduced body, train mode with dropout (our masks), backward,
    BatchNorm1d statistics, eval logits. The body's weights are the body case's weights file, so a
    test can also load that file as pretrained weights and get these logits."""
    import st_torch
    sizes = {}
    cases = {c[0]: c for c in CASES}
    for idx, (name, body_case, hidden, seed, smoothing) in enumerate(LEARNER_CASES):
        _, fam, exp, layers, stem, widths, shape, _ = cases[body_case]
        g = torch.Generator().manual_seed(3000 + idx)
        if fam == "xresnet":
            arch, cut = XResNet(exp, layers, stem, widths, CLASSES), -4
        else:
            arch, cut = TVResNet(exp, layers, stem[2], widths, CLASSES), -2
        arch.load_state_dict(st_torch.load(os.path.join(OUT, body_case + ".weights.safetensors")))
        model = cnn_learner_model(arch, cut, CLASSES, hidden)
        randomise_head(model[1], g)
        drops = [k for k, mod in enumerate(model[1]) if isinstance(mod, nn.Dropout)]
        for stream, k in enumerate(drops):  # cnntrain numbers its dropout layers in model order
            model[1][k] = MaskedDropout(model[1][k].p, stream, seed)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        x = torch.randn(shape, generator=g)
        y = torch.randint(0, CLASSES, (shape[0],), generator=g)

        ref = run_case(model.double(), x.double(), y, smoothing)
        model.float().load_state_dict(state)
        got = run_case(model, x, y, smoothing)
        floor = max(rel(got[k], ref[k]) for k in ref if ref[k].is_floating_point())

        wpath = os.path.join(OUT, name + ".weights.safetensors")
        st_save(wpath, state)
        io = {"input": x, "labels": y}
        io.update({k: f32(v) for k, v in ref.items()})
        meta = {"arch": "cnn_learner", "body": fam, "expansion": exp, "layers": ",".join(map(str, layers)),
                "stem": ",".join(map(str, stem)), "widths": ",".join(map(str, widths)), "classes": CLASSES,
                "smoothing": repr(smoothing), "hidden": hidden, "dropout_seed": seed, "body_weights": body_case}
        iopath = os.path.join(OUT, name + ".io.safetensors")
        st_save(iopath, io, meta)
        sizes[name] = os.path.getsize(wpath) + os.path.getsize(iopath)
        print("%-20s %7d params, loss %.6f, fp32 torch vs fp64 worst rel err %.2e" % (
            name, sum(p.numel() for p in model.parameters()), ref["loss"].item(), floor))
    return sizes


# ---------------------------------------------------------------- op cases
def op_cases():
    """One layer each at real widths. Tensors: x, w (PyTorch layout), b, dy, y, dx, dw, db; for
    batch norm gamma, beta, running_mean/var before and *_after, dgamma, dbeta."""
    cases = []

    def conv(name, n, cin, h, cout, k, stride, pad):
        def f(g):
            x = torch.randn(n, cin, h, h, generator=g)
            w = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
            yd = F.conv2d(x.double(), w.double(), stride=stride, padding=pad)
            dy = torch.randn(yd.shape, generator=g)
            xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
            yd = F.conv2d(xd, wd, stride=stride, padding=pad)
            yd.backward(dy.double())
            t = {"x": x, "w": w, "dy": dy, "y": yd.detach(), "dx": xd.grad, "dw": wd.grad}
            return t, {"op": "conv", "cin": cin, "cout": cout, "k": k, "stride": stride, "pad": pad}
        cases.append((name, f))

    conv("op_conv3x3", 2, 64, 7, 64, 3, 1, 1)
    conv("op_conv7x7_stem", 2, 3, 17, 64, 7, 2, 3)
    conv("op_conv1x1_s2", 2, 128, 7, 256, 1, 2, 0)

    def bn(g):
        c, mom, eps = 256, 0.1, 1e-5
        x = torch.randn(2, c, 5, 5, generator=g) * 1.5 + 0.3
        gamma = torch.rand(c, generator=g) + 0.5
        beta = torch.randn(c, generator=g) * 0.1
        rm = torch.randn(c, generator=g) * 0.1
        rv = torch.rand(c, generator=g) + 0.5
        dy = torch.randn(x.shape, generator=g)
        xd, gd, bd = (t.double().requires_grad_() for t in (x, gamma, beta))
        rmd, rvd = rm.double(), rv.double()
        yd = F.batch_norm(xd, rmd, rvd, gd, bd, training=True, momentum=mom, eps=eps)
        yd.backward(dy.double())
        t = {"x": x, "gamma": gamma, "beta": beta, "running_mean": rm, "running_var": rv, "dy": dy,
             "y": yd.detach(), "dx": xd.grad, "dgamma": gd.grad, "dbeta": bd.grad,
             "running_mean_after": rmd, "running_var_after": rvd}
        return t, {"op": "bn_train", "momentum": mom, "eps": eps}
    cases.append(("op_bn_train", bn))

    def pool(name, kind, n, c, h, k, stride, pad, ceil):
        def f(g):
            x = torch.randn(n, c, h, h, generator=g)
            xd = x.double().requires_grad_()
            if kind == "maxpool":
                yd = F.max_pool2d(xd, k, stride, pad, ceil_mode=bool(ceil))
            else:
                yd = F.avg_pool2d(xd, k, stride, pad, ceil_mode=bool(ceil), count_include_pad=True)
            dy = torch.randn(yd.shape, generator=g)
            yd.backward(dy.double())
            t = {"x": x, "dy": dy, "y": yd.detach(), "dx": xd.grad}
            return t, {"op": kind, "k": k, "stride": stride, "pad": pad, "ceil_mode": ceil}
        cases.append((name, f))

    pool("op_avgpool_ceil", "avgpool", 2, 64, 7, 2, 2, 0, 1)
    pool("op_maxpool", "maxpool", 2, 64, 9, 3, 2, 1, 0)

    def linear(g):
        n, fin, fout = 4, 2048, 10
        x = torch.randn(n, fin, generator=g)
        bound = 1.0 / fin ** 0.5
        w = (torch.rand(fout, fin, generator=g) * 2 - 1) * bound
        b = (torch.rand(fout, generator=g) * 2 - 1) * bound
        dy = torch.randn(n, fout, generator=g)
        xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
        yd = F.linear(xd, wd, bd)
        yd.backward(dy.double())
        t = {"x": x, "w": w, "b": b, "dy": dy, "y": yd.detach(), "dx": xd.grad, "dw": wd.grad, "db": bd.grad}
        return t, {"op": "linear", "in": fin, "out": fout}
    cases.append(("op_linear", linear))

    def xent(g):
        # Label smoothing with mixup: per sample target lam*onehot(a) + (1-lam)*onehot(b), smoothed.
        n, classes, eps = 8, 10, 0.1
        logits = torch.randn(n, classes, generator=g) * 2
        la = torch.randint(0, classes, (n,), generator=g)
        lb = torch.randint(0, classes, (n,), generator=g)
        lam = torch.rand(n, generator=g) * 0.5 + 0.5
        ld = logits.double().requires_grad_()
        la_ = F.cross_entropy(ld, la, reduction="none", label_smoothing=eps)
        lb_ = F.cross_entropy(ld, lb, reduction="none", label_smoothing=eps)
        loss = (lam.double() * la_ + (1 - lam.double()) * lb_).mean()
        loss.backward()
        plain = F.cross_entropy(logits.double(), la, label_smoothing=eps)
        dplain = torch.autograd.grad(F.cross_entropy(ld, la, label_smoothing=eps), ld)[0]
        t = {"logits": logits, "labels_a": la.int(), "labels_b": lb.int(), "lam": lam,
             "loss": loss.detach(), "dlogits": ld.grad,
             "loss_plain": plain, "dlogits_plain": dplain}
        return t, {"op": "softmax_xent", "classes": classes, "smoothing": eps}
    cases.append(("op_xent_mixup", xent))

    # appended after the older cases: each case's generator seed is 2000 + its index
    def bn1d(g):
        # BatchNorm1d on (n, c), training mode: cnntrain's batch norm on (n, c, 1, 1)
        n, c, mom, eps = 8, 512, 0.1, 1e-5
        x = torch.randn(n, c, generator=g) * 1.5 + 0.3
        gamma = torch.rand(c, generator=g) + 0.5
        beta = torch.randn(c, generator=g) * 0.1
        rm = torch.randn(c, generator=g) * 0.1
        rv = torch.rand(c, generator=g) + 0.5
        dy = torch.randn(x.shape, generator=g)
        bn = nn.BatchNorm1d(c, eps=eps, momentum=mom).double()
        with torch.no_grad():
            bn.weight.copy_(gamma)
            bn.bias.copy_(beta)
            bn.running_mean.copy_(rm)
            bn.running_var.copy_(rv)
        xd = x.double().requires_grad_()
        yd = bn.train()(xd)
        yd.backward(dy.double())
        t = {"x": x, "gamma": gamma, "beta": beta, "running_mean": rm, "running_var": rv, "dy": dy,
             "y": yd.detach(), "dx": xd.grad, "dgamma": bn.weight.grad, "dbeta": bn.bias.grad,
             "running_mean_after": bn.running_mean, "running_var_after": bn.running_var}
        return t, {"op": "bn_train", "momentum": mom, "eps": eps}
    cases.append(("op_bn1d_train", bn1d))

    def concat_pool(g):
        x = torch.randn(2, 128, 7, 7, generator=g)
        xd = x.double().requires_grad_()
        yd = AdaptiveConcatPool2d()(xd).flatten(1)
        dy = torch.randn(yd.shape, generator=g)
        yd.backward(dy.double())
        return {"x": x, "dy": dy, "y": yd.detach(), "dx": xd.grad}, {"op": "concat_pool"}
    cases.append(("op_concat_pool", concat_pool))

    def dropout(g):
        # x (n, c, h, w) so the NCHW mask index is exercised on an NHWC backend
        p, seed = 0.25, 123456789
        x = torch.randn(3, 40, 2, 3, generator=g)
        dy = torch.randn(x.shape, generator=g)
        mask = dropout_mask(seed, tuple(x.shape), p).double()
        xd = x.double().requires_grad_()
        yd = xd * mask / (1 - p)
        yd.backward(dy.double())
        return {"x": x, "dy": dy, "y": yd.detach(), "dx": xd.grad}, {"op": "dropout", "p": p, "seed": seed}
    cases.append(("op_dropout", dropout))

    sizes = {}
    for idx, (name, f) in enumerate(cases):
        g = torch.Generator().manual_seed(2000 + idx)
        t, meta = f(g)
        path = os.path.join(OUT, name + ".safetensors")
        st_save(path, {k: f32(v) for k, v in t.items()}, meta)
        sizes[name] = os.path.getsize(path)
    return sizes


# ---------------------------------------------------------------- parameter counts
def param_counts():
    lines = ["# model classes parameters (torchvision's models for resnet*, the fastai replica for xresnet*)"]
    for classes in (1000, 10):
        for depth in (18, 34, 50, 101):
            exp, layers = STD_LAYERS[depth]
            m = XResNet(exp, layers, n_out=classes)
            lines.append("xresnet%d %d %d" % (depth, classes, sum(p.numel() for p in m.parameters())))
        for depth in (18, 34, 50, 101):
            m = getattr(torchvision.models, "resnet%d" % depth)(num_classes=classes)
            lines.append("resnet%d %d %d" % (depth, classes, sum(p.numel() for p in m.parameters())))
        m = XResNet(1, [1, 1, 1, 1], stem=(8, 8, 16), widths=(16, 32, 64, 128), n_out=classes)
        lines.append("xresnet_tiny %d %d" % (classes, sum(p.numel() for p in m.parameters())))
        for depth in (18, 34, 50):
            exp, layers = STD_LAYERS[depth]
            m = cnn_learner_model(XResNet(exp, layers), -4, classes)
            lines.append("xresnet%d_fastai_head %d %d" % (depth, classes, sum(p.numel() for p in m.parameters())))
        m = cnn_learner_model(XResNet(1, [1, 1, 1, 1], stem=(8, 8, 16), widths=(16, 32, 64, 128)), -4, classes)
        lines.append("xresnet_tiny_fastai_head %d %d" % (classes, sum(p.numel() for p in m.parameters())))
        for depth in (18, 34, 50, 101):
            m = cnn_learner_model(getattr(torchvision.models, "resnet%d" % depth)(), -2, classes)
            lines.append("resnet%d_fastai_head %d %d" % (depth, classes, sum(p.numel() for p in m.parameters())))
    if "resnet50 1000 25557032" not in lines:
        sys.exit("torchvision resnet50 should have 25,557,032 parameters")
    path = os.path.join(OUT, "param_counts.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"param_counts.txt": os.path.getsize(path)}


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    check_against_torchvision()
    sizes = {}
    sizes.update(model_cases())
    check_cnn_learner_names()
    sizes.update(cnn_learner_cases())
    sizes.update(op_cases())
    sizes.update(param_counts())
    total = sum(sizes.values())
    for k, v in sizes.items():
        print("  %-22s %9d bytes" % (k, v))
    print("tests/ref: %.2f MB in all" % (total / 1e6))


if __name__ == "__main__":
    main()
