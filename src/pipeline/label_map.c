/* pipeline/label_map.c: the label map reader (label_map.h): a small JSON reader for exactly one
 * flat object of strings, with errors that give the line and column, and the class -> display name
 * lookup. Anything else JSON allows (numbers, nesting) is refused by name: a label map has none. */
#include "pipeline/label_map.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/json.h"
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

/* A JSON string at p->i (its opening quote) into *out (malloc'd), by base/json.c's decoder with
 * this reader's rules: problems in the order of the bytes, UTF-8 checked last, and control
 * characters refused, escaped or not: names are joined by newlines in checkpoint metadata and
 * printed in tables. */
static int parse_string(Parser *p, char **out) {
    JsonStr r;
    if (!json_string_decode((const unsigned char *)p->s, p->n, p->i, JSON_STR_UTF8_LAST | JSON_STR_NO_CONTROL_ESCAPES, out, &r)) {
        p->i = r.at;
        return 0;
    }
    p->i = r.at; /* a string that is not UTF-8: its first byte */
    switch (r.status) {
    case JSON_STR_NO_QUOTE: return parse_error(p, "expected a string in double quotes");
    case JSON_STR_UNCLOSED: return parse_error(p, "the string is not closed (a missing '\"')");
    case JSON_STR_RAW_CONTROL: return parse_error(p, "a control character (a line break?) inside a string");
    case JSON_STR_BAD_UTF8: return parse_error(p, "the string is not valid UTF-8");
    case JSON_STR_BAD_ESCAPE: return parse_error(p, "an unknown escape after '\\'");
    case JSON_STR_BAD_HEX: return parse_error(p, "\\u needs four hex digits");
    case JSON_STR_LONE_LOW:
    case JSON_STR_LONE_HIGH: return parse_error(p, "a \\u surrogate without its pair");
    default: return parse_error(p, "an escaped control character inside a string (names may not hold one)");
    }
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
