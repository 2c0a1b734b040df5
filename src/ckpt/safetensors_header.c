/* ckpt/safetensors_header.c: the safetensors header parser (safetensors_header.h). It trusts
 * nothing: the JSON parser knows only the shape a safetensors header has (an object of tensor
 * entries plus "__metadata__", strings, non-negative integers, arrays), and every tensor's byte
 * range is checked against its shape and the data section, which the tensors must tile exactly.
 * Each error says which file and what is wrong, with the byte of the header where it is. */
#include "ckpt/safetensors_header.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/util.h"

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

typedef struct {
    const unsigned char *s;
    size_t n, pos;
    const char *label;
    char *err;
    size_t errlen;
} Parser;

static int perr(Parser *p, const char *fmt, ...) CNN_PRINTF(2, 3);
static int perr(Parser *p, const char *fmt, ...) {
    if (!p->err || !p->errlen) return -1;
    int k = snprintf(p->err, p->errlen, "%s: bad header at byte %zu: ", p->label, 8 + p->pos);
    if (k >= 0 && (size_t)k < p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -1;
}
#ifdef __clang_analyzer__
#define perr(...) (perr(__VA_ARGS__), -1) /* as error_at in util.h */
#endif

/* "'x'" for a printable character, "byte 0xNN" otherwise, "the end" past the header. */
static const char *found(Parser *p, char *buf, size_t n) {
    if (p->pos >= p->n) return "the end of the header";
    unsigned c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7F) snprintf(buf, n, "'%c'", (char)c);
    else snprintf(buf, n, "byte 0x%02x", c);
    return buf;
}

static void skip_ws(Parser *p) {
    while (p->pos < p->n && strchr(" \t\n\r", p->s[p->pos]) && p->s[p->pos]) p->pos++;
}

static int expect(Parser *p, char c, const char *what) {
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (unsigned char)c) {
        p->pos++;
        return 0;
    }
    char b[16];
    return perr(p, "expected %s, found %s", what, found(p, b, sizeof b));
}

/* The next non-space character is c (consumed) or not (left). */
static int accept(Parser *p, char c) {
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (unsigned char)c) {
        p->pos++;
        return 1;
    }
    return 0;
}

/* A JSON string, decoded to a NUL-terminated UTF-8 copy in *out by base/json.c's decoder with
 * this parser's rules: a string with no closing quote is refused first (whatever it holds), UTF-8
 * is checked where it starts, and NUL itself (\u0000) is refused, since names and metadata are C
 * strings. Control characters (C0, DEL, C1) are refused too, which a terminal would act on when a
 * message quotes the string; text (metadata values) may hold line breaks and tabs. */
static int parse_string(Parser *p, char **out, const char *what, int text) {
    *out = NULL;
    skip_ws(p);
    JsonStr r;
    char *o;
    if (json_string_decode(p->s, p->n, p->pos, JSON_STR_END_FIRST, &o, &r)) {
        char b[16];
        p->pos = r.at;
        switch (r.status) {
        case JSON_STR_NO_QUOTE: return perr(p, "expected %s, found %s", what, found(p, b, sizeof b));
        case JSON_STR_UNCLOSED: return perr(p, "a string runs past the end of the header");
        case JSON_STR_RAW_CONTROL: return perr(p, "control character 0x%02x inside a string", r.code);
        case JSON_STR_BAD_UTF8: return perr(p, "invalid UTF-8 inside a string");
        case JSON_STR_BAD_ESCAPE:
            return perr(p, "unknown escape \\%c in a string", r.code >= 0x20 && r.code < 0x7F ? (char)r.code : '?');
        case JSON_STR_BAD_HEX: /* where the four digits would start, or just past the bad one */
            if (p->n - (r.escape + 2) < 4) {
                p->pos = r.escape + 2;
                return perr(p, "\\u escape cut short");
            }
            p->pos = r.at + 1;
            return perr(p, "bad hex digit in a \\u escape");
        case JSON_STR_LONE_LOW: return perr(p, "lone low surrogate \\u%04X in a string", r.code);
        case JSON_STR_LONE_HIGH: return perr(p, "high surrogate \\u%04X not followed by a low one", r.code);
        default: return perr(p, "\\u0000 inside a string is not supported");
        }
    }
    p->pos = r.at;
    size_t k = strlen(o);
    for (size_t i = 0; i < k; i++) {
        unsigned c = (unsigned char)o[i], next = i + 1 < k ? (unsigned char)o[i + 1] : 0;
        unsigned cp = c < 0x20 || c == 0x7F ? c : c == 0xC2 && next >= 0x80 && next <= 0x9F ? next : 0;
        if (!cp || (text && (cp == '\n' || cp == '\t'))) continue;
        free(o);
        return perr(p, "control character U+%04X in %s", cp, what);
    }
    *out = o;
    return 0;
}

/* A non-negative JSON integer up to INT64_MAX (shapes and offsets). */
static int parse_uint(Parser *p, uint64_t *v, const char *what) {
    skip_ws(p);
    char b[16];
    if (p->pos < p->n && p->s[p->pos] == '-') return perr(p, "negative number in %s", what);
    if (p->pos >= p->n || p->s[p->pos] < '0' || p->s[p->pos] > '9')
        return perr(p, "expected a number in %s, found %s", what, found(p, b, sizeof b));
    size_t start = p->pos;
    *v = 0;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        unsigned d = p->s[p->pos] - '0';
        if (*v > (uint64_t)(INT64_MAX - d) / 10) return perr(p, "number in %s is too large", what);
        *v = *v * 10 + d;
        p->pos++;
    }
    if (p->s[start] == '0' && p->pos - start > 1) return perr(p, "number with a leading zero in %s", what);
    if (p->pos < p->n && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E'))
        return perr(p, "%s must hold integers", what);
    return 0;
}

static int dtype_from_name(const char *s) {
    for (int i = 0; i < ST_NTYPES; i++)
        if (!strcmp(s, st_dtype_name((StDType)i))) return i;
    return -1;
}

/* The value of one field of a tensor entry. */
static int parse_field(Parser *p, StTensor *t, const char *key, uint64_t off[2]) {
    if (!strcmp(key, "dtype")) {
        char *val;
        if (parse_string(p, &val, "a dtype string", 0)) return -1;
        int dt = dtype_from_name(val);
        if (dt < 0)
            error_at(p->err, p->errlen, p->label,
                 "tensor \"%.100s\": unsupported dtype \"%.20s\" (known: F32 F16 BF16 F64 I64 I32 U8 BOOL)", t->name, val);
        free(val);
        t->dtype = (StDType)dt;
        return dt < 0 ? -1 : 0;
    }
    if (!strcmp(key, "shape")) {
        if (expect(p, '[', "'[' opening a shape")) return -1;
        if (accept(p, ']')) return 0;
        do {
            uint64_t d;
            if (t->ndim == ST_MAX_DIMS)
                return error_at(p->err, p->errlen, p->label, "tensor \"%.100s\": more than %d dimensions", t->name, ST_MAX_DIMS);
            if (parse_uint(p, &d, "a shape")) return -1;
            t->shape[t->ndim++] = (int64_t)d;
        } while (accept(p, ','));
        return expect(p, ']', "',' or ']' in a shape");
    }
    if (expect(p, '[', "'[' opening data_offsets") || parse_uint(p, &off[0], "data_offsets") ||
        expect(p, ',', "',' between the two data_offsets") || parse_uint(p, &off[1], "data_offsets"))
        return -1;
    return expect(p, ']', "']' after the two data_offsets");
}

/* {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, fields in any order, each once. */
static int parse_tensor(Parser *p, StTensor *t, uint64_t off[2]) {
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    int seen[3] = {0, 0, 0};
    if (expect(p, '{', "'{' opening the entry of a tensor")) return -1;
    if (!accept(p, '}')) {
        do {
            char *key;
            if (parse_string(p, &key, "a field name", 0)) return -1;
            int f = 0;
            while (f < 3 && strcmp(key, fields[f])) f++;
            int rc = expect(p, ':', "':' after a field name");
            if (!rc && f == 3) rc = perr(p, "tensor \"%.100s\": unexpected field \"%.40s\"", t->name, key);
            if (!rc && seen[f]) rc = perr(p, "tensor \"%.100s\": field \"%s\" given twice", t->name, key);
            if (!rc) {
                seen[f] = 1;
                rc = parse_field(p, t, key, off);
            }
            free(key);
            if (rc) return -1;
        } while (accept(p, ','));
        if (expect(p, '}', "',' or '}' in a tensor entry")) return -1;
    }
    for (int f = 0; f < 3; f++)
        if (!seen[f]) return error_at(p->err, p->errlen, p->label, "tensor \"%.100s\": no \"%s\" field", t->name, fields[f]);
    return 0;
}

static int parse_metadata(Parser *p, StFile *f) {
    int cap = 0;
    if (expect(p, '{', "'{' opening __metadata__")) return -1;
    if (accept(p, '}')) return 0;
    do {
        char *k, *v;
        if (parse_string(p, &k, "a metadata key", 0)) return -1;
        if (expect(p, ':', "':' after a metadata key")) {
            free(k);
            return -1;
        }
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] != '"') {
            perr(p, "metadata \"%.100s\": values must be strings", k);
            free(k);
            return -1;
        }
        if (parse_string(p, &v, "a metadata value", 1)) {
            free(k);
            return -1;
        }
        if (f->nmeta == cap) {
            cap = cap ? 2 * cap : 8;
            f->meta_keys = xrealloc(f->meta_keys, (size_t)cap * sizeof *f->meta_keys);
            f->meta_values = xrealloc(f->meta_values, (size_t)cap * sizeof *f->meta_values);
        }
        f->meta_keys[f->nmeta] = k;
        f->meta_values[f->nmeta++] = v;
    } while (accept(p, ','));
    return expect(p, '}', "',' or '}' in __metadata__");
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The first name that occurs twice, or NULL. Sorts the array of pointers it is given. */
static const char *find_duplicate(char **names, size_t n) {
    if (n < 2) return NULL;
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i])) return names[i];
    return NULL;
}

/* Tensor index and byte range, for the coverage check. */
typedef struct {
    uint64_t begin, end;
    int index;
} Range;

static int cmp_range(const void *a, const void *b) {
    const Range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

/* As the reference implementation requires: the tensors tile the data section exactly, no gap,
 * no overlap, nothing after the last one. Sorts r. */
static int check_coverage(Parser *p, const StFile *f, Range *r, uint64_t data_size) {
    int n = r ? f->count : 0;   /* r is NULL without tensors */
    if (n > 1) qsort(r, (size_t)n, sizeof *r, cmp_range);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (r[i].begin < at)
            return error_at(p->err, p->errlen, p->label, "tensors \"%.100s\" and \"%.100s\" overlap in the data section",
                        f->tensors[r[i - 1].index].name, f->tensors[r[i].index].name);
        if (r[i].begin > at)
            return error_at(p->err, p->errlen, p->label, "bytes %llu to %llu of the data section belong to no tensor",
                        (unsigned long long)at, (unsigned long long)r[i].begin);
        at = r[i].end;
    }
    if (at != data_size)
        return error_at(p->err, p->errlen, p->label,
                    "%llu bytes after the last tensor's data (the data section is %llu bytes, the tensors hold %llu)",
                    (unsigned long long)(data_size - at), (unsigned long long)data_size, (unsigned long long)at);
    return 0;
}

static int parse_header(Parser *p, const unsigned char *data, uint64_t data_size, StFile *f, Range **ranges) {
    int cap = 0, have_meta = 0;
    if (expect(p, '{', "'{' opening the header (not a safetensors file?)")) return -1;
    if (!accept(p, '}')) {
        do {
            char *name;
            if (parse_string(p, &name, "a tensor name", 0)) return -1;
            if (expect(p, ':', "':' after a tensor name")) {
                free(name);
                return -1;
            }
            if (!strcmp(name, "__metadata__")) {
                free(name);
                if (have_meta) return perr(p, "__metadata__ given twice");
                have_meta = 1;
                if (parse_metadata(p, f)) return -1;
                continue;
            }
            if (f->count == cap || !*ranges) { /* (the second for clang-tidy, which loses count over parse_metadata) */
                cap = cap ? 2 * cap : 64;
                f->tensors = xrealloc(f->tensors, (size_t)cap * sizeof *f->tensors);
                *ranges = xrealloc(*ranges, (size_t)cap * sizeof **ranges);
            }
            StTensor *t = &f->tensors[f->count++];
            memset(t, 0, sizeof *t);
            t->name = name;
            uint64_t off[2] = {0, 0};
            if (parse_tensor(p, t, off)) return -1;

            char shp[200];
            format_shape(shp, sizeof shp, t->ndim, t->shape);
            uint64_t elems = 1, bytes;
            for (int d = 0; d < t->ndim; d++)
                if (__builtin_mul_overflow(elems, (uint64_t)t->shape[d], &elems))
                    return error_at(p->err, p->errlen, p->label, "tensor \"%.100s\": shape %s has too many elements",
                                t->name, shp);
            if (__builtin_mul_overflow(elems, (uint64_t)st_dtype_size(t->dtype), &bytes) || bytes > SIZE_MAX)
                return error_at(p->err, p->errlen, p->label, "tensor \"%.100s\": shape %s of %s is too many bytes",
                            t->name, shp, st_dtype_name(t->dtype));
            if (off[0] > off[1])
                return error_at(p->err, p->errlen, p->label, "tensor \"%.100s\": data_offsets [%llu, %llu] end before they begin",
                            t->name, (unsigned long long)off[0], (unsigned long long)off[1]);
            if (off[1] > data_size)
                return error_at(p->err, p->errlen, p->label,
                            "tensor \"%.100s\": data_offsets [%llu, %llu] run past the end of the data section "
                            "(%llu bytes; file truncated?)",
                            t->name, (unsigned long long)off[0], (unsigned long long)off[1],
                            (unsigned long long)data_size);
            if (off[1] - off[0] != bytes)
                return error_at(p->err, p->errlen, p->label,
                            "tensor \"%.100s\": shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu",
                            t->name, shp, st_dtype_name(t->dtype), (unsigned long long)bytes,
                            (unsigned long long)off[0], (unsigned long long)off[1],
                            (unsigned long long)(off[1] - off[0]));
            t->bytes = (size_t)bytes;
            t->data = data ? data + off[0] : NULL;
            (*ranges)[f->count - 1] = (Range){off[0], off[1], f->count - 1};
        } while (accept(p, ','));
        if (expect(p, '}', "',' or '}' after a tensor entry")) return -1;
    }
    skip_ws(p);
    if (p->pos != p->n) return perr(p, "unexpected text after the header's closing '}'");
    size_t n = (size_t)(f->count > f->nmeta ? f->count : f->nmeta);
    char **names = xmalloc((n ? n : 1) * sizeof *names);
    for (int i = 0; i < f->count; i++) names[i] = f->tensors[i].name;
    const char *dup = find_duplicate(names, (size_t)f->count);
    if (dup) error_at(p->err, p->errlen, p->label, "tensor \"%.100s\" appears twice", dup);
    if (!dup && f->nmeta) {
        memcpy(names, f->meta_keys, (size_t)f->nmeta * sizeof *names);
        dup = find_duplicate(names, (size_t)f->nmeta);
        if (dup) error_at(p->err, p->errlen, p->label, "metadata key \"%.100s\" appears twice", dup);
    }
    free(names);
    return dup ? -1 : check_coverage(p, f, *ranges, data_size);
}

int st_parse_header(const unsigned char *text, size_t len, const unsigned char *data, uint64_t data_size,
                    const char *label, StFile *f, char *err, size_t errlen) {
    Parser p = {text, len, 0, label, err, errlen};
    Range *ranges = NULL;
    int rc = parse_header(&p, data, data_size, f, &ranges);
    free(ranges);
    return rc;
}
