/* ckpt/pretrained.c: copy the matching tensors of a state dict into a model (see pretrained.h).
 *
 * Matching happens here; the copy itself goes through ckpt_load_st, so dtypes, the conv weight
 * transpose and num_batches_tracked follow exactly the rules of a strict checkpoint load: we hand
 * it a view of the file holding every tensor the model expects, the matched ones from the file
 * under the model's names and the others from the model's current values. */
#include "ckpt/pretrained.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/checkpoint.h"
#include "train/config.h"
#include "base/util.h"

#define TNAME (NAME_LEN + 32)

/* One tensor of the model's state dict. */
typedef struct {
    char name[TNAME];
    int ndim;
    int64_t shape[4];
    size_t count;
    int conv;                /* K,R,S,C here, K,C,R,S in a state dict */
    int classifier;          /* weight or bias of the final linear layer */
    const float *cur;        /* current values in our layout; NULL for num_batches_tracked */
    const int64_t *tracked;  /* num_batches_tracked */
    const StTensor *src;     /* the file's tensor, once matched */
} Target;


/* The model's state dict, in its order (parameters, then each batch norm's buffers). */
static Target *model_targets(const Model *m, const float *params, const float *stats, int *count) {
    int n = m->nparams;
    for (int i = 0; i < m->nnodes; i++) n += m->nodes[i].op == OP_BN ? 3 : 0;
    Target *t = xcalloc((size_t)n, sizeof *t);
    int k = 0;
    for (int i = 0; i < m->nnodes; i++) {
        const Node *nd = &m->nodes[i];
        for (int j = 0; j < nd->nparam; j++) {
            const Param *p = &m->params[nd->param + j];
            Target *x = &t[k++];
            snprintf(x->name, TNAME, "%s", p->name);
            x->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) x->shape[d] = p->shape[d];
            x->count = p->count;
            x->conv = p->kind == P_CONV_WEIGHT;
            x->classifier = i == m->nnodes - 1 && nd->op == OP_LINEAR;
            x->cur = params + p->offset;
        }
        if (nd->op != OP_BN) continue;
        static const char *const suffix[2] = {".running_mean", ".running_var"};
        for (int j = 0; j < 2; j++) {
            Target *x = &t[k++];
            snprintf(x->name, TNAME, "%s%s", nd->name, suffix[j]);
            x->ndim = 1;
            x->shape[0] = nd->features;
            x->count = (size_t)nd->features;
            x->cur = stats + nd->stat + (size_t)j * nd->features;
        }
        Target *x = &t[k++];
        snprintf(x->name, TNAME, "%s.num_batches_tracked", nd->name);
        x->count = 1;
        x->tracked = &nd->batches_tracked;
    }
    *count = k;
    return t;
}

/* "12." at s: returns the length including the dot and sets *v, or 0. */
static int module_index(const char *s, int *v) {
    int i = 0, x = 0;
    while (s[i] >= '0' && s[i] <= '9' && i < 4) x = 10 * x + (s[i++] - '0');
    if (i == 0 || s[i] != '.') return 0;
    *v = x;
    return i + 1;
}

/* The names a file tensor may have in the model besides its own, most likely first. */
static int translations(const char *name, char out[][TNAME]) {
    int n = 0, k, len;
    /* torchvision -> cnn_learner body (children: conv1 bn1 relu maxpool layer1..4) */
    if (!strncmp(name, "conv1.", 6)) snprintf(out[n++], TNAME, "0.0.%s", name + 6);
    if (!strncmp(name, "bn1.", 4)) snprintf(out[n++], TNAME, "0.1.%s", name + 4);
    if (!strncmp(name, "layer", 5) && (len = module_index(name + 5, &k)) && k >= 1 && k <= 4)
        snprintf(out[n++], TNAME, "0.%d.%s", k + 3, name + 5 + len);
    /* xresnet (modules 0..7 are the body) -> cnn_learner body */
    if (module_index(name, &k) && k <= 7) snprintf(out[n++], TNAME, "0.%s", name);
    /* cnn_learner body -> torchvision, xresnet */
    if (!strncmp(name, "0.", 2) && (len = module_index(name + 2, &k))) {
        const char *rest = name + 2 + len;
        if (k == 0) snprintf(out[n++], TNAME, "conv1.%s", rest);
        if (k == 1) snprintf(out[n++], TNAME, "bn1.%s", rest);
        if (k >= 4 && k <= 7) snprintf(out[n++], TNAME, "layer%d.%s", k - 3, rest);
        if (k <= 7) snprintf(out[n++], TNAME, "%s", name + 2);
    }
    return n;
}

static Target *find_unused(Target *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!t[i].src && !strcmp(t[i].name, name)) return &t[i];
    return NULL;
}

static int same_shape(const StTensor *s, const Target *t) {
    if (s->ndim != t->ndim) return 0;
    for (int d = 0; d < t->ndim; d++)
        if (s->shape[d] != t->shape[d]) return 0;
    return 1;
}

static void shape_text(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

/* The view ckpt_load_st reads: matched tensors from the file, the rest from copies of the current
 * values in the file's layout (copies, so no copy reads and writes the same memory). The copies go
 * to *floats and *counts, which the caller frees. */
static StTensor *build_view(const Target *t, int n, float **floats, int64_t **counts) {
    size_t nf = 0, nc = 0;
    for (int i = 0; i < n; i++) {
        if (t[i].src) continue;
        if (t[i].tracked)
            nc++;
        else
            nf += t[i].count;
    }
    float *f = *floats = xmalloc((nf ? nf : 1) * sizeof *f);
    int64_t *c = *counts = xmalloc((nc ? nc : 1) * sizeof *c);
    StTensor *v = xcalloc((size_t)n, sizeof *v);
    for (int i = 0; i < n; i++) {
        const Target *x = &t[i];
        v[i].name = (char *)x->name;
        if (x->src) {
            const StTensor *s = x->src;
            v[i].dtype = s->dtype;
            v[i].ndim = s->ndim;
            memcpy(v[i].shape, s->shape, sizeof v[i].shape);
            v[i].bytes = s->bytes;
            v[i].data = s->data;
            continue;
        }
        v[i].ndim = x->ndim;
        for (int d = 0; d < x->ndim; d++) v[i].shape[d] = x->shape[d];
        if (x->tracked) {
            *c = *x->tracked;
            v[i].dtype = ST_I64;
            v[i].bytes = sizeof *c;
            v[i].data = c++;
            continue;
        }
        if (x->conv) { /* ours K,R,S,C -> K,C,R,S */
            size_t K = (size_t)x->shape[0], C = (size_t)x->shape[1], R = (size_t)x->shape[2], S = (size_t)x->shape[3];
            for (size_t k = 0; k < K; k++)
                for (size_t ch = 0; ch < C; ch++)
                    for (size_t r = 0; r < R; r++)
                        for (size_t q = 0; q < S; q++)
                            f[((k * C + ch) * R + r) * S + q] = x->cur[((k * R + r) * S + q) * C + ch];
        } else {
            memcpy(f, x->cur, x->count * sizeof *f);
        }
        v[i].dtype = ST_F32;
        v[i].bytes = x->count * sizeof *f;
        v[i].data = f;
        f += x->count;
    }
    return v;
}

/* The first difference between two newline-joined class lists, for a message; 0 when equal. */
static int class_difference(const char *a, const char *b, char *buf, size_t len) {
    for (int i = 0;; i++) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || memcmp(a, b, la) || !a[la] != !b[lb]) {
            snprintf(buf, len, "class %d is '%.*s' in the file, '%.*s' in the data", i, (int)la, a, (int)lb, b);
            return 1;
        }
        if (!a[la]) return 0;
        a += la + 1;
        b += lb + 1;
    }
}

static int load_impl(const StFile *f, const char *label, Model *m, float *params, float *stats, int head,
                     const char *class_names, PretrainedReport *rep, char *err, size_t errlen) {
    const char *fmt = st_meta(f, "format");
    if (fmt && !strcmp(fmt, CKPT_TRAIN_FORMAT))
        return error_at(err, errlen, label, "this is a training-state file (Adam moments), not weights");
    int n;
    Target *t = model_targets(m, params, stats, &n);
    StrList skipped = {0}, wrong = {0};
    char note[600] = "", diff[300] = "";
    const char *file_names = st_meta(f, "class_names");
    int names_differ = file_names && class_names && class_difference(file_names, class_names, diff, sizeof diff);
    for (int i = 0; i < f->count; i++) {
        const StTensor *s = &f->tensors[i];
        char alt[6][TNAME];
        int nalt = translations(s->name, alt);
        Target *x = find_unused(t, n, s->name);
        for (int a = 0; !x && a < nalt; a++) x = find_unused(t, n, alt[a]);
        if (!x) {
            strlist_add(&skipped, "%s: not in the model", s->name);
            continue;
        }
        if (same_shape(s, x) && x->classifier && head == PRETRAINED_HEAD_NEW) {
            strlist_add(&skipped, "%s: the classifier (pretrained_head = new)", s->name);
            continue;
        }
        if (same_shape(s, x) && x->classifier && head == PRETRAINED_HEAD_AUTO && names_differ) {
            strlist_free(&skipped);
            strlist_free(&wrong);
            free(t);
            return error_at(err, errlen, label,
                            "its classifier has the data's %d classes, but other ones (%s): set [model] pretrained_head = "
                            "new to start the classifier fresh, or keep to load it anyway", m->classes, diff);
        }
        if (same_shape(s, x)) {
            if (x->classifier && head == PRETRAINED_HEAD_KEEP && names_differ)
                snprintf(note, sizeof note, "the classifier loaded although its classes differ (%s): pretrained_head = keep", diff);
            else if (x->classifier && head == PRETRAINED_HEAD_AUTO && !file_names && class_names)
                snprintf(note, sizeof note, "the classifier loaded: %d classes like the data's, but the file names none to "
                                            "compare (pretrained_head = new starts it fresh)", m->classes);
            x->src = s;
            continue;
        }
        char fs[96], ms[96];
        shape_text(fs, sizeof fs, s->ndim, s->shape);
        shape_text(ms, sizeof ms, x->ndim, x->shape);
        if (x->classifier)
            strlist_add(&skipped, "%s: the classifier, %s in the file, %s in the model", s->name, fs, ms);
        else
            strlist_add(&wrong, "\"%s\" is %s in the file, \"%s\" %s in the model", s->name, fs, x->name, ms);
    }
    int convs = 0, all_convs = 0;
    const char *missing = NULL;
    for (int i = 0; i < n; i++) {
        all_convs += t[i].conv;
        convs += t[i].conv && t[i].src;
        if (t[i].conv && !t[i].src && !missing) missing = t[i].name;
    }
    int rc = 0;
    if (wrong.n) {
        size_t k = (size_t)snprintf(err, errlen, "%s: not weights for %s (a different architecture?): %d shape%s differ: ",
                                    label, m->arch, wrong.n, wrong.n == 1 ? "" : "s");
        for (int i = 0; i < wrong.n && i < 3 && k < errlen; i++)
            k += (size_t)snprintf(err + k, errlen - k, "%s%s", i ? "; " : "", wrong.items[i]);
        if (wrong.n > 3 && k < errlen) snprintf(err + k, errlen - k, "; and %d more", wrong.n - 3);
        rc = -1;
    } else if (!convs) {
        rc = error_at(err, errlen, label, "shares no convolution weight with %s (its names: \"%s\", ...)", m->arch,
                      f->count ? f->tensors[0].name : "none");
    } else if (convs < all_convs) {
        /* a partly loaded body is a different depth (resnet18 weights in a resnet34), not a transfer */
        rc = error_at(err, errlen, label, "holds %d of the %d convolutions of %s (\"%s\" is not in the file): a different depth?",
                      convs, all_convs, m->arch, missing);
    }
    if (rc == 0) {
        float *floats;
        int64_t *counts;
        StFile view = {0};
        view.tensors = build_view(t, n, &floats, &counts);
        view.count = n;
        rc = ckpt_load_st(&view, label, m, params, stats, err, errlen);
        free(view.tensors);
        free(floats);
        free(counts);
    }
    if (rc == 0 && rep) {
        StrList loaded = {0}, fresh = {0};
        for (int i = 0; i < n; i++) {
            if (!t[i].src)
                strlist_add(&fresh, "%s", t[i].name);
            else if (strcmp(t[i].name, t[i].src->name))
                strlist_add(&loaded, "%s <- %s", t[i].name, t[i].src->name);
            else
                strlist_add(&loaded, "%s", t[i].name);
        }
        *rep = (PretrainedReport){loaded.n, fresh.n, skipped.n, loaded.items, fresh.items, skipped.items,
                                  note[0] ? xstrdup(note) : NULL};
        skipped = (StrList){0};
    }
    strlist_free(&skipped);
    strlist_free(&wrong);
    free(t);
    return rc;
}

int pretrained_load(const StFile *f, const char *label, Model *m, float *params, float *stats,
                    PretrainedReport *rep, char *err, size_t errlen) {
    return load_impl(f, label, m, params, stats, PRETRAINED_HEAD_KEEP, NULL, rep, err, errlen);
}

int pretrained_load_file_head(const char *path, Model *m, float *params, float *stats, int head,
                              const char *class_names, PretrainedReport *rep, char *err, size_t errlen) {
    StFile f;
    if (st_read(path, &f, err, errlen)) return -1;
    int rc = load_impl(&f, path, m, params, stats, head, class_names, rep, err, errlen);
    st_close(&f);
    return rc;
}

int pretrained_load_file(const char *path, Model *m, float *params, float *stats, PretrainedReport *rep,
                         char *err, size_t errlen) {
    return pretrained_load_file_head(path, m, params, stats, PRETRAINED_HEAD_KEEP, NULL, rep, err, errlen);
}

void pretrained_report_print(FILE *out, const PretrainedReport *r, const char *prefix, int verbose) {
    int renamed = 0;
    for (int i = 0; i < r->nloaded; i++) renamed += strstr(r->loaded[i], " <- ") != NULL;
    fprintf(out, "%spretrained: %d tensors loaded (%d renamed), %d new, %d skipped\n", prefix, r->nloaded, renamed,
            r->nnew, r->nskipped);
    for (int i = 0; verbose && i < r->nloaded; i++) fprintf(out, "%s  loaded  %s\n", prefix, r->loaded[i]);
    /* batch norms' counters missing from a state dict (torchvision's older files have none) are one
     * line, not one per layer: they only count batches, and start at 0 */
    int counters = 0;
    for (int i = 0; i < r->nnew; i++) {
        if (!verbose && strstr(r->fresh[i], "num_batches_tracked")) {
            counters++;
            continue;
        }
        fprintf(out, "%s  new     %s\n", prefix, r->fresh[i]);
    }
    if (counters)
        fprintf(out, "%s  new     %d batch-norm num_batches_tracked counters (they count batches only; start at 0)\n", prefix,
                counters);
    for (int i = 0; i < r->nskipped; i++) fprintf(out, "%s  skipped %s\n", prefix, r->skipped[i]);
    if (r->head_note) fprintf(out, "%s  note    %s\n", prefix, r->head_note);
}

void pretrained_report_free(PretrainedReport *r) {
    if (!r) return;
    StrList l[3] = {{r->loaded, r->nloaded, 0}, {r->fresh, r->nnew, 0}, {r->skipped, r->nskipped, 0}};
    for (int i = 0; i < 3; i++) strlist_free(&l[i]);
    free(r->head_note);
    memset(r, 0, sizeof *r);
}
