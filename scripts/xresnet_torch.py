"""xresnet_torch.py: fastai v2's XResNet in plain PyTorch, for the machines without fastai (the GPU
machine has PyTorch but no package index): scripts/bench_gpu_torch.py, bench_cpu_torch.py and
torch_imagenette_progressive.py build xresnet* with it, and load cnntrain's checkpoints into it
strictly. Same modules, state_dict names and init as fastai.vision.models.xresnet.XResNet, which is
the reference (tests/ref/fastai_models.txt, scripts/fastai_reference_models.py); check it against
fastai itself with:

    reference-env/bin/python scripts/xresnet_torch.py     (names, shapes, outputs for the same weights)
"""
import sys

import torch
import torch.nn as nn

DEFAULT_WIDTHS = (64, 128, 256, 512)
LAYERS = {"xresnet18": (1, [2, 2, 2, 2]), "xresnet34": (1, [3, 4, 6, 3]), "xresnet50": (4, [3, 4, 6, 3]),
          "xresnet101": (4, [3, 4, 23, 3])}


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




def check_against_fastai():
    from fastai.vision.models import xresnet as fx
    torch.manual_seed(0)
    for name, (expansion, layers) in LAYERS.items():
        ours, theirs = XResNet(expansion, layers, n_out=10).eval(), getattr(fx, name)(n_out=10).eval()
        a, b = ours.state_dict(), theirs.state_dict()
        if [(k, tuple(v.shape)) for k, v in a.items()] != [(k, tuple(v.shape)) for k, v in b.items()]:
            sys.exit(f"{name}: state_dict names or shapes differ from fastai's")
        ours.load_state_dict(b, strict=True)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            d = (ours(x) - theirs(x)).abs().max().item()
        if d > 1e-5:
            sys.exit(f"{name}: outputs differ from fastai's by {d:g}")
        print(f"{name}: same {len(a)} state_dict entries as fastai's, outputs within {d:.1e}")


if __name__ == "__main__":
    check_against_fastai()
