/* ckpt/safetensors_write.c: the safetensors writer: tensors and metadata gathered (bad calls
 * remembered and reported when writing), then the JSON header and the data, little-endian as the
 * host, written atomically. */
#include "ckpt/safetensors.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

typedef struct {
    char *name;
    StDType dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t bytes;
    const void *data;
} WTensor;

struct StWriter {
    WTensor *t;
    int n, cap;
    char **mk, **mv;
    int nm, capm;
    char problem[256]; /* the first bad st_add / st_add_meta, reported by st_write */
};

StWriter *st_writer_new(void) { return xcalloc(1, sizeof(StWriter)); }

void st_writer_free(StWriter *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->t);
    free(w->mk);
    free(w->mv);
    free(w);
}

void st_add(StWriter *w, const char *name, StDType dtype, int ndim, const int64_t *shape, const void *data) {
    if (w->problem[0]) return;
    if (!name || !utf8_valid(name) || !strcmp(name, "__metadata__")) {
        snprintf(w->problem, sizeof w->problem, "bad tensor name \"%.100s\"", name ? name : "(null)");
        return;
    }
    if ((unsigned)dtype >= ST_NTYPES || ndim < 0 || ndim > ST_MAX_DIMS) {
        snprintf(w->problem, sizeof w->problem, "tensor \"%.100s\": bad dtype %d or rank %d", name, (int)dtype, ndim);
        return;
    }
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) {
            snprintf(w->problem, sizeof w->problem, "tensor \"%.100s\" added twice", name);
            return;
        }
    uint64_t bytes = st_dtype_size(dtype);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || __builtin_mul_overflow(bytes, (uint64_t)shape[d], &bytes) || bytes > SIZE_MAX) {
            snprintf(w->problem, sizeof w->problem, "tensor \"%.100s\": bad or too large shape", name);
            return;
        }
    if (bytes && !data) {
        snprintf(w->problem, sizeof w->problem, "tensor \"%.100s\": no data", name);
        return;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->t = xrealloc(w->t, (size_t)w->cap * sizeof *w->t);
    }
    WTensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->bytes = (size_t)bytes;
    t->data = data;
}

void st_add_meta(StWriter *w, const char *key, const char *value) {
    if (w->problem[0]) return;
    if (!key || !value || !utf8_valid(key) || !utf8_valid(value)) {
        snprintf(w->problem, sizeof w->problem, "bad metadata \"%.100s\" (missing, or not UTF-8)", key ? key : "(null)");
        return;
    }
    for (int i = 0; i < w->nm; i++)
        if (!strcmp(w->mk[i], key)) {
            snprintf(w->problem, sizeof w->problem, "metadata key \"%.100s\" added twice", key);
            return;
        }
    if (w->nm == w->capm) {
        w->capm = w->capm ? 2 * w->capm : 16;
        w->mk = xrealloc(w->mk, (size_t)w->capm * sizeof *w->mk);
        w->mv = xrealloc(w->mv, (size_t)w->capm * sizeof *w->mv);
    }
    w->mk[w->nm] = xstrdup(key);
    w->mv[w->nm++] = xstrdup(value);
}

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void buf_printf(Buf *b, const char *fmt, ...) CNN_PRINTF(2, 3);
static void buf_printf(Buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void buf_json_string(Buf *b, const char *s) {
    buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_put(b, e, 2);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_put(b, (const char *)&c, 1);
        }
    }
    buf_put(b, "\"", 1);
}

int st_write(StWriter *w, const char *path, char *err, size_t errlen) {
    if (!path || !*path) return error_at(err, errlen, "(no path)", "st_write needs a file name");
    if (w->problem[0]) return error_at(err, errlen, path, "not written: %s", w->problem);

    /* Header: metadata first, then tensors in the order added, data back to back. */
    Buf h = {0};
    buf_put(&h, "{", 1);
    if (w->nm) {
        buf_put(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < w->nm; i++) {
            if (i) buf_put(&h, ",", 1);
            buf_json_string(&h, w->mk[i]);
            buf_put(&h, ":", 1);
            buf_json_string(&h, w->mv[i]);
        }
        buf_put(&h, "}", 1);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const WTensor *t = &w->t[i];
        if (i || w->nm) buf_put(&h, ",", 1);
        buf_json_string(&h, t->name);
        buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) buf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)off + t->bytes);
        off += t->bytes;
    }
    buf_put(&h, "}", 1);
    /* Spaces up to a multiple of 8, as the reference writer does, so the data starts aligned. */
    while (h.len % 8) buf_put(&h, " ", 1);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));

    AtomicFile a; /* a device or FIFO at path is refused; a symbolic link is written through */
    if (atomic_open(&a, path, err, errlen)) {
        free(h.p);
        return -1;
    }
    int ok = !write_full(a.fd, len8, 8) && !write_full(a.fd, h.p, h.len);
    for (int i = 0; ok && i < w->n; i++) ok = !w->t[i].bytes || !write_full(a.fd, w->t[i].data, w->t[i].bytes);
    int rc = atomic_commit(&a, ok, err, errlen);
    free(h.p);
    return rc;
}
