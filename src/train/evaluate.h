/* train/evaluate.h: the one evaluation pass over a loader (the trainer's validation after each
 * epoch, the eval and tta stages, `train eval`) and fastai's test-time augmentation built on it.
 *
 * Use:
 *
 *     Evaluator ev = {model, &feed, &stop_flag, "valid"};  // stop_flag, the progress label may be NULL
 *     EvalResult r = eval_pass(&ev, loader, 0, 0.0f, NULL); // mean loss, hits, images
 *     TtaResult t = tta_pass(&ev, plain, augmented, 0, 4, 0.25f, nvalid);
 */
#ifndef CNN_EVALUATE_H
#define CNN_EVALUATE_H

#include <signal.h>
#include <stdint.h>

#include "net/model.h"
#include "pipeline/device_feed.h"
#include "pipeline/loader.h"

/* Where passes run and what stops them. */
typedef struct {
    Model *model;                       /* attached to a backend, in inference mode for the pass */
    DeviceFeed *feed;                   /* each batch reaches the model's input through device_feed_upload */
    const volatile sig_atomic_t *stop;  /* read before each batch: nonzero ends the pass; NULL: never */
    const char *progress;               /* a terminal progress line names the pass so ("valid"); NULL: none */
} Evaluator;

typedef struct {
    double loss;            /* mean cross-entropy over the images, computed on the device (0 with none) */
    int correct, count;     /* argmax hits on the logits, images seen */
    int interrupted;        /* *stop became nonzero: the pass is incomplete */
} EvalResult;

/* Per image outputs of a pass, in the loader's order; either pointer may be NULL. */
typedef struct {
    float *probs;           /* cap rows of the model's classes: softmax probabilities */
    int32_t *labels;        /* cap labels */
    int cap;                /* rows both hold; a loader that gives more images is a bug (fatal) */
} EvalRows;

/* One pass over L's epoch `epoch` (which fixes its random transforms): the loss with label
 * smoothing `smoothing` (fastai's valid_loss uses the stage's), as the training step computes it,
 * and hits on the host logits; rows, when not NULL, receives each image's probabilities and label. */
EvalResult eval_pass(const Evaluator *, Loader *L, int epoch, float smoothing, const EvalRows *rows);

typedef struct {
    EvalResult plain;       /* the plain pass (smoothing 0) */
    double loss;            /* mean -log p(label) of the combined probabilities */
    int correct;            /* hits of the combined probabilities, out of plain.count */
    int interrupted;        /* a stop came: nothing was combined */
    /* >= 0: that augmented pass saw other images than the plain pass (bad_count of them, or the
     * same count in another order); nothing was combined */
    int bad_pass, bad_count;
} TtaResult;

/* fastai's tta(n, beta): the plain pass over `plain` (epoch 0), then n passes over `augmented`
 * (epochs first_epoch .. first_epoch + n - 1) whose softmax probabilities are averaged, then
 * lerp(mean_aug, plain, beta) (tta_combine). No augmented pass runs when the plain pass saw no
 * image. Both loaders hold at most cap images. Loaders sharded for data-parallel ranks (both alike)
 * give each rank its part: it combines its own images, the ranks decide alike and the result is
 * the sums over the ranks (then no per-image rows: probs and plain_rows must be NULL). */
TtaResult tta_pass(const Evaluator *, Loader *plain, Loader *augmented, int first_epoch, int n, float beta, int cap);
/* tta_pass that also gives each image's combined probabilities: probs (cap rows of the model's
 * classes, in the plain pass's order) when it combined (not interrupted, no bad pass); and, with
 * plain_rows (its cap at least cap), the plain pass's own probabilities and labels. Either may be
 * NULL. */
TtaResult tta_pass_rows(const Evaluator *, Loader *plain, Loader *augmented, int first_epoch, int n, float beta, int cap,
                        float *probs, const EvalRows *plain_rows);

#endif
