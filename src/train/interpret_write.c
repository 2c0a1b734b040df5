/* train/interpret_write.c: the files of an interpretation (interpret.h's interpret_write): the
 * CSVs, the confusion heat map and the two image grids, and the summary a fastai user reads
 * (accuracy, error rate, top-5, most_confused). */
#include "train/interpret.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "report/confusion_plot.h"
#include "report/image_grid.h"

/* Lines of the summary that most_confused prints; the CSV holds them all. */
enum { MOST_CONFUSED_PRINTED = 20 };

static void say(const InterpretSpec *s, const char *fmt, ...) CNN_PRINTF(2, 3);
static void say(const InterpretSpec *s, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->say) s->say(s->say_ctx, line);
    else printf("%s\n", line);
}

static const char *class_name(const InterpretSpec *s, int c, char num[16]) {
    if (s->class_names && c >= 0 && c < s->classes && s->class_names[c]) return s->class_names[c];
    snprintf(num, 16, "%d", c);
    return num;
}

static void out_path(const InterpretSpec *s, const char *name, char *path, size_t len) {
    snprintf(path, len, "%s/%s%s", s->dir, s->prefix ? s->prefix : "", name);
}

/* The memory stream f, written whole as dir/<prefix>name. 0, or -1 with err. */
static int commit_csv(const InterpretSpec *s, FILE *f, char **text, size_t *len, const char *name, char *err,
                      size_t errlen) {
    char path[2400];
    out_path(s, name, path, sizeof path);
    int rc = fclose(f) ? error_at(err, errlen, path, "cannot write: %s", strerror(errno))
                       : write_file_atomic(path, *text, *len, err, errlen);
    free(*text);
    *text = NULL;
    return rc;
}

static FILE *open_text(char **text, size_t *len) {
    FILE *f = open_memstream(text, len);
    if (!f) die("out of memory for a CSV");
    return f;
}

static int write_confusion(const InterpretSpec *s, const Interpretation *t, char *err, size_t errlen) {
    char *text = NULL, num[16];
    size_t len = 0;
    FILE *f = open_text(&text, &len);
    fputs("actual\\predicted", f);
    for (int c = 0; c < t->classes; c++) fputc(',', f), csv_write_field(f, class_name(s, c, num));
    fputc('\n', f);
    for (int a = 0; a < t->classes; a++) {
        csv_write_field(f, class_name(s, a, num));
        for (int p = 0; p < t->classes; p++) fprintf(f, ",%d", t->confusion[(size_t)a * t->classes + p]);
        fputc('\n', f);
    }
    return commit_csv(s, f, &text, &len, "confusion.csv", err, errlen);
}

static int write_per_class(const InterpretSpec *s, const Interpretation *t, char *err, size_t errlen) {
    char *text = NULL, num[16];
    size_t len = 0;
    FILE *f = open_text(&text, &len);
    fputs("class,precision,recall,f1,accuracy,support,predicted\n", f);
    for (int c = 0; c < t->classes; c++) {
        ClassScores k = interp_class_scores(t, c);
        csv_write_field(f, class_name(s, c, num));
        fprintf(f, ",%.6f,%.6f,%.6f,%.6f,%d,%d\n", k.precision, k.recall, k.f1, k.accuracy, k.support, k.predicted);
    }
    return commit_csv(s, f, &text, &len, "per_class.csv", err, errlen);
}

static int write_most_confused(const InterpretSpec *s, const Interpretation *t, char *err, size_t errlen) {
    ConfusedPair *pairs;
    int n = interp_most_confused(t, s->min_val, &pairs);
    char *text = NULL, num[16], num2[16];
    size_t len = 0;
    FILE *f = open_text(&text, &len);
    fputs("actual,predicted,count\n", f);
    say(s, "most_confused(min_val=%d): %d pair%s (actual, predicted, count)%s", s->min_val, n, n == 1 ? "" : "s",
        n > MOST_CONFUSED_PRINTED ? ", the first 20:" : n ? ":" : "");
    for (int i = 0; i < n; i++) {
        const char *a = class_name(s, pairs[i].actual, num), *p = class_name(s, pairs[i].predicted, num2);
        csv_write_field(f, a);
        fputc(',', f);
        csv_write_field(f, p);
        fprintf(f, ",%d\n", pairs[i].count);
        if (i < MOST_CONFUSED_PRINTED) say(s, "  (%s, %s, %d)", a, p, pairs[i].count);
    }
    free(pairs);
    return commit_csv(s, f, &text, &len, "most_confused.csv", err, errlen);
}

/* The images of rows[0..n) as the pass saw them (the same transform, through the loader, as
 * BATCH_U8): n x size x size x 3 bytes, allocated. NULL with err when an image failed now. */
static uint8_t *load_rows(const InterpretSpec *s, const int *rows, int n, char *err, size_t errlen) {
    Sample *picked = xmalloc((size_t)n * sizeof *picked);
    for (int i = 0; i < n; i++) picked[i] = s->samples[s->sample[rows[i]]];
    LoaderSpec ls = {0};
    ls.samples = picked;
    ls.count = n;
    ls.tf = s->tf;
    ls.batch = n;
    ls.threads = s->threads;
    ls.seed = s->seed;
    ls.format = BATCH_U8;
    Loader *L = loader_create(&ls, err, errlen);
    uint8_t *u8 = NULL;
    if (L) {
        loader_start_epoch(L, 0, 0);
        const Batch *b = loader_next(L);
        size_t bytes = (size_t)n * s->tf.size * s->tf.size * 3;
        if (b && b->n == n) u8 = memcpy(xmalloc(bytes), b->u8, bytes);
        else error_at(err, errlen, "interpretation", "%d of the %d images to draw could not be read again", n - (b ? b->n : 0), n);
        loader_destroy(L);
    }
    free(picked);
    return u8;
}

/* fastai's get_grid: ceil(sqrt(n)) columns. */
static int grid_cols(int n) {
    int c = 1;
    while (c * c < n) c++;
    return c;
}

static const uint8_t BLACK[3] = {0, 0, 0}, GREEN[3] = {0, 128, 0}, RED[3] = {220, 0, 0};

/* plot_top_losses: the k largest losses, titled "predicted/actual" over "loss / probability". */
static int write_top_losses(const InterpretSpec *s, const Interpretation *t, char *err, size_t errlen) {
    int *rows = xmalloc(((size_t)s->top_losses + 1) * sizeof *rows);
    int k = interp_top_losses(t, s->top_losses, rows), rc = -1;
    uint8_t *u8 = k ? load_rows(s, rows, k, err, errlen) : NULL;
    if (u8) {
        GridTitle *titles = xcalloc((size_t)k, sizeof *titles);
        char (*lines)[2][160] = xmalloc((size_t)k * sizeof *lines), num[16], num2[16];
        for (int i = 0; i < k; i++) {
            int r = rows[i];
            snprintf(lines[i][0], sizeof lines[i][0], "%s/%s", class_name(s, t->predicted[r], num),
                     class_name(s, s->labels[r], num2));
            snprintf(lines[i][1], sizeof lines[i][1], "%.2f / %.2f", (double)t->loss[r], (double)t->confidence[r]);
            for (int j = 0; j < 2; j++) titles[i].text[j] = lines[i][j], memcpy(titles[i].rgb[j], BLACK, 3);
        }
        char path[2400];
        out_path(s, "top_losses.jpg", path, sizeof path);
        rc = image_grid_write(u8, k, s->tf.size, grid_cols(k), titles, 2, "Prediction/Actual/Loss/Probability", INTERPRET_GRID_MIN_SIDE,
                              path, err, errlen);
        free(titles);
        free(lines);
        free(u8);
    } else if (!k) {
        rc = 0;
    }
    free(rows);
    return rc;
}

/* show_results: n images drawn at random (fastai shuffles), the label over the prediction, green
 * where it is right and red where it is wrong. */
static int write_show_results(const InterpretSpec *s, const Interpretation *t, char *err, size_t errlen) {
    int n = s->show_results < t->count ? s->show_results : t->count, rc = -1;
    if (n < 1) return 0;
    int *all = xmalloc((size_t)t->count * sizeof *all);
    for (int i = 0; i < t->count; i++) all[i] = i;
    Rng r;
    rng_seed(&r, s->seed);
    for (int i = 0; i < n; i++) { /* the first n of a Fisher-Yates shuffle */
        int j = i + (int)rng_below(&r, (uint32_t)(t->count - i)), tmp = all[i];
        all[i] = all[j];
        all[j] = tmp;
    }
    uint8_t *u8 = load_rows(s, all, n, err, errlen);
    if (u8) {
        GridTitle *titles = xcalloc((size_t)n, sizeof *titles);
        char (*lines)[2][160] = xmalloc((size_t)n * sizeof *lines), num[16];
        for (int i = 0; i < n; i++) {
            int row = all[i], right = t->predicted[row] == s->labels[row];
            snprintf(lines[i][0], sizeof lines[i][0], "%s", class_name(s, s->labels[row], num));
            snprintf(lines[i][1], sizeof lines[i][1], "%s", class_name(s, t->predicted[row], num));
            titles[i].text[0] = lines[i][0];
            titles[i].text[1] = lines[i][1];
            memcpy(titles[i].rgb[0], BLACK, 3);
            memcpy(titles[i].rgb[1], right ? GREEN : RED, 3);
        }
        char path[2400];
        out_path(s, "show_results.jpg", path, sizeof path);
        rc = image_grid_write(u8, n, s->tf.size, grid_cols(n), titles, 2, "Actual / Predicted (green: right, red: wrong)",
                              INTERPRET_GRID_MIN_SIDE, path, err, errlen);
        free(lines);
        free(titles);
        free(u8);
    }
    free(all);
    return rc;
}

int interpret_write(const InterpretSpec *s, char *err, size_t errlen) {
    if (s->count < 1 || s->classes < 1)
        return error_at(err, errlen, "interpretation", "no validation image was evaluated: nothing to interpret");
    Interpretation t;
    interp_compute(s->probs, s->labels, s->count, s->classes, &t);
    double acc = (double)t.correct / t.count;
    char top5[64] = "";
    if (s->classes > 5) /* top-5 of 5 classes or fewer is always 1 */
        snprintf(top5, sizeof top5, ", top-5 accuracy %.6f",
                 (double)interp_topk_correct(s->probs, s->labels, s->count, s->classes, 5) / t.count);
    say(s, "interpret: %d images at size %d: accuracy %.6f, error_rate %.6f%s", t.count, s->tf.size, acc, 1 - acc, top5);
    int rc = write_confusion(s, &t, err, errlen);
    if (!rc) rc = write_per_class(s, &t, err, errlen);
    if (!rc) rc = write_most_confused(s, &t, err, errlen);
    if (!rc) rc = write_top_losses(s, &t, err, errlen);
    if (!rc) rc = write_show_results(s, &t, err, errlen);
    if (!rc && s->plot) {
        char png[600], title[600];
        snprintf(png, sizeof png, "%sconfusion.png", s->prefix ? s->prefix : "");
        snprintf(title, sizeof title, "%s", s->title ? s->title : "Confusion matrix");
        plot_confusion(t.confusion, t.classes, s->class_names, s->dir, png, title); /* a failed plot is said; the rest stands */
    }
    if (!rc) {
        const char *p = s->prefix ? s->prefix : "";
        say(s, "interpret: wrote %sconfusion.csv, %sper_class.csv, %smost_confused.csv, %stop_losses.jpg, %sshow_results.jpg "
            "in %s", p, p, p, p, p, s->dir);
    }
    interp_free(&t);
    return rc;
}
