#!/usr/bin/python3
"""PyTorch reference files for cnntrain's parity tests (tests/test_parity.c).

Run with Debian's PyTorch (torch 1.13, torchvision 0.14), from the repo root:

    /usr/bin/python3 scripts/torch_reference.py

It regenerates its files in tests/ref/ bit for bit (fixed seeds, 2 threads, float64 maths). What
it writes:
  resnet_<block>.weights.safetensors   the model's state_dict, as a PyTorch user would save it (F32)
  resnet_<block>.io.safetensors        input, labels, train-mode logits, loss, grad.<param> for every
                               parameter, after.<bn>.running_mean/var, eval_logits; metadata
                               arch, expansion, layers, stem, widths, classes, smoothing
  op_<name>.safetensors        one layer at real width: inputs, weights, upstream dy, outputs and
                               every gradient

The xresnet_* and cnn_learner_* cases, param_counts.txt and fastai_models.txt come from fastai's
own classes: scripts/fastai_reference_models.py (run with the reference venv, after this script:
cnn_learner_resnet's body is resnet_bottleneck's weights file).

The references are computed in float64 from the float32 weights and inputs and stored as F32, so
the only error a test sees is its own fp32 rounding. The script also measures what float32
PyTorch itself gets wrong against that, to show the noise floor under the tests' 1e-4 tolerance.

It defines torchvision's ResNet with torchvision's names, generalised so the stem and stage
widths are parameters, and checks it against torchvision.models at default widths.
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


# ---------------------------------------------------------------- concat pool (op_concat_pool)
class AdaptiveConcatPool2d(nn.Module):
    """fastai's: max pool and average pool to 1x1, concatenated max first."""

    def __init__(self):
        super().__init__()
        self.ap = nn.AdaptiveAvgPool2d(1)
        self.mp = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


# ---------------------------------------------------------------- cnntrain's dropout masks
def rng_hash(key, index):
    """src/base/rng.c rng_hash: splitmix64 output number index + 1 from state key (index: uint64 array)."""
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
    # name, generator seed, expansion, layers, stem, widths, input (n,c,h,w), smoothing. The xresnet
    # cases (seeds 1000, 1001) moved to scripts/fastai_reference_models.py, which builds them with
    # fastai's own XResNet.
    ("resnet_bottleneck", 1002, 4, (1, 2, 1, 1), (0, 0, 16), (8, 16, 16, 32), (4, 3, 35, 35), 0.0),
    ("resnet_basic", 1003, 1, (1, 1, 1, 1), (0, 0, 16), (8, 16, 32, 64), (3, 3, 33, 33), 0.0),
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
    """Every path live: the convs and the classifier redrawn from g, BN gamma away from 0, random beta
    and running statistics (fastai's init would give zero gammas and biases). Also used by
    scripts/fastai_reference_models.py."""
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
    for name, seed, exp, layers, stem, widths, shape, smoothing in CASES:
        g = torch.Generator().manual_seed(seed)
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
        meta = {"arch": "resnet", "expansion": exp, "layers": ",".join(map(str, layers)),
                "stem": ",".join(map(str, stem)), "widths": ",".join(map(str, widths)),
                "classes": CLASSES, "smoothing": repr(smoothing)}
        iopath = os.path.join(OUT, name + ".io.safetensors")
        st_save(iopath, io, meta)
        nparam = sum(p.numel() for p in model.parameters())
        sizes[name] = os.path.getsize(wpath) + os.path.getsize(iopath)
        print("%-20s %7d params, loss %.6f, fp32 torch vs fp64 worst rel err %.2e" % (
            name, nparam, ref["loss"].item(), floor))
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


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    check_against_torchvision()
    sizes = {}
    sizes.update(model_cases())
    sizes.update(op_cases())
    total = sum(sizes.values())
    for k, v in sizes.items():
        print("  %-22s %9d bytes" % (k, v))
    print("tests/ref: %.2f MB in all" % (total / 1e6))


if __name__ == "__main__":
    main()
