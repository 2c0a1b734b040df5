/* pipeline/label_map.c: the label map reader (label_map.h): a small JSON reader for exactly one
 * flat object of strings, with errors that give the line and column, and the class -> display name
 * lookup. Anything else JSON allows (numbers, nesting) is refused by name: a label map has none. */
#include "pipeline/label_map.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"

typedef struct {
    const char *s;
    size_t n, i;
    const char *label;
    char *err;
    size_t errlen;
} Parser;

/* "label: line L, column C: message" at the parser's position. */
static int parse_error(Parser *p, const char *what) {
    int line = 1, col = 1;
    for (size_t k = 0; k < p->i && k < p->n; k++) {
        if (p->s[k] == '\n') line++, col = 1;
        else if (((unsigned char)p->s[k] & 0xC0) != 0x80) col++;
    }
    return error_at(p->err, p->errlen, p->label, "line %d, column %d: %s", line, col, what);
}

static void skip_space(Parser *p) {
    while (p->i < p->n && strchr(" \t\r\n", p->s[p->i]) && p->s[p->i]) p->i++;
}

static int hex4(Parser *p, unsigned *out) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++, p->i++) {
        char c = p->i < p->n ? p->s[p->i] : 0;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return parse_error(p, "\\u needs four hex digits");
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

static void put_utf8(char *b, size_t *k, unsigned cp) {
    if (cp < 0x80) b[(*k)++] = (char)cp;
    else if (cp < 0x800) b[(*k)++] = (char)(0xC0 | cp >> 6), b[(*k)++] = (char)(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        b[(*k)++] = (char)(0xE0 | cp >> 12), b[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[(*k)++] = (char)(0x80 | (cp & 0x3F));
    else
        b[(*k)++] = (char)(0xF0 | cp >> 18), b[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        b[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[(*k)++] = (char)(0x80 | (cp & 0x3F));
}

/* A JSON string at p->i (its opening quote) into *out (malloc'd). Control characters, escaped or
 * not, are refused: names are joined by newlines in checkpoint metadata and printed in tables. */
static int parse_string(Parser *p, char **out) {
    if (p->i >= p->n || p->s[p->i] != '"') return parse_error(p, "expected a string in double quotes");
    size_t start = ++p->i, k = 0;
    char *b = xmalloc(4 * (p->n - start) + 1); /* every input byte gives at most 4 */
    for (;;) {
        if (p->i >= p->n) {
            free(b);
            return parse_error(p, "the string is not closed (a missing '\"')");
        }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') break;
        if (c < 0x20) {
            free(b);
            return parse_error(p, "a control character (a line break?) inside a string");
        }
        if (c != '\\') {
            b[k++] = (char)c;
            p->i++;
            continue;
        }
        p->i++;
        char e = p->i < p->n ? p->s[p->i] : 0;
        const char *from = "\"\\/", *to = "\"\\/";
        const char *at = e ? strchr(from, e) : NULL;
        if (at) {
            b[k++] = to[at - from];
            p->i++;
            continue;
        }
        unsigned cp = 0, lo = 0;
        if (e != 'u' || (p->i++, hex4(p, &cp))) {
            free(b);
            if (e == 'u') return -1;
            return parse_error(p, strchr("bfnrt", e) && e ? "an escaped control character inside a string (names may not hold one)"
                                                          : "an unknown escape after '\\'");
        }
        if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
            if (p->i + 1 < p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                p->i += 2;
                if (hex4(p, &lo)) {
                    free(b);
                    return -1;
                }
            }
            if (lo < 0xDC00 || lo >= 0xE000) {
                free(b);
                return parse_error(p, "a \\u surrogate without its pair");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if ((cp >= 0xDC00 && cp < 0xE000) || cp < 0x20 || cp == 0x7F) {
            free(b);
            return parse_error(p, cp < 0xDC00 || cp >= 0xE000 ? "an escaped control character inside a string (names may not hold one)"
                                                             : "a \\u surrogate without its pair");
        }
        put_utf8(b, &k, cp);
    }
    b[k] = 0;
    p->i++;
    if (!utf8_valid(b)) {
        free(b);
        p->i = start;
        return parse_error(p, "the string is not valid UTF-8");
    }
    *out = b;
    return 0;
}

int label_map_parse(const char *text, size_t len, const char *label, LabelMap *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    Parser p = {text, len, 0, label, err, errlen};
    int cap = 0;
    skip_space(&p);
    if (p.i >= p.n || p.s[p.i] != '{')
        return parse_error(&p, "a label map is one JSON object, {\"0\": \"name\", ...}: expected '{'");
    p.i++;
    skip_space(&p);
    int closed = p.i < p.n && p.s[p.i] == '}';
    if (closed) p.i++;
    while (!closed) {
        char *key = NULL, *value = NULL;
        skip_space(&p);
        size_t key_at = p.i;
        if (parse_string(&p, &key)) goto fail;
        if (label_map_find(out, key)) {
            free(key);
            p.i = key_at;
            parse_error(&p, "this key appears twice");
            goto fail;
        }
        skip_space(&p);
        if (p.i >= p.n || p.s[p.i] != ':') {
            free(key);
            parse_error(&p, "expected ':' after the key");
            goto fail;
        }
        p.i++;
        skip_space(&p);
        if (p.i < p.n && p.s[p.i] != '"') {
            free(key);
            parse_error(&p, "the value must be a string (the class's name in double quotes)");
            goto fail;
        }
        if (parse_string(&p, &value)) {
            free(key);
            goto fail;
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 16;
            out->keys = xrealloc(out->keys, (size_t)cap * sizeof *out->keys);
            out->values = xrealloc(out->values, (size_t)cap * sizeof *out->values);
        }
        out->keys[out->n] = key;
        out->values[out->n++] = value;
        skip_space(&p);
        if (p.i < p.n && p.s[p.i] == ',') {
            p.i++;
            continue;
        }
        if (p.i < p.n && p.s[p.i] == '}') {
            p.i++;
            break;
        }
        parse_error(&p, "expected ',' or '}' after a value");
        goto fail;
    }
    skip_space(&p);
    if (p.i < p.n) {
        parse_error(&p, "text after the closing '}'");
        goto fail;
    }
    return 0;
fail:
    label_map_free(out);
    return -1;
}

int label_map_read(const char *path, LabelMap *out, char *err, size_t errlen) {
    uint8_t *data;
    size_t size;
    memset(out, 0, sizeof *out);
    if (read_whole_file(path, &data, &size, err, errlen)) return -1;
    int rc = size > (16u << 20) ? error_at(err, errlen, path, "%zu bytes: too large for a label map", size)
                                : label_map_parse((const char *)data, size, path, out, err, errlen);
    free(data);
    return rc;
}

const char *label_map_find(const LabelMap *m, const char *key) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) return m->values[i];
    return NULL;
}

void label_map_free(LabelMap *m) {
    for (int i = 0; i < m->n; i++) free(m->keys[i]), free(m->values[i]);
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

char **label_map_names(const LabelMap *m, char *const *classes, int n, int *matched) {
    char **names = xmalloc(((size_t)n + 1) * sizeof *names);
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const char *v = label_map_find(m, classes[i]);
        hits += v != NULL;
        names[i] = xstrdup(v ? v : classes[i]);
    }
    if (matched) *matched = hits;
    return names;
}

char *label_map_path(const char *root, int csv_layout, const char *csv, const char *label_map, int *asked) {
    *asked = label_map && label_map[0] && strcmp(label_map, "none");
    if (label_map && !strcmp(label_map, "none")) return NULL;
    size_t n = strlen(root) + (label_map ? strlen(label_map) : 0) + (csv ? strlen(csv) : 0) + sizeof LABEL_MAP_DEFAULT + 4;
    char *path = xmalloc(n);
    if (*asked) {
        snprintf(path, n, "%s%s%s", label_map[0] == '/' ? "" : root, label_map[0] == '/' ? "" : "/", label_map);
        return path;
    }
    if (!csv_layout || !csv) {
        free(path);
        return NULL;
    }
    /* beside the label file, which may sit in a subfolder of root */
    const char *slash = strrchr(csv, '/');
    int dir_len = slash ? (int)(slash - csv) : 0;
    snprintf(path, n, "%s/%.*s%s%s", root, dir_len, csv, slash ? "/" : "", LABEL_MAP_DEFAULT);
    if (csv[0] == '/') snprintf(path, n, "%.*s/%s", dir_len, csv, LABEL_MAP_DEFAULT);
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) {
        free(path);
        return NULL;
    }
    return path;
}
