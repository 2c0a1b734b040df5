"""Reference values for tests/test_optim.c (AdamW, label smoothing, mixup).

Run with the reference venv (scripts/setup_reference.sh: fastai 2.8) from the repo root and paste
its output into the block between the "generated" markers of tests/test_optim.c:

    reference-env/bin/python scripts/optim_reference.py

(The block was first made with Debian's PyTorch 1.13 and a hand-written fastai formula; fastai's own
classes give the same digits.)

The inputs are not stored: both sides make them with the same integer generator (lcg below and
in the test) as multiples of powers of two, so they are exact in float32. The maths is float64;
hyperparameters are rounded to float32 first, as the C code receives them.

AdamW: FASTAI is fastai's own Adam (its Optimizer, eps 1e-5, sqr_mom 0.99, decoupled wd
p *= 1 - lr*wd) with do_wd False on the no-decay parameters as Learner.create_opt sets it; TORCH is
torch.optim.AdamW with PyTorch's defaults. lr and beta1 change per step as a one-cycle schedule does.
Loss: fastai's LabelSmoothingCrossEntropy(eps) mixed by fastai's own MixUp.lf (lerp(loss(y_b),
loss(y_a), lam), then the mean; lam and the partners' labels set on the callback), checked against
F.cross_entropy(label_smoothing=eps).
"""
import math

import types

import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.mixup import MixUp
from fastai.losses import LabelSmoothingCrossEntropy
from fastai.optimizer import Adam


def f32(x):
    return float(np.float32(x))


class Lcg:
    """s = s*1103515245 + 12345 mod 2^31; each draw is s >> 8 (23 bits)."""

    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s >> 8


def c_array(ctype, name, values, per_line=6):
    out = ["static const %s %s[%d] = {" % (ctype, name, len(values))]
    for i in range(0, len(values), per_line):
        out.append("    " + ", ".join("%.9g" % v for v in values[i:i + per_line]) + ",")
    out.append("};")
    return "\n".join(out)


# ---------------------------------------------------------------- AdamW
# (name, count, decay, trainable, gradient scale); the model's parameter table in this order.
PARAMS = [
    ("conv", 15, 1, 1, 1.0),
    ("conv2", 1, 1, 1, 2.0 ** -6),
    ("bn", 7, 0, 1, 2.0 ** -12),
    ("frozen", 4, 1, 0, 1.0),
    ("bias", 5, 0, 1, 1.0),
    ("fc", 9, 1, 1, 2.0 ** -20),  # |g| ~ 1e-6: sqrt(v) below fastai's eps
]


def adamw_inputs(steps, seed):
    """Initial params and per-step gradients, as the test makes them."""
    g = Lcg(seed)
    p0 = [[(g.next() % 2001 - 1000) / 512.0 for _ in range(n)] for (_, n, _, _, _) in PARAMS]
    grads = [[[sc * (g.next() % 2001 - 1000) / 1024.0 for _ in range(n)] for (_, n, _, _, sc) in PARAMS]
             for _ in range(steps)]
    return p0, grads


def one_cycle(steps, lr_max, pct=0.25, div=25.0, div_final=1e5, moms=(0.95, 0.85, 0.95)):
    def cos(a, b, t):
        return a + (1 + math.cos(math.pi * (1 - t))) * (b - a) / 2

    lrs, b1s = [], []
    for i in range(steps):
        t = i / steps
        if t < pct:
            u = t / pct
            lrs.append(cos(lr_max / div, lr_max, u))
            b1s.append(cos(moms[0], moms[1], u))
        else:
            u = (t - pct) / (1 - pct)
            lrs.append(cos(lr_max, lr_max / div_final, u))
            b1s.append(cos(moms[1], moms[2], u))
    return [f32(x) for x in lrs], [f32(x) for x in b1s]


def adamw_case(tag, lrs, b1s, beta2, eps, wd, all_decay, seed):
    steps = len(lrs)
    p0, grads = adamw_inputs(steps, seed)
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in p0]
    train = [k for k, (_, _, _, tr, _) in enumerate(PARAMS) if tr]
    dec = [ts[k] for k in train if PARAMS[k][2] or all_decay]
    nodec = [ts[k] for k in train if not (PARAMS[k][2] or all_decay)]
    if tag == "FASTAI":  # fastai's own Adam; the no-decay parameters get do_wd False
        opt = Adam([dec, nodec] if nodec else [dec], lr=lrs[0], mom=b1s[0], sqr_mom=f32(beta2), eps=f32(eps), wd=f32(wd))
        for t in nodec:
            opt.state[t]["do_wd"] = False
        m_key, v_key = "grad_avg", "sqr_avg"
    else:
        groups = [{"params": dec, "weight_decay": f32(wd)}]
        if nodec:
            groups.append({"params": nodec, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(b1s[0], f32(beta2)), eps=f32(eps))
        m_key, v_key = "exp_avg", "exp_avg_sq"
    for s in range(steps):
        if tag == "FASTAI":
            opt.set_hyper("lr", lrs[s])
            opt.set_hyper("mom", b1s[s])
        else:
            for grp in opt.param_groups:
                grp["lr"] = lrs[s]
                grp["betas"] = (b1s[s], f32(beta2))
        for k in train:
            ts[k].grad = torch.tensor(grads[s][k], dtype=torch.float64)
        opt.step()
    p, m, v = [], [], []
    for k in train:
        p += ts[k].detach().tolist()
        m += opt.state[ts[k]][m_key].tolist()
        v += opt.state[ts[k]][v_key].tolist()
    print("/* %s: %d steps, beta2 %g, eps %g, wd %g, %s */" %
          (tag, steps, beta2, eps, wd, "every parameter decays" if all_decay else "per Param.decay"))
    print(c_array("float", tag + "_LR", lrs))
    print(c_array("float", tag + "_B1", b1s))
    print(c_array("double", tag + "_P", p))
    print(c_array("double", tag + "_M", m))
    print(c_array("double", tag + "_V", v))


# ---------------------------------------------------------------- loss
# (tag, n, classes, smoothing, mixup, seed); "specials" per case are set in xent_inputs.
XENT = [
    ("X1", 1, 2, 0.1, 1, 11),
    ("X2", 3, 5, 0.0, 1, 12),
    ("X3", 7, 13, 0.1, 1, 13),
    ("X4", 4, 3, 0.3, 0, 14),
    ("X5", 5, 1000, 0.1, 1, 15),
]
# dlogits columns stored for the 1000-class case, besides each row's two labels.
X5_COLS = [0, 1, 499, 998, 999]


def xent_inputs(n, k, seed):
    """Logits, labels and lam as the test makes them. Row 3 of a 7-row case gets +120 (a shift the
    softmax must not notice); rows 0-2 get lam 1, labels_b = labels_a, lam 0.5."""
    g = Lcg(seed)
    z = [[(g.next() % 4001 - 2000) / 256.0 for _ in range(k)] for _ in range(n)]
    la = [g.next() % k for _ in range(n)]
    lb = [g.next() % k for _ in range(n)]
    lam = [0.5 + (g.next() % 129) / 256.0 for _ in range(n)]
    if n == 7:
        z[3] = [x + 120.0 for x in z[3]]
        lam[0] = 1.0
        lb[1] = la[1]
        lam[2] = 0.5
    return z, la, lb, lam


def fastai_mixup_loss(z, ya, yb, lam, eps):
    """fastai's MixUp.lf over LabelSmoothingCrossEntropy(eps), with the callback's lam and partner
    labels set by hand (what its before_batch draws)."""
    mix = MixUp(0.4)
    mix.learn = types.SimpleNamespace(training=True, loss_func=LabelSmoothingCrossEntropy(eps=eps))
    mix.before_train()
    mix.lam, mix.yb1 = lam, (yb,)
    return mix.lf(z, ya)


def xent_case(tag, n, k, eps, mix, seed):
    z, la, lb, lam = xent_inputs(n, k, seed)
    eps = f32(eps)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    ya, yb = torch.tensor(la), torch.tensor(lb)
    lt = torch.tensor(lam, dtype=torch.float64)
    if mix:
        loss = fastai_mixup_loss(zt, ya, yb, lt, eps)
        check = torch.lerp(F.cross_entropy(zt, yb, reduction="none", label_smoothing=eps),
                           F.cross_entropy(zt, ya, reduction="none", label_smoothing=eps), lt).mean()
    else:
        loss = LabelSmoothingCrossEntropy(eps=eps)(zt, ya)
        check = F.cross_entropy(zt, ya, label_smoothing=eps)
    assert abs(loss.item() - check.item()) < 1e-12, (tag, loss.item(), check.item())
    loss.backward()
    d = zt.grad
    print("/* %s: n %d, classes %d, smoothing %g, %s */" % (tag, n, k, eps, "mixup" if mix else "no mixup"))
    print("static const double %s_LOSS = %.9g;" % (tag, loss.item()))
    if k <= 64:
        print(c_array("double", tag + "_D", d.flatten().tolist()))
    else:
        sel = []
        for i in range(n):
            sel += [d[i, la[i]].item(), d[i, lb[i]].item()] + [d[i, c].item() for c in X5_COLS]
        print(c_array("double", tag + "_D", sel, per_line=7))


def main():
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float64)
    import fastai
    print("/* generated by scripts/optim_reference.py (fastai %s, torch %s) */" % (fastai.__version__, torch.__version__))
    lrs, b1s = one_cycle(8, 0.05)
    adamw_case("FASTAI", lrs, b1s, 0.99, 1e-5, 0.01, 0, 1)
    adamw_case("TORCH", [f32(1e-3)] * 5, [f32(0.9)] * 5, 0.999, 1e-8, 0.1, 1, 2)
    for c in XENT:
        xent_case(*c)
    print("/* end generated */")


if __name__ == "__main__":
    main()
