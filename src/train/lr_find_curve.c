/* train/lr_find_curve.c: the range test's bookkeeping, as fastai computes it (lr_find.h): the
 * exponential schedule, the smoothed loss, the three suggestion functions, fastai's printout, the
 * CSV and the plot's data. Pure functions; tests/test_lr_find.c checks them against fastai's own
 * (tests/ref/fastai_lr_find.txt). */
#include "train/lr_find.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "report/plot_lr_find.h"

void lr_find_options_default(LrFindOptions *o) {
    o->start_lr = 1e-7;
    o->end_lr = 10;
    o->num_it = 100;
    o->stop_div = 1;
}

int lr_find_iterations(const LrFindOptions *o) { return o->num_it < 6 ? 6 : o->num_it; }

double lr_find_lr(const LrFindOptions *o, int i) {
    double pos = (double)i / lr_find_iterations(o);
    return o->start_lr * pow(o->end_lr / o->start_lr, pos);
}

/* torch.lerp(loss, val, 0.98) as its CPU kernel computes it for a weight >= 0.5, one fused
 * multiply-add in float: fma(-(end - start), 1 - weight, end); then val / (1 - beta^count) with the
 * power in double, as Python computes it. */
float smooth_loss_add(SmoothLoss *s, float loss) {
    const float beta = 0.98f;
    s->count++;
    s->val = fmaf(-(s->val - loss), 1.0f - beta, s->val);
    return s->val / (float)(1.0 - pow(0.98, s->count));
}

void lr_find_curve_push(LrFindCurve *c, double lr, float loss, float smooth) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 128;
        c->lr = xrealloc(c->lr, (size_t)c->cap * sizeof *c->lr);
        c->loss = xrealloc(c->loss, (size_t)c->cap * sizeof *c->loss);
        c->smooth = xrealloc(c->smooth, (size_t)c->cap * sizeof *c->smooth);
    }
    c->lr[c->n] = lr;
    c->loss[c->n] = loss;
    c->smooth[c->n] = smooth;
    c->n++;
}

void lr_find_curve_free(LrFindCurve *c) {
    free(c->lr);
    free(c->loss);
    free(c->smooth);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------------- fastai's suggestions */

/* torch.argmin: the first of the smallest (the arrays here hold no NaN: lr_find cuts there). */
static int argmin(const float *v, int n) {
    int k = 0;
    for (int i = 1; i < n; i++)
        if (v[i] < v[k]) k = i;
    return k;
}

/* fastai's point: losses[the first i whose lr is nearest to lr] (|lrs[i] - lr| in float32). */
static float loss_at(const float *lrs, const float *losses, int n, double lr) {
    int k = 0;
    float best = INFINITY;
    for (int i = 0; i < n; i++) {
        float d = fabsf(lrs[i] - (float)lr);
        if (d < best) best = d, k = i;
    }
    return losses[k];
}

/* minimum: lr_min = lrs[losses.argmin()], suggests lr_min / 10, marks (lr_min, its loss). */
LrSuggestion lr_suggest_minimum(const float *lrs, const float *losses, int n) {
    LrSuggestion s = {"minimum", 0, NAN, NAN, NAN};
    if (n < 1) return s;
    double lr_min = lrs[argmin(losses, n)];
    s = (LrSuggestion){"minimum", 1, lr_min / 10, lr_min, loss_at(lrs, losses, n, lr_min)};
    return s;
}

/* steep: the lr where (losses[i+1] - losses[i]) / (log lrs[i+1] - log lrs[i]) is lowest. */
LrSuggestion lr_suggest_steep(const float *lrs, const float *losses, int n) {
    LrSuggestion s = {"steep", 0, NAN, NAN, NAN};
    if (n < 2) return s;
    float *grads = xmalloc((size_t)(n - 1) * sizeof *grads);
    for (int i = 0; i < n - 1; i++) grads[i] = (losses[i + 1] - losses[i]) / (logf(lrs[i + 1]) - logf(lrs[i]));
    double lr = lrs[argmin(grads, n - 1)];
    free(grads);
    s = (LrSuggestion){"steep", 1, lr, lr, loss_at(lrs, losses, n, lr)};
    return s;
}

/* valley: the longest decreasing run (as a longest decreasing subsequence, fastai's O(n^2) loop
 * with its update order), then two thirds of the way down... exactly fastai's index: start +
 * int(len/3) + int(len/6). Its start can be -1 (a curve falling from its first point), and Python
 * then reads the last element: so do we. */
LrSuggestion lr_suggest_valley(const float *lrs, const float *losses, int n) {
    LrSuggestion s = {"valley", 0, NAN, NAN, NAN};
    if (n < 1) return s;
    int *lds = xmalloc((size_t)n * sizeof *lds);
    for (int i = 0; i < n; i++) lds[i] = 1;
    int max_start = 0, max_end = 0;
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++) {
            if (losses[i] < losses[j] && lds[i] < lds[j] + 1) lds[i] = lds[j] + 1;
            if (lds[max_end] < lds[i]) {
                max_end = i;
                max_start = max_end - lds[max_end];
            }
        }
    free(lds);
    double sections = (max_end - max_start) / 3.0;
    int idx = max_start + (int)sections + (int)(sections / 2);
    if (idx < 0) idx += n;
    s = (LrSuggestion){"valley", 1, lrs[idx], lrs[idx], losses[idx]};
    return s;
}

int lr_find_suggest(const LrFindCurve *c, LrSuggestion out[LR_SUGGEST_COUNT]) {
    int lo = c->num_it / 10, hi = c->n - 5;
    if (hi < lo) hi = lo;
    int n = 0;
    float *lrs = xmalloc((size_t)(hi - lo + 1) * sizeof *lrs), *losses = xmalloc((size_t)(hi - lo + 1) * sizeof *losses);
    for (int i = lo; i < hi && !isnan(c->smooth[i]); i++, n++) {
        lrs[n] = (float)c->lr[i];
        losses[n] = c->smooth[i];
    }
    out[LR_SUGGEST_MINIMUM] = lr_suggest_minimum(lrs, losses, n);
    out[LR_SUGGEST_STEEP] = lr_suggest_steep(lrs, losses, n);
    out[LR_SUGGEST_VALLEY] = lr_suggest_valley(lrs, losses, n);
    free(lrs);
    free(losses);
    int ok = 0;
    for (int k = 0; k < LR_SUGGEST_COUNT; k++) ok += out[k].ok;
    return ok;
}

/* ------------------------------------------------------------------------- output */

void python_float_repr(double x, char *buf, size_t len) {
    if (isnan(x)) {
        snprintf(buf, len, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(buf, len, x > 0 ? "inf" : "-inf");
        return;
    }
    char e[64];
    int p = 1;
    for (; p < 17; p++) { /* the fewest significant digits that read back as x */
        snprintf(e, sizeof e, "%.*e", p - 1, x);
        if (strtod(e, NULL) == x) break;
    }
    snprintf(e, sizeof e, "%.*e", p - 1, x);
    /* e is [-]d[.ddd]e[+-]XX: the digits and the exponent */
    char digits[32];
    int nd = 0, neg = e[0] == '-';
    const char *q = e + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    digits[nd] = 0;
    int exp10 = (int)strtol(q + 1, NULL, 10);
    if (exp10 < -4 || exp10 >= 16) { /* repr's scientific form: 1e-05, 6.25e-07 */
        snprintf(buf, len, "%s%c%s%.*se%c%02d", neg ? "-" : "", digits[0], nd > 1 ? "." : "", nd - 1, digits + 1,
                 exp10 < 0 ? '-' : '+', abs(exp10));
        return;
    }
    char out[64];
    int k = 0;
    if (neg) out[k++] = '-';
    if (exp10 < 0) {
        out[k++] = '0', out[k++] = '.';
        for (int i = -1; i > exp10; i--) out[k++] = '0';
        for (int i = 0; i < nd; i++) out[k++] = digits[i];
    } else {
        for (int i = 0; i <= exp10; i++) out[k++] = i < nd ? digits[i] : '0';
        out[k++] = '.';
        if (nd > exp10 + 1)
            for (int i = exp10 + 1; i < nd; i++) out[k++] = digits[i];
        else
            out[k++] = '0';
    }
    out[k] = 0;
    snprintf(buf, len, "%s", out);
}

void lr_find_print_suggestions(FILE *f, const LrSuggestion *s, int n) {
    fputs("SuggestedLRs(", f);
    for (int i = 0; i < n; i++) {
        char v[64];
        if (s[i].ok) python_float_repr(s[i].lr, v, sizeof v);
        else snprintf(v, sizeof v, "None");
        fprintf(f, "%s%s=%s", i ? ", " : "", s[i].name, v);
    }
    fputs(")\n", f);
}

int lr_find_write_csv(const char *path, const LrFindCurve *c, char *err, size_t errlen) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1;
    fprintf(f, "iteration,lr,loss,smooth_loss\n");
    for (int i = 0; i < c->n; i++) fprintf(f, "%d,%.10g,%.9g,%.9g\n", i, c->lr[i], (double)c->loss[i], (double)c->smooth[i]);
    int rc = fclose(f) ? (snprintf(err, errlen, "%s: out of memory", path), -1) : write_file_atomic(path, text, len, err, errlen);
    free(text);
    return rc;
}

/* fastai's plot_lr_find: the smoothed loss against the lr on a log axis, the last 5 points left
 * out (skip_end), each suggestion's point marked; the raw batch losses behind it. */
int lr_find_plot(const char *png_path, const LrFindCurve *c, const LrSuggestion *s, const char *title) {
    PlotMark marks[LR_SUGGEST_COUNT];
    int nmarks = 0;
    for (int k = 0; k < LR_SUGGEST_COUNT; k++) {
        if (!s[k].ok) continue;
        char v[64];
        python_float_repr(s[k].lr, v, sizeof v);
        marks[nmarks].x = s[k].point_lr;
        marks[nmarks].y = s[k].point_loss;
        snprintf(marks[nmarks].label, sizeof marks[nmarks].label, "%s: %.3g%s", s[k].name, s[k].lr,
                 k == LR_SUGGEST_MINIMUM ? " (marked: the minimum)" : "");
        nmarks++;
    }
    int shown = c->n > 5 ? c->n - 5 : c->n;
    return plot_lr_find(png_path, c->lr, c->loss, c->smooth, shown, marks, nmarks, title);
}
