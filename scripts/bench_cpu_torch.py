#!/usr/bin/python3
"""PyTorch's side of the CPU training benchmark (scripts/bench_cpu.sh): images/s of forward +
backward + AdamW step, channels-last, 2 threads, on random data, like `./train bench`.

    /usr/bin/python3 scripts/bench_cpu_torch.py MODEL SIZE BATCH [STEPS]            (Debian's 1.13)
    reference-env/bin/python scripts/bench_cpu_torch.py MODEL SIZE BATCH [STEPS]    (PyTorch 2.x)

xresnet* is fastai's own where fastai is installed (reference-env), else its replica in
scripts/xresnet_torch.py; resnet* is torchvision's.
"""
import os
import resource
import sys
import time

import torch
import torchvision

try:
    from fastai.vision.models import xresnet as fastai_xresnet
except ImportError:
    fastai_xresnet = None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from xresnet_torch import XResNet  # noqa: E402  (fastai's xresnet, replicated)

LAYERS = {"xresnet18": (1, [2, 2, 2, 2]), "xresnet34": (1, [3, 4, 6, 3]), "xresnet50": (4, [3, 4, 6, 3]),
          "xresnet101": (4, [3, 4, 23, 3])}


def build(name):
    if name in LAYERS and fastai_xresnet is not None:
        return getattr(fastai_xresnet, name)(n_out=1000)
    if name in LAYERS:
        expansion, layers = LAYERS[name]
        return XResNet(expansion, layers, n_out=1000)
    return getattr(torchvision.models, name)(num_classes=1000)


def main():
    name, size, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(1)
    model = build(name).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up, as ./train bench does
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch model={name} size={size} batch={batch} steps={steps} img_per_s={steps * batch / dt:.1f} "
          f"peak_rss_mib={rss:.0f} loss={loss:.4f} torch={torch.__version__} "
          f"xresnet={'fastai' if fastai_xresnet else 'replica'}")


if __name__ == "__main__":
    main()
