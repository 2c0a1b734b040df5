/* train/eval_checkpoint.c: a saved model's loss and accuracy at several test sizes (optionally with
 * TTA), as a table, eval.csv and eval.png (eval.h; the work of `train eval`): its checks of the
 * checkpoint (header, class list, split, finite weights) before anything heavy, then evaluate.h's
 * passes at each size. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/eval.h"

#include "base/rng.h"
#include "base/util.h"
#include "ckpt/checkpoint.h"
#include "ckpt/safetensors.h"
#include "net/model.h"
#include "pipeline/device_feed.h"
#include "pipeline/loader.h"
#include "report/plot.h"
#include "train/checkpoint_model.h"
#include "train/evaluate.h"
#include "train/interpret.h"
#include "train/run_record.h"
#include "train/run_view.h"

void eval_options_default(EvalOptions *o) {
    memset(o, 0, sizeof *o);
    o->data.format = DATA_FOLDER;
    o->data.train_dir = "train";
    o->data.valid_dir = "val";
    o->data.csv = "train.csv";
    o->data.images_dir = "train_images";
    o->data.valid_pct = 0.2f;
    o->data.seed = 42; /* the config's split_seed default, so a random CSV split comes out the same */
    o->batch = 64;
    o->device = "auto";
    o->tta_n = 4;
    o->tta_beta = 0.25f;
    o->plot = 1;
    o->top_losses = 9;
    o->min_val = 1;
}

/* Like error_at without a label: for messages that already name their file, or name none. */
static int fail(char *err, size_t errlen, const char *fmt, ...) CNN_PRINTF(3, 4);
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ------------------------------------------------------------------------- the class list */

/* The checkpoint's class_names (newline-joined) against the data's classes, name for name. */
static int check_classes(const char *ckpt, const char *joined, int model_classes, const Dataset *d, const char *root,
                         char *err, size_t errlen) {
    if (!joined) {
        /* e.g. `train smoke`'s checkpoints: only the count can be compared */
        if (model_classes != d->nclasses)
            return error_at(err, errlen, ckpt, "the model has %d classes but the data at %s has %d (and the checkpoint has no class_names to compare)",
                            model_classes, root, d->nclasses);
        fprintf(stderr, "cnntrain: %s has no class_names metadata: only the number of classes (%d) was checked\n", ckpt,
                model_classes);
        return 0;
    }
    int k = 0, rc = 0;
    char **names = names_list(joined, &k);
    int n = k < d->nclasses ? k : d->nclasses, first = -1, differ = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], d->classes[i])) {
            if (first < 0) first = i;
            differ++;
        }
    if (k > model_classes) {
        rc = error_at(err, errlen, ckpt, "damaged metadata: %d class_names for a model with %d classes", k, model_classes);
    } else if (k != d->nclasses) {
        rc = error_at(err, errlen, ckpt, "the class lists differ: the checkpoint has %d classes, the data at %s has %d", k,
                      root, d->nclasses);
        size_t used = strlen(err);
        if (first >= 0)
            snprintf(err + used, errlen - used, "; the first difference is class %d: '%s' in the checkpoint, '%s' in the data",
                     first, names[first], d->classes[first]);
        else if (k > d->nclasses)
            snprintf(err + used, errlen - used, "; the first %d agree, then the checkpoint has '%s'", n, names[n]);
        else
            snprintf(err + used, errlen - used, "; the first %d agree, then the data has '%s'", n, d->classes[n]);
    } else if (first >= 0) {
        rc = error_at(err, errlen, ckpt,
                      "the class lists differ at class %d of %d: '%s' in the checkpoint, '%s' in the data at %s (%d of %d names differ)",
                      first, k, names[first], d->classes[first], root, differ, k);
    }
    names_list_free(names, k);
    return rc;
}

/* ------------------------------------------------------------------------- the split */

/* The split the model was validated on, for a CSV data set without is_val: the checkpoint's
 * valid_pct and split_seed unless the user gave them. */
static void split_from_checkpoint(const StFile *hdr, const EvalOptions *o, DatasetSpec *ds) {
    const char *pct = st_meta(hdr, "valid_pct"), *seed = st_meta(hdr, "split_seed");
    char *end = NULL;
    if (ds->format != DATA_CSV) return;
    if (pct && !(o->given & EVAL_SPLIT_PCT)) {
        float v = strtof(pct, &end);
        if (!*end && v > 0 && v < 1) ds->valid_pct = v;
    }
    if (seed && !(o->given & EVAL_SPLIT_SEED)) {
        unsigned long long v = strtoull(seed, &end, 10);
        if (!*end) ds->seed = v;
    }
}

/* Whether a and b name the same folder. */
static int same_folder(const char *a, const char *b) {
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    int same = ra && rb && !strcmp(ra, rb);
    free(ra), free(rb);
    return same;
}

/* The data set to evaluate: the run's (v) where the user gave no folder, or gave the run's own
 * without a layout; else what was given. The split the user gave overrides either. 0, or -1
 * with err. */
static int data_to_use(const EvalOptions *o, const RunView *v, DatasetSpec *ds, char *from, size_t fromlen, char *err,
                       size_t errlen) {
    const DatasetSpec *run = v->cfg ? &v->cfg->data : NULL;
    *from = 0;
    if (!o->data.root) {
        if (!run)
            return error_at(err, errlen, o->checkpoint, "give --data: there is no usable run config.ini beside it (%s) to "
                            "take the data set from", v->path);
        *ds = *run;
        snprintf(from, fromlen, " (the run's, from %s)", v->path);
    } else if (run && !(o->given & EVAL_LAYOUT) && same_folder(o->data.root, run->root)) {
        *ds = *run;
        ds->root = o->data.root;
        snprintf(from, fromlen, " (the run's data: its layout and split from %s)", v->path);
    } else {
        *ds = o->data;
    }
    if (o->given & EVAL_SPLIT_PCT) ds->valid_pct = o->data.valid_pct;
    if (o->given & EVAL_SPLIT_SEED) ds->seed = o->data.seed;
    return 0;
}

/* The data against the checkpoint's fingerprint (run_record.h): the run's own data split another
 * way is refused; other data is evaluated as given, with a line saying so. */
static int check_split(const char *ck, const StFile *hdr, const Dataset *d, const DatasetSpec *ds, char *err, size_t errlen) {
    long run_n[2], now_n[2];
    uint64_t run_h[2], now_h[2];
    char fp[DATA_FP_CHARS];
    if (data_fingerprint_parse(st_meta(hdr, "data"), run_n, run_h)) return 0; /* an older checkpoint: nothing to check */
    data_fingerprint(d, ds->root, fp);
    data_fingerprint_parse(fp, now_n, now_h);
    if (run_n[0] + run_n[1] != now_n[0] + now_n[1] || run_h[0] + run_h[1] != now_h[0] + now_h[1]) {
        printf("data: %s is not the data set %s was trained on (%ld images then, %ld now): evaluated as given\n", ds->root,
               ck, run_n[0] + run_n[1], now_n[0] + now_n[1]);
        return 0;
    }
    if (run_h[1] == now_h[1]) return 0;
    const char *pct = st_meta(hdr, "valid_pct"), *seed = st_meta(hdr, "split_seed");
    return error_at(err, errlen, ck,
                    "the data at %s is the data set this model was trained on, split another way: the run validated on %ld "
                    "images, this split holds %ld (valid_pct %g, split_seed %llu; the run's: %s, %s), so it would score "
                    "images the model trained on. Leave out --valid-pct and --split-seed (the checkpoint's split is used)",
                    ds->root, run_n[1], now_n[1], (double)ds->valid_pct, (unsigned long long)ds->seed, pct ? pct : "?",
                    seed ? seed : "?");
}

/* ------------------------------------------------------------------------- the loaders */

static Loader *valid_loader(const Dataset *d, const TransformSpec *tf, const EvalOptions *o, const RunView *v,
                            uint64_t seed, char *err, size_t errlen) {
    LoaderSpec s = {0};
    s.samples = d->valid;
    s.count = d->nvalid;
    s.tf = *tf;
    s.batch = o->batch;
    s.threads = o->threads;
    s.seed = seed;
    s.format = BATCH_F32;
    s.max_pixels = v->max_pixels; /* the run's limits; 0 (no run config): the defaults */
    s.max_file_bytes = v->max_file_bytes;
    return loader_create(&s, err, errlen);
}

/* The test transform at side s: the flags', else the run's validation transform, else
 * Resize(s) + CenterCrop(s). */
static TransformSpec test_transform(const EvalOptions *o, const RunView *v, int s) {
    if (!o->center_crop && o->resize_ratio == 0 && v->cfg) {
        TransformSpec tf = v->valid;
        tf.size = s;
        return tf;
    }
    TransformSpec tf = transform_defaults(o->center_crop ? TF_CENTER_CROP : TF_RESIZE_CENTER_CROP, s, 0);
    tf.resize_ratio = o->resize_ratio > 0 ? o->resize_ratio : 1.0f;
    return tf;
}

/* TTA's augmented passes at side s: the run's training transform, else fastai's defaults
 * (Resize(s) at a random position + aug_transforms()). */
static TransformSpec tta_transform(const RunView *v, int s) {
    TransformSpec tf = v->cfg ? v->aug : transform_defaults(TF_FASTAI, s, 1);
    tf.size = s;
    tf.train = 1;
    if (tf.kind == TF_FASTAI && tf.presize < s) tf.presize = s; /* never presize below the side */
    return tf;
}

static void describe_transform(const EvalOptions *o, const RunView *v, char *buf, size_t len) {
    char t[160];
    if (o->center_crop) snprintf(buf, len, "CenterCrop(s) of the unresized image");
    else if (o->resize_ratio > 0 && o->resize_ratio != 1.0f) snprintf(buf, len, "Resize(round(%g*s)) + CenterCrop(s)", o->resize_ratio);
    else if (o->resize_ratio > 0 || !v->cfg) snprintf(buf, len, "Resize(s) + CenterCrop(s)");
    else snprintf(buf, len, "the run's validation transform (stage '%s': %s), at each size s", v->stage->name,
                  transform_text(&v->valid, t, sizeof t));
}

/* One row of the table: side, images, loss and accuracy[, with TTA][, top-5 with --interpret]. */
typedef struct {
    int size, n;
    double loss, acc, tta_loss, tta_acc, top5;
} SizeRow;

/* --interpret: the plain pass's rows at one size, and the sample of each. */
typedef struct {
    float *probs;
    int32_t *labels;
    int *sample;
} PassRows;

/* The validation split at side s (the test transform, and with o->tta fastai's tta over it):
 * evaluate.h's passes, the loader seeds drawn from root by side. rows (--interpret; else NULL)
 * gets the plain pass's probabilities, labels and samples. 0, or -1 with err. */
static int eval_size(const Evaluator *ev, const Dataset *d, const EvalOptions *o, const RunView *v, const Rng *root, int s,
                     SizeRow *row, const PassRows *rows, char *err, size_t errlen) {
    char msg[1024], label[32];
    *row = (SizeRow){s, 0, NAN, NAN, NAN, NAN, NAN};
    snprintf(label, sizeof label, "size %d", s);
    Evaluator named = *ev; /* the progress line says which size */
    named.progress = label;
    ev = &named;
    Rng stream = rng_split(root, (uint64_t)s);
    uint64_t seed = rng_u64(&stream);
    TransformSpec tf = test_transform(o, v, s);
    Loader *L = valid_loader(d, &tf, o, v, seed, msg, sizeof msg), *A = NULL;
    if (!L) return fail(err, errlen, "%s", msg);
    if (o->tta) {
        /* fastai's tta: the dataset in training mode (the run's training transforms), n passes
         * averaged, then torch.lerp(aug, plain, beta) on the probabilities. */
        TransformSpec at = tta_transform(v, s);
        A = valid_loader(d, &at, o, v, seed ^ 0x5441ULL, msg, sizeof msg);
        if (!A) {
            loader_destroy(L);
            return fail(err, errlen, "%s", msg);
        }
    }
    /* --interpret: the plain pass's rows (with TTA, that pass is tta_pass's own first one) */
    EvalRows plain_rows = {rows ? rows->probs : NULL, rows ? rows->labels : NULL, d->nvalid};
    EvalResult r = {0, 0, 0, 0};
    int rc = 0;
    if (A) {
        TtaResult t = tta_pass_rows(ev, L, A, 0, o->tta_n, o->tta_beta, d->nvalid, NULL, rows ? &plain_rows : NULL);
        r = t.plain;
        if (t.bad_pass >= 0)
            rc = fail(err, errlen, "size %d: TTA pass %d saw %d images, the plain pass %d", s, t.bad_pass, t.bad_count,
                      r.count);
        else if (r.count) {
            row->tta_loss = t.loss;
            row->tta_acc = (double)t.correct / r.count;
        }
    } else {
        r = eval_pass(ev, L, 0, 0.0f, rows ? &plain_rows : NULL);
    }
    if (rows && !rc) {
        rc = interp_loader_order(L, d->nvalid, r.count, rows->sample, err, errlen);
        if (!rc && r.count) row->top5 = (double)interp_topk_correct(rows->probs, rows->labels, r.count, ev->model->classes, 5) / r.count;
    }
    if (A) loader_destroy(A);
    loader_destroy(L);
    row->n = r.count;
    if (r.count) {
        row->loss = r.loss;
        row->acc = (double)r.correct / r.count;
    }
    return rc;
}

/* ------------------------------------------------------------------------- the command's work */

int eval_checkpoint(const EvalOptions *o, char *err, size_t errlen) {
    const char *ck = o->checkpoint;
    if (!ck) return fail(err, errlen, "a checkpoint is required");
    if (o->nsizes < 0 || o->nsizes > 64) return fail(err, errlen, "%d test sizes: give 1 to 64", o->nsizes);
    for (int i = 0; i < o->nsizes; i++)
        if (o->sizes[i] < 1 || o->sizes[i] > 8192) return fail(err, errlen, "test size %d is not in 1..8192", o->sizes[i]);
    if (o->batch < 1) return fail(err, errlen, "the batch size must be positive, not %d", o->batch);
    if (!(o->resize_ratio >= 0 && o->resize_ratio < 16))
        return fail(err, errlen, "the resize ratio must be in (0, 16), not %g", o->resize_ratio);
    if (o->interpret && (o->top_losses < 1 || o->top_losses > 100))
        return fail(err, errlen, "the top losses to draw must be in 1..100, not %d", o->top_losses);
    if (o->interpret && o->min_val < 1) return fail(err, errlen, "most_confused's min_val must be at least 1, not %d", o->min_val);
    if (o->tta && (o->tta_n < 1 || !(o->tta_beta >= 0 && o->tta_beta <= 1)))
        return fail(err, errlen, "TTA needs n >= 1 and beta in [0, 1] (got n %d, beta %g)", o->tta_n, o->tta_beta);

    /* The header first: a wrong file or class list is reported before anything heavy is done. */
    StFile hdr;
    if (st_read_header(ck, &hdr, err, errlen)) return -1;
    CheckpointInfo info;
    int rc = checkpoint_info(ck, &hdr, &info, err, errlen);
    const char *arch = info.arch, *stage = info.stage;
    long classes = info.classes;
    Dataset d = {0};
    char msg[1024], data_from[1400];
    RunView v;
    run_view_read(ck, stage, &v);
    /* the test sizes: the flags', else the size the run validated at */
    int sizes[64], nsizes = o->nsizes;
    for (int i = 0; i < nsizes; i++) sizes[i] = o->sizes[i];
    if (!nsizes && v.cfg) sizes[nsizes++] = v.valid.size;
    else if (!rc && !nsizes)
        rc = error_at(err, errlen, ck, "give --sizes: there is no usable run config.ini beside it (%s) to take the size from",
                      v.path);
    DatasetSpec ds = o->data;
    if (!rc) rc = data_to_use(o, &v, &ds, data_from, sizeof data_from, err, errlen);
    if (!rc) split_from_checkpoint(&hdr, o, &ds);
    if (!rc && dataset_open(&ds, 0, &d, msg, sizeof msg)) {
        rc = fail(err, errlen, "%s", msg);
        if (!o->data.root) /* the run's path is as its config wrote it: relative to where the run started */
            snprintf(err + strlen(err), errlen - strlen(err), " (the data path of %s; give --data where it is now)", v.path);
    } else if (!rc && ((rc = check_classes(ck, st_meta(&hdr, "class_names"), (int)classes, &d, ds.root, err, errlen)) ||
                       (rc = check_split(ck, &hdr, &d, &ds, err, errlen)))) {
        dataset_free(&d);
    }
    st_close(&hdr);
    if (rc) {
        run_view_free(&v);
        return -1;
    }

    Model *m = NULL;
    Backend *be = NULL;
    FILE *csv = NULL;
    char *csv_text = NULL;
    size_t csv_len = 0;
    AtomicFile csv_out = {-1, NULL, NULL};
    float *params = NULL, *stats = NULL;
    PassRows rows = {NULL, NULL, NULL};
    DeviceFeed feed;
    char dir[2048], csv_path[2200], png_path[2200];
    rc = -1;
    m = checkpoint_model(ck, &info, &params, &stats, err, errlen);
    if (!m) goto done;
    int max_side = 0;
    for (int i = 0; i < nsizes; i++) {
        Shape *shapes = xmalloc((size_t)m->nvalues * sizeof *shapes);
        int bad = model_shapes(m, sizes[i], sizes[i], shapes, msg, sizeof msg);
        free(shapes);
        if (bad) {
            fail(err, errlen, "test size %d is too small for %s: %s", sizes[i], arch, msg);
            goto done;
        }
        if (sizes[i] > max_side) max_side = sizes[i];
    }
    be = backend_create(o->device, msg, sizeof msg);
    if (!be) {
        fail(err, errlen, "%s", msg);
        goto done;
    }
    device_feed_init(&feed, be);
    int batch = o->batch < d.nvalid ? o->batch : d.nvalid; /* no batch holds more: allocate no more */
    if (model_attach(m, be, batch > 0 ? batch : 1, max_side, max_side, msg, sizeof msg)) {
        fail(err, errlen, "%s", msg);
        goto done;
    }
    model_set_weights(m, params, stats);

    /* Output folder: --out, else the checkpoint's own folder. Opened before the work, so an
     * unwritable folder fails at once. */
    const char *slash = strrchr(ck, '/');
    if (o->out_dir) snprintf(dir, sizeof dir, "%s", o->out_dir);
    else if (slash) snprintf(dir, sizeof dir, "%.*s", slash == ck ? 1 : (int)(slash - ck), ck);
    else snprintf(dir, sizeof dir, ".");
    if (make_dirs(dir)) {
        error_at(err, errlen, dir, "cannot create the folder: %s", strerror(errno));
        goto done;
    }
    snprintf(csv_path, sizeof csv_path, "%s/eval.csv", dir);
    snprintf(png_path, sizeof png_path, "%s/eval.png", dir);
    /* eval.csv is written whole at the end (util.h's atomic write: a device or FIFO there is
     * refused now, before the work); the table gathers in memory */
    if (atomic_open(&csv_out, csv_path, err, errlen)) goto done;
    csv = open_memstream(&csv_text, &csv_len);
    if (!csv) {
        error_at(err, errlen, csv_path, "cannot write: %s", strerror(errno));
        goto done;
    }
    int top5 = o->interpret && m->classes > 5; /* top-5 of 5 classes or fewer is always 1 */
    fprintf(csv, "size,loss,accuracy,images%s%s%s%s\n", o->tta ? ",tta_loss,tta_accuracy" : "", o->interpret ? ",error_rate" : "",
            top5 ? ",top5_accuracy" : "", v.trained_size > 0 ? ",trained_size" : "");

    char tfname[400];
    describe_transform(o, &v, tfname, sizeof tfname);
    char trained[200];
    checkpoint_trained_text(&info, trained, sizeof trained);
    if (v.cfg)
        snprintf(trained + strlen(trained), sizeof trained - strlen(trained), ", trained at %d px", v.trained_size);
    printf("eval: %s: %s, %d classes%s, on %s\n", ck, m->arch, m->classes, trained, be->ops->name);
    printf("data: %s%s, %d validation images\ntest transform: %s\n", ds.root, data_from, d.nvalid, tfname);
    if (o->tta)
        printf("TTA: n=%d, beta=%.2f; augmented passes: %s\n", o->tta_n, o->tta_beta,
               v.cfg ? "the run's training transform at each size" : "Resize(s) at a random position + fastai aug_transforms() defaults");
    printf("%-6s %-10s %-9s", "size", "loss", "accuracy");
    if (o->tta) printf(" %-10s %-12s", "tta_loss", "tta_accuracy");
    if (o->interpret) printf(" %-10s", "error_rate");
    if (top5) printf(" %-13s", "top5_accuracy");
    printf(" %s\n", "images");

    Rng root;
    rng_seed(&root, o->seed);
    Evaluator ev = {m, &feed, NULL, NULL}; /* eval_size names each size on the progress line */
    if (o->interpret) {
        rows.probs = xmalloc(((size_t)d.nvalid * m->classes + 1) * sizeof(float));
        rows.labels = xmalloc(((size_t)d.nvalid + 1) * sizeof(int32_t));
        rows.sample = xmalloc(((size_t)d.nvalid + 1) * sizeof(int));
    }
    SizeRow row = {0, 0, NAN, NAN, NAN, NAN, NAN};
    for (int si = 0; si < nsizes; si++) {
        if (eval_size(&ev, &d, o, &v, &root, sizes[si], &row, o->interpret ? &rows : NULL, err, errlen)) goto done;
        if (row.n && !isfinite(row.loss))
            fprintf(stderr, "cnntrain: size %d: the loss is %g: the model's outputs are not finite (its weights are finite "
                    "but too large?)\n", row.size, row.loss);
        printf("%-6d %-10.6f %-9.6f", row.size, row.loss, row.acc);
        if (o->tta) printf(" %-10.6f %-12.6f", row.tta_loss, row.tta_acc);
        if (o->interpret) printf(" %-10.6f", 1 - row.acc);
        if (top5) printf(" %-13.6f", row.top5);
        printf(" %d\n", row.n);
        fflush(stdout);
        fprintf(csv, "%d,%.6f,%.6f,%d", row.size, row.loss, row.acc, row.n);
        if (o->tta) fprintf(csv, ",%.6f,%.6f", row.tta_loss, row.tta_acc);
        if (o->interpret) fprintf(csv, ",%.6f", 1 - row.acc);
        if (top5) fprintf(csv, ",%.6f", row.top5);
        if (v.trained_size > 0) fprintf(csv, ",%d", v.trained_size);
        fprintf(csv, "\n");
    }
    FILE *f = csv;
    csv = NULL;
    int written = !fclose(f) && !write_full(csv_out.fd, csv_text, csv_len);
    if (atomic_commit(&csv_out, written, err, errlen)) goto done;
    printf("eval: wrote %s\n", csv_path);
    if (o->plot) {
        const char *base = slash ? slash + 1 : ck;
        char title[512];
        snprintf(title, sizeof title, "accuracy vs test size: %s, %s%s", base, tfname, o->tta ? ", with TTA" : "");
        plot_eval(csv_path, png_path, title); /* a plot that fails is said, but the table stands */
    }
    if (o->interpret) {
        /* the last size's plain pass: fastai's ClassificationInterpretation of it */
        const char *base = slash ? slash + 1 : ck;
        char title[600];
        snprintf(title, sizeof title, "Confusion matrix: %s at size %d", base, row.size);
        if (nsizes > 1) printf("interpret: at size %d, the last of --sizes\n", row.size);
        InterpretSpec is = {rows.probs, rows.labels, rows.sample, row.n, m->classes, d.valid,
                            (const char *const *)d.classes, test_transform(o, &v, row.size), o->threads, o->top_losses, 9,
                            o->min_val, o->seed, dir, "", o->plot, title, NULL, NULL};
        if (interpret_write(&is, err, errlen)) goto done;
    }
    rc = 0;
done:
    if (csv) fclose(csv);
    free(csv_text);
    atomic_abort(&csv_out); /* nothing, once committed */
    free(params), free(stats);
    free(rows.probs), free(rows.labels), free(rows.sample);
    if (be) device_feed_free(&feed);
    if (m) model_free(m); /* detaches from the backend first */
    if (be) backend_destroy(be);
    dataset_free(&d);
    run_view_free(&v);
    return rc;
}
