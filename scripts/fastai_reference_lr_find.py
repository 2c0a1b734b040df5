"""fastai_reference_lr_find.py: fastai's own LR range test bookkeeping on fixed loss curves, as the
reference of tests/test_lr_find.c; written once to tests/ref/fastai_lr_find.txt (a few KB). Run with
the reference venv (scripts/setup_reference.sh):

    /work/main/reference-env/bin/python scripts/fastai_reference_lr_find.py

For each curve (a raw per-batch loss sequence, fixed here), fastai's own code runs as it does inside
Learner.lr_find: an LRFinder callback (start_lr, end_lr, num_it, stop_div) on a stand-in learner
sets each batch's lr (before_batch), fastai's AvgSmoothLoss (Recorder's smooth_loss, beta 0.98)
accumulates the batch loss, the lr and the smoothed loss are recorded as Recorder.after_batch does,
and LRFinder.after_batch decides when to stop (stop_div: smoothed loss > 4x the best; num_it). Then
lr_find's own slicing (recorder.lrs[num_it//10:-5], cut at the first NaN) feeds fastai's
suggestion functions minimum, steep and valley.

Output, one record per line, space-separated:
    curve NAME start_lr end_lr num_it stop_div
    raw L0 L1 ...             the raw losses offered (the run may stop before using them all)
    lr x0 x1 ...              the lrs recorded, one per batch run (repr of Python floats)
    smooth s0 s1 ...          the smoothed losses recorded (float32 values as Python floats)
    batches N                 batches run before fastai stopped
    suggest NAME LR POINT_LR POINT_LOSS   for minimum, steep, valley ("none": fastai raises, too few points)
    end
"""
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from fastai.callback.schedule import LRFinder, minimum, steep, valley
from fastai.learner import AvgSmoothLoss
from fastai.callback.core import CancelFitException
from fastcore.basics import tuplify


class StandInOpt:
    """What LRFinder touches of an optimizer: set_hyper and hypers."""

    def __init__(self):
        self.hypers = [{'lr': 0.0}]

    def set_hyper(self, k, v):
        for h in self.hypers:
            h[k] = v


def run_curve(raw, start_lr=1e-7, end_lr=10, num_it=100, stop_div=True):
    cb = LRFinder(start_lr=start_lr, end_lr=end_lr, num_it=num_it, stop_div=stop_div)
    learn = SimpleNamespace(opt=StandInOpt(), train_iter=0, smooth_loss=None, loss=None)
    cb.learn = learn
    cb.hps = {p: [] for p in cb.scheds.keys()}   # ParamScheduler.before_fit (LRFinder's saves a model)
    cb.best_loss = float('inf')
    smooth = AvgSmoothLoss()
    smooth.reset()                               # Recorder.before_fit
    lrs, losses = [], []
    for loss in raw:
        cb.before_batch()
        learn.loss = torch.tensor(loss, dtype=torch.float32)
        learn.train_iter += 1                    # TrainEvalCallback.after_batch (order -10)
        smooth.accumulate(learn)                 # Recorder.after_batch (order 50)
        lrs.append(learn.opt.hypers[-1]['lr'])
        losses.append(smooth.value)
        learn.smooth_loss = smooth.value
        try:
            cb.after_batch()                     # LRFinder (ParamScheduler, order 60)
        except CancelFitException:
            break
    # Learner.lr_find's suggestions
    num_it = cb.num_it
    s_lrs, s_losses = torch.tensor(lrs[num_it // 10:-5]), torch.tensor(losses[num_it // 10:-5])
    nan_idxs = torch.nonzero(torch.isnan(s_losses.view(-1)))
    if len(nan_idxs) > 0:
        drop = min(nan_idxs)
        s_lrs, s_losses = s_lrs[:drop], s_losses[:drop]
    sugg = []
    for f in tuplify((minimum, steep, valley)):
        try:
            lr, (plr, ploss) = f(s_lrs, s_losses, num_it)
        except (IndexError, RuntimeError):  # too few points (steep needs two): fastai raises
            sugg.append((f.__name__, None, None, None))
            continue
        sugg.append((f.__name__, float(lr), float(plr), float(ploss)))
    return lrs, [float(v) for v in losses], len(lrs), sugg


def curves():
    """Fixed curves: a typical range test (flat, falling, rising to divergence, with a wobble), one
    that never diverges, one that falls in two valleys, one that blows up (with and without
    stop_div), and one with too few num_it (fastai raises it to 6)."""
    out = []
    typical = []
    for i in range(120):
        x = i / 100.0
        typical.append(2.3 - 1.4 / (1 + math.exp(-(x - 0.45) * 14)) + (0.0 if x < 0.75 else 30 * (x - 0.75) ** 2)
                       + 0.05 * math.sin(i * 1.7))
    out.append(('typical', typical, 1e-7, 10.0, 100, True))
    flat = [1.0 - 0.002 * i + 0.01 * math.cos(i * 0.9) for i in range(60)]
    out.append(('gentle', flat, 1e-6, 1e-3, 60, True))
    two = [2.0 - 0.6 * math.sin(i / 12.0) ** 2 - 0.004 * i + 0.02 * math.sin(i * 2.3) for i in range(80)]
    out.append(('two_valleys', two, 1e-5, 1.0, 80, True))
    blowup = [2.0 - 0.01 * i if i < 40 else 2.0 * 1.25 ** (i - 40) for i in range(100)]
    out.append(('blowup', blowup, 1e-7, 10.0, 100, True))
    out.append(('blowup_nostop', blowup, 1e-7, 10.0, 100, False))
    out.append(('few', typical[:10], 1e-3, 1.0, 3, True))
    return out


def main():
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / 'tests/ref/fastai_lr_find.txt'
    lines = [f'# written by scripts/fastai_reference_lr_find.py with fastai; see its docstring for the format']
    for name, raw, start, end, num_it, stop in curves():
        lrs, smooth, n, sugg = run_curve(raw, start, end, num_it, stop)
        lines.append(f'curve {name} {start!r} {end!r} {num_it} {int(stop)}')
        lines.append('raw ' + ' '.join(repr(float(torch.tensor(v, dtype=torch.float32))) for v in raw))
        lines.append('lr ' + ' '.join(repr(float(v)) for v in lrs))
        lines.append('smooth ' + ' '.join(repr(v) for v in smooth))
        lines.append(f'batches {n}')
        for nm, lr, plr, ploss in sugg:
            lines.append(f'suggest {nm} none' if lr is None else f'suggest {nm} {lr!r} {plr!r} {ploss!r}')
        lines.append('end')
    dest.write_text('\n'.join(lines) + '\n')
    print(f'wrote {dest}')


if __name__ == '__main__':
    main()
