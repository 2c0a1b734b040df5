"""fastai_reference_train.py: fastai's OWN training semantics, recorded for tests/test_fastai_train.c.

Run from the repository root with the reference venv (scripts/setup_reference.sh makes it):

    reference-env/bin/python scripts/fastai_reference_train.py

It writes tests/ref/fastai_train.safetensors (float64 unless said; a few KB) and
tests/ref/fastai_params.txt. Nothing here re-implements fastai: every number comes out of a real
fastai 2.8 Learner / Optimizer / callback / loss run on tiny inputs.

  sched.NAME          [steps, groups, 2]: (lr, mom) of every parameter group, read from
                      learn.opt.hypers by a Callback at every training batch (after fastai's
                      ParamScheduler set them), over the whole call; int64 sched.NAME.shape holds
                      (frozen epochs, epochs, batches per epoch, groups). Cases (tiny model on a
                      Datasets of random tensors, bs 2, drop_last as fastai's training DataLoader):
        plain_foc      Learner (one group): fit_one_cycle(2, 1e-3)               2 x 5 batches
        plain_ft       Learner (one group): fine_tune(2, 2e-3)                   1+2 epochs x 5
        vision_ft      vision-style model, _resnet_split's 3 groups: fine_tune(2, 2e-3)   1+2 x 5
        vision_ft_cfg  the same as configs/cpu_transfer_cassava.ini: fine_tune(6, 2e-3,
                       freeze_epochs=2)                                           2+6 x 7
        vision_foc     3 groups, fit_one_cycle(2, 1e-3) (one lr for every group)  2 x 5
        vision_slice   3 groups, fit_one_cycle(3, slice(1e-5, 1e-3)) (even_mults) 3 x 4
  hyper.*             fastai's defaults as the Learner and its Adam hold them: hyper.adam =
                      (mom, sqr_mom, eps, wd) from opt.hypers of a fresh Learner,
                      hyper.learner = (wd_bn_bias, train_bn, moms[0], moms[1], moms[2], lr),
                      hyper.fit_one_cycle = (div, div_final, pct_start),
                      hyper.fine_tune = (base_lr, freeze_epochs, lr_mult, pct_start, div)
  adam.*              fastai's Adam (its own Optimizer and callbacks) on fixed float32 tensors:
                      4 parameters (conv weight, bn weight, linear weight, linear bias) in 2
                      groups (lr 1e-3 / 1e-2), do_wd False on the bn weight and the bias as
                      Learner.create_opt sets it (wd_bn_bias=False), wd 0.01, 3 steps with a
                      one-cycle-like changing lr and mom: adam.p0, adam.g (steps, n), adam.lr
                      (steps, groups), adam.mom (steps), adam.p / grad_avg / sqr_avg after the
                      steps (concatenated in parameter order), adam.group, adam.do_wd (per param).
  loss.*              fastai's losses on fixed logits (n 6, classes 5, float32 values): loss.logits,
                      loss.labels (int64), loss.perm (int64) and loss.lam (float64): MixUp(0.4)'s
                      own before_batch draws (torch seed 7, the permutation recovered by redrawing
                      with the same seed). loss.ls = LabelSmoothingCrossEntropy(0.1) (mean),
                      loss.ls_d its dlogits; loss.ce = CrossEntropyLossFlat; loss.mix_ls,
                      loss.mix_ls_d, loss.mix_ce, loss.mix_ce_d: MixUp.lf (the callback's own loss,
                      training) over those lam and permutation.
  lam.quantiles       [99]: the 1%..99% quantiles of MixUp(0.4).before_batch's lam over one
                      batch of 400000 (fastai's rule lam = max(l, 1-l), l ~ Beta(.4, .4)).
  tta.*               Learner.tta(n=4, beta=0.25) with get_preds replaced by fixed softmax
                      outputs: tta.aug (4, n, C), tta.plain (n, C), tta.out (n, C), float32 as
                      fastai's get_preds returns them. Also checked here (assert) on a real
                      Learner: get_preds returns softmax probabilities (the loss's activation),
                      not logits.
  fastai_params.txt   for vision_learner(resnet18) and vision_learner(xresnet18) (pretrained
                      False, n_out 5): per state-dict parameter name, its parameter group, whether
                      it trains after learn.freeze() (requires_grad, train_bn=True) and whether it
                      gets weight decay (opt.state do_wd, wd_bn_bias=False).
"""
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_torch  # noqa: E402

from fastai.callback.core import Callback  # noqa: E402
from fastai.callback.mixup import MixUp  # noqa: E402
import fastai.callback.progress  # noqa: E402,F401  (Learner.no_bar)
import fastai.callback.schedule  # noqa: E402,F401  (fit_one_cycle, fine_tune)
from fastai.data.core import Datasets  # noqa: E402
from fastai.learner import Learner  # noqa: E402
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy  # noqa: E402
from fastai.optimizer import Adam  # noqa: E402
from fastai.vision.learner import _resnet_split, _xresnet_split, create_head, vision_learner  # noqa: E402
from fastai.vision.models.xresnet import xresnet18  # noqa: E402
import fastai  # noqa: E402
from torchvision.models import resnet18  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "ref", "fastai_train.safetensors")
OUT_PARAMS = os.path.join(HERE, "..", "tests", "ref", "fastai_params.txt")
BS = 2
CLASSES = 3


def make_dls(batches):
    """fastai DataLoaders over a Datasets of random 3x8x8 tensors: `batches` full training batches
    of BS (fastai's training DataLoader drops the last partial one; 1 extra item checks that)."""
    n_train = batches * BS + 1
    g = torch.Generator().manual_seed(batches)
    xs = torch.randn(n_train + 4, 3, 8, 8, generator=g)
    ys = torch.randint(0, CLASSES, (n_train + 4,), generator=g)
    splits = [list(range(n_train)), list(range(n_train, n_train + 4))]
    dsets = Datasets(list(range(n_train + 4)), [[lambda i: xs[i]], [lambda i: ys[i]]], splits=splits)
    dls = dsets.dataloaders(bs=BS, num_workers=0)
    assert len(dls.train) == batches, (len(dls.train), batches)
    return dls


def plain_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, CLASSES))


def vision_model():
    """body (8 children, resnet-like: _resnet_split cuts it at 6) + fastai's create_head."""
    def block(ci, co):
        return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co))
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), block(4, 4), block(4, 4), block(4, 8), block(8, 8))
    return nn.Sequential(body, create_head(8, CLASSES, lin_ftrs=[6]))


class RecordHypers(Callback):
    """Every training batch: (lr, mom) of every group, after ParamScheduler (order 60) set them."""
    order, run_valid = 61, False

    def __init__(self):
        self.rows = []

    def before_batch(self):
        self.rows.append([[h["lr"], h["mom"]] for h in self.opt.hypers])


def run_sched(vision, batches, call):
    torch.manual_seed(0)
    dls = make_dls(batches)
    if vision:
        learn = Learner(dls, vision_model(), loss_func=CrossEntropyLossFlat(), splitter=_resnet_split)
    else:
        learn = Learner(dls, plain_model(), loss_func=CrossEntropyLossFlat())
    rec = RecordHypers()
    learn.add_cb(rec)
    with learn.no_bar(), learn.no_logging():
        call(learn)
    return torch.tensor(rec.rows, dtype=torch.float64), len(learn.opt.hypers)


def schedules(out):
    cases = [
        ("plain_foc", 0, 0, 2, 5, lambda l: l.fit_one_cycle(2, 1e-3)),
        ("plain_ft", 0, 1, 2, 5, lambda l: l.fine_tune(2, 2e-3)),
        ("vision_ft", 1, 1, 2, 5, lambda l: l.fine_tune(2, 2e-3)),
        ("vision_ft_cfg", 1, 2, 6, 7, lambda l: l.fine_tune(6, 2e-3, freeze_epochs=2)),
        ("vision_foc", 1, 0, 2, 5, lambda l: l.fit_one_cycle(2, 1e-3)),
        ("vision_slice", 1, 0, 3, 4, lambda l: l.fit_one_cycle(3, slice(1e-5, 1e-3))),
    ]
    for name, vision, frozen_ep, ep, batches, call in cases:
        rows, groups = run_sched(vision, batches, call)
        assert rows.shape == ((frozen_ep + ep) * batches, groups, 2), (name, rows.shape)
        out["sched." + name] = rows
        out["sched." + name + ".shape"] = torch.tensor([frozen_ep, ep, batches, groups], dtype=torch.int64)


def hypers(out):
    learn = Learner(make_dls(2), plain_model(), loss_func=CrossEntropyLossFlat())
    learn.create_opt()
    h = learn.opt.hypers[0]
    out["hyper.adam"] = torch.tensor([h["mom"], h["sqr_mom"], h["eps"], h["wd"]], dtype=torch.float64)
    out["hyper.learner"] = torch.tensor([float(learn.wd_bn_bias), float(learn.train_bn), *learn.moms, learn.lr],
                                        dtype=torch.float64)
    assert learn.wd is None  # the Learner leaves wd to the optimizer's default (Adam's 0.01)
    # the keyword defaults of fit_one_cycle and fine_tune, from the functions themselves
    foc = Learner.fit_one_cycle.__defaults__  # (lr_max, div, div_final, pct_start, wd, moms, ...)
    code = Learner.fit_one_cycle.__code__
    names = code.co_varnames[:code.co_argcount]
    d = dict(zip(names[-len(foc):], foc))
    out["hyper.fit_one_cycle"] = torch.tensor([d["div"], d["div_final"], d["pct_start"]], dtype=torch.float64)
    ft = Learner.fine_tune.__defaults__
    code = Learner.fine_tune.__code__
    names = code.co_varnames[:code.co_argcount]
    d = dict(zip(names[-len(ft):], ft))
    out["hyper.fine_tune"] = torch.tensor([d["base_lr"], d["freeze_epochs"], d["lr_mult"], d["pct_start"], d["div"]],
                                          dtype=torch.float64)


def adam(out):
    g = torch.Generator().manual_seed(3)
    # multiples of 2^-9 / 2^-10: exact in float32 on both sides
    shapes = [(4, 3), (5,), (3, 4), (3,)]  # conv weight, bn weight, linear weight, linear bias
    groups = [0, 0, 1, 1]
    do_wd = [1, 0, 1, 0]
    ps = [nn.Parameter(torch.randint(-1000, 1001, s, generator=g).float() / 512) for s in shapes]
    steps = 3
    grads = [[torch.randint(-1000, 1001, s, generator=g).float() / 1024 for s in shapes] for _ in range(steps)]
    p0 = torch.cat([p.detach().flatten() for p in ps]).double()
    opt = Adam([[ps[0], ps[1]], [ps[2], ps[3]]], lr=1e-3)  # fastai's defaults: mom .9, sqr_mom .99, eps 1e-5, wd .01
    for p, w in zip(ps, do_wd):
        if not w:
            opt.state[p]["do_wd"] = False  # what Learner.create_opt does for norm and bias parameters
    lrs = [[2e-4, 2e-3], [1e-3, 1e-2], [6e-4, 6e-3]]
    moms = [0.95, 0.85, 0.9]
    for s in range(steps):
        opt.set_hyper("lr", lrs[s])
        opt.set_hyper("mom", moms[s])
        for p, gr in zip(ps, grads[s]):
            p.grad = gr.clone()
        opt.step()
    out["adam.p0"] = p0
    out["adam.g"] = torch.stack([torch.cat([x.flatten() for x in gs]) for gs in grads]).double()
    out["adam.lr"] = torch.tensor(lrs, dtype=torch.float64)
    out["adam.mom"] = torch.tensor(moms, dtype=torch.float64)
    out["adam.p"] = torch.cat([p.detach().flatten() for p in ps]).double()
    out["adam.grad_avg"] = torch.cat([opt.state[p]["grad_avg"].flatten() for p in ps]).double()
    out["adam.sqr_avg"] = torch.cat([opt.state[p]["sqr_avg"].flatten() for p in ps]).double()
    out["adam.count"] = torch.tensor([p.numel() for p in ps], dtype=torch.int64)
    out["adam.group"] = torch.tensor(groups, dtype=torch.int64)
    out["adam.do_wd"] = torch.tensor(do_wd, dtype=torch.int64)
    out["adam.hyper"] = torch.tensor([opt.hypers[0]["sqr_mom"], opt.hypers[0]["eps"], opt.hypers[0]["wd"]],
                                     dtype=torch.float64)


def fake_learn(x, y, loss_func):
    return types.SimpleNamespace(xb=(x,), yb=(y,), x=x, y=y, training=True, loss_func=loss_func)


def losses(out):
    n, c = 6, 5
    g = torch.Generator().manual_seed(5)
    logits = (torch.randint(-2000, 2001, (n, c), generator=g).float() / 256).double()
    labels = torch.randint(0, c, (n,), generator=g)
    out["loss.logits"] = logits
    out["loss.labels"] = labels
    z = logits.clone().requires_grad_(True)
    ls = LabelSmoothingCrossEntropy(eps=0.1)(z, labels)
    ls.backward()
    out["loss.ls"], out["loss.ls_d"] = ls.detach().reshape(1), z.grad.clone()
    # CrossEntropyLossFlat computes in float32 whatever it is given (its TensorBase wrapping), so
    # its cases run on float32 logits, as in training: those references are float32 results.
    z = logits.float().requires_grad_(True)
    ce = CrossEntropyLossFlat()(z, labels)
    ce.backward()
    out["loss.ce"], out["loss.ce_d"] = ce.detach().double().reshape(1), z.grad.double()
    for tag, lf in (("ls", LabelSmoothingCrossEntropy(eps=0.1)), ("ce", CrossEntropyLossFlat())):
        mix = MixUp(0.4)
        x = torch.zeros(n, 1, 2, 2)
        mix.learn = fake_learn(x, labels, lf)
        mix.before_train()
        assert mix.stack_y and mix.learn.loss_func == mix.lf
        torch.manual_seed(7)
        mix.before_batch()
        torch.manual_seed(7)  # redraw what before_batch drew, to learn its permutation
        mix.distrib.sample((n,))
        perm = torch.randperm(n)
        assert torch.equal(mix.yb1[0], labels[perm])
        out["loss.perm"], out["loss.lam"] = perm, mix.lam.double()
        dt = torch.float64 if tag == "ls" else torch.float32
        z = logits.to(dt).clone().requires_grad_(True)
        mix.lam = mix.lam.to(dt)
        loss = mix.lf(z, labels)
        loss.backward()
        out["loss.mix_" + tag], out["loss.mix_%s_d" % tag] = loss.detach().double().reshape(1), z.grad.double()
    # the lam rule as a distribution: one huge batch through before_batch
    mix = MixUp(0.4)
    big = 400000
    mix.learn = fake_learn(torch.zeros(big, 1), torch.zeros(big, dtype=torch.int64), CrossEntropyLossFlat())
    mix.before_train()
    torch.manual_seed(11)
    mix.before_batch()
    lam = mix.lam.double()
    assert lam.min() >= 0.5
    out["lam.quantiles"] = torch.quantile(lam, torch.arange(1, 100, dtype=torch.float64) / 100)


def tta(out):
    n, c, k = 5, 4, 4
    g = torch.Generator().manual_seed(9)
    outs = [F.softmax(torch.randn(n, c, generator=g) * 2, dim=1) for _ in range(k + 1)]
    learn = Learner(make_dls(2), plain_model(), loss_func=CrossEntropyLossFlat())
    # fastai's get_preds gives the loss's activation: softmax probabilities, not logits
    with learn.no_bar(), learn.no_logging():
        preds, _ = learn.get_preds(dl=learn.dls.valid)
        xb = torch.stack([learn.dls.valid_ds[i][0] for i in range(len(learn.dls.valid_ds))])
        learn.model.eval()
        with torch.no_grad():
            assert torch.allclose(preds, F.softmax(learn.model(xb), dim=1), atol=1e-6)
    calls = iter(outs)
    learn.get_preds = lambda *a, **kw: (next(calls), None)
    with learn.no_bar(), learn.no_logging():
        res, _ = learn.tta(n=k, beta=0.25)
    out["tta.aug"] = torch.stack(outs[:k])
    out["tta.plain"] = outs[k]
    out["tta.out"] = res


def params_txt():
    lines = ["# generated by scripts/fastai_reference_train.py (fastai %s): vision_learner(arch, n_out=5,"
             " pretrained=False); NAME GROUP TRAINS_WHEN_FROZEN DO_WD" % fastai.__version__]
    for arch in (resnet18, xresnet18):
        dls = make_dls(2)
        learn = vision_learner(dls, arch, n_out=5, pretrained=False, loss_func=CrossEntropyLossFlat())
        learn.freeze()
        group = {id(p): gi for gi, pl in enumerate(learn.opt.param_lists) for p in pl}
        lines.append("model %s groups %d" % (arch.__name__, len(learn.opt.param_lists)))
        for name, p in learn.model.named_parameters():
            st = learn.opt.state[p]
            lines.append("%s %d %d %d" % (name, group[id(p)], int(p.requires_grad), int(st.get("do_wd", True))))
    with open(OUT_PARAMS, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    torch.set_num_threads(1)
    out = {}
    schedules(out)
    hypers(out)
    adam(out)
    losses(out)
    tta(out)
    st_torch.save(out, OUT, metadata={"generator": "scripts/fastai_reference_train.py",
                                      "fastai": fastai.__version__, "torch": torch.__version__})
    params_txt()
    print("wrote", OUT, "and", OUT_PARAMS)


if __name__ == "__main__":
    main()
