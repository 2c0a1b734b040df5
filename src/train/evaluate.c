/* train/evaluate.c: the evaluation pass and the test-time augmentation pass (evaluate.h). One loss
 * computation for every caller: the device's softmax_xent through model_loss, as the training step
 * computes it, so valid_loss, the eval stage and `train eval` agree. */
#include "train/evaluate.h"

#include <stdlib.h>
#include <string.h>

#include "base/progress.h"
#include "base/util.h"
#include "dist/dist.h"
#include "train/scores.h"

/* Argmax hits of host logits (n x classes). */
static int count_correct(const float *logits, const int32_t *labels, int n, int classes) {
    int correct = 0;
    for (int i = 0; i < n; i++) correct += argmax(logits + (size_t)i * classes, classes) == labels[i];
    return correct;
}

/* One pass over this process's images: r.loss is the SUM of the losses (the callers divide), and
 * *sharded says whether the loader gave a data-parallel rank's parts of the batches. */
static EvalResult pass_local(const Evaluator *ev, Loader *L, int epoch, float smoothing, const EvalRows *rows, int *sharded) {
    EvalResult r = {0, 0, 0, 0};
    Model *m = ev->model;
    Backend *be = m->be;
    int C = m->classes;
    float *logits = xmalloc(((size_t)m->max_batch * C + 1) * sizeof(float)); /* model_input refuses larger batches */
    loader_start_epoch(L, epoch, 0);
    int batches = loader_batches(L), done = 0;
    double t0 = now_seconds();
    *sharded = 0;
    for (const Batch *b; (b = loader_next(L));) {
        if (ev->stop && *ev->stop) {
            r.interrupted = 1;
            break;
        }
        *sharded |= b->shards > 1;
        dist_progress();
        if (!b->n) continue; /* a short last batch left this rank's part empty */
        if (rows && (rows->probs || rows->labels) && b->n > rows->cap - r.count)
            die("evaluation pass: the loader gave more than the %d images the outputs hold", rows->cap);
        device_feed_upload(ev->feed, b, model_input(m, b->n, b->size, b->size));
        const Tensor *out = model_run(m, 0);
        r.loss += (double)model_loss(m, b->labels, smoothing) * b->n;
        be->ops->tensor_download(be, logits, out);
        r.correct += count_correct(logits, b->labels, b->n, C);
        if (rows && rows->labels) memcpy(rows->labels + r.count, b->labels, (size_t)b->n * sizeof(int32_t));
        if (rows && rows->probs)
            for (int i = 0; i < b->n; i++)
                softmax_row(logits + (size_t)i * C, rows->probs + (size_t)(r.count + i) * C, C);
        r.count += b->n;
        if (ev->progress)
            progress_show("%s: %d/%d batches, %.0f img/s", ev->progress, ++done, batches, r.count / (now_seconds() - t0 + 1e-9));
    }
    if (ev->progress) progress_clear();
    free(logits);
    return r;
}

EvalResult eval_pass(const Evaluator *ev, Loader *L, int epoch, float smoothing, const EvalRows *rows) {
    int sharded;
    EvalResult r = pass_local(ev, L, epoch, smoothing, rows, &sharded);
    if (sharded) { /* a data-parallel rank's parts: the counts summed over the ranks */
        if (rows && (rows->probs || rows->labels)) die("evaluation pass: a sharded loader gives no per-image rows");
        double sums[3] = {r.loss, r.correct, r.count};
        dist_allreduce_sum_f64(sums, 3);
        r.loss = sums[0], r.correct = (int)sums[1], r.count = (int)sums[2];
    }
    if (r.count) r.loss /= r.count;
    return r;
}

TtaResult tta_pass(const Evaluator *ev, Loader *plain, Loader *augmented, int first_epoch, int n, float beta, int cap) {
    return tta_pass_rows(ev, plain, augmented, first_epoch, n, beta, cap, NULL, NULL);
}

TtaResult tta_pass_rows(const Evaluator *ev, Loader *plain, Loader *augmented, int first_epoch, int n, float beta, int cap,
                        float *probs, const EvalRows *plain_rows) {
    TtaResult t = {{0, 0, 0, 0}, 0, 0, 0, -1, 0};
    int C = ev->model->classes;
    size_t cells = (size_t)cap * C + 1;
    /* the plain pass's rows: the caller's buffers when it wants them, else ours */
    int own_probs = !plain_rows || !plain_rows->probs, own_labels = !plain_rows || !plain_rows->labels;
    float *plain_p = own_probs ? xcalloc(cells, sizeof(float)) : plain_rows->probs;
    int32_t *labels = own_labels ? xmalloc(((size_t)cap + 1) * sizeof(int32_t)) : plain_rows->labels;
    float *aug = xcalloc(cells, sizeof(float)), *pass = xcalloc(cells, sizeof(float));
    int32_t *pass_labels = xmalloc(((size_t)cap + 1) * sizeof(int32_t));
    /* each pass named on the progress line */
    char label[160];
    Evaluator named = *ev;
    named.progress = ev->progress ? label : NULL;
    if (ev->progress) snprintf(label, sizeof label, "%s, TTA's plain pass", ev->progress);
    /* The plain pass first: it finds any bad image, and every augmented pass must list the same images.
     * Sharded (data-parallel), each rank combines its own images; the ranks decide together (every
     * pass runs on every rank: the loaders agree on bad images at each epoch's start), and the sums
     * are reduced at the end. */
    int sharded, sh;
    t.plain = pass_local(&named, plain, 0, 0.0f, &(EvalRows){plain_p, labels, cap}, &sharded);
    if (sharded && (probs || plain_rows)) die("TTA pass: a sharded loader gives no per-image rows");
    t.interrupted = t.plain.interrupted;
    int count = t.plain.count;
    double all = count;
    if (sharded) dist_allreduce_sum_f64(&all, 1);
    for (int p = 0; p < n && all > 0 && !t.interrupted && t.bad_pass < 0; p++) {
        if (ev->progress) snprintf(label, sizeof label, "%s, TTA pass %d/%d", ev->progress, p + 1, n);
        EvalResult r = pass_local(&named, augmented, first_epoch + p, 0.0f, &(EvalRows){pass, pass_labels, cap}, &sh);
        t.interrupted = r.interrupted;
        if (t.interrupted) break;
        uint64_t bad = r.count != count || memcmp(pass_labels, labels, (size_t)count * sizeof(int32_t));
        if (sharded) dist_allreduce_max_u64(&bad, 1);
        if (bad) {
            t.bad_pass = p;
            t.bad_count = r.count;
            break;
        }
        tta_accumulate(aug, pass, (size_t)count * C, n);
    }
    if (!t.interrupted && t.bad_pass < 0) {
        t.correct = tta_combine(aug, plain_p, labels, count, C, beta, &t.loss);
        if (probs) memcpy(probs, aug, (size_t)count * C * sizeof(float));
    }
    if (sharded) {
        double sums[5] = {t.loss * count, t.correct, t.plain.loss, t.plain.correct, count};
        dist_allreduce_sum_f64(sums, 5);
        t.correct = (int)sums[1], t.plain.loss = sums[2], t.plain.correct = (int)sums[3], t.plain.count = (int)sums[4];
        t.loss = sums[4] > 0 ? sums[0] / sums[4] : 0;
    }
    if (t.plain.count) t.plain.loss /= t.plain.count; /* pass_local gave the sum */
    if (own_probs) free(plain_p);
    if (own_labels) free(labels);
    free(aug);
    free(pass);
    free(pass_labels);
    return t;
}
