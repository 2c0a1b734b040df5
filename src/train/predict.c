/* train/predict.c: `train predict` (predict.h): the transform the run validated with (its
 * config.ini beside the checkpoint), the class names and display names, then the images through
 * the loader in chunks, one pass each (evaluate.h's eval_pass, or tta_pass_rows with --tta), and
 * the top-k of every image to stdout or a CSV written atomically. */
#include "train/predict.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"
#include "ckpt/safetensors.h"
#include "net/model.h"
#include "pipeline/device_feed.h"
#include "pipeline/label_map.h"
#include "pipeline/loader.h"
#include "train/checkpoint_model.h"
#include "train/evaluate.h"
#include "train/predict_input.h"
#include "train/run_view.h"

/* Images per loader: bounds the probabilities held (CHUNK x classes) whatever the input's size. */
enum { CHUNK = 4096 };

void predict_options_default(PredictOptions *o) {
    memset(o, 0, sizeof *o);
    o->top_k = 5;
    o->batch = 64;
    o->device = "auto";
    o->tta_n = 4;
    o->tta_beta = 0.25f;
}

/* What the model is run with, and where that came from: the run's config.ini (run_view.h), else
 * Resize + CenterCrop at 224 (or --size), said so. --size replaces the size. */
static void predict_view(const PredictOptions *o, const char *ck, const CheckpointInfo *info, RunView *v) {
    if (!run_view_read(ck, info->stage, v)) {
        int s = o->size ? o->size : 224;
        v->valid = transform_defaults(TF_RESIZE_CENTER_CROP, s, 0);
        v->aug = transform_defaults(TF_FASTAI, s, 1);
        v->aug.presize = s;
        snprintf(v->source, sizeof v->source, "assumed: no usable run config.ini beside %s (give --size to change the size)", ck);
    }
    if (o->size) v->valid.size = o->size;
    v->aug.size = v->valid.size;
}

/* The display names: --label-map, else the checkpoint's class_labels, else the run's label map,
 * else the map beside an input CSV. NULL where there is none; *failed set when --label-map could
 * not be read (err says why). */
static char **display_names(const PredictOptions *o, const StFile *hdr, const RunView *v, const PredictInput *in,
                            char **classes, int C, char *from, size_t fromlen, int *failed, char *err, size_t errlen) {
    *failed = 0;
    int n = 0;
    char **stored = names_list(st_meta(hdr, "class_labels"), &n);
    if (!o->label_map && stored && n == C) {
        snprintf(from, fromlen, "the checkpoint's class_labels");
        return stored;
    }
    names_list_free(stored, n);
    char *path = o->label_map ? xstrdup(o->label_map) : v->label_map ? xstrdup(v->label_map) : NULL;
    if (!path && in->kind == INPUT_CSV) {
        int asked;
        path = label_map_path(".", 1, o->input, NULL, &asked);
    }
    if (!path) return NULL;
    LabelMap m;
    if (label_map_read(path, &m, err, errlen)) {
        free(path);
        if (o->label_map) *failed = 1;
        if (o->label_map) return NULL;
        fprintf(stderr, "cnntrain: label map not used: %s\n", err);
        return NULL;
    }
    int matched = 0;
    char **names = label_map_names(&m, classes, C, &matched);
    label_map_free(&m);
    if (!matched) {
        fprintf(stderr, "cnntrain: %s names none of the model's classes: not used\n", path);
        names_list_free(names, C);
        names = NULL;
    } else {
        snprintf(from, fromlen, "%s", path);
    }
    free(path);
    return names;
}

/* Refuses an output file that is not a predictions CSV of ours (unless force), and the input. */
static int check_output(const char *out, const PredictOptions *o, char *err, size_t errlen) {
    struct stat so, si;
    if (stat(out, &so)) return 0;
    if (!stat(o->input, &si) && so.st_dev == si.st_dev && so.st_ino == si.st_ino)
        return error_at(err, errlen, out, "is the input: give --out another file");
    if (o->force || !S_ISREG(so.st_mode)) return 0; /* atomic_open refuses a device or a folder */
    char line[64] = "";
    FILE *f = fopen(out, "r");
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
    }
    if (!strncmp(line, PREDICT_CSV_HEAD ",", strlen(PREDICT_CSV_HEAD) + 1)) return 0;
    return error_at(err, errlen, out, "exists and is not a predictions file of train predict (which start \"%s,\"): not "
                    "replaced. Give --out another file, or --force to replace it", PREDICT_CSV_HEAD);
}

static void top_k(const float *p, int C, int k, int *idx) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int c = 0; c < C; c++) {
            int taken = 0;
            for (int t = 0; t < j && !taken; t++) taken = idx[t] == c;
            if (!taken && (best < 0 || p[c] > p[best])) best = c;
        }
        idx[j] = best;
    }
}

/* The name of the folder that holds path ("" when none). */
static void parent_name(const char *path, char *buf, size_t n) {
    const char *end = strrchr(path, '/'), *start = end;
    while (start && start > path && start[-1] != '/') start--;
    snprintf(buf, n, "%.*s", end ? (int)(end - start) : 0, end ? start : "");
}

typedef struct {
    const PredictOptions *o;
    const PredictInput *in;
    char **classes, **names;
    int C, k;
    FILE *csv;
    int good, bad, in_class_folder, correct;
} Output;

static void emit(Output *w, int sample, const float *p) {
    int idx[64] = {0}; /* k >= 1 (C >= 1): idx[0] is always written */
    top_k(p, w->C, w->k, idx);
    const char *path = w->in->samples[sample].path;
    char folder[512];
    parent_name(path, folder, sizeof folder);
    for (int c = 0; c < w->C; c++)
        if (!strcmp(folder, w->classes[c])) {
            w->in_class_folder++;
            w->correct += idx[0] == c;
            break;
        }
    w->good++;
    if (w->in->kind == INPUT_IMAGE) {
        printf("%s: %s, probability %.6f\n", path, w->names ? w->names[idx[0]] : w->classes[idx[0]], (double)p[idx[0]]);
        for (int j = 0; j < w->k; j++) {
            printf("  %d  %.6f  %s", j + 1, (double)p[idx[j]], w->classes[idx[j]]);
            if (w->names && strcmp(w->names[idx[j]], w->classes[idx[j]])) printf("  %s", w->names[idx[j]]);
            printf("\n");
        }
    }
    if (!w->csv) return;
    if (w->in->kind == INPUT_CSV || w->o->submission) {
        csv_write_field(w->csv, w->in->ids[sample]);
        fputc(',', w->csv);
        csv_write_field(w->csv, w->classes[idx[0]]);
        fputc('\n', w->csv);
        return;
    }
    csv_write_field(w->csv, path);
    fputc(',', w->csv);
    csv_write_field(w->csv, w->classes[idx[0]]);
    fprintf(w->csv, ",%.6f", (double)p[idx[0]]);
    if (w->names) {
        fputc(',', w->csv);
        csv_write_field(w->csv, w->names[idx[0]]);
    }
    for (int j = 0; j < w->k; j++) {
        fputc(',', w->csv);
        csv_write_field(w->csv, w->classes[idx[j]]);
        fprintf(w->csv, ",%.6f", (double)p[idx[j]]);
    }
    fputc('\n', w->csv);
}

static Loader *make_loader(const PredictInput *in, int first, int count, const TransformSpec *tf, const RunView *v,
                           const PredictOptions *o, uint64_t seed, char *err, size_t errlen) {
    LoaderSpec s = {0};
    s.samples = in->samples + first;
    s.count = count;
    s.tf = *tf;
    s.batch = o->batch;
    s.threads = o->threads;
    s.seed = seed;
    s.format = BATCH_F32;
    s.max_pixels = v->max_pixels;
    s.max_file_bytes = v->max_file_bytes;
    return loader_create(&s, err, errlen);
}

/* One chunk of the input: its passes, then every good image's row in order. */
static int run_chunk(const Evaluator *ev, Output *w, const RunView *v, int first, int count, float *probs, char *err,
                     size_t errlen) {
    const PredictOptions *o = w->o;
    Loader *L = make_loader(w->in, first, count, &v->valid, v, o, o->seed, err, errlen), *A = NULL;
    if (!L) return -1;
    if (o->tta && !(A = make_loader(w->in, first, count, &v->aug, v, o, o->seed ^ 0x5441ULL, err, errlen))) {
        loader_destroy(L);
        return -1;
    }
    int seen, rc = 0;
    if (A) {
        TtaResult t = tta_pass_rows(ev, L, A, 0, o->tta_n, o->tta_beta, count, probs, NULL);
        seen = t.plain.count;
        if (t.bad_pass >= 0)
            rc = error_at(err, errlen, "tta", "augmented pass %d saw %d images, the plain pass %d", t.bad_pass, t.bad_count, seen);
    } else {
        seen = eval_pass(ev, L, 0, 0.0f, &(EvalRows){probs, NULL, count}).count;
    }
    /* the rows are the chunk's samples in order, less the bad ones (no shuffle) */
    char *bad_list = loader_bad_list(L, 0);
    unsigned char *bad = xcalloc((size_t)count, 1);
    for (char *p = bad_list; *p;) {
        long i = strtol(p, &p, 10);
        if (i >= 0 && i < count) bad[i] = 1;
        if (*p == ',') p++;
    }
    int row = 0;
    for (int i = 0; i < count && !rc; i++) {
        if (bad[i]) {
            w->bad++;
            continue;
        }
        if (row == seen) {
            rc = error_at(err, errlen, "predict", "the loader gave %d images, fewer than the %d good ones", seen, row + 1);
            break;
        }
        emit(w, first + i, probs + (size_t)row++ * w->C);
    }
    free(bad);
    free(bad_list);
    loader_destroy(L);
    if (A) loader_destroy(A);
    return rc;
}

int predict_run(const PredictOptions *o, char *err, size_t errlen) {
    const char *ck = o->checkpoint;
    if (!ck || !o->input) return error_at(err, errlen, "predict", "a checkpoint and an image, folder or CSV are required");
    if (o->top_k < 1) return error_at(err, errlen, "--top-k", "must be at least 1, not %d", o->top_k);
    if (o->batch < 1) return error_at(err, errlen, "--batch", "must be positive, not %d", o->batch);
    if (o->size < 0 || o->size > 8192) return error_at(err, errlen, "--size", "%d is not in 1..8192", o->size);
    if (o->tta && (o->tta_n < 1 || !(o->tta_beta >= 0 && o->tta_beta <= 1)))
        return error_at(err, errlen, "--tta", "needs n >= 1 and beta in [0, 1] (got n %d, beta %g)", o->tta_n, (double)o->tta_beta);

    StFile hdr;
    CheckpointInfo info;
    if (st_read_header(ck, &hdr, err, errlen)) return -1;
    if (checkpoint_info(ck, &hdr, &info, err, errlen)) {
        st_close(&hdr);
        return -1;
    }
    int C = info.classes, nnames = 0, rc = -1;
    char **classes = names_list(st_meta(&hdr, "class_names"), &nnames), **names = NULL;
    if (nnames != C) { /* a checkpoint without (usable) class names: the outputs' numbers */
        if (classes) fprintf(stderr, "cnntrain: %s: %d class_names for %d classes: classes shown by number\n", ck, nnames, C);
        else fprintf(stderr, "cnntrain: %s has no class_names metadata: classes shown by number\n", ck);
        names_list_free(classes, nnames);
        classes = xmalloc((size_t)C * sizeof *classes);
        for (int c = 0; c < C; c++) {
            char b[16];
            snprintf(b, sizeof b, "%d", c);
            classes[c] = xstrdup(b);
        }
    }
    RunView v;
    predict_view(o, ck, &info, &v);
    PredictInput in;
    Model *m = NULL;
    Backend *be = NULL;
    DeviceFeed feed;
    float *params = NULL, *stats = NULL, *probs = NULL;
    AtomicFile af = {-1, NULL, NULL};
    char *text = NULL, msg[1024], names_from[1300] = "";
    size_t text_len = 0;
    Output w = {o, &in, classes, NULL, C, o->top_k < C ? o->top_k : C, NULL, 0, 0, 0, 0};
    if (w.k > 64) w.k = 64;
    if (predict_input_open(o->input, o->images_dir, &in, err, errlen)) {
        memset(&in, 0, sizeof in);
        goto done;
    }
    int no_map;
    names = display_names(o, &hdr, &v, &in, classes, C, names_from, sizeof names_from, &no_map, err, errlen);
    if (no_map) goto done;
    w.names = names;

    /* the output first: a file we must not replace is refused before the work */
    const char *out = o->out ? o->out : in.kind == INPUT_CSV ? "submission.csv" : in.kind == INPUT_FOLDER ? "predictions.csv" : NULL;
    if (out && (check_output(out, o, err, errlen) || atomic_open(&af, out, err, errlen))) goto done;
    if (out && !(w.csv = open_memstream(&text, &text_len))) {
        error_at(err, errlen, out, "cannot write: %s", strerror(errno));
        goto done;
    }
    if (!(m = checkpoint_model(ck, &info, &params, &stats, err, errlen))) goto done;
    Shape *shapes = xmalloc((size_t)m->nvalues * sizeof *shapes);
    int small = model_shapes(m, v.valid.size, v.valid.size, shapes, msg, sizeof msg);
    free(shapes);
    if (small) {
        error_at(err, errlen, "--size", "%d is too small for %s: %s", v.valid.size, info.arch, msg);
        goto done;
    }
    if (!(be = backend_create(o->device, msg, sizeof msg))) {
        error_at(err, errlen, "--device", "%s", msg);
        goto done;
    }
    device_feed_init(&feed, be);
    int chunk = in.n < CHUNK ? in.n : CHUNK, batch = o->batch < chunk ? o->batch : chunk;
    if (model_attach(m, be, batch, v.valid.size, v.valid.size, msg, sizeof msg)) {
        error_at(err, errlen, ck, "%s", msg);
        goto done;
    }
    model_set_weights(m, params, stats);

    char tf[160], trained[200];
    checkpoint_trained_text(&info, trained, sizeof trained);
    printf("predict: %s: %s, %d classes%s, on %s\n", ck, info.arch, C, trained, be->ops->name);
    printf("transform: %s, %s\n", transform_text(&v.valid, tf, sizeof tf), v.source);
    if (o->tta) printf("TTA: n=%d, beta=%.2f over the run's training transform (%s)\n", o->tta_n, (double)o->tta_beta,
                       transform_kind_name(v.aug.kind));
    if (names) printf("class names: %s\n", names_from);
    if (in.kind == INPUT_CSV) printf("images: %d listed in %s, found in %s\n", in.n + in.missing, o->input, in.images_dir);
    fflush(stdout);

    if (w.csv) {
        if (in.kind == INPUT_CSV) fprintf(w.csv, "%s,%s\n", in.id_col, in.label_col);
        else if (o->submission) fprintf(w.csv, "image_id,label\n");
        else {
            fprintf(w.csv, "%s%s", PREDICT_CSV_HEAD, names ? ",name" : "");
            for (int j = 1; j <= w.k; j++) fprintf(w.csv, ",class_%d,probability_%d", j, j);
            fputc('\n', w.csv);
        }
    }
    probs = xmalloc(((size_t)chunk * C + 1) * sizeof(float));
    Evaluator ev = {m, &feed, NULL, "predict"};
    double t0 = now_seconds();
    for (int first = 0; first < in.n; first += chunk) {
        int count = in.n - first < chunk ? in.n - first : chunk;
        if (run_chunk(&ev, &w, &v, first, count, probs, err, errlen)) goto done;
    }
    double secs = now_seconds() - t0;
    if (w.csv) {
        FILE *f = w.csv;
        w.csv = NULL;
        int ok = !fclose(f) && !write_full(af.fd, text, text_len);
        if (atomic_commit(&af, ok, err, errlen)) goto done;
    }
    int skipped = w.bad + in.missing;
    printf("predict: %d image%s in %.1f s (%.1f images/s)", w.good, w.good == 1 ? "" : "s", secs, secs > 0 ? w.good / secs : 0.0);
    if (skipped) printf(", %d bad image%s skipped (listed above)", skipped, skipped == 1 ? "" : "s");
    if (in.ignored) printf(", %d file%s that %s not images ignored", in.ignored, in.ignored == 1 ? "" : "s", in.ignored == 1 ? "is" : "are");
    printf("\n");
    if (w.in_class_folder && in.kind == INPUT_FOLDER)
        printf("accuracy %.6f against the folder names (%d of %d images are in a folder named after a class)\n",
               (double)w.correct / w.in_class_folder, w.in_class_folder, w.good);
    if (out) printf("predict: wrote %s\n", out);
    rc = 0;
done:
    if (w.csv) fclose(w.csv);
    free(text);
    atomic_abort(&af);
    free(probs);
    free(params), free(stats);
    if (be) device_feed_free(&feed);
    if (m) model_free(m);
    if (be) backend_destroy(be);
    names_list_free(classes, C);
    if (names) names_list_free(names, C);
    run_view_free(&v);
    predict_input_free(&in);
    st_close(&hdr);
    return rc;
}
