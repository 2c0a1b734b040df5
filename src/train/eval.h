/* train/eval.h: a saved model on a data set's validation split at several test sizes (`train eval`):
 * the FixRes "train small, test larger" table, optionally with fastai's test-time augmentation. */
#ifndef CNN_EVAL_H
#define CNN_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/dataset.h"

/* What a checkpoint is evaluated with. Where the caller leaves a choice open (data.root NULL, no
 * sizes, resize_ratio 0, layout and split not given), it is the run's: the config.ini the run
 * folder holds beside the checkpoint (run_view.h), so `train eval CKPT` scores what the run
 * validated, as it validated it; without that file: the defaults below. */
typedef struct {
    const char *checkpoint;   /* model file written by ckpt_save (metadata arch, classes, class_names) */
    /* Its validation split is evaluated. root NULL: the run's data (its layout, split, fraction
     * and label map). A root that is the run's data folder also takes the run's layout unless
     * EVAL_LAYOUT is given. */
    DatasetSpec data;
    /* EVAL_* bits: what the user gave. EVAL_LAYOUT: data.format and the folder/file names;
     * EVAL_SPLIT_PCT, EVAL_SPLIT_SEED: data.valid_pct and data.seed. A CSV data set without is_val
     * is split as the checkpoint's run split it (its metadata valid_pct, split_seed) unless
     * given; a split that differs from the run's on the run's own data (data fingerprint) is
     * refused: it would score images the model trained on. */
    int given;
    const int *sizes;         /* test sides, evaluated in this order; none: the run's validation size */
    int nsizes;
    /* The test transform at side s: torchvision's Resize(round(resize_ratio*s), short side) +
     * CenterCrop(s) (1 = plain resize; 1.25 a FixRes-style test), or with center_crop,
     * CenterCrop(s) of the unresized image. Neither (resize_ratio 0): the run's validation
     * transform at side s (its kind, squash included), else Resize(s) + CenterCrop(s). */
    float resize_ratio;
    int center_crop;
    int batch;
    const char *device;       /* auto, cpu or cuda */
    int threads;              /* loader threads; 0 = one per core */
    /* fastai's tta(n, beta): n passes with the run's training transforms at side s (without a
     * run config: fastai's defaults, item Resize(s) at a random position + aug_transforms()),
     * averaged, then lerp(aug, plain, beta) of the softmax probabilities, with plain = the test
     * transform above. */
    int tta, tta_n;
    float tta_beta;
    uint64_t seed;            /* TTA's random transforms */
    const char *out_dir;      /* eval.csv and eval.png go here; NULL = the checkpoint's folder */
    int plot;                 /* draw eval.png (when gnuplot is installed) */
    /* fastai's ClassificationInterpretation (train/interpret.h) of the plain pass at the last
     * size: confusion.csv/.png, per_class.csv, most_confused.csv, top_losses.jpg and
     * show_results.jpg in out_dir; eval.csv and the table gain error_rate and (more than 5 classes)
     * top5_accuracy columns. */
    int interpret;
    int top_losses;           /* images in top_losses.jpg (9) */
    int min_val;              /* most_confused's min_val (1) */
} EvalOptions;

/* The defaults of `train eval`: everything the run's (above); where there is no run config,
 * folder layout train/ + val/, Resize + CenterCrop; batch 64, device auto, tta_n 4, beta 0.25,
 * plot on, interpret off (top_losses 9, min_val 1). */
void eval_options_default(EvalOptions *);
enum { EVAL_SPLIT_PCT = 1, EVAL_SPLIT_SEED = 2, EVAL_LAYOUT = 4 };

/* Evaluate at every size, print the table (size, loss, accuracy[, tta_loss, tta_accuracy]) to
 * stdout, write out_dir/eval.csv (the same columns and images[, and trained_size, the side the
 * run trained the model at, where its config says]) and eval.png (that side marked). Before any model is
 * built, the checkpoint's class list (metadata class_names) must equal the data's, name for name
 * in order; else err says why (the counts, the first class that differs). Returns 0, or -1 with
 * the message in err. */
int eval_checkpoint(const EvalOptions *, char *err, size_t errlen);

#endif
