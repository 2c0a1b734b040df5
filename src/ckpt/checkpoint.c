/* ckpt/checkpoint.c: model <-> safetensors file in PyTorch's names and layouts (see checkpoint.h).
 *
 * Both files are described by one list of slots (name, PyTorch shape, where the values live in
 * our blocks, how to convert), so saving, loading and the strict key/shape check cannot disagree
 * about what a checkpoint holds. */
#include "ckpt/checkpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

typedef enum { SLOT_F32, SLOT_CONV, SLOT_COUNT } SlotKind;

typedef struct {
    char name[NAME_LEN + 32];
    SlotKind kind;       /* SLOT_CONV: F32, K,C,R,S in the file, K,R,S,C in memory; SLOT_COUNT: I64 scalar */
    int ndim;
    int64_t shape[4];    /* PyTorch's shape, what the file holds */
    size_t count;
    float *f;            /* SLOT_F32, SLOT_CONV: our memory */
    int64_t *i;          /* SLOT_COUNT */
} Slot;

typedef struct {
    Slot *s;
    int n, cap;
} Slots;

static Slot *slot_add(Slots *l, const char *name, const char *suffix, SlotKind kind) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->s = xrealloc(l->s, (size_t)l->cap * sizeof *l->s);
    }
    Slot *s = &l->s[l->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s%s", name, suffix);
    s->kind = kind;
    s->count = 1;
    return s;
}

static void slot_param(Slots *l, const Param *p, const char *suffix, float *block) {
    Slot *s = slot_add(l, p->name, suffix, p->kind == P_CONV_WEIGHT ? SLOT_CONV : SLOT_F32);
    s->ndim = p->ndim;
    for (int d = 0; d < p->ndim; d++) s->shape[d] = p->shape[d];
    s->count = p->count;
    s->f = block + p->offset;
}

static void slot_vector(Slots *l, const char *node, const char *suffix, float *v, int n) {
    Slot *s = slot_add(l, node, suffix, SLOT_F32);
    s->ndim = 1;
    s->shape[0] = n;
    s->count = (size_t)n;
    s->f = v;
}

/* The model file, in PyTorch's state_dict order: per module its parameters, then its buffers.
 * The blocks are written through only when loading; saving casts const away and only reads. */
static Slots model_slots(Model *m, float *params, float *stats) {
    Slots l = {0};
    for (int i = 0; i < m->nnodes; i++) {
        Node *n = &m->nodes[i];
        for (int k = 0; k < n->nparam; k++) slot_param(&l, &m->params[n->param + k], "", params);
        if (n->op != OP_BN) continue;
        slot_vector(&l, n->name, ".running_mean", stats + n->stat, n->features);
        slot_vector(&l, n->name, ".running_var", stats + n->stat + n->features, n->features);
        Slot *s = slot_add(&l, n->name, ".num_batches_tracked", SLOT_COUNT);
        s->i = &n->batches_tracked;
    }
    return l;
}

static Slots train_slots(const Model *m, float *adam_m, float *adam_v) {
    Slots l = {0};
    for (int i = 0; i < m->nparams; i++) {
        slot_param(&l, &m->params[i], ".exp_avg", adam_m);
        slot_param(&l, &m->params[i], ".exp_avg_sq", adam_v);
    }
    return l;
}

/* ---------------------------------------------------------------------------------------------- */
/* Saving */

static const char *meta_get(const char *const *meta, const char *key) {
    for (int i = 0; meta && meta[i]; i += 2)
        if (!strcmp(meta[i], key)) return meta[i + 1];
    return NULL;
}

static int save_slots(const char *path, const Model *m, const Slots *l, const char *format, const char *const *meta,
                      int need_id, char *err, size_t errlen) {
    for (int i = 0; meta && meta[i]; i += 2)
        if (!meta[i + 1]) return error_at(err, errlen, path, "not written: metadata \"%s\" has no value", meta[i]);
    if (need_id && !meta_get(meta, CKPT_ID_KEY))
        return error_at(err, errlen, path, "not written: training state needs \"%s\" in its metadata (ckpt_new_id)",
                    CKPT_ID_KEY);

    /* st_add references the data until st_write: transposed conv weights need a home till then. */
    size_t conv_floats = 0;
    for (int i = 0; i < l->n; i++)
        if (l->s[i].kind == SLOT_CONV) conv_floats += l->s[i].count;
    float *scratch = xmalloc(conv_floats * sizeof *scratch), *next = scratch;

    StWriter *w = st_writer_new();
    for (int i = 0; i < l->n; i++) {
        const Slot *s = &l->s[i];
        switch (s->kind) {
        case SLOT_COUNT: st_add(w, s->name, ST_I64, 0, NULL, s->i); break;
        case SLOT_F32: st_add(w, s->name, ST_F32, s->ndim, s->shape, s->f); break;
        case SLOT_CONV: {
            /* ours K,R,S,C -> PyTorch's K,C,R,S */
            size_t K = (size_t)s->shape[0], C = (size_t)s->shape[1], R = (size_t)s->shape[2], S = (size_t)s->shape[3];
            for (size_t k = 0; k < K; k++)
                for (size_t c = 0; c < C; c++)
                    for (size_t r = 0; r < R; r++)
                        for (size_t q = 0; q < S; q++)
                            next[((k * C + c) * R + r) * S + q] = s->f[((k * R + r) * S + q) * C + c];
            st_add(w, s->name, ST_F32, 4, s->shape, next);
            next += s->count;
            break;
        }
        }
    }
    char classes[32];
    snprintf(classes, sizeof classes, "%d", m->classes);
    st_add_meta(w, "format", format);
    st_add_meta(w, "arch", m->arch);
    st_add_meta(w, "classes", classes);
    for (int i = 0; meta && meta[i]; i += 2) st_add_meta(w, meta[i], meta[i + 1]);
    int rc = st_write(w, path, err, errlen);
    st_writer_free(w);
    free(scratch);
    return rc;
}

int ckpt_save(const char *path, const Model *m, const float *params, const float *stats, const char *const *meta,
              char *err, size_t errlen) {
    Slots l = model_slots((Model *)m, (float *)params, (float *)stats);
    int rc = save_slots(path, m, &l, CKPT_FORMAT, meta, 0, err, errlen);
    free(l.s);
    return rc;
}

int ckpt_save_train(const char *path, const Model *m, const float *adam_m, const float *adam_v,
                    const char *const *meta, char *err, size_t errlen) {
    Slots l = train_slots(m, (float *)adam_m, (float *)adam_v);
    int rc = save_slots(path, m, &l, CKPT_TRAIN_FORMAT, meta, 1, err, errlen);
    free(l.s);
    return rc;
}

/* The resume file: the model's slots followed by the training state's, in one file. */
static Slots resume_slots(Model *m, float *params, float *stats, float *adam_m, float *adam_v) {
    Slots l = model_slots(m, params, stats), t = train_slots(m, adam_m, adam_v);
    l.s = xrealloc(l.s, (size_t)(l.n + t.n) * sizeof *l.s);
    if (t.n) memcpy(l.s + l.n, t.s, (size_t)t.n * sizeof *t.s);
    l.n += t.n;
    l.cap = l.n;
    free(t.s);
    return l;
}

int ckpt_save_resume(const char *path, const Model *m, const float *params, const float *stats, const float *adam_m,
                     const float *adam_v, const char *const *meta, char *err, size_t errlen) {
    Slots l = resume_slots((Model *)m, (float *)params, (float *)stats, (float *)adam_m, (float *)adam_v);
    int rc = save_slots(path, m, &l, CKPT_RESUME_FORMAT, meta, 0, err, errlen);
    free(l.s);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Loading */

/* Every problem, kept whole; shown as far as the caller's buffer allows. */
typedef struct {
    StrList list;
    int missing, unexpected, shape, dtype;
} Problems;


static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static int is_float(StDType t) { return t == ST_F32 || t == ST_F16 || t == ST_BF16 || t == ST_F64; }

/* "label: does not fit model X (...): N problems: a; b; c; and K more", cut to errlen by whole items. */
static void report(const Problems *p, const char *label, const Model *m, const StFile *f, char *err, size_t errlen) {
    if (!err || !errlen) return;
    const char *farch = st_meta(f, "arch"), *fcls = st_meta(f, "classes");
    char cls[32], note[160] = "";
    snprintf(cls, sizeof cls, "%d", m->classes);
    if ((farch && strcmp(farch, m->arch)) || (fcls && strcmp(fcls, cls)))
        snprintf(note, sizeof note, "; the file holds %.40s with %.20s classes", farch ? farch : "?", fcls ? fcls : "?");
    /* The count of each kind first: the list may be cut short. */
    char kinds[128] = "";
    const char *names[4] = {"missing", "unexpected", "wrong shape", "wrong dtype"};
    const int counts[4] = {p->missing, p->unexpected, p->shape, p->dtype};
    for (int i = 0, k = 0; i < 4; i++)
        if (counts[i]) k += snprintf(kinds + k, sizeof kinds - (size_t)k, "%s%d %s", k ? ", " : "", counts[i], names[i]);
    size_t len = (size_t)snprintf(err, errlen, "%s: does not fit model %s (%d classes%s): %d problem%s (%s): ", label,
                                  m->arch, m->classes, note, p->list.n, p->list.n == 1 ? "" : "s", kinds);
    const size_t reserve = 32; /* room for "; and 123456 more" */
    int shown = 0;
    for (; shown < p->list.n && len < errlen; shown++) {
        size_t need = strlen(p->list.items[shown]) + (shown ? 2 : 0);
        size_t room = shown == p->list.n - 1 ? errlen - 1 : (errlen > reserve ? errlen - 1 - reserve : 0);
        if (len + need > room) break;
        len += (size_t)snprintf(err + len, errlen - len, "%s%s", shown ? "; " : "", p->list.items[shown]);
    }
    if (shown < p->list.n && len < errlen)
        snprintf(err + len, errlen - len, "%sand %d more", shown ? "; " : "", p->list.n - shown);
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = h >> 10 & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0 && man) { /* subnormal: man * 2^-24, exact in float */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 0x1F) bits = sign | 0x7F800000u | man << 13; /* inf, nan */
    else if (exp) bits = sign | (exp + 112) << 23 | man << 13; /* rebias 15 -> 127 */
    else bits = sign;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Tensor data to float; data in the blob may be unaligned, hence memcpy. */
static void to_f32(const StTensor *t, float *dst, size_t n) {
    const unsigned char *s = t->data;
    if (t->dtype == ST_F32) {
        memcpy(dst, s, n * sizeof *dst);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == ST_F64) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        } else {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            if (t->dtype == ST_F16) {
                dst[i] = half_to_float(h);
            } else { /* BF16: the top half of a float */
                uint32_t bits = (uint32_t)h << 16;
                memcpy(&dst[i], &bits, sizeof bits);
            }
        }
    }
}

/* want: the format a training-state or resume file must declare; NULL for a model file, which may
 * also come from elsewhere (a torchvision state dict has no format). */
static int load_slots(const StFile *f, const char *label, Model *m, Slots *l, const char *want, char *err,
                      size_t errlen) {
    const char *fmt = st_meta(f, "format");
    if (want && (!fmt || strcmp(fmt, want)))
        return error_at(err, errlen, label, "not a cnntrain %s file (format \"%.40s\", expected \"%s\")",
                        strcmp(want, CKPT_RESUME_FORMAT) ? "training-state" : "resume", fmt ? fmt : "none", want);
    if (!want && fmt && !strcmp(fmt, CKPT_TRAIN_FORMAT))
        return error_at(err, errlen, label, "this is a training-state file (Adam moments), not a model");
    if (!want && fmt && !strncmp(fmt, "cnntrain", 8) && strcmp(fmt, CKPT_FORMAT))
        return error_at(err, errlen, label, "format \"%.40s\" is not one this build reads (\"%s\")", fmt, CKPT_FORMAT);

    /* Pass 1: check everything, so a bad file leaves the model untouched. */
    Problems p = {0};
    unsigned char *used = xcalloc((size_t)f->count + 1, 1);
    const StTensor **found = xcalloc((size_t)l->n + 1, sizeof *found);
    size_t most = 0;
    for (int i = 0; i < l->n; i++) {
        const Slot *s = &l->s[i];
        const StTensor *t = st_find(f, s->name);
        if (!t) {
            strlist_add(&p.list, "missing \"%s\"", s->name);
            p.missing++;
            continue;
        }
        used[t - f->tensors] = 1;
        char a[128], b[128];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, s->ndim, s->shape);
        int ok = 1;
        if (s->kind == SLOT_COUNT ? (t->dtype != ST_I64 && t->dtype != ST_I32) : !is_float(t->dtype)) {
            strlist_add(&p.list, "\"%s\" is %s, expected %s", s->name, st_dtype_name(t->dtype), s->kind == SLOT_COUNT ? "I64" : "F32");
            p.dtype++;
            ok = 0;
        }
        if (strcmp(a, b)) {
            strlist_add(&p.list, "\"%s\" has shape %s in the file, %s in the model", s->name, a, b);
            p.shape++;
            ok = 0;
        }
        if (ok) found[i] = t;
        if (s->count > most) most = s->count;
    }
    for (int i = 0; i < f->count; i++)
        if (!used[i]) {
            strlist_add(&p.list, "unexpected \"%s\"", f->tensors[i].name);
            p.unexpected++;
        }
    free(used);
    if (p.list.n) {
        report(&p, label, m, f, err, errlen);
        strlist_free(&p.list);
        free(found);
        return -1;
    }

    /* Pass 2: copy, converting dtypes and transposing conv weights back to K,R,S,C. */
    float *tmp = xmalloc(most * sizeof *tmp);
    for (int i = 0; i < l->n; i++) {
        const Slot *s = &l->s[i];
        const StTensor *t = found[i];
        if (s->kind == SLOT_COUNT) {
            if (t->dtype == ST_I64) {
                memcpy(s->i, t->data, 8);
            } else {
                int32_t v;
                memcpy(&v, t->data, 4);
                *s->i = v;
            }
        } else if (s->kind == SLOT_F32) {
            to_f32(t, s->f, s->count);
        } else {
            to_f32(t, tmp, s->count);
            size_t K = (size_t)s->shape[0], C = (size_t)s->shape[1], R = (size_t)s->shape[2], S = (size_t)s->shape[3];
            for (size_t k = 0; k < K; k++)
                for (size_t r = 0; r < R; r++)
                    for (size_t q = 0; q < S; q++)
                        for (size_t c = 0; c < C; c++)
                            s->f[((k * R + r) * S + q) * C + c] = tmp[((k * C + c) * R + r) * S + q];
        }
    }
    free(tmp);
    free(found);
    return 0;
}

int ckpt_load_st(const StFile *f, const char *label, Model *m, float *params, float *stats, char *err,
                 size_t errlen) {
    Slots l = model_slots(m, params, stats);
    int rc = load_slots(f, label, m, &l, NULL, err, errlen);
    free(l.s);
    return rc;
}

int ckpt_load(const char *path, Model *m, float *params, float *stats, char *err, size_t errlen) {
    StFile f;
    if (st_read(path, &f, err, errlen)) return -1;
    int rc = ckpt_load_st(&f, path, m, params, stats, err, errlen);
    st_close(&f);
    return rc;
}

/* Loads the slots of a training-state or resume file; meta_out as ckpt_load_train says. */
static int load_with_meta(const char *path, Model *m, Slots *l, const char *format, StFile *meta_out, char *err,
                          size_t errlen) {
    if (meta_out) memset(meta_out, 0, sizeof *meta_out);
    StFile f;
    if (st_read(path, &f, err, errlen)) return -1;
    int rc = load_slots(&f, path, m, l, format, err, errlen);
    if (rc || !meta_out) {
        st_close(&f);
        return rc;
    }
    /* Hand over the header only: the moments are copied out, the blob can go. */
    free(f.blob);
    f.blob = NULL;
    for (int i = 0; i < f.count; i++) f.tensors[i].data = NULL;
    *meta_out = f;
    return 0;
}

int ckpt_load_train(const char *path, Model *m, float *adam_m, float *adam_v, StFile *meta_out, char *err,
                    size_t errlen) {
    Slots l = train_slots(m, adam_m, adam_v);
    int rc = load_with_meta(path, m, &l, CKPT_TRAIN_FORMAT, meta_out, err, errlen);
    free(l.s);
    return rc;
}

int ckpt_load_resume(const char *path, Model *m, float *params, float *stats, float *adam_m, float *adam_v,
                     StFile *meta_out, char *err, size_t errlen) {
    Slots l = resume_slots(m, params, stats, adam_m, adam_v);
    int rc = load_with_meta(path, m, &l, CKPT_RESUME_FORMAT, meta_out, err, errlen);
    free(l.s);
    return rc;
}

int ckpt_check_pair(const char *model_path, const char *train_path, char *err, size_t errlen) {
    StFile a, b;
    if (st_read_header(model_path, &a, err, errlen)) return -1;
    if (st_read_header(train_path, &b, err, errlen)) {
        st_close(&a);
        return -1;
    }
    const char *ia = st_meta(&a, CKPT_ID_KEY), *ib = st_meta(&b, CKPT_ID_KEY);
    int rc = 0;
    if (!ia)
        rc = error_at(err, errlen, model_path, "no \"%s\" in its metadata, so %s cannot be matched to it", CKPT_ID_KEY,
                  train_path);
    else if (!ib)
        rc = error_at(err, errlen, train_path, "no \"%s\" in its metadata, so it cannot be matched to %s", CKPT_ID_KEY,
                  model_path);
    else if (strcmp(ia, ib))
        rc = error_at(err, errlen, train_path, "%s %.64s does not match %s's %.64s: the files are from different saves",
                  CKPT_ID_KEY, ib, model_path, ia);
    st_close(&a);
    st_close(&b);
    return rc;
}

void ckpt_new_id(char id[CKPT_ID_CHARS + 1]) {
    unsigned char r[CKPT_ID_CHARS / 2];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    if (got < sizeof r) {
        /* No getrandom (old kernel, seccomp): time, pid and a counter through splitmix64 still make
         * two saves' ids differ, which is all an id is for. */
        static uint64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32 ^ ++counter;
        for (size_t i = 0; i < sizeof r; i += 8) {
            uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            z ^= z >> 31;
            for (size_t j = 0; j < 8 && i + j < sizeof r; j++) r[i + j] = (unsigned char)(z >> (8 * j));
        }
    }
    for (size_t i = 0; i < sizeof r; i++) snprintf(id + 2 * i, 3, "%02x", r[i]);
}

int ckpt_train_path(const char *model_path, char *out, size_t outlen) {
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) dot = base + strlen(base); /* no extension, or a hidden file's leading dot */
    int n = snprintf(out, outlen, "%.*s.train%s", (int)(dot - model_path), model_path, dot);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}
