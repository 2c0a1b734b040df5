/* train/config_schema.c: the one schema table behind config_load, config_write and config_help
 * (redis-style: every key with its type, range, default, help and target field), the stage types'
 * own defaults, and the lookups and applies-when rules that read them (config_schema.h). */
#include "train/config_schema.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"

const Choice config_stage_types[] = {
    {"fit_one_cycle", STAGE_FIT_ONE_CYCLE}, {"fine_tune", STAGE_FINE_TUNE}, {"fit", STAGE_FIT},
    {"progressive", STAGE_PROGRESSIVE},     {"fixres", STAGE_FIXRES},       {"tta", STAGE_TTA},
    {"eval", STAGE_EVAL},                   {"lr_find", STAGE_LR_FIND}, {"interpret", STAGE_INTERPRET}, {NULL, 0},
};
const Choice config_tf_kinds[] = {
    {"fastai", TF_FASTAI}, {"rrc", TF_RANDOM_RESIZED_CROP}, {"center", TF_CENTER_CROP}, {"resize", TF_RESIZE_CENTER_CROP}, {NULL, 0},
};
/* rrc's deterministic version is Resize + CenterCrop, so it is not a validation choice */
static const Choice valid_kinds[] = {{"fastai", TF_FASTAI}, {"center", TF_CENTER_CROP}, {"resize", TF_RESIZE_CENTER_CROP},
                                     {"squash", TF_SQUASH_CENTER_CROP}, {NULL, 0}};
static const Choice formats[] = {{"folder", DATA_FOLDER}, {"csv", DATA_CSV}, {NULL, 0}};
static const Choice bad_images[] = {{"skip", 0}, {"fail", 1}, {NULL, 0}};
static const Choice devices[] = {{"auto", 0}, {"cpu", 1}, {"cuda", 2}, {NULL, 0}};
static const Choice augment_ons[] = {{"auto", AUGMENT_AUTO}, {"host", AUGMENT_HOST}, {"device", AUGMENT_DEVICE}, {NULL, 0}};
static const Choice loss_scales[] = {{"auto", LOSS_SCALE_AUTO}, {"dynamic", LOSS_SCALE_DYNAMIC}, {"off", LOSS_SCALE_OFF}, {NULL, 0}};
static const Choice precisions[] = {{"fp32", DT_F32}, {"fp16", DT_F16}, {"bf16", DT_BF16}, {NULL, 0}};
static const Choice resize_modes[] = {{"resize", 0}, {"crop", 1}, {NULL, 0}};
static const Choice trainables[] = {{"head", 0}, {"head,final_bn", 1}, {NULL, 0}};
static const Choice pretrained_heads[] = {{"auto", PRETRAINED_HEAD_AUTO}, {"keep", PRETRAINED_HEAD_KEEP}, {"new", PRETRAINED_HEAD_NEW}, {NULL, 0}};
static const Choice saves[] = {{"stages", SAVE_STAGES}, {"final", SAVE_FINAL}, {"best", SAVE_BEST}, {"none", SAVE_NONE}, {NULL, 0}};
static const Choice monitors[] = {{"valid_loss", MONITOR_VALID_LOSS}, {"accuracy", MONITOR_ACCURACY}, {NULL, 0}};
static const Choice freezes[] = {{"keep", FREEZE_KEEP}, {"yes", FREEZE_YES}, {"no", FREEZE_NO}, {NULL, 0}};

#define CYCLE (BIT(STAGE_FIT_ONE_CYCLE) | BIT(STAGE_FINE_TUNE) | BIT(STAGE_PROGRESSIVE))
#define LR_FIND BIT(STAGE_LR_FIND)
#define SIZED (TRAINING | BIT(STAGE_TTA) | LR_FIND)
#define ALL_STAGES (SIZED | BIT(STAGE_EVAL) | BIT(STAGE_INTERPRET))
#define FASTAI BIT(TF_FASTAI)
#define RRC BIT(TF_RANDOM_RESIZED_CROP)
#define RESIZE BIT(TF_RESIZE_CENTER_CROP)

#define CF(f) .in = IN_CONFIG, .off = offsetof(Config, f), .size = sizeof(((Config *)0)->f)
#define SF(f) .in = IN_STAGE, .off = offsetof(StageConfig, f), .size = sizeof(((StageConfig *)0)->f)
#define TF(f) .in = IN_TRAIN_TF, .off = offsetof(TransformSpec, f), .size = sizeof(((TransformSpec *)0)->f)
#define VF(f) .in = IN_VALID_TF, .off = offsetof(TransformSpec, f), .size = sizeof(((TransformSpec *)0)->f)
#define STAGE(m) .sec = SEC_STAGE, .dep = "type", .mask = (m)
#define ENUM(c) .type = T_ENUM, .choices = (c)
#define RANGE(a, b) .lo = (a), .hi = (b)

/* Order matters: a key's dep comes before it, and the transform and valid_transform heads come
 * before their parameters (resolution goes down this table). config_help and config_write list
 * keys in this order. */
const Key config_keys[] = {
    /* [data] */
    {.sec = SEC_DATA, .name = "format", ENUM(formats), CF(data.format), .def = "folder",
     .help = "folder: PATH/<train_dir>/<class>/<image> and PATH/<valid_dir>/...; csv: Kaggle's PATH/<csv> "
             "(image_id,label[,is_val]) with the images in PATH/<images_dir>"},
    {.sec = SEC_DATA, .name = "path", .type = T_STRING, CF(storage[0]), .flags = K_REQ,
     .help = "root folder of the data set"},
    {.sec = SEC_DATA, .name = "train_dir", .type = T_STRING, CF(storage[1]), .def = "train", .dep = "format",
     .mask = BIT(DATA_FOLDER), .help = "training images, one folder per class"},
    {.sec = SEC_DATA, .name = "valid_dir", .type = T_STRING, CF(storage[2]), .def = "val", .dep = "format",
     .mask = BIT(DATA_FOLDER), .help = "validation images, one folder per class"},
    {.sec = SEC_DATA, .name = "csv", .type = T_STRING, CF(storage[3]), .def = "train.csv", .dep = "format",
     .mask = BIT(DATA_CSV), .help = "the label file, relative to path"},
    {.sec = SEC_DATA, .name = "images_dir", .type = T_STRING, CF(storage[4]), .def = "train_images", .dep = "format",
     .mask = BIT(DATA_CSV), .help = "the image folder, relative to path"},
    {.sec = SEC_DATA, .name = "label_map", .type = T_STRING, CF(storage[5]), .def = "",
     .help = "display names of the classes: a JSON object {\"0\": \"name\", ...} of label -> name, relative to path, used "
             "in predictions (and stored in checkpoints as class_labels; class_names stay the labels); empty = "
             "label_num_to_disease_map.json beside a CSV data set's label file when it is there (Kaggle's cassava); none = no map"},
    {.sec = SEC_DATA, .name = "valid_pct", .type = T_FLOAT, CF(data.valid_pct), RANGE(0, 1), .flags = K_LO_OPEN | K_HI_OPEN,
     .def = "0.2", .dep = "format", .mask = BIT(DATA_CSV),
     .help = "fraction held out for validation when the CSV has no is_val column"},
    {.sec = SEC_DATA, .name = "fraction", .type = T_FLOAT, CF(data.fraction), RANGE(0, 1), .flags = K_LO_OPEN,
     .def = "1", .help = "keep this fraction of each class in both splits (a fixed random choice), for quick runs and tests"},
    {.sec = SEC_DATA, .name = "split_seed", .type = T_U64, CF(data.seed), .def = "42", .dep = "format",
     .mask = BIT(DATA_CSV), .help = "seed of that random split (fixed apart from [run] seed, so runs compare)"},
    {.sec = SEC_DATA, .name = "max_megapixels", .type = T_INT, CF(max_megapixels), RANGE(1, 2000), .def = "64",
     .help = "an image (JPEG, PNG, WebP) whose header claims more pixels than this (in millions) is a bad image, refused before it is decoded"},
    {.sec = SEC_DATA, .name = "max_file_mb", .type = T_INT, CF(max_file_mb), RANGE(1, 100000), .def = "64",
     .help = "an image file larger than this (in MB, 10^6 bytes) is a bad image, refused without reading it (a file that "
             "does not start like a JPEG, PNG or WebP is refused from its first bytes, whatever its size)"},
    {.sec = SEC_DATA, .name = "augment_on", ENUM(augment_ons), CF(augment_on), .def = "auto",
     .help = "where the per-image transforms run: host (loader threads, float batches), device (the loader decodes, "
             "the backend warps uint8 images: uploads 4x smaller; the same draws, the same floats on the cpu backend), "
             "auto = device on a GPU (mixup and progressive resizing then run there too)"},
    {.sec = SEC_DATA, .name = "on_bad_image", ENUM(bad_images), CF(strict_images), .def = "skip",
     .help = "an unreadable image or bad CSV row: skip it (reported and counted) or stop"},
    /* [model] */
    {.sec = SEC_MODEL, .name = "arch", .type = T_STRING, CF(arch), .flags = K_REQ | K_ARCH,
     .help = "network from the model registry (`./train info` lists them)"},
    {.sec = SEC_MODEL, .name = "pretrained", .type = T_STRING, CF(pretrained), .def = "",
     .help = "starting weights: a checkpoint of ours or a torchvision state dict as safetensors "
             "(scripts/pth_to_safetensors.py); matching names and shapes load, a classifier of another class count is new"},
    {.sec = SEC_MODEL, .name = "pretrained_head", ENUM(pretrained_heads), CF(pretrained_head), .def = "auto",
     .help = "a pretrained classifier with the data's class count: auto = load it when the file's class names are the "
             "data's (or it names none, as torchvision's do), refuse when they differ; keep = load it anyway; new = always "
             "a fresh classifier (fastai's cnn_learner)"},
    {.sec = SEC_MODEL, .name = "classes", .type = T_INT, CF(classes), RANGE(0, 1000000), .def = "0",
     .help = "outputs of the classifier; 0 = the data set's class count (the seeds' xresnet50() has 1000)"},
    /* [run] */
    {.sec = SEC_RUN, .name = "device", ENUM(devices), CF(device), .def = "auto", .flags = K_NAME,
     .help = "auto = cuda when built in and a GPU is present, else cpu"},
    {.sec = SEC_RUN, .name = "precision", ENUM(precisions), CF(precision), .def = "fp32",
     .help = "GPU compute precision (fp32 master weights; fp16 with dynamic loss scaling); the CPU computes in fp32"},
    {.sec = SEC_RUN, .name = "seed", .type = T_U64, CF(seed), .def = "42",
     .help = "seed of initialisation, shuffling, augmentation and mixup"},
    {.sec = SEC_RUN, .name = "out_dir", .type = T_STRING, CF(out_dir), .def = "runs",
     .help = "parent of the run folders (<out_dir>/<config name>-<time>/)"},
    {.sec = SEC_RUN, .name = "name", .type = T_STRING, CF(run_name), .def = "",
     .help = "the run folder's name under out_dir; empty = <config name>-<time>. A folder that holds a run already "
             "(its cnntrain-run file) or lies outside out_dir is refused unless ./train is given --force (which removes "
             "only the files the old run's cnntrain-run lists); a non-empty folder that is not a run's, always"},
    {.sec = SEC_RUN, .name = "loss_scale", ENUM(loss_scales), CF(loss_scale), .def = "auto",
     .help = "auto = dynamic for fp16, off otherwise. dynamic: PyTorch's GradScaler (start at 65536; a step whose "
             "gradients overflow is skipped and the scale halved; doubled after 2000 good steps). off: any inf/NaN "
             "gradient stops the run"},
    {.sec = SEC_RUN, .name = "dist_timeout", .type = T_INT, CF(dist_timeout), RANGE(0, 604800), .def = "1800",
     .help = "data-parallel training: seconds without a finished training step or evaluation batch after which a "
             "rank ends the job, saying so (a rank that hangs would otherwise make every rank wait forever; "
             "PyTorch's NCCL default, 30 minutes); 0 = never"},
    {.sec = SEC_RUN, .name = "sync_bn", .type = T_BOOL, CF(sync_bn), .def = "false",
     .help = "data-parallel training (mpirun -np N ./train): yes = batch norm's training statistics are the global "
             "batch's, reduced across the ranks at every layer (PyTorch's SyncBatchNorm; the run then matches one "
             "process's); no = each rank's own (its part of the batch), the running statistics averaged across the "
             "ranks before each evaluation and checkpoint (timm's --dist-bn reduce). One process: no effect"},
    {.sec = SEC_RUN, .name = "threads", .type = T_INT, CF(threads), RANGE(0, 1024), .def = "0",
     .help = "loader threads; 0 = one per core"},
    {.sec = SEC_RUN, .name = "stop_after", .type = T_INT, CF(stop_after), RANGE(0, 2000000000), .def = "0",
     .help = "stop as Ctrl-C does (resume checkpoint, clean exit) after this many training steps of this "
             "process; 0 = never. For time-boxed runs: ./train --resume RUN goes on"},
    {.sec = SEC_RUN, .name = "save", ENUM(saves), CF(save), .def = "stages",
     .help = "model files kept, each a PyTorch state dict (weights and batch-norm statistics): stages = every "
             "training stage's NAME.safetensors and final.safetensors; final = final.safetensors only; best = "
             "final.safetensors and best.safetensors, the weights of the epoch with the best monitor value over the "
             "whole run (fastai's SaveModelCallback); none = no model file. resume.safetensors (weights and Adam "
             "state, for --resume) is always kept; no other file holds the Adam state"},
    {.sec = SEC_RUN, .name = "monitor", ENUM(monitors), CF(monitor), .def = "valid_loss",
     .help = "the value save = best and early_stop_patience follow: valid_loss (lower is better) or accuracy "
             "(higher); an epoch improves only on a strictly better value (fastai's min_delta 0)"},
    {.sec = SEC_RUN, .name = "early_stop_patience", .type = T_INT, CF(early_stop_patience), RANGE(0, 100000), .def = "0",
     .help = "fastai's EarlyStoppingCallback: end a fit (a stage, or a part of fine_tune) once monitor has not "
             "improved for this many epochs; the next stage still runs; 0 = never"},
    /* [stage NAME] */
    {.sec = SEC_STAGE, .name = "type", ENUM(config_stage_types), SF(type), .flags = K_REQ,
     .help = "fit_one_cycle, fine_tune (fastai's), fit (constant lr, PyTorch's AdamW), progressive (Composer's "
             "resizing within the stage), fixres (train the head at a new size), tta, eval (at several sizes), lr_find "
             "(fastai's LR range test: lr_find-NAME.csv and .png and the suggestions; the model is put back after), "
             "interpret (fastai's ClassificationInterpretation: confusion matrix, per-class scores, most_confused, top "
             "losses)"},
    {STAGE(TRAINING), .name = "epochs", .type = T_INT, SF(epochs), RANGE(1, 100000), .flags = K_REQ,
     .help = "epochs (fine_tune: of its unfrozen part)"},
    {STAGE(BIT(STAGE_FINE_TUNE)), .name = "freeze_epochs", .type = T_INT, SF(freeze_epochs), RANGE(0, 100000), .def = "1",
     .help = "fine_tune's frozen epochs, one-cycle with pct_start 0.99 at lr"},
    {STAGE(SIZED | BIT(STAGE_INTERPRET)), .name = "size", .type = T_INT, SF(size), RANGE(8, 4096), .def = "224", .flags = K_CARRY,
     .help = "image side (progressive: the full side)"},
    {STAGE(ALL_STAGES), .name = "batch", .type = T_INT, SF(batch), RANGE(1, 65536), .def = "64", .flags = K_CARRY,
     .help = "batch size"},
    {STAGE(TRAINING), .name = "lr", .type = T_LR, SF(lr), RANGE(0, 10), .flags = K_LO_OPEN, .def = "1e-3",
     .help = "one-cycle peak lr; fine_tune: base_lr (frozen part at lr, unfrozen at lr/2); fit, fixres: the constant lr. "
             "A range lo..hi spreads geometrically over the parameter groups (fastai's slice(lo, hi)); a single value "
             "is the same lr for every group (fine_tune follows fastai: slice(lr) frozen, slice(lr/200, lr/2) unfrozen)"},
    {STAGE(TRAINING & ~BIT(STAGE_FINE_TUNE) & ~BIT(STAGE_FIXRES)), .name = "freeze", ENUM(freezes), SF(freeze), .def = "keep",
     .help = "before the stage: yes = fastai's freeze() (only the head and every batch norm train), no = unfreeze(); "
             "both clear the optimizer state. keep: as the previous stage left it (a pretrained model starts frozen)"},
    {STAGE(TRAINING | LR_FIND), .name = "wd", .type = T_FLOAT, SF(wd), RANGE(0, 10), .def = "0.01",
     .help = "decoupled weight decay (p -= lr*wd*p)"},
    {STAGE(TRAINING | LR_FIND), .name = "wd_bn_bias", .type = T_BOOL, SF(wd_bn_bias), .def = "false",
     .help = "decay batch-norm and bias parameters too (fastai: no; PyTorch's AdamW: yes)"},
    {STAGE(CYCLE), .name = "pct_start", .type = T_FLOAT, SF(pct_start), RANGE(0, 1), .def = "0.25",
     .help = "fraction of the steps in the one-cycle warm-up"},
    {STAGE(CYCLE), .name = "div", .type = T_FLOAT, SF(div), RANGE(1, 1e9), .def = "25",
     .help = "one-cycle start lr = lr / div"},
    {STAGE(CYCLE), .name = "div_final", .type = T_FLOAT, SF(div_final), RANGE(1, 1e12), .def = "1e5",
     .help = "one-cycle final lr = lr / div_final"},
    {STAGE(TRAINING | LR_FIND), .name = "mom_max", .type = T_FLOAT, SF(mom_max), RANGE(0, 1), .flags = K_HI_OPEN, .def = "0.95",
     .help = "Adam beta1 at the ends of the cycle; fit, fixres: the constant beta1; lr_find: the beta1 it runs with "
             "(fastai's Adam default 0.9)"},
    {STAGE(CYCLE), .name = "mom_min", .type = T_FLOAT, SF(mom_min), RANGE(0, 1), .flags = K_HI_OPEN, .def = "0.85",
     .help = "Adam beta1 at the top of the cycle"},
    {STAGE(TRAINING | LR_FIND), .name = "beta2", .type = T_FLOAT, SF(beta2), RANGE(0, 1), .flags = K_HI_OPEN, .def = "0.99",
     .help = "Adam beta2"},
    {STAGE(TRAINING | LR_FIND), .name = "eps", .type = T_FLOAT, SF(eps), RANGE(0, 1), .flags = K_LO_OPEN, .def = "1e-5",
     .help = "Adam epsilon"},
    {STAGE(TRAINING | LR_FIND), .name = "label_smoothing", .type = T_FLOAT, SF(label_smoothing), RANGE(0, 1), .flags = K_HI_OPEN | K_CARRY,
     .def = "0", .help = "label smoothing eps (0.1 in the seeds); 0 = plain cross-entropy"},
    {STAGE(TRAINING | LR_FIND), .name = "mixup", .type = T_FLOAT, SF(mixup_alpha), RANGE(0, 100), .flags = K_CARRY, .def = "0",
     .help = "mixup alpha (fastai's MixUp: 0.4); 0 = off"},
    /* the training transform: its parameters apply to the kinds that use them */
    {STAGE(SIZED), .name = "transform", ENUM(config_tf_kinds), TF(kind), .def = "fastai", .flags = K_CARRY,
     .help = "fastai: Resize(presize) per item + aug_transforms per batch; rrc: torchvision RandomResizedCrop + flip; "
             "center: CenterCrop of the unresized image; resize: Resize(resize_ratio*size) + CenterCrop (tta: the "
             "augmented passes)"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "presize", .type = T_INT, TF(presize), RANGE(0, 16384),
     .help = "fastai's item Resize side (the Imagenette recipe: 460); 0 = none"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "min_scale", .type = T_FLOAT, TF(min_scale), RANGE(0, 1),
     .flags = K_LO_OPEN, .help = "aug_transforms' min_scale (the recipe: 0.75; 1 = no random crop)"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI | RRC, .name = "flip", .type = T_BOOL, TF(flip),
     .help = "random horizontal flip, p = 0.5"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "max_rotate", .type = T_FLOAT, TF(max_rotate), RANGE(0, 180),
     .help = "rotation up to +-degrees"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "max_zoom", .type = T_FLOAT, TF(max_zoom), RANGE(1, 10),
     .help = "zoom from 1 up to this"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "max_warp", .type = T_FLOAT, TF(max_warp), RANGE(0, 1),
     .flags = K_HI_OPEN, .help = "perspective warp magnitude"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "max_lighting", .type = T_FLOAT, TF(max_lighting), RANGE(0, 1),
     .flags = K_HI_OPEN, .help = "brightness and contrast change"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "p_affine", .type = T_FLOAT, TF(p_affine), RANGE(0, 1),
     .help = "probability of each affine part (rotate, zoom, warp)"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI, .name = "p_lighting", .type = T_FLOAT, TF(p_lighting), RANGE(0, 1),
     .help = "probability of the lighting change"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = RRC, .name = "scale_min", .type = T_FLOAT, TF(scale_min), RANGE(0, 1),
     .flags = K_LO_OPEN, .help = "RandomResizedCrop's smallest area fraction"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = RRC, .name = "scale_max", .type = T_FLOAT, TF(scale_max), RANGE(0, 1),
     .flags = K_LO_OPEN, .help = "RandomResizedCrop's largest area fraction"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI | RRC, .name = "ratio_min", .type = T_FLOAT, TF(ratio_min),
     RANGE(0, 100), .flags = K_LO_OPEN, .help = "smallest crop aspect ratio (fastai: of its random crop, square by default)"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = FASTAI | RRC, .name = "ratio_max", .type = T_FLOAT, TF(ratio_max),
     RANGE(0, 100), .flags = K_LO_OPEN, .help = "largest crop aspect ratio"},
    {.sec = SEC_STAGE, .dep = "transform", .mask = RESIZE, .name = "resize_ratio", .type = T_FLOAT, TF(resize_ratio),
     RANGE(1, 4), .help = "short side resized to resize_ratio*size before the centre crop"},
    /* the validation transform: by default the deterministic version of the training one */
    {STAGE(ALL_STAGES), .name = "valid_transform", ENUM(valid_kinds), VF(kind),
     .help = "validation (eval: every size; tta: the plain pass): fastai = centre crop of Resize(presize), then "
             "resize to size; center; resize; squash = fastai's RandomResizedCrop validation (the whole image squashed "
             "to size + val_xtra, centre crop). Default: the deterministic version of transform (rrc -> resize)"},
    {.sec = SEC_STAGE, .dep = "valid_transform", .mask = FASTAI, .name = "valid_presize", .type = T_INT, VF(presize),
     RANGE(0, 16384), .help = "presize of the fastai validation transform (default: the training presize)"},
    {.sec = SEC_STAGE, .dep = "valid_transform", .mask = RESIZE | BIT(TF_SQUASH_CENTER_CROP), .name = "valid_resize_ratio",
     .type = T_FLOAT, VF(resize_ratio), RANGE(1, 4),
     .help = "resize: Resize(valid_resize_ratio*size) + CenterCrop(size) (FixRes: 1.25; default: the training resize_ratio, "
             "else 1); squash: size + ceil((ratio-1)*size/8)*8, fastai's val_xtra (default 1.14)"},
    /* progressive (Composer) */
    {STAGE(BIT(STAGE_PROGRESSIVE)), .name = "initial_scale", .type = T_FLOAT, SF(initial_scale), RANGE(0, 1),
     .flags = K_LO_OPEN, .def = "0.5", .help = "side = size * initial_scale at the start"},
    {STAGE(BIT(STAGE_PROGRESSIVE)), .name = "delay_fraction", .type = T_FLOAT, SF(delay_fraction), RANGE(0, 1),
     .def = "0.5", .help = "fraction of the stage at initial_scale"},
    {STAGE(BIT(STAGE_PROGRESSIVE)), .name = "finetune_fraction", .type = T_FLOAT, SF(finetune_fraction), RANGE(0, 1),
     .def = "0.2", .help = "fraction of the stage at full size, at its end"},
    {STAGE(BIT(STAGE_PROGRESSIVE)), .name = "size_increment", .type = T_INT, SF(size_increment), RANGE(1, 512),
     .def = "4", .help = "the side is rounded down to a multiple of this"},
    {STAGE(BIT(STAGE_PROGRESSIVE)), .name = "mode", ENUM(resize_modes), SF(resize_crop), .def = "resize",
     .help = "resize: bilinear downscale of the batch; crop: random crop of it"},
    /* fixres */
    {STAGE(BIT(STAGE_FIXRES)), .name = "trainable", ENUM(trainables), SF(train_final_bn), .def = "head,final_bn",
     .help = "trained parameters; the final batch norm adapts its statistics either way, the others are frozen in "
             "inference mode (the seed's PyTorch run: head)"},
    /* tta */
    {STAGE(BIT(STAGE_TTA)), .name = "n", .type = T_INT, SF(tta_n), RANGE(1, 1000), .def = "4",
     .help = "augmented passes over the validation set"},
    {STAGE(BIT(STAGE_TTA)), .name = "beta", .type = T_FLOAT, SF(tta_beta), RANGE(0, 1), .def = "0.25",
     .help = "final = (1-beta)*mean(augmented) + beta*plain"},
    /* lr_find */
    {STAGE(LR_FIND), .name = "start_lr", .type = T_FLOAT, SF(lrf_start), RANGE(0, 10), .flags = K_LO_OPEN, .def = "1e-7",
     .help = "the lr of the first batch (fastai's start_lr)"},
    {STAGE(LR_FIND), .name = "end_lr", .type = T_FLOAT, SF(lrf_end), RANGE(0, 1e4), .flags = K_LO_OPEN, .def = "10",
     .help = "the lr it grows towards, exponentially (fastai's end_lr)"},
    {STAGE(LR_FIND), .name = "num_it", .type = T_INT, SF(lrf_num_it), RANGE(1, 1000000), .def = "100",
     .help = "batches (over several epochs when the loader has fewer; fastai's num_it, at least 6)"},
    {STAGE(LR_FIND), .name = "stop_div", .type = T_BOOL, SF(lrf_stop_div), .def = "true",
     .help = "stop when the smoothed loss passes 4x its best"},
    /* eval */
    {STAGE(BIT(STAGE_EVAL)), .name = "sizes", .type = T_SIZES, SF(sizes), .count_off = offsetof(StageConfig, nsizes),
     RANGE(8, 4096), .flags = K_REQ, .help = "test sizes, comma-separated (e.g. 224,288,384,448)"},
    /* interpret: <stage>-confusion.csv/.png, -per_class.csv, -most_confused.csv, -top_losses.jpg, -show_results.jpg */
    {STAGE(BIT(STAGE_INTERPRET)), .name = "top_losses", .type = T_INT, SF(top_losses), RANGE(1, 100), .def = "9",
     .help = "images in <stage>-top_losses.jpg, the largest losses first (fastai's plot_top_losses(k))"},
    {STAGE(BIT(STAGE_INTERPRET)), .name = "min_val", .type = T_INT, SF(min_val), RANGE(1, 1000000000), .def = "1",
     .help = "most_confused(min_val): the pairs confused at least this often"},
};
const int config_nkeys = (int)(sizeof config_keys / sizeof config_keys[0]);

/* Stage-type defaults that differ from the table's (fastai's), kept as data. */
const TypeDefault config_type_defaults[] = {
    /* fastai's fine_tune(epochs, base_lr=2e-3, freeze_epochs=1, pct_start=0.3, div=5) */
    {STAGE_FINE_TUNE, "lr", "2e-3"},
    {STAGE_FINE_TUNE, "pct_start", "0.3"},
    {STAGE_FINE_TUNE, "div", "5"},
    /* torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), every parameter */
    {STAGE_FIT, "mom_max", "0.9"},
    {STAGE_FIT, "beta2", "0.999"},
    {STAGE_FIT, "eps", "1e-8"},
    {STAGE_FIT, "wd_bn_bias", "true"},
    {STAGE_FIXRES, "mom_max", "0.9"},
    {STAGE_FIXRES, "beta2", "0.999"},
    {STAGE_FIXRES, "eps", "1e-8"},
    {STAGE_FIXRES, "wd_bn_bias", "true"},
    /* a fresh fastai Learner's Adam, which its lr_find runs with (mom=0.9) */
    {STAGE_LR_FIND, "mom_max", "0.9"},
};
const int config_ntype_defaults = (int)(sizeof config_type_defaults / sizeof config_type_defaults[0]);

const Key *find_key(SecKind sec, const char *name) {
    for (int i = 0; i < config_nkeys; i++)
        if (config_keys[i].sec == sec && !strcmp(config_keys[i].name, name)) return &config_keys[i];
    return NULL;
}

const char *choice_name(const Choice *c, int value) {
    for (; c->name; c++)
        if (c->value == value) return c->name;
    return "?";
}

const char *key_default(const Key *k, int type) {
    if (k->sec == SEC_STAGE)
        for (int i = 0; i < config_ntype_defaults; i++)
            if ((int)config_type_defaults[i].type == type && !strcmp(config_type_defaults[i].key, k->name)) return config_type_defaults[i].value;
    return k->def;
}

/* A programming slip in the table (a field of the wrong size, a dep after its key) is caught on
 * the first load rather than corrupting memory. */
void config_check_schema(void) {
    static int done;
    if (done) return;
    for (int i = 0; i < config_nkeys; i++) {
        const Key *k = &config_keys[i];
        size_t want = k->type == T_U64 ? 8 : k->type == T_FLOAT ? sizeof(float) : sizeof(int);
        int ok = k->type == T_STRING || k->type == T_SIZES || (k->flags & K_NAME) || k->size == want;
        const Key *d = k->dep ? find_key(k->sec, k->dep) : NULL;
        if (!ok || (k->dep && (!d || d > k || d->type != T_ENUM)))
            die("config schema: key '%s' has a bad field size or dependency", k->name);
    }
    done = 1;
}

void list_choices(const Choice *c, const char *sep, char *buf, size_t n) {
    *buf = 0;
    for (const Choice *p = c; p->name; p++) snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", p == c ? "" : sep, p->name);
}

/* The struct that holds key k's field: the Config, the stage, or one of its transforms. */
const void *key_cbase(const Key *k, const Config *c, const StageConfig *st) {
    switch (k->in) {
    case IN_CONFIG: return c;
    case IN_STAGE: return st;
    case IN_TRAIN_TF: return &st->train_tf;
    case IN_VALID_TF: return &st->valid_tf;
    }
    return NULL;
}

/* The first key in k's chain of deps (k itself included) that does not apply, or NULL when k
 * applies: presize in an eval stage fails at `transform` (no transform in an eval stage). */
const Key *key_not_applying(const Key *k, const Config *c, const StageConfig *st) {
    if (!k->dep) return NULL;
    const Key *d = find_key(k->sec, k->dep);
    const Key *up = key_not_applying(d, c, st);
    if (up) return up;
    int v = *(const int *)((const char *)key_cbase(d, c, st) + d->off);
    return (k->mask >> v) & 1 ? NULL : k;
}

int key_applies(const Key *k, const Config *c, const StageConfig *st) { return key_not_applying(k, c, st) == NULL; }

void key_dep_values(const Key *k, char *buf, size_t n) {
    const Key *d = find_key(k->sec, k->dep);
    *buf = 0;
    for (const Choice *c = d->choices; c->name; c++)
        if ((k->mask >> c->value) & 1) snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", *buf ? ", " : "", c->name);
}

