/* train/interpret.c: the numbers of fastai's ClassificationInterpretation from one pass's
 * probabilities (interpret.h): confusion matrix, per-class scores, most_confused, top losses,
 * top-k hits, and which sample each row was. The files are interpret_write.c's. */
#include "train/interpret.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "train/scores.h"

void interp_compute(const float *probs, const int32_t *labels, int count, int classes, Interpretation *out) {
    memset(out, 0, sizeof *out);
    out->classes = classes;
    out->count = count;
    out->confusion = xcalloc((size_t)classes * classes, sizeof *out->confusion);
    out->predicted = xmalloc(((size_t)count + 1) * sizeof *out->predicted);
    out->loss = xmalloc(((size_t)count + 1) * sizeof *out->loss);
    out->confidence = xmalloc(((size_t)count + 1) * sizeof *out->confidence);
    for (int i = 0; i < count; i++) {
        const float *p = probs + (size_t)i * classes;
        int pred = argmax(p, classes), actual = labels[i];
        out->predicted[i] = pred;
        out->confidence[i] = p[pred];
        /* probabilities, not logits, are what the pass keeps: an underflowed p(actual) gives the
         * loss of the smallest positive float (about 103) rather than inf */
        out->loss[i] = -logf(p[actual] > FLT_TRUE_MIN ? p[actual] : FLT_TRUE_MIN);
        out->confusion[(size_t)actual * classes + pred]++;
        out->correct += pred == actual;
    }
}

void interp_free(Interpretation *t) {
    free(t->confusion);
    free(t->predicted);
    free(t->loss);
    free(t->confidence);
    memset(t, 0, sizeof *t);
}

int interp_topk_correct(const float *probs, const int32_t *labels, int count, int classes, int k) {
    int hits = 0;
    for (int i = 0; i < count; i++) {
        const float *p = probs + (size_t)i * classes;
        float mine = p[labels[i]];
        int above = 0; /* classes ranked before the label: more probable, or as probable and first */
        for (int c = 0; c < classes; c++) above += p[c] > mine || (c < labels[i] && p[c] == mine);
        hits += above < k;
    }
    return hits;
}

ClassScores interp_class_scores(const Interpretation *t, int c) {
    ClassScores s = {0, 0, 0, 0, 0, 0};
    int C = t->classes, right = t->confusion[(size_t)c * C + c];
    for (int k = 0; k < C; k++) {
        s.support += t->confusion[(size_t)c * C + k];
        s.predicted += t->confusion[(size_t)k * C + c];
    }
    s.precision = s.predicted ? (double)right / s.predicted : 0;
    s.recall = s.support ? (double)right / s.support : 0;
    s.accuracy = s.recall;
    s.f1 = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0;
    return s;
}

static int by_count_then_cell(const void *a, const void *b) {
    const ConfusedPair *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    if (x->actual != y->actual) return x->actual < y->actual ? -1 : 1;
    return (x->predicted > y->predicted) - (x->predicted < y->predicted);
}

int interp_most_confused(const Interpretation *t, int min_val, ConfusedPair **out) {
    int C = t->classes, n = 0, cap = 16;
    ConfusedPair *pairs = xmalloc((size_t)cap * sizeof *pairs);
    for (int a = 0; a < C; a++)
        for (int p = 0; p < C; p++) {
            int count = t->confusion[(size_t)a * C + p];
            /* fastai zeroes the diagonal first, so with min_val <= 0 every cell qualifies */
            if (a == p) count = 0;
            if (count < min_val) continue;
            if (n == cap) pairs = xrealloc(pairs, (size_t)(cap *= 2) * sizeof *pairs);
            pairs[n++] = (ConfusedPair){a, p, count};
        }
    qsort(pairs, (size_t)n, sizeof *pairs, by_count_then_cell);
    *out = pairs;
    return n;
}

static const float *sort_losses; /* qsort has no context argument */

static int by_loss_then_index(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    float x = sort_losses[i], y = sort_losses[j];
    if (x != y) return x < y ? 1 : -1;
    return (i > j) - (i < j);
}

int interp_top_losses(const Interpretation *t, int k, int *idx) {
    int n = t->count, *all = xmalloc(((size_t)n + 1) * sizeof *all);
    for (int i = 0; i < n; i++) all[i] = i;
    sort_losses = t->loss;
    qsort(all, (size_t)n, sizeof *all, by_loss_then_index);
    sort_losses = NULL;
    if (k > n) k = n;
    if (k < 0) k = 0;
    memcpy(idx, all, (size_t)k * sizeof *idx);
    free(all);
    return k;
}

int interp_loader_order(Loader *L, int nsamples, int count, int *sample, char *err, size_t errlen) {
    char *list = loader_bad_list(L, 0);
    unsigned char *bad = xcalloc((size_t)nsamples + 1, 1);
    int nbad = 0;
    for (char *p = list; *p;) {
        char *end;
        long i = strtol(p, &end, 10);
        if (i >= 0 && i < nsamples && !bad[i]) bad[i] = 1, nbad++;
        p = *end ? end + 1 : end;
    }
    free(list);
    int n = 0;
    if (nsamples - nbad == count)
        for (int i = 0; i < nsamples; i++)
            if (!bad[i]) sample[n++] = i;
    free(bad);
    if (n != count)
        return error_at(err, errlen, "interpretation", "the pass gave %d rows for %d samples less %d bad ones: its rows "
                        "cannot be matched to images", count, nsamples, nbad);
    return 0;
}
