/* train/config.c: the INI reader and the one schema table behind config_load, config_write and
 * config_help (redis-style: every key with its type, range, default, help and target field).
 *
 * Resolution rules, in brief (config_help prints them in full):
 * - Every key has a default; optimizer defaults depend on the stage type (fastai's for the
 *   one-cycle stages, PyTorch's AdamW for fit and fixres): type_defaults[] below.
 * - A key may apply only for some values of another key of its section (its `dep`): stage keys
 *   on the stage type, transform parameters on the transform, csv keys on the data format.
 *   Setting a key that does not apply is an error, so a typo in a stage type cannot silently
 *   drop settings.
 * - The data pipeline persists from stage to stage as fastai's learn.dls does: size, batch and
 *   the loss options (label smoothing, mixup) carry over from the most recent stage that has them,
 *   the training transform and its parameters too (the parameters only while the kind stays the
 *   same), and the validation transform follows the training transform. Optimizer settings never
 *   carry: each fit call in fastai restates them, and each stage type has its own defaults.
 * - Non-applicable fields hold their defaults, so a Config is a function of the applicable
 *   values only, which is what makes config_write + config_load an exact round trip. */
#include "train/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "net/model.h"
#include "base/util.h"

/* ------------------------------------------------------------------------------ the schema */

typedef enum { T_INT, T_U64, T_FLOAT, T_BOOL, T_STRING, T_ENUM, T_SIZES, T_LR } KeyType;
typedef enum { SEC_DATA, SEC_MODEL, SEC_RUN, SEC_STAGE, NSEC } SecKind;
typedef enum { IN_CONFIG, IN_STAGE, IN_TRAIN_TF, IN_VALID_TF } Target;

typedef struct {
    const char *name;
    int value;
} Choice;

enum {
    K_REQ = 1,      /* required wherever it applies */
    K_CARRY = 2,    /* default: the value of the most recent earlier stage where it applies */
    K_LO_OPEN = 4,  /* the range excludes lo */
    K_HI_OPEN = 8,  /* the range excludes hi */
    K_NAME = 16,    /* enum stored as its name in a char array (device) */
    K_ARCH = 32,    /* string checked against the model registry */
};

typedef struct {
    SecKind sec;
    const char *name;
    KeyType type;
    Target in;
    size_t off, size;      /* the field; strings: its capacity */
    size_t count_off;      /* T_SIZES: the int that holds the count */
    double lo, hi;         /* range of ints, floats and list elements */
    const Choice *choices; /* T_ENUM */
    const char *def;       /* default as text; NULL = required, or from the transform's defaults */
    const char *dep;       /* the key of this section whose value decides whether this key applies */
    unsigned mask;         /* bit v: applies when dep's value is v */
    unsigned flags;
    const char *help;
} Key;

static const char *const sec_names[NSEC] = {"data", "model", "run", "stage"};

static const Choice stage_types[] = {
    {"fit_one_cycle", STAGE_FIT_ONE_CYCLE}, {"fine_tune", STAGE_FINE_TUNE}, {"fit", STAGE_FIT},
    {"progressive", STAGE_PROGRESSIVE},     {"fixres", STAGE_FIXRES},       {"tta", STAGE_TTA},
    {"eval", STAGE_EVAL},                   {NULL, 0},
};
static const Choice tf_kinds[] = {
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
static const Choice freezes[] = {{"keep", FREEZE_KEEP}, {"yes", FREEZE_YES}, {"no", FREEZE_NO}, {NULL, 0}};

#define BIT(v) (1u << (v))
#define TRAINING (BIT(STAGE_FIT_ONE_CYCLE) | BIT(STAGE_FINE_TUNE) | BIT(STAGE_FIT) | BIT(STAGE_PROGRESSIVE) | BIT(STAGE_FIXRES))
#define CYCLE (BIT(STAGE_FIT_ONE_CYCLE) | BIT(STAGE_FINE_TUNE) | BIT(STAGE_PROGRESSIVE))
#define SIZED (TRAINING | BIT(STAGE_TTA))
#define ALL_STAGES (SIZED | BIT(STAGE_EVAL))
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
static const Key keys[] = {
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
    {.sec = SEC_DATA, .name = "valid_pct", .type = T_FLOAT, CF(data.valid_pct), RANGE(0, 1), .flags = K_LO_OPEN | K_HI_OPEN,
     .def = "0.2", .dep = "format", .mask = BIT(DATA_CSV),
     .help = "fraction held out for validation when the CSV has no is_val column"},
    {.sec = SEC_DATA, .name = "fraction", .type = T_FLOAT, CF(data.fraction), RANGE(0, 1), .flags = K_LO_OPEN,
     .def = "1", .help = "keep this fraction of each class in both splits (a fixed random choice), for quick runs and tests"},
    {.sec = SEC_DATA, .name = "split_seed", .type = T_U64, CF(data.seed), .def = "42", .dep = "format",
     .mask = BIT(DATA_CSV), .help = "seed of that random split (fixed apart from [run] seed, so runs compare)"},
    {.sec = SEC_DATA, .name = "max_megapixels", .type = T_INT, CF(max_megapixels), RANGE(1, 2000), .def = "64",
     .help = "a JPEG whose header claims more pixels than this (in millions) is a bad image, refused before it is decoded"},
    {.sec = SEC_DATA, .name = "max_file_mb", .type = T_INT, CF(max_file_mb), RANGE(1, 100000), .def = "64",
     .help = "an image file larger than this (in MB, 10^6 bytes) is a bad image, refused without reading it (a file that "
             "does not start like a JPEG is refused from its first bytes, whatever its size)"},
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
    {.sec = SEC_RUN, .name = "threads", .type = T_INT, CF(threads), RANGE(0, 1024), .def = "0",
     .help = "loader threads; 0 = one per core"},
    {.sec = SEC_RUN, .name = "stop_after", .type = T_INT, CF(stop_after), RANGE(0, 2000000000), .def = "0",
     .help = "stop as Ctrl-C does (resume checkpoint, clean exit) after this many training steps of this "
             "process; 0 = never. For time-boxed runs: ./train --resume RUN goes on"},
    /* [stage NAME] */
    {.sec = SEC_STAGE, .name = "type", ENUM(stage_types), SF(type), .flags = K_REQ,
     .help = "fit_one_cycle, fine_tune (fastai's), fit (constant lr, PyTorch's AdamW), progressive (Composer's "
             "resizing within the stage), fixres (train the head at a new size), tta, eval (at several sizes)"},
    {STAGE(TRAINING), .name = "epochs", .type = T_INT, SF(epochs), RANGE(1, 100000), .flags = K_REQ,
     .help = "epochs (fine_tune: of its unfrozen part)"},
    {STAGE(BIT(STAGE_FINE_TUNE)), .name = "freeze_epochs", .type = T_INT, SF(freeze_epochs), RANGE(0, 100000), .def = "1",
     .help = "fine_tune's frozen epochs, one-cycle with pct_start 0.99 at lr"},
    {STAGE(SIZED), .name = "size", .type = T_INT, SF(size), RANGE(8, 4096), .def = "224", .flags = K_CARRY,
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
    {STAGE(TRAINING), .name = "wd", .type = T_FLOAT, SF(wd), RANGE(0, 10), .def = "0.01",
     .help = "decoupled weight decay (p -= lr*wd*p)"},
    {STAGE(TRAINING), .name = "wd_bn_bias", .type = T_BOOL, SF(wd_bn_bias), .def = "false",
     .help = "decay batch-norm and bias parameters too (fastai: no; PyTorch's AdamW: yes)"},
    {STAGE(CYCLE), .name = "pct_start", .type = T_FLOAT, SF(pct_start), RANGE(0, 1), .def = "0.25",
     .help = "fraction of the steps in the one-cycle warm-up"},
    {STAGE(CYCLE), .name = "div", .type = T_FLOAT, SF(div), RANGE(1, 1e9), .def = "25",
     .help = "one-cycle start lr = lr / div"},
    {STAGE(CYCLE), .name = "div_final", .type = T_FLOAT, SF(div_final), RANGE(1, 1e12), .def = "1e5",
     .help = "one-cycle final lr = lr / div_final"},
    {STAGE(TRAINING), .name = "mom_max", .type = T_FLOAT, SF(mom_max), RANGE(0, 1), .flags = K_HI_OPEN, .def = "0.95",
     .help = "Adam beta1 at the ends of the cycle; fit, fixres: the constant beta1"},
    {STAGE(CYCLE), .name = "mom_min", .type = T_FLOAT, SF(mom_min), RANGE(0, 1), .flags = K_HI_OPEN, .def = "0.85",
     .help = "Adam beta1 at the top of the cycle"},
    {STAGE(TRAINING), .name = "beta2", .type = T_FLOAT, SF(beta2), RANGE(0, 1), .flags = K_HI_OPEN, .def = "0.99",
     .help = "Adam beta2"},
    {STAGE(TRAINING), .name = "eps", .type = T_FLOAT, SF(eps), RANGE(0, 1), .flags = K_LO_OPEN, .def = "1e-5",
     .help = "Adam epsilon"},
    {STAGE(TRAINING), .name = "label_smoothing", .type = T_FLOAT, SF(label_smoothing), RANGE(0, 1), .flags = K_HI_OPEN | K_CARRY,
     .def = "0", .help = "label smoothing eps (0.1 in the seeds); 0 = plain cross-entropy"},
    {STAGE(TRAINING), .name = "mixup", .type = T_FLOAT, SF(mixup_alpha), RANGE(0, 100), .flags = K_CARRY, .def = "0",
     .help = "mixup alpha (fastai's MixUp: 0.4); 0 = off"},
    /* the training transform: its parameters apply to the kinds that use them */
    {STAGE(SIZED), .name = "transform", ENUM(tf_kinds), TF(kind), .def = "fastai", .flags = K_CARRY,
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
    /* eval */
    {STAGE(BIT(STAGE_EVAL)), .name = "sizes", .type = T_SIZES, SF(sizes), .count_off = offsetof(StageConfig, nsizes),
     RANGE(8, 4096), .flags = K_REQ, .help = "test sizes, comma-separated (e.g. 224,288,384,448)"},
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))

/* Stage-type defaults that differ from the table's (fastai's), kept as data. */
static const struct {
    StageType type;
    const char *key, *value;
} type_defaults[] = {
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
};
#define NTYPE_DEFAULTS ((int)(sizeof type_defaults / sizeof type_defaults[0]))

static const Key *find_key(SecKind sec, const char *name) {
    for (int i = 0; i < NKEYS; i++)
        if (keys[i].sec == sec && !strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static const char *choice_name(const Choice *c, int value) {
    for (; c->name; c++)
        if (c->value == value) return c->name;
    return "?";
}

static const char *key_default(const Key *k, int type) {
    if (k->sec == SEC_STAGE)
        for (int i = 0; i < NTYPE_DEFAULTS; i++)
            if ((int)type_defaults[i].type == type && !strcmp(type_defaults[i].key, k->name)) return type_defaults[i].value;
    return k->def;
}

/* A programming slip in the table (a field of the wrong size, a dep after its key) is caught on
 * the first load rather than corrupting memory. */
static void check_schema(void) {
    static int done;
    if (done) return;
    for (int i = 0; i < NKEYS; i++) {
        const Key *k = &keys[i];
        size_t want = k->type == T_U64 ? 8 : k->type == T_FLOAT ? sizeof(float) : sizeof(int);
        int ok = k->type == T_STRING || k->type == T_SIZES || (k->flags & K_NAME) || k->size == want;
        const Key *d = k->dep ? find_key(k->sec, k->dep) : NULL;
        if (!ok || (k->dep && (!d || d > k || d->type != T_ENUM)))
            die("config schema: key '%s' has a bad field size or dependency", k->name);
    }
    done = 1;
}

/* ------------------------------------------------------------------------------ the INI file */

typedef struct {
    char *key, *value;
    int line;        /* 0 for a --set */
    const char *set; /* the --set text it came from */
} Entry;

typedef struct {
    SecKind kind;
    char name[64]; /* a stage's name */
    int line;
    Entry *e;
    int n, cap;
} Section;

typedef struct {
    const char *path;
    Section *s;
    int n, cap;
} Ini;

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static void ini_free(Ini *ini) {
    for (int i = 0; i < ini->n; i++) {
        for (int j = 0; j < ini->s[i].n; j++) {
            free(ini->s[i].e[j].key);
            free(ini->s[i].e[j].value);
        }
        free(ini->s[i].e);
    }
    free(ini->s);
    memset(ini, 0, sizeof *ini);
}

static Section *add_section(Ini *ini, SecKind kind, const char *name, int line) {
    if (ini->n == ini->cap) {
        ini->cap = ini->cap ? 2 * ini->cap : 8;
        ini->s = xrealloc(ini->s, (size_t)ini->cap * sizeof *ini->s);
    }
    Section *s = &ini->s[ini->n++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->line = line;
    return s;
}

static Entry *add_entry(Section *s, const char *key, const char *value, int line, const char *set) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->e = xrealloc(s->e, (size_t)s->cap * sizeof *s->e);
    }
    Entry *e = &s->e[s->n++];
    e->key = dupstr(key);
    e->value = dupstr(value);
    e->line = line;
    e->set = set;
    return e;
}

static Entry *find_entry(const Section *s, const char *key) {
    for (int i = 0; s && i < s->n; i++)
        if (!strcmp(s->e[i].key, key)) return &s->e[i];
    return NULL;
}

static Section *find_section(const Ini *ini, SecKind kind, const char *name) {
    for (int i = 0; i < ini->n; i++)
        if (ini->s[i].kind == kind && (kind != SEC_STAGE || !strcmp(ini->s[i].name, name))) return &ini->s[i];
    return NULL;
}

/* "[stage full]" or "[data]" for messages */
static const char *sec_title(const Section *s, char *buf, size_t n) {
    if (s->kind == SEC_STAGE) snprintf(buf, n, "[stage %s]", s->name);
    else snprintf(buf, n, "[%s]", sec_names[s->kind]);
    return buf;
}

/* The error label of an entry: "file:line" or "--set TEXT". */
static const char *entry_label(const Ini *ini, const Entry *e, char *buf, size_t n) {
    if (e->set) snprintf(buf, n, "--set %s", e->set);
    else snprintf(buf, n, "%s:%d", ini->path, e->line);
    return buf;
}

static const char *line_label(const Ini *ini, int line, char *buf, size_t n) {
    if (line > 0) snprintf(buf, n, "%s:%d", ini->path, line);
    else snprintf(buf, n, "%s", ini->path);
    return buf;
}

static int levenshtein(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64], prev;
    for (int j = 0; j <= lb; j++) d[j] = j;
    for (int i = 1; i <= la; i++) {
        prev = d[0];
        d[0] = i;
        for (int j = 1; j <= lb; j++) {
            int t = d[j], sub = prev + (a[i - 1] != b[j - 1]);
            int del = d[j] + 1, ins = d[j - 1] + 1;
            d[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            prev = t;
        }
    }
    return d[lb];
}

/* The closest of names to s when it is close enough to be a likely typo and no other name is as
 * close (fp8 is as near fp16 as fp32: no guess), else NULL. */
static const char *closest(const char *s, const char *const *names, int n) {
    const char *best = NULL;
    int bd = 3, ties = 0;
    for (int i = 0; i < n; i++) {
        int d = levenshtein(s, names[i]);
        if (d >= (int)strlen(names[i])) continue;
        if (d < bd) bd = d, best = names[i], ties = 0;
        else if (d == bd && best) ties++;
    }
    return ties ? NULL : best;
}

static int valid_stage_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return 0;
    return 1;
}

/* Cut a value at an inline comment (`#` or `;` after whitespace) and strip one pair of quotes. */
static char *clean_value(char *v, int *bad_quote) {
    v = trim(v);
    *bad_quote = 0;
    if (*v == '"') {
        char *end = strchr(v + 1, '"');
        if (!end) {
            *bad_quote = 1;
            return v;
        }
        char *rest = trim(end + 1);
        if (*rest && *rest != '#' && *rest != ';') *bad_quote = 1;
        *end = 0;
        return v + 1;
    }
    for (char *p = v; *p; p++)
        if ((*p == '#' || *p == ';') && p > v && isspace((unsigned char)p[-1])) {
            *p = 0;
            break;
        }
    return trim(v);
}

static int parse_section_header(Ini *ini, char *text, int line, char *err, size_t errlen) {
    char lb[600];
    line_label(ini, line, lb, sizeof lb);
    char *close = strchr(text, ']');
    if (!close || *trim(close + 1)) return error_at(err, errlen, lb, "bad section header '%s'; expected [data], [model], [run] or [stage NAME]", text);
    *close = 0;
    char *inner = trim(text + 1), *name = inner;
    while (*name && !isspace((unsigned char)*name)) name++;
    if (*name) *name++ = 0;
    name = trim(name);
    SecKind kind = NSEC;
    for (int k = 0; k < NSEC; k++)
        if (!strcmp(inner, sec_names[k])) kind = (SecKind)k;
    if (kind == NSEC) {
        const char *titles[] = {"data", "model", "run", "stage"};
        const char *guess = closest(inner, titles, 4);
        char hint[80] = "";
        if (guess) snprintf(hint, sizeof hint, "; did you mean [%s]?", guess);
        return error_at(err, errlen, lb, "unknown section [%s]%s sections: [data], [model], [run], [stage NAME]", inner,
                        guess ? hint : ";");
    }
    if (kind != SEC_STAGE && *name) return error_at(err, errlen, lb, "[%s] takes no name (got '%s')", inner, name);
    if (kind == SEC_STAGE) {
        if (!*name) return error_at(err, errlen, lb, "[stage] needs a name: [stage NAME]");
        if (!valid_stage_name(name) || strlen(name) >= sizeof ini->s->name)
            return error_at(err, errlen, lb, "stage name '%s': use up to 63 letters, digits, '_' and '-'", name);
    }
    const Section *dup = find_section(ini, kind, name);
    if (dup && kind == SEC_STAGE) return error_at(err, errlen, lb, "duplicate stage name '%s' (first at line %d)", name, dup->line);
    if (dup) return error_at(err, errlen, lb, "duplicate section [%s] (first at line %d)", inner, dup->line);
    add_section(ini, kind, name, line);
    return 0;
}

static int ini_read(Ini *ini, const char *path, char *err, size_t errlen) {
    memset(ini, 0, sizeof *ini);
    ini->path = path;
    FILE *f = fopen(path, "r");
    if (!f) return error_at(err, errlen, path, "cannot read: %s", strerror(errno));
    char *buf = NULL, lb[600];
    size_t cap = 0;
    int line = 0, rc = 0;
    while (getline(&buf, &cap, f) >= 0) {
        line++;
        char *s = buf;
        if (line == 1 && !strncmp(s, "\xEF\xBB\xBF", 3)) s += 3; /* a UTF-8 byte-order mark */
        s = trim(s);
        if (!*s || *s == '#' || *s == ';') continue;
        line_label(ini, line, lb, sizeof lb);
        if (*s == '[') {
            if ((rc = parse_section_header(ini, s, line, err, errlen))) break;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = error_at(err, errlen, lb, "expected 'key = value', a [section] or a comment, got '%s'", s);
            break;
        }
        *eq = 0;
        char *key = trim(s);
        int bad_quote;
        char *value = clean_value(eq + 1, &bad_quote);
        if (!ini->n) {
            rc = error_at(err, errlen, lb, "'%s = %s' comes before any [section]", key, value);
            break;
        }
        Section *sec = &ini->s[ini->n - 1];
        char title[100];
        sec_title(sec, title, sizeof title);
        int keyok = *key != 0;
        for (const char *p = key; *p; p++) keyok &= isalnum((unsigned char)*p) || *p == '_';
        if (!keyok) {
            rc = error_at(err, errlen, lb, "%s: bad key '%s' (letters, digits and '_')", title, key);
            break;
        }
        if (bad_quote) {
            rc = error_at(err, errlen, lb, "%s %s: unbalanced quotes in the value", title, key);
            break;
        }
        if (!*value) {
            rc = error_at(err, errlen, lb, "%s %s has no value", title, key);
            break;
        }
        const Entry *dup = find_entry(sec, key);
        if (dup) {
            rc = error_at(err, errlen, lb, "duplicate key '%s' in %s (first set at line %d)", key, title, dup->line);
            break;
        }
        add_entry(sec, key, value, line, NULL);
    }
    free(buf);
    fclose(f);
    if (rc) ini_free(ini);
    return rc;
}

/* "section.key=value", "stage NAME.key=value" or "NAME.key=value" */
static int apply_override(Ini *ini, const char *text, char *err, size_t errlen) {
    char lb[700], buf[1024];
    snprintf(lb, sizeof lb, "--set %s", text);
    if (strlen(text) >= sizeof buf) return error_at(err, errlen, lb, "too long");
    snprintf(buf, sizeof buf, "%s", text);
    char *eq = strchr(buf, '=');
    if (!eq) return error_at(err, errlen, lb, "expected section.key=value (a stage: stage NAME.key=value)");
    *eq = 0;
    char *dot = strrchr(buf, '.');
    if (!dot) return error_at(err, errlen, lb, "expected section.key=value (a stage: stage NAME.key=value)");
    *dot = 0;
    char *secname = trim(buf), *key = trim(dot + 1);
    int bad_quote;
    char *value = clean_value(eq + 1, &bad_quote);
    if (!*key || !*value || bad_quote) return error_at(err, errlen, lb, "expected section.key=value with a key and a value");
    SecKind kind = NSEC;
    const char *name = "";
    for (int k = 0; k < SEC_STAGE; k++)
        if (!strcmp(secname, sec_names[k])) kind = (SecKind)k;
    if (kind == NSEC) {
        kind = SEC_STAGE;
        name = secname;
        if (!strncmp(secname, "stage", 5) && isspace((unsigned char)secname[5])) name = trim(secname + 5);
    }
    Section *s = find_section(ini, kind, name);
    if (!s && kind != SEC_STAGE) s = add_section(ini, kind, "", 0);
    if (!s) {
        char list[1024] = "";
        for (int i = 0; i < ini->n; i++)
            if (ini->s[i].kind == SEC_STAGE)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", *list ? ", " : "", ini->s[i].name);
        return error_at(err, errlen, lb, "no section [data], [model], [run] or stage named '%s' in %s (stages: %s)", name,
                        ini->path, *list ? list : "none");
    }
    Entry *e = find_entry(s, key);
    if (e) {
        free(e->value);
        e->value = dupstr(value);
        e->line = 0;
        e->set = text;
    } else {
        add_entry(s, key, value, 0, text);
    }
    return 0;
}

/* ------------------------------------------------------------------------------ values */

/* The shortest text that reads back as exactly v, written as people write it: 10, 0.003, 1e5, 1e-8. */
static void fmt_float(char *buf, size_t n, float v) {
    if (v == rintf(v) && fabsf(v) < 1e5f) {
        snprintf(buf, n, "%.0f", (double)v);
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    char *e = strchr(buf, 'e');
    if (!e) return;
    char *d = e + 1, *from = d;
    if (*from == '+') from++;
    else if (*from == '-') d++, from++;
    while (from[0] == '0' && from[1]) from++;
    memmove(d, from, strlen(from) + 1);
}

static void fmt_range(const Key *k, char *buf, size_t n) {
    char lo[32], hi[32];
    fmt_float(lo, sizeof lo, (float)k->lo);
    fmt_float(hi, sizeof hi, (float)k->hi);
    if (k->type == T_INT || k->type == T_SIZES) {
        snprintf(lo, sizeof lo, "%.0f", k->lo);
        snprintf(hi, sizeof hi, "%.0f", k->hi);
    }
    if (!(k->flags & (K_LO_OPEN | K_HI_OPEN))) snprintf(buf, n, "between %s and %s", lo, hi);
    else snprintf(buf, n, "%s %s and %s %s", k->flags & K_LO_OPEN ? ">" : ">=", lo, k->flags & K_HI_OPEN ? "<" : "<=", hi);
}

static int in_range(const Key *k, double v) {
    if (k->flags & K_LO_OPEN ? v <= k->lo : v < k->lo) return 0;
    if (k->flags & K_HI_OPEN ? v >= k->hi : v > k->hi) return 0;
    return 1;
}

static void list_choices(const Choice *c, const char *sep, char *buf, size_t n) {
    *buf = 0;
    for (const Choice *p = c; p->name; p++) snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", p == c ? "" : sep, p->name);
}

static int parse_int(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno) return -1;
    *out = v;
    return 0;
}

/* Parse text for key k into its field in base. Returns 0, or -1 with the reason in why. */
static int parse_value(const Key *k, const char *text, void *base, char *why, size_t n) {
    char *field = (char *)base + k->off, range[96];
    fmt_range(k, range, sizeof range);
    switch (k->type) {
    case T_INT: {
        long long v;
        if (parse_int(text, &v)) return snprintf(why, n, "not an integer"), -1;
        if (!in_range(k, (double)v)) return snprintf(why, n, "must be %s", range), -1;
        *(int *)field = (int)v;
        return 0;
    }
    case T_U64: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(text, &end, 10);
        if (end == text || *end || errno || *text == '-')
            return snprintf(why, n, "not a non-negative integer below 2^64"), -1;
        *(uint64_t *)field = (uint64_t)v;
        return 0;
    }
    case T_FLOAT: {
        char *end;
        errno = 0;
        double d = strtod(text, &end);
        if (end == text || *end || !isfinite(d)) return snprintf(why, n, "not a number"), -1;
        float v = (float)d;
        if (!isfinite(v) || !in_range(k, (double)v)) return snprintf(why, n, "must be %s", range), -1;
        *(float *)field = v;
        return 0;
    }
    case T_LR: { /* "x", or "lo..hi" (fastai's slice(lo, hi)) */
        float *lr = (float *)(void *)field;
        const char *dots = strstr(text, "..");
        char *end;
        double hi = strtod(dots ? dots + 2 : text, &end), lo = 0;
        if (end == (dots ? dots + 2 : text) || *end || !isfinite(hi)) return snprintf(why, n, "not a number or a range lo..hi"), -1;
        if (dots) {
            char *lend;
            lo = strtod(text, &lend);
            if (lend != dots || !isfinite(lo)) return snprintf(why, n, "not a number or a range lo..hi"), -1;
        }
        /* checked as stored: a float (3e-64 would become 0, and lo 0 no range at all) */
        float fhi = (float)hi, flo = (float)lo;
        if (dots && !(flo > 0 && flo <= fhi)) return snprintf(why, n, "a range lo..hi needs 0 < lo <= hi"), -1;
        if (!isfinite(fhi) || !in_range(k, (double)fhi)) return snprintf(why, n, "must be %s", range), -1;
        lr[0] = fhi;
        lr[1] = flo;
        return 0;
    }
    case T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (!strcmp(text, yes[i])) return *(int *)field = 1, 0;
            if (!strcmp(text, no[i])) return *(int *)field = 0, 0;
        }
        return snprintf(why, n, "must be true or false (or yes/no, on/off, 1/0)"), -1;
    }
    case T_STRING: {
        if (strlen(text) >= k->size) return snprintf(why, n, "longer than %zu characters", k->size - 1), -1;
        if (k->flags & K_ARCH) {
            int count;
            const ModelEntry *m = model_registry(&count);
            const char *names[64];
            char list[512] = "";
            int found = 0;
            for (int i = 0; i < count && i < 64; i++) {
                names[i] = m[i].name;
                found |= !strcmp(text, m[i].name);
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", m[i].name);
            }
            if (!found) {
                const char *g = closest(text, names, count < 64 ? count : 64);
                char hint[96] = "";
                if (g) snprintf(hint, sizeof hint, "; did you mean '%s'?", g);
                return snprintf(why, n, "unknown model%s models: %s", g ? hint : ";", list), -1;
            }
        }
        snprintf(field, k->size, "%s", text);
        return 0;
    }
    case T_ENUM: {
        const char *names[16];
        int count = 0;
        for (const Choice *c = k->choices; c->name; c++) {
            names[count++] = c->name;
            if (strcmp(text, c->name)) continue;
            if (k->flags & K_NAME) snprintf(field, k->size, "%s", c->name);
            else *(int *)field = c->value;
            return 0;
        }
        char list[256], hint[96] = "";
        list_choices(k->choices, ", ", list, sizeof list);
        const char *g = closest(text, names, count);
        if (g) snprintf(hint, sizeof hint, "; did you mean '%s'?", g);
        return snprintf(why, n, "must be one of %s%s", list, hint), -1;
    }
    case T_SIZES: {
        int *sizes = (int *)field, count = 0;
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", text);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            tok = trim(tok);
            long long v;
            if (parse_int(tok, &v)) return snprintf(why, n, "'%s' is not an integer", tok), -1;
            if (!in_range(k, (double)v)) return snprintf(why, n, "%s: each size must be %s", tok, range), -1;
            if (count == CONFIG_MAX_SIZES) return snprintf(why, n, "at most %d sizes", CONFIG_MAX_SIZES), -1;
            sizes[count++] = (int)v;
        }
        if (!count) return snprintf(why, n, "no sizes"), -1;
        *(int *)((char *)base + k->count_off) = count;
        return 0;
    }
    }
    return -1;
}

/* The value of key k in base as INI text. */
static void format_value(const Key *k, const void *base, char *buf, size_t n) {
    const char *field = (const char *)base + k->off;
    switch (k->type) {
    case T_INT: snprintf(buf, n, "%d", *(const int *)field); break;
    case T_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)field); break;
    case T_FLOAT: fmt_float(buf, n, *(const float *)field); break;
    case T_LR: {
        const float *lr = (const float *)(const void *)field;
        if (lr[1] > 0) {
            fmt_float(buf, n, lr[1]);
            snprintf(buf + strlen(buf), n - strlen(buf), "..");
            fmt_float(buf + strlen(buf), n - strlen(buf), lr[0]);
        } else {
            fmt_float(buf, n, lr[0]);
        }
        break;
    }
    case T_BOOL: snprintf(buf, n, "%s", *(const int *)field ? "true" : "false"); break;
    case T_STRING: snprintf(buf, n, "%s", field); break;
    case T_ENUM: snprintf(buf, n, "%s", k->flags & K_NAME ? field : choice_name(k->choices, *(const int *)field)); break;
    case T_SIZES: {
        int count = *(const int *)((const char *)base + k->count_off);
        *buf = 0;
        for (int i = 0; i < count; i++) snprintf(buf + strlen(buf), n - strlen(buf), "%s%d", i ? "," : "", ((const int *)field)[i]);
        break;
    }
    }
}

/* ------------------------------------------------------------------------------ resolution */

/* The struct that holds key k's field: the Config, the stage, or one of its transforms. */
static const void *key_cbase(const Key *k, const Config *c, const StageConfig *st) {
    switch (k->in) {
    case IN_CONFIG: return c;
    case IN_STAGE: return st;
    case IN_TRAIN_TF: return &st->train_tf;
    case IN_VALID_TF: return &st->valid_tf;
    }
    return NULL;
}

static void *key_base(const Key *k, Config *c, StageConfig *st) { return (void *)key_cbase(k, c, st); }

/* The first key in k's chain of deps (k itself included) that does not apply, or NULL when k
 * applies: presize in an eval stage fails at `transform` (no transform in an eval stage). */
static const Key *not_applying(const Key *k, const Config *c, const StageConfig *st) {
    if (!k->dep) return NULL;
    const Key *d = find_key(k->sec, k->dep);
    const Key *up = not_applying(d, c, st);
    if (up) return up;
    int v = *(const int *)((const char *)key_cbase(d, c, st) + d->off);
    return (k->mask >> v) & 1 ? NULL : k;
}

static int applies(const Key *k, const Config *c, const StageConfig *st) { return not_applying(k, c, st) == NULL; }

typedef struct {
    const Ini *ini;
    char *err;
    size_t errlen;
} Ctx;

/* "[stage full] lr = abc: " for file entries; a --set label already says it all */
static void entry_what(const Section *s, const Entry *e, char *buf, size_t n) {
    char title[100];
    if (e->set) *buf = 0;
    else snprintf(buf, n, "%s %s = %s: ", sec_title(s, title, sizeof title), e->key, e->value);
}

static int bad_value(Ctx *x, const Section *s, const Entry *e, const char *why) {
    char lb[1200], what[700];
    entry_what(s, e, what, sizeof what);
    return error_at(x->err, x->errlen, entry_label(x->ini, e, lb, sizeof lb), "%s%s", what, why);
}

static int set_value(Ctx *x, const Section *s, const Entry *e, const Key *k, void *base) {
    char why[700];
    if (parse_value(k, e->value, base, why, sizeof why)) return bad_value(x, s, e, why);
    return 0;
}

/* Whether a stage of this type can take key k at all: the type mask at the end of its dep chain. */
static int stage_type_takes(const Key *k, int type) {
    while (k->dep && strcmp(k->dep, "type")) k = find_key(k->sec, k->dep);
    return !k->dep || ((k->mask >> type) & 1);
}

/* An unknown key: the error names the closest key and lists the keys of the section (of a stage:
 * those its type can take). */
static int unknown_key(Ctx *x, const Section *s, const Entry *e, int type) {
    const char *names[NKEYS];
    int n = 0;
    char list[2048] = "", title[100], lb[1200], hint[100] = "";
    for (int i = 0; i < NKEYS; i++) {
        if (keys[i].sec != s->kind) continue;
        names[n++] = keys[i].name;
        if (s->kind != SEC_STAGE || stage_type_takes(&keys[i], type))
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", *list ? ", " : "", keys[i].name);
    }
    const char *g = closest(e->key, names, n);
    if (g) snprintf(hint, sizeof hint, "; did you mean '%s'?", g);
    return error_at(x->err, x->errlen, entry_label(x->ini, e, lb, sizeof lb), "unknown key '%s' in %s%s keys: %s", e->key,
                    sec_title(s, title, sizeof title), g ? hint : ";", list);
}

static void dep_values(const Key *k, char *buf, size_t n) {
    const Key *d = find_key(k->sec, k->dep);
    *buf = 0;
    for (const Choice *c = d->choices; c->name; c++)
        if ((k->mask >> c->value) & 1) snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", *buf ? ", " : "", c->name);
}

/* A key set where it does not apply. */
static int not_here(Ctx *x, const Section *s, const Entry *e, const Key *k, Config *c, StageConfig *st) {
    const Key *bad = not_applying(k, c, st), *d = find_key(bad->sec, bad->dep);
    char why[700], vals[256], cur[64];
    dep_values(bad, vals, sizeof vals);
    format_value(d, key_cbase(d, c, st), cur, sizeof cur);
    if (!strcmp(d->name, "type"))
        snprintf(why, sizeof why, "a stage of type %s takes no '%s' (only: %s)", cur, k->name, vals);
    else if (bad == k)
        snprintf(why, sizeof why, "'%s' does not apply when %s = %s (only with %s = %s)", k->name, d->name, cur, d->name, vals);
    else
        snprintf(why, sizeof why, "'%s' does not apply when %s = %s", k->name, d->name, cur);
    return bad_value(x, s, e, why);
}

static int missing(Ctx *x, const Section *s, const Key *k, const char *why) {
    char lb[700], title[100];
    return error_at(x->err, x->errlen, line_label(x->ini, s->line, lb, sizeof lb), "%s has no '%s'%s",
                    sec_title(s, title, sizeof title), k->name, why);
}

static int check_unknown(Ctx *x, const Section *s, int type) {
    for (int i = 0; i < s->n; i++)
        if (!find_key(s->kind, s->e[i].key)) return unknown_key(x, s, &s->e[i], type);
    return 0;
}

/* [data], [model], [run]: defaults, then the section's values, in table order. */
static int resolve_global(Ctx *x, SecKind kind, Config *c) {
    Section *s = find_section(x->ini, kind, "");
    for (int i = 0; i < NKEYS; i++) {
        const Key *k = &keys[i];
        if (k->sec != kind || !k->def) continue;
        char why[200];
        if (parse_value(k, k->def, c, why, sizeof why)) die("config schema: default of '%s': %s", k->name, why);
    }
    if (!s) {
        for (int i = 0; i < NKEYS; i++)
            if (keys[i].sec == kind && (keys[i].flags & K_REQ))
                return error_at(x->err, x->errlen, x->ini->path, "no [%s] section (it needs at least '%s')", sec_names[kind],
                                keys[i].name);
        return 0;
    }
    if (check_unknown(x, s, -1)) return -1;
    for (int i = 0; i < NKEYS; i++) {
        const Key *k = &keys[i];
        if (k->sec != kind) continue;
        const Entry *e = find_entry(s, k->name);
        if (e && !applies(k, c, NULL)) return not_here(x, s, e, k, c, NULL);
        if (e && set_value(x, s, e, k, c)) return -1;
        if (!e && (k->flags & K_REQ) && applies(k, c, NULL)) return missing(x, s, k, " (required)");
    }
    return 0;
}

/* The most recent earlier stage where key k applies, or NULL. */
static StageConfig *carry_source(const Key *k, Config *c, StageConfig *stages, int i) {
    for (int j = i - 1; j >= 0; j--)
        if (applies(k, c, &stages[j])) return &stages[j];
    return NULL;
}

/* rrc's deterministic version is its evaluation pair, Resize + CenterCrop. */
static TransformKind deterministic(TransformKind k) { return k == TF_RANDOM_RESIZED_CROP ? TF_RESIZE_CENTER_CROP : k; }

static int resolve_stage(Ctx *x, const Section *s, Config *c, StageConfig *stages, int i) {
    StageConfig *st = &stages[i];
    memset(st, 0, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", s->name);
    st->line = s->line;
    const Key *ktype = find_key(SEC_STAGE, "type");
    const Entry *e = find_entry(s, "type");
    char list[256];
    list_choices(stage_types, ", ", list, sizeof list);
    if (e && set_value(x, s, e, ktype, st)) return -1;
    if (!e) {
        char why[300];
        snprintf(why, sizeof why, " (required: %s)", list);
        return missing(x, s, ktype, why);
    }
    if (check_unknown(x, s, st->type)) return -1;
    /* Stage fields: defaults for this type, or carried from an earlier stage. */
    for (int k = 0; k < NKEYS; k++) {
        const Key *key = &keys[k];
        if (key->sec != SEC_STAGE || key->in != IN_STAGE || key == ktype) continue;
        const char *def = key_default(key, st->type);
        StageConfig *from = (key->flags & K_CARRY) && applies(key, c, st) ? carry_source(key, c, stages, i) : NULL;
        char why[200];
        if (from) memcpy((char *)st + key->off, (char *)from + key->off, key->size);
        else if (def && parse_value(key, def, st, why, sizeof why)) die("config schema: default of '%s': %s", key->name, why);
    }
    /* The rest in table order; the two transform heads set up their groups' starting values. */
    int touched_train = 0;
    for (int k = 0; k < NKEYS; k++) {
        const Key *key = &keys[k];
        if (key->sec != SEC_STAGE || key == ktype) continue;
        e = find_entry(s, key->name);
        if (key->in == IN_TRAIN_TF && e) touched_train = 1;
        if (e && !applies(key, c, st)) return not_here(x, s, e, key, c, st);
        if (!strcmp(key->name, "transform")) {
            /* the kind carries; its parameters carry only while the kind stays the same */
            StageConfig *from = applies(key, c, st) ? carry_source(key, c, stages, i) : NULL;
            TransformSpec first;
            char why[200];
            if (parse_value(key, key->def, &first, why, sizeof why)) die("config schema: default of 'transform': %s", why);
            TransformKind kind = from ? from->train_tf.kind : first.kind;
            if (e) {
                if (set_value(x, s, e, key, &st->train_tf)) return -1;
                kind = st->train_tf.kind;
            }
            st->train_tf = from && from->train_tf.kind == kind ? from->train_tf : transform_defaults(kind, 0, 1);
            continue;
        }
        if (!strcmp(key->name, "valid_transform")) {
            /* the validation transform follows the training one: carried while the stage changes
             * nothing of the training transform, else its deterministic version */
            const StageConfig *prev = i > 0 ? &stages[i - 1] : NULL;
            int carry = prev && !touched_train;
            TransformKind kind = carry ? prev->valid_tf.kind : deterministic(st->train_tf.kind);
            if (e) {
                if (set_value(x, s, e, key, &st->valid_tf)) return -1;
                kind = st->valid_tf.kind;
            }
            if (carry && prev->valid_tf.kind == kind) {
                st->valid_tf = prev->valid_tf;
            } else {
                st->valid_tf = transform_defaults(kind, 0, 0);
                if (kind == TF_FASTAI && st->train_tf.kind == TF_FASTAI) st->valid_tf.presize = st->train_tf.presize;
                if (kind == TF_RESIZE_CENTER_CROP && st->train_tf.kind == TF_RESIZE_CENTER_CROP)
                    st->valid_tf.resize_ratio = st->train_tf.resize_ratio;
            }
            continue;
        }
        if (e && set_value(x, s, e, key, key_base(key, c, st))) return -1;
        if (!e && (key->flags & K_REQ) && applies(key, c, st)) {
            char why[100];
            const char *tn = choice_name(stage_types, st->type);
            snprintf(why, sizeof why, ", which %s %s stage requires", strchr("aeiou", tn[0]) ? "an" : "a", tn);
            return missing(x, s, key, why);
        }
    }
    /* Rules across keys. */
    char lb[700], title[100];
    line_label(x->ini, s->line, lb, sizeof lb);
    sec_title(s, title, sizeof title);
    const TransformSpec *t = &st->train_tf;
    if (t->kind == TF_RANDOM_RESIZED_CROP && t->scale_min > t->scale_max)
        return error_at(x->err, x->errlen, lb, "%s scale_min = %g is larger than scale_max = %g", title, (double)t->scale_min,
                        (double)t->scale_max);
    if ((t->kind == TF_RANDOM_RESIZED_CROP || t->kind == TF_FASTAI) && t->ratio_min > t->ratio_max)
        return error_at(x->err, x->errlen, lb, "%s ratio_min = %g is larger than ratio_max = %g", title, (double)t->ratio_min,
                        (double)t->ratio_max);
    if ((BIT(st->type) & (TRAINING)) && st->batch < 2)
        return error_at(x->err, x->errlen, lb, "%s batch = %d: batch norm needs at least 2 images per training batch "
                        "(PyTorch refuses 1 too)", title, st->batch);
    if (st->type == STAGE_PROGRESSIVE && st->delay_fraction + st->finetune_fraction > 1.0f)
        return error_at(x->err, x->errlen, lb, "%s delay_fraction + finetune_fraction = %g: must be at most 1", title,
                        (double)(st->delay_fraction + st->finetune_fraction));
    /* An eval stage has no size of its own: its largest test size sizes the model's buffers. */
    if (st->type == STAGE_EVAL) {
        st->size = 0;
        for (int k = 0; k < st->nsizes; k++) st->size = st->sizes[k] > st->size ? st->sizes[k] : st->size;
    }
    st->train_tf.size = st->valid_tf.size = st->size;
    st->train_tf.train = 1;
    st->valid_tf.train = 0;
    return 0;
}

int config_load(const char *path, const char *const *overrides, int noverrides, Config *out, char *err, size_t errlen) {
    check_schema();
    memset(out, 0, sizeof *out);
    Ini ini;
    if (ini_read(&ini, path, err, errlen)) return -1;
    int rc = 0;
    for (int i = 0; i < noverrides && !rc; i++) rc = apply_override(&ini, overrides[i], err, errlen);
    Ctx x = {&ini, err, errlen};
    if (strlen(path) >= sizeof out->path) rc = error_at(err, errlen, path, "path too long");
    else snprintf(out->path, sizeof out->path, "%s", path);
    for (int k = 0; k < SEC_STAGE && !rc; k++) rc = resolve_global(&x, (SecKind)k, out);
    int nstages = 0;
    for (int i = 0; i < ini.n; i++) nstages += ini.s[i].kind == SEC_STAGE;
    if (!rc && !nstages) rc = error_at(err, errlen, path, "no [stage NAME] section: nothing to run");
    if (!rc) {
        out->stages = xcalloc((size_t)nstages, sizeof *out->stages);
        for (int i = 0; i < ini.n && !rc; i++)
            if (ini.s[i].kind == SEC_STAGE) {
                rc = resolve_stage(&x, &ini.s[i], out, out->stages, out->nstages);
                out->nstages++;
            }
    }
    ini_free(&ini);
    if (rc) {
        config_free(out);
        return -1;
    }
    out->data.root = out->storage[0];
    out->data.train_dir = out->storage[1];
    out->data.valid_dir = out->storage[2];
    out->data.csv = out->storage[3];
    out->data.images_dir = out->storage[4];
    return 0;
}

void config_free(Config *c) {
    free(c->stages);
    c->stages = NULL;
    c->nstages = 0;
}

/* ------------------------------------------------------------------------------ output */

/* Quote a string that would not read back as itself. */
static void write_value(FILE *f, const char *v) {
    int quote = !*v || isspace((unsigned char)*v) || isspace((unsigned char)v[strlen(v) - 1]) || *v == '"';
    for (const char *p = v; *p && !quote; p++) quote = (*p == '#' || *p == ';') && p > v && isspace((unsigned char)p[-1]);
    fprintf(f, quote ? "\"%s\"\n" : "%s\n", v);
}

void config_write(const Config *c, FILE *f) {
    char buf[1024];
    fprintf(f, "# cnntrain configuration resolved from %s: every key that applies, defaults filled in\n", c->path);
    for (int sec = 0; sec < SEC_STAGE; sec++) {
        fprintf(f, "\n[%s]\n", sec_names[sec]);
        for (int k = 0; k < NKEYS; k++) {
            const Key *key = &keys[k];
            if ((int)key->sec != sec || !applies(key, c, NULL)) continue;
            format_value(key, c, buf, sizeof buf);
            if (!*buf) { /* an optional string left empty (no pretrained weights) */
                fprintf(f, "# %s = (none)\n", key->name);
                continue;
            }
            fprintf(f, "%s = ", key->name);
            write_value(f, buf);
        }
    }
    for (int i = 0; i < c->nstages; i++) {
        const StageConfig *st = &c->stages[i];
        fprintf(f, "\n[stage %s]\n", st->name);
        for (int k = 0; k < NKEYS; k++) {
            const Key *key = &keys[k];
            if (key->sec != SEC_STAGE || !applies(key, c, st)) continue;
            format_value(key, key_cbase(key, c, st), buf, sizeof buf);
            fprintf(f, "%s = ", key->name);
            write_value(f, buf);
        }
    }
}

static void help_type(const Key *k, char *buf, size_t n) {
    char range[96];
    fmt_range(k, range, sizeof range);
    switch (k->type) {
    case T_INT: snprintf(buf, n, "int, %s", range); break;
    case T_U64: snprintf(buf, n, "int, 0 to 2^64-1"); break;
    case T_FLOAT: snprintf(buf, n, "float, %s", range); break;
    case T_LR: snprintf(buf, n, "float %s, or a range lo..hi", range); break;
    case T_BOOL: snprintf(buf, n, "bool"); break;
    case T_STRING: snprintf(buf, n, "string"); break;
    case T_ENUM: list_choices(k->choices, " | ", buf, n); break;
    case T_SIZES: snprintf(buf, n, "list of ints, each %s", range); break;
    }
}

/* The default as help shows it: the table's, the stage types that differ, or a transform's. */
static void help_default(const Key *k, char *buf, size_t n) {
    *buf = 0;
    if (k->flags & K_REQ) {
        snprintf(buf, n, "required");
        return;
    }
    if (k->in == IN_TRAIN_TF && strcmp(k->name, "transform")) {
        /* from transform_defaults: fastai's and torchvision's library defaults */
        char prevv[64] = "";
        int same = 1;
        for (const Choice *c = tf_kinds; c->name; c++) {
            if (!((k->mask >> c->value) & 1)) continue;
            TransformSpec t = transform_defaults((TransformKind)c->value, 224, 1);
            char v[64];
            format_value(k, &t, v, sizeof v);
            if (*prevv && strcmp(prevv, v)) same = 0;
            snprintf(prevv, sizeof prevv, "%s", v);
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s %s", *buf ? ", " : "", c->name, v);
        }
        if (same) snprintf(buf, n, "%s", prevv);
        return;
    }
    if (!k->def) {
        snprintf(buf, n, "follows transform");
        return;
    }
    snprintf(buf, n, "%s", k->def);
    for (int i = 0; k->sec == SEC_STAGE && i < NTYPE_DEFAULTS; i++)
        if (!strcmp(type_defaults[i].key, k->name))
            snprintf(buf + strlen(buf), n - strlen(buf), "; %s %s", choice_name(stage_types, type_defaults[i].type),
                     type_defaults[i].value);
}

/* Print text from column `indent` on, wrapped at 100 columns, continuation lines indented. */
static void wrap(FILE *f, const char *text, int indent) {
    int col = indent;
    for (const char *p = text; *p;) {
        while (*p == ' ') p++;
        int len = (int)strcspn(p, " ");
        if (col > indent && col + 1 + len > 100) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", len, p);
        col += len;
        p += len;
    }
    fputc('\n', f);
}

static const char *const help_sections[NSEC] = {
    "[data]  the data set",
    "[model]  the network",
    "[run]  where and how to run",
    "[stage NAME]  one per stage, run in file order",
};

void config_help(FILE *f) {
    fprintf(f,
            "cnntrain configuration: an INI file with [data], [model], [run] and one [stage NAME] per stage.\n"
            "`key = value`; `#` and `;` start comments; quote a value with \"...\" to keep # or spaces.\n"
            "An unknown key, a bad value or a key that does not apply is an error naming its line.\n"
            "Command-line overrides: --set section.key=value, --set stage NAME.key=value (or NAME.key=value).\n");
    for (int sec = 0; sec < NSEC; sec++) {
        fprintf(f, "\n%s\n", help_sections[sec]);
        for (int i = 0; i < NKEYS; i++) {
            const Key *k = &keys[i];
            if ((int)k->sec != sec) continue;
            char type[256], def[256], when[512] = "";
            help_type(k, type, sizeof type);
            help_default(k, def, sizeof def);
            if (k->dep) {
                char vals[256];
                dep_values(k, vals, sizeof vals);
                snprintf(when, sizeof when, "; %s: %s", strcmp(k->dep, "type") ? k->dep : "stages", vals);
            }
            char line[1024];
            snprintf(line, sizeof line, "%s; %s%s%s%s", type, k->flags & K_REQ ? "" : "default ", def, when,
                     k->flags & K_CARRY ? "; carried over" : "");
            fprintf(f, "  %-18s ", k->name);
            wrap(f, line, 21);
            fprintf(f, "%21s", "");
            wrap(f, k->help, 21);
        }
    }
    fprintf(f,
            "\nDefaults by stage type: fit_one_cycle and progressive use fastai's (lr 1e-3, pct_start 0.25, div 25,\n"
            "div_final 1e5, moms 0.95-0.85-0.95, beta2 0.99, eps 1e-5, wd 0.01 without batch-norm and bias);\n"
            "fine_tune is fastai's fine_tune(epochs, 2e-3, freeze_epochs=1, pct_start=0.3, div=5); fit and fixres\n"
            "are PyTorch's AdamW with a constant lr (1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01 on every parameter).\n"
            "progressive is one-cycle with Composer's size schedule (initial_scale 0.5, delay 0.5, finetune 0.2,\n"
            "increment 4); an eval stage's size is its largest test size.\n"
            "\nCarried over (\"carried over\" above): as fastai's learn.dls and loss persist between fit calls, a\n"
            "stage that does not set size, batch, label_smoothing, mixup or transform takes the value of the\n"
            "most recent earlier stage that has it (the first stage: the default). Transform parameters carry\n"
            "while the transform kind stays the same and reset to the library defaults when it changes. The\n"
            "validation transform carries while a stage sets no training-transform key; otherwise it defaults\n"
            "to the deterministic version of the training transform (fastai -> fastai with its presize,\n"
            "rrc -> resize, center -> center, resize -> resize with its resize_ratio). Optimizer settings\n"
            "(lr, wd, moms, betas, eps, schedule) never carry: each stage restates them or takes its type's\n"
            "defaults.\n");
}
