#!/usr/bin/env python3
"""PyTorch's side of the GPU training benchmark (scripts/bench_gpu.sh): images/s of one training
step (forward + backward + AdamW) on synthetic data, the way people run PyTorch fast on a GPU:
channels-last, bf16 autocast, fused AdamW, the batch already on the device, warm-up steps, then
timed steps between torch.cuda.synchronize() calls; peak memory from torch.cuda.max_memory_allocated.

    python3 scripts/bench_gpu_torch.py MODEL [--size 224] [--batch 256] [--steps 50] [--warmup 10]
                                       [--precision bf16|fp16|fp32] [--device cuda|cpu]
                                       [--data device|host] [--no-channels-last] [--compile]
    python3 scripts/bench_gpu_torch.py MODEL --params      # parameter count only (vs ./train info)

MODEL: resnet18/34/50/101 (torchvision) or xresnet18/34/50/101, xresnet_tiny: fastai v2's XResNet
as cnntrain's models/xresnet.c builds it (defined below, checked by parameter count in
bench_gpu.sh). The optimizer is cnntrain's bench's: AdamW lr 1e-3, betas (0.9, 0.99), eps 1e-5,
weight decay 0.01 on every parameter. --data host copies a host float32 NCHW batch to the device
every step, as cnntrain's training step does (its input is uploaded from the loader's buffer).

Runs on torch 1.13 (CPU smoke test: --device cpu, small sizes) and 2.x (GPU): fused AdamW,
channels-last and autocast are used where the installed torch and device have them, and the last
line says which were: RESULT model= size= batch= precision= img_s= step_ms= peak_mib= ...
"""
import argparse
import os
import inspect
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xresnet_torch import XResNet  # noqa: E402  (fastai's XResNet in plain PyTorch)

# ---------------------------------------------------------------- fastai v2 XResNet, as models/xresnet.c
# Module names follow fastai (0.0.weight, 4.0.convpath.0.0.weight, 5.0.idpath.1.0.weight, 11.weight),
# so a state dict is interchangeable with cnntrain's checkpoints.

XRESNETS = {  # name: (expansion, blocks per stage, stem widths, stage widths)
    "xresnet18": (1, (2, 2, 2, 2), (32, 32, 64), (64, 128, 256, 512)),
    "xresnet34": (1, (3, 4, 6, 3), (32, 32, 64), (64, 128, 256, 512)),
    "xresnet50": (4, (3, 4, 6, 3), (32, 32, 64), (64, 128, 256, 512)),
    "xresnet101": (4, (3, 4, 23, 3), (32, 32, 64), (64, 128, 256, 512)),
    "xresnet_tiny": (1, (1, 1, 1, 1), (8, 8, 16), (16, 32, 64, 128)),
}


MODEL_NAMES = sorted(XRESNETS) + ["resnet18", "resnet34", "resnet50", "resnet101"]


def build_model(name, n_out):
    """cnntrain's plain models by registry name: fastai's XResNet or torchvision's ResNet."""
    if name in XRESNETS:
        expansion, layers, stem, widths = XRESNETS[name]
        return XResNet(expansion, layers, stem, widths, n_out, inplace=True)
    if name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        import torchvision
        return getattr(torchvision.models, name)(num_classes=n_out)
    raise SystemExit(f"unknown model '{name}': choose one of {', '.join(MODEL_NAMES)}")


def param_count(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- features by availability

def make_adamw(params, device, **kw):
    """AdamW, fused where this torch has it for the device (2.x on CUDA), else foreach, else plain.
    Returns (optimizer, "fused" | "foreach" | "plain")."""
    sig = inspect.signature(torch.optim.AdamW).parameters
    tries = []
    if device.type == "cuda" and "fused" in sig:
        tries.append(("fused", {"fused": True}))
    if "foreach" in sig:
        tries.append(("foreach", {"foreach": True}))
    tries.append(("plain", {}))
    for name, extra in tries:
        try:
            return torch.optim.AdamW(params, **kw, **extra), name
        except (RuntimeError, TypeError, ValueError):
            continue
    raise SystemExit("cannot create torch.optim.AdamW")


def autocast_for(device, precision):
    """A context manager for the precision on this device, or None for fp32. Exits with a message
    when this torch cannot autocast to it there (fp16 on a CPU, any autocast on torch < 1.10)."""
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if not hasattr(torch, "autocast"):
        raise SystemExit(f"this torch ({torch.__version__}) has no torch.autocast: use --precision fp32")
    if device.type == "cpu" and dtype == torch.float16:
        raise SystemExit("fp16 autocast is not available on the CPU: use --precision bf16 or fp32")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise SystemExit("this GPU has no bf16: use --precision fp16 or fp32")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False (no GPU, or a CPU-only torch build)")
    return torch.device(name)


# ---------------------------------------------------------------- the benchmark

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=MODEL_NAMES)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="bf16")
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (default auto)")
    ap.add_argument("--data", choices=["device", "host"], default="device",
                    help="device: the batch lives on the device; host: a float32 host batch is copied every step")
    ap.add_argument("--no-channels-last", action="store_true", help="keep NCHW")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (torch 2.x)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    ap.add_argument("--params", action="store_true", help="print the parameter count and exit")
    a = ap.parse_args()

    if a.params:
        print(f"params model={a.model} classes={a.classes} params={param_count(build_model(a.model, a.classes))}")
        return
    if min(a.size, a.batch, a.steps) < 1 or a.warmup < 0:
        raise SystemExit("size, batch and steps must be positive, warmup >= 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = pick_device(a.device)
    cast = autocast_for(dev, a.precision)
    channels_last = not a.no_channels_last and hasattr(torch, "channels_last")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(1)

    model = build_model(a.model, a.classes).to(dev).train()
    model = model.to(memory_format=fmt)
    nparams = param_count(model)
    opt, opt_kind = make_adamw(model.parameters(), dev, lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
    step_model = model
    if a.compile:
        if not hasattr(torch, "compile"):
            raise SystemExit(f"--compile: this torch ({torch.__version__}) has no torch.compile")
        step_model = torch.compile(model)
    scaler = None
    if a.precision == "fp16" and dev.type == "cuda":
        scaler = torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler()

    x_host = torch.randn(a.batch, 3, a.size, a.size)
    y_host = torch.randint(0, a.classes, (a.batch,))
    if a.data == "host" and dev.type == "cuda":
        x_host = x_host.pin_memory()
    x_dev = x_host.to(dev).contiguous(memory_format=fmt)
    y_dev = y_host.to(dev)

    def step():
        if a.data == "host":
            x = x_host.to(dev, non_blocking=True).contiguous(memory_format=fmt)
            y = y_host.to(dev, non_blocking=True)
        else:
            x, y = x_dev, y_dev
        opt.zero_grad(set_to_none=True)
        if cast:
            with cast():
                out = step_model(x)
        else:
            out = step_model(x)
        loss = F.cross_entropy(out.float(), y)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    dt = time.perf_counter() - t0
    loss = float(loss)
    img_s = a.steps * a.batch / dt
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        reserved = torch.cuda.max_memory_reserved(dev) / 2**20
        gpu = torch.cuda.get_device_name(dev)
    else:
        peak = reserved = None  # no device allocator statistics on the CPU: see rss_mib
        gpu = "cpu"
    mib = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    print(f"{a.model} at {a.size}px, batch {a.batch}, {a.precision} ({'autocast' if cast else 'no autocast'}), "
          f"{'channels-last' if channels_last else 'NCHW'}, {opt_kind} AdamW, data on the {a.data}, "
          f"{'compiled' if a.compile else 'eager'}, {gpu}: {img_s:.1f} images/s ({1e3 * dt / a.steps:.1f} ms a step, "
          f"{a.steps} steps after {a.warmup} warm-up); peak {mib(peak)} MiB allocated, {mib(reserved)} MiB reserved, RSS {rss:.0f} MiB; "
          f"{nparams:,} parameters; torch {torch.__version__}", flush=True)
    if not loss == loss or loss in (float("inf"), float("-inf")):
        print(f"warning: the last loss is {loss}", file=sys.stderr)
    print(f"RESULT model={a.model} device={dev.type} size={a.size} batch={a.batch} steps={a.steps} warmup={a.warmup} "
          f"precision={a.precision} autocast={int(bool(cast))} channels_last={int(channels_last)} adamw={opt_kind} "
          f"data={a.data} compiled={int(a.compile)} img_s={img_s:.1f} step_ms={1e3 * dt / a.steps:.2f} "
          f"peak_mib={mib(peak)} reserved_mib={mib(reserved)} rss_mib={rss:.0f} params={nparams} loss={loss:.4f} "
          f"torch={torch.__version__}")


if __name__ == "__main__":
    main()
