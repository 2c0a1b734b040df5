/* train/config_value.c: a key's value as INI text, both ways (config_schema.h): parsed and
 * range-checked into its field with the reason when it is refused, and written back as the
 * shortest text that reads back as the same value, so config_write + config_load is exact. */
#include "train/config_schema.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/model.h"

/* The shortest text that reads back as exactly v, written as people write it: 10, 0.003, 1e5, 1e-8. */
static void fmt_float(char *buf, size_t n, float v) {
    if (v == rintf(v) && fabsf(v) < 1e5f) {
        snprintf(buf, n, "%.0f", (double)v);
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    char *e = strchr(buf, 'e');
    if (!e) return;
    char *d = e + 1, *from = d;
    if (*from == '+') from++;
    else if (*from == '-') d++, from++;
    while (from[0] == '0' && from[1]) from++;
    memmove(d, from, strlen(from) + 1);
}

void key_range_text(const Key *k, char *buf, size_t n) {
    char lo[32], hi[32];
    fmt_float(lo, sizeof lo, (float)k->lo);
    fmt_float(hi, sizeof hi, (float)k->hi);
    if (k->type == T_INT || k->type == T_SIZES) {
        snprintf(lo, sizeof lo, "%.0f", k->lo);
        snprintf(hi, sizeof hi, "%.0f", k->hi);
    }
    if (!(k->flags & (K_LO_OPEN | K_HI_OPEN))) snprintf(buf, n, "between %s and %s", lo, hi);
    else snprintf(buf, n, "%s %s and %s %s", k->flags & K_LO_OPEN ? ">" : ">=", lo, k->flags & K_HI_OPEN ? "<" : "<=", hi);
}

static int in_range(const Key *k, double v) {
    if (k->flags & K_LO_OPEN ? v <= k->lo : v < k->lo) return 0;
    if (k->flags & K_HI_OPEN ? v >= k->hi : v > k->hi) return 0;
    return 1;
}

static int parse_int(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno) return -1;
    *out = v;
    return 0;
}

/* Parse text for key k into its field in base. Returns 0, or -1 with the reason in why. */
int key_parse_value(const Key *k, const char *text, void *base, char *why, size_t n) {
    char *field = (char *)base + k->off, range[96];
    key_range_text(k, range, sizeof range);
    switch (k->type) {
    case T_INT: {
        long long v;
        if (parse_int(text, &v)) return snprintf(why, n, "not an integer"), -1;
        if (!in_range(k, (double)v)) return snprintf(why, n, "must be %s", range), -1;
        *(int *)field = (int)v;
        return 0;
    }
    case T_U64: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(text, &end, 10);
        if (end == text || *end || errno || *text == '-')
            return snprintf(why, n, "not a non-negative integer below 2^64"), -1;
        *(uint64_t *)field = (uint64_t)v;
        return 0;
    }
    case T_FLOAT: {
        char *end;
        errno = 0;
        double d = strtod(text, &end);
        if (end == text || *end || !isfinite(d)) return snprintf(why, n, "not a number"), -1;
        float v = (float)d;
        if (!isfinite(v) || !in_range(k, (double)v)) return snprintf(why, n, "must be %s", range), -1;
        *(float *)(void *)field = v; /* via void *: the field is a float at base + offset */
        return 0;
    }
    case T_LR: { /* "x", or "lo..hi" (fastai's slice(lo, hi)) */
        float *lr = (float *)(void *)field;
        const char *dots = strstr(text, "..");
        char *end;
        double hi = strtod(dots ? dots + 2 : text, &end), lo = 0;
        if (end == (dots ? dots + 2 : text) || *end || !isfinite(hi)) return snprintf(why, n, "not a number or a range lo..hi"), -1;
        if (dots) {
            char *lend;
            lo = strtod(text, &lend);
            if (lend != dots || !isfinite(lo)) return snprintf(why, n, "not a number or a range lo..hi"), -1;
        }
        /* checked as stored: a float (3e-64 would become 0, and lo 0 no range at all) */
        float fhi = (float)hi, flo = (float)lo;
        if (dots && !(flo > 0 && flo <= fhi)) return snprintf(why, n, "a range lo..hi needs 0 < lo <= hi"), -1;
        if (!isfinite(fhi) || !in_range(k, (double)fhi)) return snprintf(why, n, "must be %s", range), -1;
        lr[0] = fhi;
        lr[1] = flo;
        return 0;
    }
    case T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (!strcmp(text, yes[i])) return *(int *)field = 1, 0;
            if (!strcmp(text, no[i])) return *(int *)field = 0, 0;
        }
        return snprintf(why, n, "must be true or false (or yes/no, on/off, 1/0)"), -1;
    }
    case T_STRING: {
        if (strlen(text) >= k->size) return snprintf(why, n, "longer than %zu characters", k->size - 1), -1;
        if (k->flags & K_ARCH) {
            int count;
            const ModelEntry *m = model_registry(&count);
            const char *names[64];
            char list[512] = "";
            int found = 0;
            for (int i = 0; i < count && i < 64; i++) {
                names[i] = m[i].name;
                found |= !strcmp(text, m[i].name);
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", m[i].name);
            }
            if (!found) {
                const char *g = ini_closest(text, names, count < 64 ? count : 64);
                char hint[96] = "";
                if (g) snprintf(hint, sizeof hint, "; did you mean '%s'?", g);
                return snprintf(why, n, "unknown model%s models: %s", g ? hint : ";", list), -1;
            }
        }
        snprintf(field, k->size, "%s", text);
        return 0;
    }
    case T_ENUM: {
        const char *names[16];
        int count = 0;
        for (const Choice *c = k->choices; c->name; c++) {
            names[count++] = c->name;
            if (strcmp(text, c->name)) continue;
            if (k->flags & K_NAME) snprintf(field, k->size, "%s", c->name);
            else *(int *)field = c->value;
            return 0;
        }
        char list[256], hint[96] = "";
        list_choices(k->choices, ", ", list, sizeof list);
        const char *g = ini_closest(text, names, count);
        if (g) snprintf(hint, sizeof hint, "; did you mean '%s'?", g);
        return snprintf(why, n, "must be one of %s%s", list, hint), -1;
    }
    case T_SIZES: {
        int *sizes = (int *)field, count = 0;
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", text);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            tok = ini_trim(tok);
            long long v;
            if (parse_int(tok, &v)) return snprintf(why, n, "'%s' is not an integer", tok), -1;
            if (!in_range(k, (double)v)) return snprintf(why, n, "%s: each size must be %s", tok, range), -1;
            if (count == CONFIG_MAX_SIZES) return snprintf(why, n, "at most %d sizes", CONFIG_MAX_SIZES), -1;
            sizes[count++] = (int)v;
        }
        if (!count) return snprintf(why, n, "no sizes"), -1;
        *(int *)((char *)base + k->count_off) = count;
        return 0;
    }
    }
    return -1;
}

/* The value of key k in base as INI text. */
void key_format_value(const Key *k, const void *base, char *buf, size_t n) {
    const char *field = (const char *)base + k->off;
    switch (k->type) {
    case T_INT: snprintf(buf, n, "%d", *(const int *)field); break;
    case T_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)field); break;
    case T_FLOAT: fmt_float(buf, n, *(const float *)(const void *)field); break;
    case T_LR: {
        const float *lr = (const float *)(const void *)field;
        if (lr[1] > 0) {
            fmt_float(buf, n, lr[1]);
            snprintf(buf + strlen(buf), n - strlen(buf), "..");
            fmt_float(buf + strlen(buf), n - strlen(buf), lr[0]);
        } else {
            fmt_float(buf, n, lr[0]);
        }
        break;
    }
    case T_BOOL: snprintf(buf, n, "%s", *(const int *)field ? "true" : "false"); break;
    case T_STRING: snprintf(buf, n, "%s", field); break;
    case T_ENUM: snprintf(buf, n, "%s", k->flags & K_NAME ? field : choice_name(k->choices, *(const int *)field)); break;
    case T_SIZES: {
        int count = *(const int *)((const char *)base + k->count_off);
        *buf = 0;
        for (int i = 0; i < count; i++) snprintf(buf + strlen(buf), n - strlen(buf), "%s%d", i ? "," : "", ((const int *)field)[i]);
        break;
    }
    }
}
