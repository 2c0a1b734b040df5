/* train/config.h: the experiment as the user writes it: an INI file with [data], [model], [run] and one
 * [stage NAME] section per stage, run in file order. One schema table (config.c) drives parsing,
 * validation, `--help-config` and the resolved copy written into the run folder: an unknown section
 * or key, a bad value or a missing required key stops before any work with file:line and the
 * valid choices. */
#ifndef CNN_CONFIG_H
#define CNN_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "pipeline/augment.h"
#include "backend/backend.h"
#include "pipeline/dataset.h"

typedef enum {
    STAGE_FIT_ONE_CYCLE, STAGE_FINE_TUNE, STAGE_FIT, STAGE_PROGRESSIVE, STAGE_FIXRES, STAGE_TTA, STAGE_EVAL, STAGE_LR_FIND,
    STAGE_INTERPRET
} StageType;

#define CONFIG_MAX_SIZES 16

typedef struct StageConfig {
    char name[64];
    int line;                  /* of its [stage NAME] header, for messages */
    StageType type;
    int epochs;
    int freeze_epochs;         /* fine_tune: fastai's freeze_epochs (1) */
    int size, batch;
    float lr;                  /* one-cycle peak; fine_tune base_lr; fit: constant */
    float lr_lo;               /* right after lr (T_LR): "lo..hi" spreads lo..lr over the parameter groups; 0 = none */
    int freeze;                /* before a training stage: FREEZE_KEEP, FREEZE_YES (train the head + batch norms), FREEZE_NO */
    float wd;
    int wd_bn_bias;            /* decay batch-norm and bias parameters too (PyTorch's AdamW: 1; fastai: 0) */
    float pct_start, div, div_final;
    float mom_max, mom_min;    /* beta1 over the cycle (fastai 0.95 -> 0.85 -> 0.95); fit uses mom_max */
    float beta2, eps;
    float label_smoothing;
    float mixup_alpha;         /* 0 = off */
    TransformSpec train_tf, valid_tf;
    /* progressive (Composer) */
    float initial_scale, delay_fraction, finetune_fraction;
    int size_increment;
    int resize_crop;           /* 0 = resize the batch, 1 = random crop of it */
    /* fixres */
    int train_final_bn;        /* trainable = head,final_bn (1) or head (0) */
    /* tta */
    int tta_n;
    float tta_beta;
    /* eval */
    int sizes[CONFIG_MAX_SIZES];
    int nsizes;
    /* lr_find (fastai's LRFinder: start_lr, end_lr, num_it, stop_div) */
    float lrf_start, lrf_end;
    int lrf_num_it, lrf_stop_div;
    /* interpret (fastai's ClassificationInterpretation) */
    int top_losses;            /* images in top_losses.jpg */
    int min_val;               /* most_confused's min_val */
} StageConfig;

enum { FREEZE_KEEP, FREEZE_YES, FREEZE_NO };
enum { LOSS_SCALE_AUTO, LOSS_SCALE_DYNAMIC, LOSS_SCALE_OFF };
enum { AUGMENT_AUTO, AUGMENT_HOST, AUGMENT_DEVICE };
enum { SAVE_STAGES, SAVE_FINAL, SAVE_BEST, SAVE_NONE };     /* [run] save */
enum { MONITOR_VALID_LOSS, MONITOR_ACCURACY };                /* [run] monitor */
enum { PRETRAINED_HEAD_AUTO, PRETRAINED_HEAD_KEEP, PRETRAINED_HEAD_NEW }; /* [model] pretrained_head */

typedef struct {
    char path[512];            /* the config file */
    DatasetSpec data;          /* strings point into this struct's storage */
    int strict_images;         /* on_bad_image = fail */
    int max_megapixels;        /* JPEGs larger than this are bad images (refused before decoding) */
    int max_file_mb;           /* image files larger than this (10^6 bytes) are bad images, never read */
    int augment_on;            /* AUGMENT_AUTO, _HOST or _DEVICE */
    char arch[32];
    int classes;               /* 0 = the data set's class count */
    char pretrained[512];      /* starting weights (safetensors state dict); "" = none */
    int pretrained_head;       /* PRETRAINED_HEAD_*: a pretrained classifier of the model's shape (pretrained.h) */
    char device[16];           /* auto | cpu | cuda */
    DType precision;
    uint64_t seed;
    char out_dir[512];         /* parent of run folders */
    char run_name[256];        /* the run folder's name under out_dir; "" = <config name>-<time> */
    int loss_scale;            /* LOSS_SCALE_AUTO, _DYNAMIC or _OFF */
    int force;                 /* not a key: the command line's --force (replace an existing run folder) */
    int sync_bn;               /* data-parallel: batch-norm statistics reduced across the ranks */
    int dist_timeout;          /* data-parallel: seconds without progress before a rank ends the job; 0 = never */
    int threads;               /* loader threads; 0 = cores */
    int stop_after;            /* training steps of this process before stopping as Ctrl-C does; 0 = never */
    int save;                  /* SAVE_*: the model files a run keeps (resume.safetensors always) */
    int monitor;               /* MONITOR_*: the value best.safetensors and early stopping follow */
    int early_stop_patience;   /* stop a fit after this many epochs without improvement; 0 = never */
    StageConfig *stages;
    int nstages;
    char storage[8][512];      /* backing store for the data strings */
} Config;

/* Parse `path`, then apply overrides ("section.key=value"; a stage is "stage NAME.key=value" or
 * "NAME.key=value"). Returns 0, or -1 with "file:line: message" in err. */
int config_load(const char *path, const char *const *overrides, int noverrides, Config *out, char *err, size_t errlen);
void config_free(Config *);
/* A stage that trains the weights (fit_one_cycle, fine_tune, fit, progressive, fixres), as opposed
 * to one that only looks at them (eval, tta, interpret, lr_find). */
int stage_trains(StageType);
/* The last stage among c's first `end` that trains the weights, or NULL: the stage whose size and
 * transforms a model saved at that point was trained with. */
const StageConfig *config_last_training(const Config *c, int end);
/* The resolved configuration (every key, defaults filled in) as a valid INI file. */
void config_write(const Config *, FILE *);
/* Every section and key with type, range, default and help: `./train --help-config`. */
void config_help(FILE *);

#endif
