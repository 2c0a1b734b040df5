#!/usr/bin/env python3
"""fastai itself running a cnntrain config: the reference side of scripts/fastai_side_by_side.sh.

    reference-env/bin/python scripts/fastai_recipe.py CONFIG [--set section.key=value ...]
        [--seed N] [--workers N] [--threads N]

It reads the INI with the resolution rules of src/train/config.c (the parser of
scripts/torch_imagenette_progressive.py, which is checked against config_write on every shipped
config) and runs the stages with fastai's own API, as the seed notebooks do:

  data       DataBlock(ImageBlock, CategoryBlock) over the same items ./train lists (folder layout:
             class = parent folder; CSV layout with an is_val column), bs = the stage's batch, one
             DataLoaders per stage size (progressive resizing: learn.dls = get_dls(size))
  transform  rrc: item RandomResizedCrop(size, min_scale, max_scale, ratio) + FlipItem(0.5); its
             validation is fastai's own (the whole image squashed to size + xtra, centre crop),
             which is valid_transform = squash (valid_resize_ratio 1.14) on our side.
             fastai: item Resize(presize) + batch aug_transforms(size, min_scale, ...).
             Then Normalize.from_stats(*imagenet_stats).
  model      fastai.vision.models.xresnet.xresnet*(n_out=classes), or torchvision resnet*
             (random init), in a plain Learner (one parameter group, as the seeds)
  optimizer  fastai's Adam with the stage's beta2, eps, wd (decoupled), wd_bn_bias, moms
  loss       CrossEntropyLossFlat, or LabelSmoothingCrossEntropyFlat(eps) for label_smoothing > 0;
             MixUp(alpha) callback for mixup > 0
  stages     fit_one_cycle(epochs, lr, div, div_final, pct_start, moms), fine_tune(epochs, lr,
             freeze_epochs, pct_start, div), tta: learn.tta(n, beta)
Anything else (other transforms, progressive/fixres/eval stages, pretrained bodies, fraction)
is refused before any work. The last line: RESULT accuracy= tta_accuracy= wall_s= epochs=
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_imagenette_progressive as tip  # noqa: E402  (the INI resolution only)


def refuse(msg):
    sys.exit(f"fastai_recipe.py: {msg}")


def check(cfg, path):
    no = []
    for st in cfg["stages"]:
        if st["type"] not in ("fit_one_cycle", "fine_tune", "tta"):
            no.append(f"[stage {st['name']}] type = {st['type']}")
            continue
        t, v = st["train_tf"], st["valid_tf"]
        if t["kind"] == "rrc":
            if v["kind"] != "squash" or abs(v["resize_ratio"] - 1.14) > 1e-6:
                no.append(f"[stage {st['name']}] rrc validates as fastai's RandomResizedCrop does only with "
                          "valid_transform = squash, valid_resize_ratio = 1.14")
        elif t["kind"] == "fastai":
            if t["presize"] <= 0 or v["kind"] != "fastai":
                no.append(f"[stage {st['name']}] the fastai transform needs a presize and valid_transform = fastai")
        else:
            no.append(f"[stage {st['name']}] transform = {t['kind']}")
        if st["type"] != "tta" and st["lr"][1]:
            no.append(f"[stage {st['name']}] an lr range (one parameter group here)")
        if st["type"] != "tta" and st.get("freeze", "keep") == "yes":
            no.append(f"[stage {st['name']}] freeze = yes")
    arch = cfg["model"]["arch"]
    if not (arch.startswith("xresnet") or arch in ("resnet18", "resnet34", "resnet50", "resnet101")) \
            or arch.endswith("_fastai_head"):
        no.append(f"[model] arch = {arch}")
    if cfg["model"]["pretrained"]:
        no.append("[model] pretrained")
    if cfg["data"]["fraction"] != 1:
        no.append("[data] fraction < 1")
    if no:
        refuse(f"{path}: not run in fastai by this script: " + "; ".join(no))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seed", type=int, help="default: [run] seed")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: [run] threads or cores)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: the core count)")
    a = ap.parse_args()
    cfg = tip.resolve(a.config, a.set)
    check(cfg, a.config)

    try:
        import fastai  # noqa: F401
    except ImportError:
        refuse("fastai is not installed for this python: run scripts/setup_reference.sh, then "
               "reference-env/bin/python scripts/fastai_recipe.py ...")
    import torch
    from fastai.vision.all import (Adam, CategoryBlock, CrossEntropyLossFlat, DataBlock, FlipItem,
                                   ImageBlock, LabelSmoothingCrossEntropyFlat, Learner, MixUp,
                                   Normalize, RandomResizedCrop, Resize, ResizeMethod, accuracy,
                                   aug_transforms, imagenet_stats, set_seed)
    from fastai.callback.progress import ProgressCallback
    from fastai.vision.models import xresnet
    import torchvision
    from functools import partial

    cores = os.cpu_count() or 1
    torch.set_num_threads(a.threads or cores)
    workers = a.workers if a.workers is not None else (cfg["run"]["threads"] or cores)
    seed = a.seed if a.seed is not None else cfg["run"]["seed"]
    set_seed(seed, reproducible=True)

    d = cfg["data"]
    if d["format"] == "folder":
        classes, train, valid = tip.list_folder(d["path"], d["train_dir"], d["valid_dir"])
    else:
        classes, train, valid = tip.list_csv(d["path"], d["csv"], d["images_dir"])
    rows = train + valid  # items are indices into rows (fastai maps a transform over a tuple's parts)
    items = list(range(len(rows)))

    def get_x(i):
        return rows[i][0]

    def get_y(i):
        return classes[rows[i][1]]

    def splitter(objs):
        return [i for i in objs if i < len(train)], [i for i in objs if i >= len(train)]

    def get_dls(st):
        t, size = st["train_tf"], st["size"]
        if t["kind"] == "rrc":
            item = [RandomResizedCrop(size, min_scale=t["scale_min"], max_scale=t["scale_max"],
                                      ratio=(t["ratio_min"], t["ratio_max"]))]
            if t["flip"]:
                item.append(FlipItem(0.5))
            batch = []
        else:
            item = [Resize(t["presize"], method=ResizeMethod.Crop)]
            batch = aug_transforms(size=size, min_scale=t["min_scale"], do_flip=t["flip"], max_rotate=t["max_rotate"],
                                   max_zoom=t["max_zoom"], max_warp=t["max_warp"], max_lighting=t["max_lighting"],
                                   p_affine=t["p_affine"], p_lighting=t["p_lighting"])
        block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=classes)), get_x=get_x, get_y=get_y,
                          splitter=splitter, item_tfms=item,
                          batch_tfms=batch + [Normalize.from_stats(*imagenet_stats)])
        return block.dataloaders(items, bs=st["batch"], num_workers=workers, device=torch.device("cpu"))

    arch = cfg["model"]["arch"]
    n = len(classes)
    model = getattr(xresnet, arch)(n_out=n) if arch.startswith("xresnet") else \
        getattr(torchvision.models, arch)(num_classes=n)
    first = next(st for st in cfg["stages"] if st["type"] != "tta")

    def loss_for(st):
        eps = st.get("label_smoothing", 0)
        return LabelSmoothingCrossEntropyFlat(eps=eps) if eps > 0 else CrossEntropyLossFlat()

    def opt_for(st):
        return partial(Adam, sqr_mom=st["beta2"], eps=st["eps"])

    learn = Learner(get_dls(first), model, loss_func=loss_for(first), opt_func=opt_for(first),
                    metrics=accuracy, wd=first["wd"], wd_bn_bias=first["wd_bn_bias"])
    learn.remove_cb(ProgressCallback)  # the recorder prints one line an epoch instead of progress bars
    print(f"fastai_recipe: {a.config}: {arch}, {n} classes, {len(train)} train / {len(valid)} valid, seed {seed}, "
          f"{workers} workers, {torch.get_num_threads()} threads", flush=True)
    t0 = time.time()
    acc = tta_acc = None
    epochs = 0
    size = None
    for st in cfg["stages"]:
        if st["type"] == "tta":
            if st["size"] != size:
                learn.dls = get_dls(st)
                size = st["size"]
            preds, targs = learn.tta(n=st["n"], beta=st["beta"])
            tta_acc = float((preds.argmax(1) == targs).float().mean())
            print(f"stage {st['name']}: tta n={st['n']} beta={st['beta']}: {100 * tta_acc:.2f}%", flush=True)
            continue
        if st["size"] != size or st["batch"] != learn.dls.bs:
            learn.dls = get_dls(st)
            size = st["size"]
        learn.loss_func = loss_for(st)
        learn.opt_func = opt_for(st)
        learn.wd_bn_bias = st["wd_bn_bias"]
        cbs = [MixUp(st["mixup"])] if st.get("mixup", 0) > 0 else []
        moms = (st["mom_max"], st["mom_min"], st["mom_max"])
        learn.moms = moms
        if st["type"] == "fit_one_cycle":
            learn.fit_one_cycle(st["epochs"], st["lr"][0], div=st["div"], div_final=st["div_final"],
                                pct_start=st["pct_start"], wd=st["wd"], moms=moms, cbs=cbs)
            epochs += st["epochs"]
        else:
            learn.fine_tune(st["epochs"], st["lr"][0], freeze_epochs=st["freeze_epochs"], pct_start=st["pct_start"],
                            div=st["div"], wd=st["wd"], moms=moms, cbs=cbs)
            epochs += st["epochs"] + st["freeze_epochs"]
        acc = float(learn.recorder.values[-1][learn.recorder.metric_names.index("accuracy") - 1])
        print(f"stage {st['name']}: {st['type']} {st['size']} px: accuracy {100 * acc:.2f}% "
              f"({time.time() - t0:.0f} s so far)", flush=True)
    wall = time.time() - t0
    fmt = (lambda v: f"{100 * v:.2f}" if v is not None else "-")
    print(f"RESULT accuracy={fmt(acc)} tta_accuracy={fmt(tta_acc)} wall_s={wall:.1f} epochs={epochs}", flush=True)


if __name__ == "__main__":
    main()
