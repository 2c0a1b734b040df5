#!/usr/bin/env python3
"""A PyTorch reproduction of a cnntrain config (written for configs/imagenette_progressive.ini):
it reads the same INI file with the same resolution rules as src/train/config.c (defaults per stage
type, size/batch/loss/transform carried from stage to stage, the validation transform following
the training one) and runs the same schedule with the same semantics as src/train/train.c, so the two
programs can be compared on accuracy and wall time (scripts/gpu_end_to_end.sh).

    python3 scripts/torch_imagenette_progressive.py configs/imagenette_progressive.ini \\
        [--set section.key=value ...] [--device auto|cpu|cuda] [--precision fp32|fp16|bf16]
        [--workers N] [--threads N] [--limit-train N] [--limit-valid N] [--epochs-scale F]
        [--out DIR] [--save] [--no-channels-last]

What is the same as ./train:
  model      [model] arch as models/ builds it (xresnet* with fastai's init_cnn, or torchvision's
             resnet*; the XResNet of scripts/bench_gpu_torch.py, which loads our checkpoints strictly)
  data       folder layout ([data] path/train_dir/valid_dir, class = parent folder, classes sorted,
             .jpg/.jpeg directly in class folders, hidden entries skipped) or the Kaggle CSV layout
             with an is_val column; drop_last and shuffling for training, every image for validation
  transforms fastai: per item Resize(presize) (a random square crop on training, the centre one on
             validation, PIL bilinear), then per batch on the device one resampling through
             flip @ rotate @ zoom, perspective warp and RandomResizedCropGPU (square, scale
             [min_scale, 1]) with reflection padding, bilinear, align_corners=True, then fastai's
             lighting (sigmoid(c * (logit(x) + logit(b)))), each part drawn with its probability;
             validation: the centre crop of the item resized to size. rrc: torchvision
             RandomResizedCrop(size, scale, ratio) + flip; center: CenterCrop(size); resize:
             Resize(round(ratio*size)) + CenterCrop(size). ImageNet mean/std normalisation.
  optimizer  AdamW = fastai's Adam (decoupled wd: p -= lr*wd*p, beta1 = the momentum), no decay on
             batch norm and biases unless wd_bn_bias; the state carries across stages and is
             cleared where fastai's freeze()/unfreeze() clear it (fine_tune's two parts, freeze=)
  schedules  fit_one_cycle: per step pos = step/total, lr cosine lr/div -> lr over pct_start, then
             lr -> lr/div_final; beta1 mom_max -> mom_min -> mom_max. fine_tune(epochs, lr):
             fit_one_cycle(freeze_epochs, lr, pct_start=0.99) then fit_one_cycle(epochs, lr/2,
             pct_start, div) (one parameter group: "frozen" trains everything). fit: constant lr.
  losses     label smoothing (1-eps)*nll + eps*mean(-log_softmax); mixup per sample lam ~
             Beta(a, a), max(lam, 1-lam), partner from a permutation, on the normalised batch
  stages     in file order; tta(n, beta): n passes with the training transforms, averaged softmax,
             lerp(aug, plain, beta); eval: accuracy per test size (eval-<stage>.csv)
  output     per epoch: train loss (mean over the epoch's images), valid loss (with the stage's
             label smoothing), accuracy, time (training + validation); metrics.csv with our columns
             stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size (+ a tta row)
What differs: the random streams (PyTorch's, not ours), and ours samples the source image once
through the composed item + batch maps where fastai (and this script) resample twice.
Not implemented, refused with a message: stage types progressive and fixres, [model] pretrained
and the cnn_learner (*_fastai_head) models, [data] fraction < 1, a CSV without is_val, [run]
stop_after, the fastai transform without a presize.

On a GPU: bf16/fp16 autocast as [run] precision (or --precision) says, channels-last, fused AdamW
(torch 2.x), cudnn.benchmark, DataLoader workers = [run] threads or the core count, pinned memory.
On a CPU it computes in fp32, as ./train does (--precision bf16 forces autocast there, for tests).
Last line: RESULT accuracy=<last epoch> tta_accuracy=<or -> wall_s= run_dir=
"""
import argparse
import configparser
import math
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gpu_torch import XRESNETS, autocast_for, build_model, make_adamw, param_count  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def fail(msg):
    raise SystemExit(f"torch_imagenette_progressive: {msg}")


# ================================================================ the config schema (src/train/config.c)
STAGE_TYPES = ["fit_one_cycle", "fine_tune", "fit", "progressive", "fixres", "tta", "eval"]
TRAINING = {"fit_one_cycle", "fine_tune", "fit", "progressive", "fixres"}
CYCLE = {"fit_one_cycle", "fine_tune", "progressive"}
SIZED = TRAINING | {"tta"}
ALL = SIZED | {"eval"}
TF_KINDS = ["fastai", "rrc", "center", "resize"]
VALID_KINDS = ["fastai", "center", "resize", "squash"]
IMPLEMENTED_TYPES = {"fit_one_cycle", "fine_tune", "fit", "tta", "eval"}


class Key:
    """One key: type (int, u64, float, bool, str, lr, sizes, or a list of choices), default text,
    where it lives ('stage', 'train_tf', 'valid_tf' for stage keys), the stage types or transform
    kinds it applies to, carry-over, and its range (lo, hi, lo_open, hi_open)."""

    def __init__(self, name, typ, default=None, where="stage", types=None, kinds=None, carry=False,
                 rng=None, required=False, dep=None):
        self.name, self.typ, self.default, self.where = name, typ, default, where
        self.types, self.kinds, self.carry, self.rng, self.required, self.dep = types, kinds, carry, rng, required, dep


def R(lo, hi, lo_open=False, hi_open=False):
    return (lo, hi, lo_open, hi_open)


GLOBAL_KEYS = {
    "data": [
        Key("format", ["folder", "csv"], "folder"),
        Key("path", "str", required=True),
        Key("train_dir", "str", "train", dep=("format", {"folder"})),
        Key("valid_dir", "str", "val", dep=("format", {"folder"})),
        Key("csv", "str", "train.csv", dep=("format", {"csv"})),
        Key("images_dir", "str", "train_images", dep=("format", {"csv"})),
        Key("valid_pct", "float", "0.2", rng=R(0, 1, True, True), dep=("format", {"csv"})),
        Key("fraction", "float", "1", rng=R(0, 1, True)),
        Key("split_seed", "u64", "42", dep=("format", {"csv"})),
        Key("max_megapixels", "int", "64", rng=R(1, 2000)),
        Key("augment_on", ["auto", "host", "device"], "auto"),  # where ./train warps; here fastai's batch part runs on the device
        Key("on_bad_image", ["skip", "fail"], "skip"),
    ],
    "model": [
        Key("arch", "str", required=True),
        Key("pretrained", "str", ""),
        Key("classes", "int", "0", rng=R(0, 1000000)),
    ],
    "run": [
        Key("device", ["auto", "cpu", "cuda"], "auto"),
        Key("precision", ["fp32", "fp16", "bf16"], "fp32"),
        Key("seed", "u64", "42"),
        Key("out_dir", "str", "runs"),
        Key("name", "str", ""),
        Key("loss_scale", ["auto", "dynamic", "off"], "auto"),
        Key("threads", "int", "0", rng=R(0, 1024)),
        Key("stop_after", "int", "0", rng=R(0, 2000000000)),
    ],
}

FASTAI, RRC, RESIZE = {"fastai"}, {"rrc"}, {"resize"}
STAGE_KEYS = [  # in src/train/config.c's table order, which resolution follows
    Key("epochs", "int", types=TRAINING, rng=R(1, 100000), required=True),
    Key("freeze_epochs", "int", "1", types={"fine_tune"}, rng=R(0, 100000)),
    Key("size", "int", "224", types=SIZED, carry=True, rng=R(8, 4096)),
    Key("batch", "int", "64", types=ALL, carry=True, rng=R(1, 65536)),
    Key("lr", "lr", "1e-3", types=TRAINING, rng=R(0, 10, True)),
    Key("freeze", ["keep", "yes", "no"], "keep", types=TRAINING - {"fine_tune", "fixres"}),
    Key("wd", "float", "0.01", types=TRAINING, rng=R(0, 10)),
    Key("wd_bn_bias", "bool", "false", types=TRAINING),
    Key("pct_start", "float", "0.25", types=CYCLE, rng=R(0, 1)),
    Key("div", "float", "25", types=CYCLE, rng=R(1, 1e9)),
    Key("div_final", "float", "1e5", types=CYCLE, rng=R(1, 1e12)),
    Key("mom_max", "float", "0.95", types=TRAINING, rng=R(0, 1, False, True)),
    Key("mom_min", "float", "0.85", types=CYCLE, rng=R(0, 1, False, True)),
    Key("beta2", "float", "0.99", types=TRAINING, rng=R(0, 1, False, True)),
    Key("eps", "float", "1e-5", types=TRAINING, rng=R(0, 1, True)),
    Key("label_smoothing", "float", "0", types=TRAINING, carry=True, rng=R(0, 1, False, True)),
    Key("mixup", "float", "0", types=TRAINING, carry=True, rng=R(0, 100)),
    Key("transform", TF_KINDS, "fastai", where="train_tf", types=SIZED, carry=True),
    Key("presize", "int", where="train_tf", kinds=FASTAI, rng=R(0, 16384)),
    Key("min_scale", "float", where="train_tf", kinds=FASTAI, rng=R(0, 1, True)),
    Key("flip", "bool", where="train_tf", kinds=FASTAI | RRC),
    Key("max_rotate", "float", where="train_tf", kinds=FASTAI, rng=R(0, 180)),
    Key("max_zoom", "float", where="train_tf", kinds=FASTAI, rng=R(1, 10)),
    Key("max_warp", "float", where="train_tf", kinds=FASTAI, rng=R(0, 1, False, True)),
    Key("max_lighting", "float", where="train_tf", kinds=FASTAI, rng=R(0, 1, False, True)),
    Key("p_affine", "float", where="train_tf", kinds=FASTAI, rng=R(0, 1)),
    Key("p_lighting", "float", where="train_tf", kinds=FASTAI, rng=R(0, 1)),
    Key("scale_min", "float", where="train_tf", kinds=RRC, rng=R(0, 1, True)),
    Key("scale_max", "float", where="train_tf", kinds=RRC, rng=R(0, 1, True)),
    Key("ratio_min", "float", where="train_tf", kinds=FASTAI | RRC, rng=R(0, 100, True)),
    Key("ratio_max", "float", where="train_tf", kinds=FASTAI | RRC, rng=R(0, 100, True)),
    Key("resize_ratio", "float", where="train_tf", kinds=RESIZE, rng=R(1, 4)),
    Key("valid_transform", VALID_KINDS, where="valid_tf", types=ALL),
    Key("valid_presize", "int", where="valid_tf", kinds=FASTAI, rng=R(0, 16384)),
    Key("valid_resize_ratio", "float", where="valid_tf", kinds=RESIZE | {"squash"}, rng=R(1, 4)),
    Key("initial_scale", "float", "0.5", types={"progressive"}, rng=R(0, 1, True)),
    Key("delay_fraction", "float", "0.5", types={"progressive"}, rng=R(0, 1)),
    Key("finetune_fraction", "float", "0.2", types={"progressive"}, rng=R(0, 1)),
    Key("size_increment", "int", "4", types={"progressive"}, rng=R(1, 512)),
    Key("mode", ["resize", "crop"], "resize", types={"progressive"}),
    Key("trainable", ["head", "head,final_bn"], "head,final_bn", types={"fixres"}),
    Key("n", "int", "4", types={"tta"}, rng=R(1, 1000)),
    Key("beta", "float", "0.25", types={"tta"}, rng=R(0, 1)),
    Key("sizes", "sizes", types={"eval"}, rng=R(8, 4096), required=True),
]
STAGE_KEY = {k.name: k for k in STAGE_KEYS}
# the field a transform key sets in its transform (valid_presize -> presize)
TF_FIELD = {"transform": "kind", "valid_transform": "kind", "valid_presize": "presize", "valid_resize_ratio": "resize_ratio"}
TYPE_DEFAULTS = {  # src/train/config.c type_defaults[]: fastai's fine_tune, PyTorch's AdamW for fit/fixres
    "fine_tune": {"lr": "2e-3", "pct_start": "0.3", "div": "5"},
    "fit": {"mom_max": "0.9", "beta2": "0.999", "eps": "1e-8", "wd_bn_bias": "true"},
    "fixres": {"mom_max": "0.9", "beta2": "0.999", "eps": "1e-8", "wd_bn_bias": "true"},
}


def transform_defaults(kind, train):
    """src/pipeline/augment.c transform_defaults: fastai's aug_transforms and torchvision's defaults."""
    square = kind == "fastai"
    return {"kind": kind, "size": 0, "train": train, "presize": 0, "min_scale": 1.0, "flip": True, "max_rotate": 10.0,
            "max_zoom": 1.1, "max_warp": 0.2, "max_lighting": 0.2, "p_affine": 0.75, "p_lighting": 0.75,
            "scale_min": 0.08, "scale_max": 1.0, "ratio_min": 1.0 if square else 3 / 4,
            "ratio_max": 1.0 if square else 4 / 3, "resize_ratio": 1.14 if kind == "squash" else 1.0}


def parse_value(key, text, where):
    """Text -> value for key, or exit naming where it was set."""
    t = key.typ
    try:
        if isinstance(t, list):
            if text not in t:
                raise ValueError(f"must be one of {', '.join(t)}")
            return text
        if t == "str":
            return text
        if t == "bool":
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError("must be true or false (or yes/no, on/off, 1/0)")
        if t == "u64":
            v = int(text)
            if v < 0 or v >= 2 ** 64:
                raise ValueError("not a non-negative integer below 2^64")
            return v
        if t == "int":
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError("not an integer")
            v = int(text)
        elif t == "float":
            v = float(text)
            if not math.isfinite(v):
                raise ValueError("not a number")
        elif t == "lr":  # "x" or "lo..hi" (fastai's slice(lo, hi)): (hi, lo), lo 0 = none
            lo, sep, hi = text.rpartition("..")
            v, lo = float(hi), float(lo) if sep else 0.0
            if sep and not 0 < lo <= v:
                raise ValueError("a range lo..hi needs 0 < lo <= hi")
        elif t == "sizes":
            v = [int(s.strip()) for s in text.split(",")]
            if not v or len(v) > 16:
                raise ValueError("1 to 16 sizes")
        else:
            raise AssertionError(t)
    except ValueError as e:
        msg = str(e) if not str(e).startswith(("could not", "invalid literal")) else "not a number"
        fail(f"{where}: {key.name} = {text}: {msg}")
    if key.rng:
        r_lo, r_hi, lo_open, hi_open = key.rng
        for x in (v if t == "sizes" else [v]):
            if (x <= r_lo if lo_open else x < r_lo) or (x >= r_hi if hi_open else x > r_hi):
                fail(f"{where}: {key.name} = {text}: must be {'>' if lo_open else '>='} {r_lo:g} and "
                     f"{'<' if hi_open else '<='} {r_hi:g}")
    return (v, lo) if t == "lr" else v


def read_ini(path, overrides):
    """The INI as {section title: {key: value}}, in file order, with --set overrides applied
    ("section.key=value", "stage NAME.key=value" or "NAME.key=value")."""
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"), strict=True,
                                   default_section="\x00none", empty_lines_in_values=False)
    cp.optionxform = str  # keys are case-sensitive, as ours are
    try:
        with open(path, encoding="utf-8-sig") as f:
            cp.read_file(f)
    except (OSError, configparser.Error) as e:
        fail(f"{path}: {e}")
    ini = {}
    for title in cp.sections():
        words = title.split(None, 1)
        if words[0] not in ("data", "model", "run", "stage"):
            fail(f"{path}: unknown section [{title}]; sections: [data], [model], [run], [stage NAME]")
        if words[0] == "stage" and len(words) < 2:
            fail(f"{path}: [stage] needs a name: [stage NAME]")
        if words[0] != "stage" and len(words) > 1:
            fail(f"{path}: [{words[0]}] takes no name (got '{words[1]}')")
        name = "stage " + words[1].strip() if words[0] == "stage" else words[0]
        sec = {}
        for k, v in cp.items(title):
            v = v.strip()
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                v = v[1:-1]
            if not v:
                fail(f"{path}: [{title}] {k} has no value")
            sec[k] = v
        ini[name] = sec
    for text in overrides:
        lhs, eq, value = text.partition("=")
        sec, dot, key = lhs.rpartition(".")
        if not eq or not dot or not key.strip() or not value.strip():
            fail(f"--set {text}: expected section.key=value (a stage: stage NAME.key=value)")
        sec, key, value = sec.strip(), key.strip(), value.strip()
        if sec not in ("data", "model", "run"):
            sec = "stage " + (sec[5:].strip() if sec.startswith("stage ") else sec)
            if sec not in ini:
                stages = ", ".join(s[6:] for s in ini if s.startswith("stage ")) or "none"
                fail(f"--set {text}: no section [data], [model], [run] or stage named '{sec[6:]}' (stages: {stages})")
        ini.setdefault(sec, {})[key] = value
    return ini


def resolve(path, overrides):
    """The Config as src/train/config.c resolves it: {'data', 'model', 'run': {key: value}, 'stages': [...]}."""
    ini = read_ini(path, overrides)
    cfg = {}
    for sec, keys in GLOBAL_KEYS.items():
        vals, given = {}, ini.get(sec, {})
        for k in keys:
            if k.default is not None:
                vals[k.name] = parse_value(k, k.default, "default")
        known = {k.name: k for k in keys}
        for name in given:
            if name not in known:
                fail(f"{path}: unknown key '{name}' in [{sec}]; keys: {', '.join(known)}")
        for k in keys:
            applies = k.dep is None or vals[k.dep[0]] in k.dep[1]
            if k.name in given:
                if not applies:
                    fail(f"{path}: [{sec}] '{k.name}' does not apply when {k.dep[0]} = {vals[k.dep[0]]}")
                vals[k.name] = parse_value(k, given[k.name], f"{path} [{sec}]")
            elif k.required and applies:
                fail(f"{path}: [{sec}] has no '{k.name}' (required)")
        cfg[sec] = vals
    stages = []
    for title, given in ini.items():
        if title.startswith("stage "):
            stages.append(resolve_stage(path, title[6:], given, stages))
    if not stages:
        fail(f"{path}: no [stage NAME] section")
    cfg["stages"] = stages
    return cfg


def key_applies(key, st):
    """Whether a stage key applies to stage st (its type, and for transform parameters its kind)."""
    if key.where == "stage":
        return st["type"] in key.types
    if key.name in ("transform", "valid_transform"):
        return st["type"] in key.types
    head = STAGE_KEY["transform" if key.where == "train_tf" else "valid_transform"]
    return st["type"] in head.types and st[key.where]["kind"] in key.kinds


def resolve_stage(path, name, given, stages):
    where = f"{path} [stage {name}]"
    if "type" not in given:
        fail(f"{where} has no 'type' (required: {', '.join(STAGE_TYPES)})")
    typ = given["type"]
    if typ not in STAGE_TYPES:
        fail(f"{where}: type = {typ}: must be one of {', '.join(STAGE_TYPES)}")
    for k in given:
        if k != "type" and k not in STAGE_KEY:
            fail(f"{where}: unknown key '{k}'; keys of a stage: {', '.join(STAGE_KEY)}")
    st = {"name": name, "type": typ, "train_tf": transform_defaults("fastai", True),
          "valid_tf": transform_defaults("fastai", False)}

    def carry_source(key):
        for prev in reversed(stages):
            if key_applies(key, prev):
                return prev
        return None

    # stage fields: the type's default, or carried from the most recent earlier stage where they apply
    for k in STAGE_KEYS:
        if k.where != "stage":
            continue
        src = carry_source(k) if k.carry and key_applies(k, st) else None
        if src is not None:
            st[k.name] = src[k.name]
        else:
            default = TYPE_DEFAULTS.get(typ, {}).get(k.name, k.default)
            if default is not None:
                st[k.name] = parse_value(k, default, "default")
    touched_train = False
    for k in STAGE_KEYS:
        text = given.get(k.name)
        if k.where == "train_tf" and text is not None:
            touched_train = True
        if text is not None and not key_applies(k, st):
            if k.where == "stage" or k.name in ("transform", "valid_transform"):
                fail(f"{where}: a stage of type {typ} takes no '{k.name}'")
            head = "transform" if k.where == "train_tf" else "valid_transform"
            fail(f"{where}: '{k.name}' does not apply when {head} = {st[k.where]['kind']}")
        if k.name == "transform":  # the kind carries; its parameters only while the kind stays the same
            src = carry_source(k) if key_applies(k, st) else None
            kind = src["train_tf"]["kind"] if src else "fastai"
            if text is not None:
                kind = parse_value(k, text, where)
            st["train_tf"] = dict(src["train_tf"]) if src and src["train_tf"]["kind"] == kind else transform_defaults(kind, True)
            continue
        if k.name == "valid_transform":  # follows the training transform
            prev = stages[-1] if stages else None
            carry = prev is not None and not touched_train
            tk = st["train_tf"]["kind"]
            kind = prev["valid_tf"]["kind"] if carry else ("resize" if tk == "rrc" else tk)
            if text is not None:
                kind = parse_value(k, text, where)
            if carry and prev["valid_tf"]["kind"] == kind:
                st["valid_tf"] = dict(prev["valid_tf"])
            else:
                st["valid_tf"] = transform_defaults(kind, False)
                if kind == "fastai" and tk == "fastai":
                    st["valid_tf"]["presize"] = st["train_tf"]["presize"]
                if kind == "resize" and tk == "resize":
                    st["valid_tf"]["resize_ratio"] = st["train_tf"]["resize_ratio"]
            continue
        if text is not None:
            v = parse_value(k, text, where)
            if k.where == "stage":
                st[k.name] = v
            else:
                st[k.where][TF_FIELD.get(k.name, k.name)] = v
        elif k.required and key_applies(k, st):
            fail(f"{where} has no '{k.name}', which a {typ} stage requires")
    t = st["train_tf"]
    if t["kind"] == "rrc" and t["scale_min"] > t["scale_max"]:
        fail(f"{where}: scale_min = {t['scale_min']:g} is larger than scale_max = {t['scale_max']:g}")
    if t["kind"] in ("rrc", "fastai") and t["ratio_min"] > t["ratio_max"]:
        fail(f"{where}: ratio_min = {t['ratio_min']:g} is larger than ratio_max = {t['ratio_max']:g}")
    if typ in TRAINING and st["batch"] < 2:
        fail(f"{where}: batch = {st['batch']}: batch norm needs at least 2 images per training batch")
    if typ == "progressive" and st["delay_fraction"] + st["finetune_fraction"] > 1:
        fail(f"{where}: delay_fraction + finetune_fraction must be at most 1")
    if typ == "eval":
        st["size"] = max(st["sizes"])
    t["size"] = st["valid_tf"]["size"] = st["size"]
    t["train"], st["valid_tf"]["train"] = True, False
    return st


def check_implemented(cfg, path):
    """Refuse, before any work, what this reproduction does not do."""
    no = []
    for st in cfg["stages"]:
        if st["type"] not in IMPLEMENTED_TYPES:
            no.append(f"[stage {st['name']}] type = {st['type']}")
        # every stage validates with valid_tf; training and tta stages also use train_tf
        used = [st["valid_tf"]] + ([st["train_tf"]] if st["type"] in SIZED else [])
        if any(tf["kind"] == "fastai" and tf["presize"] <= 0 for tf in used):
            no.append(f"[stage {st['name']}] the fastai transform without a presize (items of unequal sizes)")
    arch = cfg["model"]["arch"]
    if arch not in XRESNETS and arch not in ("resnet18", "resnet34", "resnet50", "resnet101"):
        no.append(f"[model] arch = {arch} (only the plain xresnet*/resnet* models)")
    if cfg["model"]["pretrained"]:
        no.append("[model] pretrained")
    if cfg["data"]["fraction"] != 1:
        no.append("[data] fraction < 1 (use --limit-train / --limit-valid)")
    if cfg["run"]["stop_after"]:
        no.append("[run] stop_after")
    if no:
        fail(f"{path}: not implemented by this reproduction: " + "; ".join(no))


# ================================================================ data (src/pipeline/dataset.c)
def is_image(name):
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in (".jpg", ".jpeg")


def list_folder(root, train_dir, valid_dir):
    def entries(d):
        try:
            return sorted(e for e in os.listdir(d) if not e.startswith("."))
        except OSError as e:
            fail(f"{d}: cannot read the folder: {e}")

    train, valid, classes = [], [], []
    tdir, vdir = os.path.join(root, train_dir), os.path.join(root, valid_dir)
    for c in entries(tdir):
        p = os.path.join(tdir, c)
        if os.path.isdir(p):
            files = [os.path.join(p, f) for f in entries(p) if is_image(f) and os.path.isfile(os.path.join(p, f))]
            if files:
                train += [(f, len(classes)) for f in files]
                classes.append(c)
    if not classes:
        fail(f"{tdir}: no class folder in it holds a .jpg or .jpeg image")
    index = {c: i for i, c in enumerate(classes)}
    for c in entries(vdir):
        p = os.path.join(vdir, c)
        if os.path.isdir(p) and c in index:
            valid += [(os.path.join(p, f), index[c]) for f in entries(p) if is_image(f) and os.path.isfile(os.path.join(p, f))]
    if not valid:
        fail(f"{vdir}: the validation split is empty")
    return classes, sorted(train), sorted(valid)


def list_csv(root, csv_name, images_dir):
    import csv as csvmod
    path = os.path.join(root, csv_name)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csvmod.DictReader(f))
    except OSError as e:
        fail(f"{path}: {e}")
    if not rows or "image_id" not in rows[0] or "label" not in rows[0]:
        fail(f"{path}: the header must name an image_id and a label column")
    col = "is_val" if "is_val" in rows[0] else "is_valid" if "is_valid" in rows[0] else None
    if col is None:
        fail(f"{path}: no is_val column: the seeded valid_pct split is ./train's own and is not reproduced here")
    ints = sum(bool(re.fullmatch(r"[+-]?\d+", r["label"] or "")) for r in rows)
    int_mode = 2 * ints > len(rows)
    labels = sorted({r["label"] for r in rows}, key=(lambda s: int(s)) if int_mode else None)
    index = {lab: i for i, lab in enumerate(labels)}
    train, valid = [], []
    for r in rows:
        (valid if r[col].strip().lower() in ("1", "true") else train).append(
            (os.path.join(root, images_dir, r["image_id"]), index[r["label"]]))
    return [str(lab) for lab in labels], train, valid


def item_crop_box(w, h, presize, px, py):
    """fastai Resize(presize, method=crop): the largest square at int(pct * slack) (src/pipeline/augment.c)."""
    m = min(w / presize, h / presize)
    side = int(m * presize)
    x0, y0 = int(px * (w - side)), int(py * (h - side))
    return (x0, y0, x0 + side, y0 + side)


class Images(torch.utils.data.Dataset):
    """Decoded and item-transformed images as uint8 HWC tensors: the fastai item (presize square) or
    the whole torchvision transform (rrc, center, resize). None for a bad image (skip) or an error."""

    def __init__(self, samples, tf, max_pixels, strict):
        import torchvision.transforms as T
        self.samples, self.tf, self.max_pixels, self.strict = samples, tf, max_pixels, strict
        bil = T.InterpolationMode.BILINEAR if hasattr(T, "InterpolationMode") else Image.BILINEAR
        k, s = tf["kind"], tf["size"]
        if k == "rrc" and tf["train"]:
            parts = [T.RandomResizedCrop(s, scale=(tf["scale_min"], tf["scale_max"]),
                                         ratio=(tf["ratio_min"], tf["ratio_max"]), interpolation=bil)]
            if tf["flip"]:
                parts.append(T.RandomHorizontalFlip(0.5))
            self.pil = T.Compose(parts)
        elif k == "center":
            self.pil = T.CenterCrop(s)
        elif k == "squash":  # fastai RandomResizedCrop's validation: squash to size + val_xtra, centre
            side = s + int(math.ceil((tf["resize_ratio"] - 1) * s / 8 - 1e-6)) * 8
            self.pil = T.Compose([T.Resize((side, side), interpolation=bil), T.CenterCrop(s)])
        elif k in ("resize", "rrc"):  # rrc's evaluation pair is Resize + CenterCrop
            self.pil = T.Compose([T.Resize(int(round(tf["resize_ratio"] * s)), interpolation=bil), T.CenterCrop(s)])
        else:
            self.pil = None

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                if im.width * im.height > self.max_pixels:
                    raise ValueError(f"{im.width}x{im.height} is more than [data] max_megapixels")
                im = im.convert("RGB")
        except Exception as e:  # noqa: BLE001  (PIL raises many kinds)
            if self.strict:
                raise RuntimeError(f"{path}: {e}") from e
            print(f"torch_imagenette_progressive: {path}: {e}, left out", file=sys.stderr)
            return None
        if self.pil is not None:
            im = self.pil(im)
        else:
            P = self.tf["presize"]
            px, py = (torch.rand(2).tolist() if self.tf["train"] else (0.5, 0.5))
            im = im.crop(item_crop_box(im.width, im.height, P, px, py)).resize((P, P), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()), label  # HWC: permuted on the device


def collate(batch):
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.int64)


# ================================================================ fastai's batch transforms on the device
def mat(a, b, c, d, e, f, n):
    """(n, 3, 3) float64 affine matrices [[a b c] [d e f] [0 0 1]] from per-image tensors/floats."""
    m = torch.zeros(n, 3, 3, dtype=torch.float64)
    for i, v in enumerate((a, b, c, d, e, f)):
        m[:, i // 3, i % 3] = v
    m[:, 2, 2] = 1
    return m


def perspective(xt, yt):
    """fastai's _WarpCoord: the homographies taking the perturbed corners to the square's corners."""
    n = xt.shape[0]
    orig = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=torch.float64).expand(n, 4, 2)
    targ = torch.stack([torch.stack([-1 - yt, -1 - xt], 1), torch.stack([-1 + yt, 1 + xt], 1),
                        torch.stack([1 + yt, -1 + xt], 1), torch.stack([1 - yt, 1 - xt], 1)], 1)
    A = torch.zeros(n, 8, 8, dtype=torch.float64)
    b = torch.zeros(n, 8, dtype=torch.float64)
    one = torch.ones(n, dtype=torch.float64)
    for i in range(4):
        p1x, p1y, p2x, p2y = orig[:, i, 0], orig[:, i, 1], targ[:, i, 0], targ[:, i, 1]
        A[:, 2 * i, 0], A[:, 2 * i, 1], A[:, 2 * i, 2] = p2x, p2y, one
        A[:, 2 * i, 6], A[:, 2 * i, 7] = -p1x * p2x, -p1x * p2y
        A[:, 2 * i + 1, 3], A[:, 2 * i + 1, 4], A[:, 2 * i + 1, 5] = p2x, p2y, one
        A[:, 2 * i + 1, 6], A[:, 2 * i + 1, 7] = -p1y * p2x, -p1y * p2y
        b[:, 2 * i], b[:, 2 * i + 1] = p1x, p1y
    c = torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1)
    return torch.cat([c, one.unsqueeze(1)], 1).view(n, 3, 3)


def fastai_rrc_boxes(tf, w, h, n, gen):
    """RandomResizedCropGPU's boxes (x, y, w, h) in the w x h affine output: ten tries of an area in
    [min_scale, 1] and a log-uniform ratio, rounded half to even; else (and on validation) the
    centre crop of the ratio range."""
    r0, r1 = tf["ratio_min"], tf["ratio_max"]
    boxes = []
    for _ in range(n):
        box = None
        for _ in range(10 if tf["train"] else 0):
            u = torch.rand(2, generator=gen, dtype=torch.float64).tolist()
            area = (tf["min_scale"] + (1 - tf["min_scale"]) * u[0]) * w * h
            ratio = math.exp(math.log(r0) + (math.log(r1) - math.log(r0)) * u[1])
            nw, nh = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < nw <= w and 0 < nh <= h:
                y = int(torch.randint(0, h - nh + 1, (1,), generator=gen))
                x = int(torch.randint(0, w - nw + 1, (1,), generator=gen))
                box = (x, y, nw, nh)
                break
        if box is None:
            if w / h < r0:
                cw, ch = w, int(w / r0)
            elif w / h > r1:
                cw, ch = int(h * r1), h
            else:
                cw, ch = w, h
            box = ((w - cw) // 2, (h - ch) // 2, cw, ch)
        boxes.append(box)
    return torch.tensor(boxes, dtype=torch.float64)


def fastai_draw(tf, B, H, W, gen):
    """aug_transforms' random parameters for B items of H x W (src/pipeline/augment.c fastai_draw): each part
    drawn, then kept with its probability (flip 0.5; rotate, zoom, each warp axis p_affine;
    brightness, contrast p_lighting), else neutral; the RandomResizedCropGPU box when min_scale != 1."""
    u = lambda: torch.rand(B, generator=gen, dtype=torch.float64)  # noqa: E731
    f64 = dict(dtype=torch.float64)
    p = {"flip": torch.zeros(B, dtype=torch.bool), "deg": torch.zeros(B, **f64), "zoom": torch.ones(B, **f64),
         "col": torch.full((B,), 0.5, **f64), "row": torch.full((B,), 0.5, **f64), "wx": torch.zeros(B, **f64),
         "wy": torch.zeros(B, **f64), "bright": torch.full((B,), 0.5, **f64), "contrast": torch.ones(B, **f64)}
    pa = tf["p_affine"]
    if tf["train"]:
        if tf["flip"]:
            p["flip"] = u() < 0.5
        if tf["max_rotate"]:
            d = (2 * u() - 1) * tf["max_rotate"]
            p["deg"] = torch.where(u() < pa, d, p["deg"])
        if tf["max_zoom"] > 1:
            z = 1 + (tf["max_zoom"] - 1) * u()
            p["zoom"] = torch.where(u() < pa, z, p["zoom"])
            p["col"], p["row"] = u(), u()
        if tf["max_warp"]:
            dx, dy = (2 * u() - 1) * tf["max_warp"], (2 * u() - 1) * tf["max_warp"]
            p["wx"], p["wy"] = torch.where(u() < pa, dx, p["wx"]), torch.where(u() < pa, dy, p["wy"])
        if tf["max_lighting"]:
            L, pl = tf["max_lighting"], tf["p_lighting"]
            b = 0.5 * (1 - L) + L * u()
            p["bright"] = torch.where(u() < pl, b, p["bright"])
            c = torch.exp(math.log(1 - L) + (-2 * math.log(1 - L)) * u())
            p["contrast"] = torch.where(u() < pl, c, p["contrast"])
    p["box"] = fastai_rrc_boxes(tf, W, H, B, gen) if tf["min_scale"] != 1 else None
    return p


def fastai_grid(p, B, H, W, S, dev):
    """The sampling grid (B, S, S, 2) over the items: output g (linspace -1..1 over S) -> the
    RandomResizedCropGPU box in the item-sized affine output -> flip @ rotate @ zoom (with
    _prepare_mat's aspect correction) -> the perspective warp, all in align_corners=True coordinates."""
    K = torch.eye(3, dtype=torch.float64).expand(B, 3, 3).clone()
    if p["box"] is not None:
        bx = p["box"]
        nx, ny = 2.0 / (W - 1), 2.0 / (H - 1)
        kx, ky = 0.5 * (bx[:, 2] - 1), 0.5 * (bx[:, 3] - 1)
        K = mat(nx * kx, 0, nx * (bx[:, 0] + kx) - 1, 0, ny * ky, ny * (bx[:, 1] + ky) - 1, B)
    th = p["deg"] * math.pi / 180
    A = mat(1 - 2 * p["flip"].double(), 0, 0, 0, 1, 0, B)
    A = A @ mat(torch.cos(th), torch.sin(th), 0, -torch.sin(th), torch.cos(th), 0, B)
    zs = 1 / p["zoom"]
    A = A @ mat(zs, 0, (1 - zs) * (2 * p["col"] - 1), 0, zs, (1 - zs) * (2 * p["row"] - 1), B)
    A[:, 0, 1] *= H / W
    A[:, 1, 0] *= W / H
    K = A @ K
    if bool((p["wx"] != 0).any() or (p["wy"] != 0).any()):
        K = perspective(p["wx"], p["wy"]) @ K
    lin = torch.linspace(-1, 1, S, device=dev)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, S * S, 3)
    pts = base @ K.to(dev, torch.float32).transpose(1, 2)  # (B, S*S, 3)
    return (pts[..., :2] / pts[..., 2:]).view(B, S, S, 2)


def fastai_batch(x, tf, gen, params=None):
    """aug_transforms(size, min_scale, ...) on a batch of items x (B, 3, H, W) in [0, 1], on x's
    device: one bilinear grid_sample with reflection padding, then fastai's lighting."""
    B, _, H, W = x.shape
    p = params if params is not None else fastai_draw(tf, B, H, W, gen)
    y = F.grid_sample(x, fastai_grid(p, B, H, W, tf["size"], x.device), mode="bilinear", padding_mode="reflection",
                      align_corners=True)
    if bool((p["bright"] != 0.5).any() or (p["contrast"] != 1).any()):
        dev = x.device
        lb = torch.log(p["bright"] / (1 - p["bright"])).to(dev, torch.float32).view(B, 1, 1, 1)
        c = p["contrast"].to(dev, torch.float32).view(B, 1, 1, 1)
        y = y.clamp(1e-7, 1 - 1e-7)
        y = torch.sigmoid(c * (torch.log(y / (1 - y)) + lb))
    return y


def to_model_input(xb, tf, gen, dev, fmt):
    """uint8 (B, H, W, 3) batch from the loader -> the normalised float batch the model sees, on dev."""
    x = xb.to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    if tf["kind"] == "fastai":
        x = fastai_batch(x, tf, gen)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=fmt)


# ================================================================ training (src/train/train.c)
def cosine(start, end, pos):
    w = (1 + math.cos(math.pi * (1 - pos))) / 2
    return (1 - w) * start + w * end


def one_cycle(c, pos):
    """fastai's fit_one_cycle lr and beta1 at pos = step / total (src/train/schedule.c)."""
    if pos < c["pct_start"]:
        q = pos / c["pct_start"]
        return cosine(c["lr"] / c["div"], c["lr"], q), cosine(c["mom_max"], c["mom_min"], q)
    q = (pos - c["pct_start"]) / (1 - c["pct_start"])
    return cosine(c["lr"], c["lr"] / c["div_final"], q), cosine(c["mom_min"], c["mom_max"], q)


def xent(logits, y, smoothing, y2=None, lam=None):
    """Mean cross-entropy with label smoothing and mixup (target lam*onehot(y) + (1-lam)*onehot(y2))."""
    logp = F.log_softmax(logits.float(), 1)
    nll = -logp.gather(1, y.unsqueeze(1)).squeeze(1)
    if y2 is not None:
        nll = lam * nll + (1 - lam) * -logp.gather(1, y2.unsqueeze(1)).squeeze(1)
    if smoothing:
        nll = (1 - smoothing) * nll + smoothing * -logp.mean(1)
    return nll.mean()


def grad_scaler():
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


class Runner:
    def __init__(self, cfg, args, classes, train, valid, run_dir):
        self.cfg, self.args, self.train_s, self.valid_s, self.run_dir = cfg, args, train, valid, run_dir
        self.dev = self.pick_device()
        asked = args.precision or cfg["run"]["precision"]
        if self.dev.type == "cpu" and not args.precision and asked != "fp32":
            self.say(f"precision {asked}: the CPU computes in fp32, as ./train does (--precision bf16 forces autocast)")
            asked = "fp32"
        self.precision = asked
        self.cast = autocast_for(self.dev, asked)
        # [run] loss_scale: auto = dynamic for fp16 (PyTorch's GradScaler, as ./train's), off otherwise
        ls = cfg["run"]["loss_scale"]
        dynamic = ls == "dynamic" or (ls == "auto" and asked == "fp16")
        if dynamic and self.dev.type != "cuda":
            self.say("loss_scale: no GradScaler on the CPU here; training without loss scaling")
        self.scaler = grad_scaler() if dynamic and self.dev.type == "cuda" else None
        self.fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
        if self.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed = cfg["run"]["seed"] % 2 ** 63
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed + 1)     # batch transforms and mixup draws
        self.shuffle = torch.Generator().manual_seed(seed + 2)  # loader order
        n_out = cfg["model"]["classes"] or len(classes)
        if n_out < len(classes):
            fail(f"[model] classes = {n_out} but the data has {len(classes)} classes")
        self.model = build_model(cfg["model"]["arch"], n_out).to(self.dev).to(memory_format=self.fmt)
        self.n_out = n_out
        decay = [p for p in self.model.parameters() if p.ndim > 1]   # conv and linear weights
        rest = [p for p in self.model.parameters() if p.ndim <= 1]   # batch norm, biases
        self.groups = (decay, rest)
        self.new_optimizer()
        self.workers = args.workers if args.workers is not None else (cfg["run"]["threads"] or os.cpu_count() or 1)
        self.epoch = 0  # over all stages, as ./train's T->epoch
        self.metrics = open(os.path.join(run_dir, "metrics.csv"), "w")
        self.metrics.write("stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size\n")
        self.last_acc = self.tta_acc = None
        self.say(f"torch {torch.__version__} on {self.dev}{' (' + torch.cuda.get_device_name(self.dev) + ')' if self.dev.type == 'cuda' else ''}; "
                 f"{cfg['model']['arch']} ({n_out} classes, {param_count(self.model):,} parameters); {len(train)} train / "
                 f"{len(valid)} valid images; {asked}{' autocast' if self.cast else ''}, "
                 f"{'NCHW' if args.no_channels_last else 'channels-last'}, AdamW {self.opt_kind}, {self.workers} loader workers; "
                 f"run folder {run_dir}")

    def pick_device(self):
        name = self.args.device or self.cfg["run"]["device"]
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda" and not torch.cuda.is_available():
            fail("device cuda: torch.cuda.is_available() is False")
        return torch.device(name)

    def say(self, text):
        print(text, flush=True)
        with open(os.path.join(self.run_dir, "log.txt"), "a") as f:
            f.write(text + "\n")

    def new_optimizer(self):
        """A fresh optimizer: empty Adam moments and step counts (fastai's freeze / unfreeze)."""
        groups = [{"params": self.groups[0]}, {"params": self.groups[1]}]
        self.opt, self.opt_kind = make_adamw(groups, self.dev, lr=1e-3)

    def loader(self, samples, tf, batch, train):
        ds = Images(samples, tf, self.cfg["data"]["max_megapixels"] * 1000000, self.cfg["data"]["on_bad_image"] == "fail")
        kw = {}
        if self.workers > 0:
            kw = {"num_workers": self.workers, "persistent_workers": True, "prefetch_factor": 4}
        return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=train, drop_last=train, collate_fn=collate,
                                           pin_memory=self.dev.type == "cuda", generator=self.shuffle if train else None,
                                           **kw)

    def forward(self, x):
        if self.cast:
            with self.cast():
                return self.model(x)
        return self.model(x)

    def evaluate(self, dl, tf, smoothing, want_probs=False):
        """Mean loss (with smoothing), correct count, count; and softmax probabilities and labels."""
        self.model.eval()
        loss_sum, correct, count = torch.zeros((), device=self.dev, dtype=torch.float64), 0, 0
        probs, labels = [], []
        with torch.no_grad():
            for b in dl:
                if b is None:
                    continue
                xb, yb = b
                x, y = to_model_input(xb, tf, self.gen, self.dev, self.fmt), yb.to(self.dev, non_blocking=True)
                out = self.forward(x).float()
                loss_sum += xent(out, y, smoothing).double() * len(y)
                correct += int((out.argmax(1) == y).sum())
                count += len(y)
                if want_probs:
                    probs.append(out.softmax(1))
                    labels.append(y)
        loss = float(loss_sum) / max(count, 1)
        if want_probs:
            return loss, correct, count, torch.cat(probs), torch.cat(labels)
        return loss, correct, count

    def fit(self, st, label, epochs, cycle):
        """One fit call: epochs of training (one-cycle when cycle, else constant lr), validation after each."""
        train_dl = self.loader(self.train_s, st["train_tf"], st["batch"], True)
        valid_dl = self.loader(self.valid_s, st["valid_tf"], st["batch"], False)
        per_epoch = len(train_dl)
        if per_epoch < 1:
            fail(f"stage {st['name']}: {len(self.train_s)} training images make no batch of {st['batch']}")
        total = epochs * per_epoch
        self.say(f"stage {st['name']}: {label}, {epochs} epochs of {per_epoch} batches of {st['batch']} at {st['size']}px")
        self.say(f"{'epoch':<6} {'train_loss':<11} {'valid_loss':<11} {'accuracy':<9} time")
        wd = st["wd"]
        for e in range(epochs):
            t0 = time.perf_counter()
            self.model.train()
            loss_sum, seen = torch.zeros((), device=self.dev, dtype=torch.float64), 0
            for i, b in enumerate(train_dl):
                if b is None:
                    continue
                xb, yb = b
                pos = (e * per_epoch + i) / total
                lr, beta1 = one_cycle(cycle, pos) if cycle else (st["lr"][0], st["mom_max"])
                for g, decays in zip(self.opt.param_groups, (True, st["wd_bn_bias"])):
                    g["lr"], g["betas"], g["eps"], g["weight_decay"] = lr, (beta1, st["beta2"]), st["eps"], wd if decays else 0.0
                x, y = to_model_input(xb, st["train_tf"], self.gen, self.dev, self.fmt), yb.to(self.dev, non_blocking=True)
                y2 = lam = None
                if st["mixup"] > 0:
                    n = len(y)
                    perm = torch.randperm(n, generator=self.gen).to(self.dev)
                    lam = torch.distributions.Beta(st["mixup"], st["mixup"]).sample((n,)).to(self.dev)
                    lam = torch.maximum(lam, 1 - lam)
                    x = lam.view(n, 1, 1, 1) * x + (1 - lam.view(n, 1, 1, 1)) * x[perm]
                    x = x.contiguous(memory_format=self.fmt)
                    y2 = y[perm]
                out = self.forward(x)
                loss = xent(out, y, st["label_smoothing"], y2, lam)
                self.opt.zero_grad(set_to_none=True)
                if self.scaler:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.opt.step()
                loss_sum += loss.detach().double() * len(y)
                seen += len(y)
            train_loss = float(loss_sum) / max(seen, 1)
            if not math.isfinite(train_loss):
                fail(f"stage {st['name']}, epoch {e}: the training loss is {train_loss}; stopping")
            vloss, correct, count = self.evaluate(valid_dl, st["valid_tf"], st["label_smoothing"])
            if self.dev.type == "cuda":
                torch.cuda.synchronize(self.dev)
            dt = time.perf_counter() - t0
            acc = correct / max(count, 1)
            self.last_acc = acc
            self.say(f"{e:<6d} {train_loss:<11.6f} {vloss:<11.6f} {acc:<9.6f} {int(dt) // 60:02d}:{int(dt) % 60:02d}")
            self.metrics.write(f"{st['name']},{self.epoch},{e},{train_loss:.6f},{vloss:.6f},{acc:.6f},{dt:.2f},{st['size']}\n")
            self.metrics.flush()
            self.epoch += 1

    def tta(self, st):
        """fastai's tta(n, beta): the plain pass, n passes with the training transforms, averaged
        softmax, lerp(aug, plain, beta)."""
        plain_dl = self.loader(self.valid_s, st["valid_tf"], st["batch"], False)
        _, correct, count, plain, labels = self.evaluate(plain_dl, st["valid_tf"], 0.0, True)
        aug = torch.zeros_like(plain)
        aug_tf = st["train_tf"]
        aug_dl = self.loader(self.valid_s, aug_tf, st["batch"], False)
        for _ in range(st["n"]):
            _, _, n, probs, lab = self.evaluate(aug_dl, aug_tf, 0.0, True)
            if n != count or not torch.equal(lab, labels):
                fail(f"stage {st['name']}: the TTA passes saw other images than the plain pass (bad images?)")
            aug += probs / st["n"]
        q = aug + st["beta"] * (plain - aug)
        acc = float((q.argmax(1) == labels).float().mean())
        loss = float(-torch.log(q.gather(1, labels.unsqueeze(1)).clamp_min(1e-30)).mean())
        self.tta_acc = acc
        self.say(f"stage {st['name']}: TTA (n={st['n']}, beta={st['beta']:.2f}): accuracy {acc:.6f} (without TTA "
                 f"{correct / max(count, 1):.6f}) on {count} images")
        self.metrics.write(f"{st['name']},{self.epoch},tta,,{loss:.6f},{acc:.6f},,{st['size']}\n")
        self.metrics.flush()

    def eval_sizes(self, st):
        path = os.path.join(self.run_dir, f"eval-{st['name']}.csv")
        with open(path, "w") as f:
            f.write("size,loss,accuracy,images\n")
            self.say(f"stage {st['name']}: evaluation at {len(st['sizes'])} sizes\n{'size':<6} {'loss':<11} {'accuracy':<9}")
            for s in st["sizes"]:
                tf = dict(st["valid_tf"], size=s)
                loss, correct, count = self.evaluate(self.loader(self.valid_s, tf, st["batch"], False), tf, 0.0)
                self.say(f"{s:<6d} {loss:<11.6f} {correct / max(count, 1):<9.6f}")
                f.write(f"{s},{loss:.6f},{correct / max(count, 1):.6f},{count}\n")

    def run_stage(self, st):
        ep = self.scaled
        if st["type"] in TRAINING and st["freeze"] != "keep":
            self.new_optimizer()  # freeze()/unfreeze() on a one-group model: only the state is cleared
        if st["type"] == "fit_one_cycle":
            c = {k: st[k] for k in ("pct_start", "div", "div_final", "mom_max", "mom_min")}
            self.fit(st, "fit_one_cycle", ep(st["epochs"]), dict(c, lr=st["lr"][0]))
        elif st["type"] == "fit":
            self.fit(st, "fit (constant lr)", ep(st["epochs"]), None)
        elif st["type"] == "fine_tune":
            lr = st["lr"][0]
            if st["freeze_epochs"] > 0:
                self.new_optimizer()
                frozen = {"lr": lr, "pct_start": 0.99, "div": 25.0, "div_final": 1e5, "mom_max": st["mom_max"],
                          "mom_min": st["mom_min"]}
                self.fit(st, "fine_tune, frozen", ep(st["freeze_epochs"]), frozen)
            self.new_optimizer()
            c = {k: st[k] for k in ("pct_start", "div", "div_final", "mom_max", "mom_min")}
            self.fit(st, "fine_tune, unfrozen", ep(st["epochs"]), dict(c, lr=lr / 2))
        elif st["type"] == "tta":
            self.tta(st)
        elif st["type"] == "eval":
            self.eval_sizes(st)
        if st["type"] in TRAINING and self.args.save:
            torch.save(self.model.state_dict(), os.path.join(self.run_dir, f"{st['name']}.pt"))

    def scaled(self, epochs):
        f = self.args.epochs_scale
        return epochs if f == 1 else max(1, int(round(epochs * f)))


def describe(st):
    """One stage as resolved: its applicable keys, like the run folder's config.ini of ./train."""
    def fmt(v):
        if isinstance(v, tuple):
            return f"{v[1]:g}..{v[0]:g}" if v[1] else f"{v[0]:g}"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return f"{v:g}"
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)
    parts = {"stage": [], "train_tf": [], "valid_tf": []}
    for k in STAGE_KEYS:
        if key_applies(k, st):
            v = st[k.name] if k.where == "stage" else st[k.where][TF_FIELD.get(k.name, k.name)]
            parts[k.where].append(f"{k.name}={fmt(v)}")
    text = f"[stage {st['name']}] {st['type']}: {' '.join(parts['stage'])}"
    for w in ("train_tf", "valid_tf"):
        if parts[w]:
            text += "\n    " + " ".join(parts[w])
    return text


def limit(samples, n, seed):
    """A fixed random choice of n samples, back in path order."""
    if not n or n >= len(samples):
        return samples
    g = torch.Generator().manual_seed(seed)
    keep = sorted(torch.randperm(len(samples), generator=g)[:n].tolist())
    return [samples[i] for i in keep]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a key, as ./train --set does (stage NAME.key=value for a stage)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: [run] device")
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="default: [run] precision (fp32 on a CPU)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: [run] threads, 0 there = the core count)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--limit-train", type=int, default=0, help="use a fixed random N training images (quick tests)")
    ap.add_argument("--limit-valid", type=int, default=0, help="use a fixed random N validation images")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch count (at least 1)")
    ap.add_argument("--out", help="parent of the run folder (default: [run] out_dir)")
    ap.add_argument("--save", action="store_true", help="write each training stage's state_dict (STAGE.pt)")
    ap.add_argument("--no-channels-last", action="store_true")
    args = ap.parse_args()
    if args.epochs_scale <= 0:
        fail("--epochs-scale must be positive")
    t_start = time.perf_counter()
    cfg = resolve(args.config, args.set)
    check_implemented(cfg, args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    d = cfg["data"]
    if d["format"] == "folder":
        classes, train, valid = list_folder(d["path"], d["train_dir"], d["valid_dir"])
    else:
        classes, train, valid = list_csv(d["path"], d["csv"], d["images_dir"])
    seed = cfg["run"]["seed"] % 2 ** 63
    train, valid = limit(train, args.limit_train, seed + 3), limit(valid, args.limit_valid, seed + 4)
    stem = os.path.splitext(os.path.basename(args.config))[0]
    parent = args.out or cfg["run"]["out_dir"]
    os.makedirs(parent, exist_ok=True)
    if cfg["run"]["name"]:  # [run] name: that folder, which must be new or empty
        run_dir = os.path.join(parent, cfg["run"]["name"])
        if os.path.isdir(run_dir) and os.listdir(run_dir):
            fail(f"[run] name: {run_dir} is not empty; choose another name")
        os.makedirs(run_dir, exist_ok=True)
    else:
        base = os.path.join(parent, f"torch-{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir, k = base, 1
        while True:
            try:
                os.mkdir(run_dir)
                break
            except FileExistsError:
                k += 1
                run_dir = f"{base}-{k}"
    r = Runner(cfg, args, classes, train, valid, run_dir)
    for st in cfg["stages"]:
        r.say(describe(st))
    for st in cfg["stages"]:
        r.run_stage(st)
    r.metrics.close()
    if args.save:
        torch.save(r.model.state_dict(), os.path.join(run_dir, "final.pt"))
    wall = time.perf_counter() - t_start
    acc = "-" if r.last_acc is None else f"{r.last_acc:.6f}"
    tta = "-" if r.tta_acc is None else f"{r.tta_acc:.6f}"
    r.say(f"final: accuracy {acc} after the last epoch, with TTA {tta}; wall time {wall:.1f} s")
    print(f"RESULT accuracy={acc} tta_accuracy={tta} wall_s={wall:.1f} run_dir={run_dir}")


if __name__ == "__main__":
    main()
