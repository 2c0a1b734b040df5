/* train/ini.c: the INI reader behind config_load (ini.h): sections, `key = value` entries with their
 * lines, comments and quoting, --set overrides, and the labels and typo guesses its messages and
 * the schema's share. */
#include "train/ini.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

const char *const ini_section_names[NSEC] = {"data", "model", "run", "stage"};

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *ini_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

void ini_free(Ini *ini) {
    for (int i = 0; i < ini->n; i++) {
        for (int j = 0; j < ini->s[i].n; j++) {
            free(ini->s[i].e[j].key);
            free(ini->s[i].e[j].value);
        }
        free(ini->s[i].e);
    }
    free(ini->s);
    memset(ini, 0, sizeof *ini);
}

static Section *add_section(Ini *ini, SecKind kind, const char *name, int line) {
    if (ini->n == ini->cap) {
        ini->cap = ini->cap ? 2 * ini->cap : 8;
        ini->s = xrealloc(ini->s, (size_t)ini->cap * sizeof *ini->s);
    }
    Section *s = &ini->s[ini->n++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->line = line;
    return s;
}

static Entry *add_entry(Section *s, const char *key, const char *value, int line, const char *set) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->e = xrealloc(s->e, (size_t)s->cap * sizeof *s->e);
    }
    Entry *e = &s->e[s->n++];
    e->key = dupstr(key);
    e->value = dupstr(value);
    e->line = line;
    e->set = set;
    return e;
}

Entry *ini_find_entry(const Section *s, const char *key) {
    for (int i = 0; s && i < s->n; i++)
        if (!strcmp(s->e[i].key, key)) return &s->e[i];
    return NULL;
}

Section *ini_find_section(const Ini *ini, SecKind kind, const char *name) {
    for (int i = 0; i < ini->n; i++)
        if (ini->s[i].kind == kind && (kind != SEC_STAGE || !strcmp(ini->s[i].name, name))) return &ini->s[i];
    return NULL;
}

/* "[stage full]" or "[data]" for messages */
const char *ini_section_title(const Section *s, char *buf, size_t n) {
    if (s->kind == SEC_STAGE) snprintf(buf, n, "[stage %s]", s->name);
    else snprintf(buf, n, "[%s]", ini_section_names[s->kind]);
    return buf;
}

/* The error label of an entry: "file:line" or "--set TEXT". */
const char *ini_entry_label(const Ini *ini, const Entry *e, char *buf, size_t n) {
    if (e->set) snprintf(buf, n, "--set %s", e->set);
    else snprintf(buf, n, "%s:%d", ini->path, e->line);
    return buf;
}

const char *ini_line_label(const Ini *ini, int line, char *buf, size_t n) {
    if (line > 0) snprintf(buf, n, "%s:%d", ini->path, line);
    else snprintf(buf, n, "%s", ini->path);
    return buf;
}

static int levenshtein(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64], prev;
    for (int j = 0; j <= lb; j++) d[j] = j;
    for (int i = 1; i <= la; i++) {
        prev = d[0];
        d[0] = i;
        for (int j = 1; j <= lb; j++) {
            int t = d[j], sub = prev + (a[i - 1] != b[j - 1]);
            int del = d[j] + 1, ins = d[j - 1] + 1;
            d[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            prev = t;
        }
    }
    return d[lb];
}

/* The closest of names to s when it is close enough to be a likely typo and no other name is as
 * close (fp8 is as near fp16 as fp32: no guess), else NULL. */
const char *ini_closest(const char *s, const char *const *names, int n) {
    const char *best = NULL;
    int bd = 3, ties = 0;
    for (int i = 0; i < n; i++) {
        int d = levenshtein(s, names[i]);
        if (d >= (int)strlen(names[i])) continue;
        if (d < bd) bd = d, best = names[i], ties = 0;
        else if (d == bd && best) ties++;
    }
    return ties ? NULL : best;
}

static int valid_stage_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return 0;
    return 1;
}

/* Cut a value at an inline comment (`#` or `;` after whitespace) and strip one pair of quotes. */
static char *clean_value(char *v, int *bad_quote) {
    v = ini_trim(v);
    *bad_quote = 0;
    if (*v == '"') {
        char *end = strchr(v + 1, '"');
        if (!end) {
            *bad_quote = 1;
            return v;
        }
        char *rest = ini_trim(end + 1);
        if (*rest && *rest != '#' && *rest != ';') *bad_quote = 1;
        *end = 0;
        return v + 1;
    }
    for (char *p = v; *p; p++)
        if ((*p == '#' || *p == ';') && p > v && isspace((unsigned char)p[-1])) {
            *p = 0;
            break;
        }
    return ini_trim(v);
}

static int parse_section_header(Ini *ini, char *text, int line, char *err, size_t errlen) {
    char lb[600];
    ini_line_label(ini, line, lb, sizeof lb);
    char *close = strchr(text, ']');
    if (!close || *ini_trim(close + 1)) return error_at(err, errlen, lb, "bad section header '%s'; expected [data], [model], [run] or [stage NAME]", text);
    *close = 0;
    char *inner = ini_trim(text + 1), *name = inner;
    while (*name && !isspace((unsigned char)*name)) name++;
    if (*name) *name++ = 0;
    name = ini_trim(name);
    SecKind kind = NSEC;
    for (int k = 0; k < NSEC; k++)
        if (!strcmp(inner, ini_section_names[k])) kind = (SecKind)k;
    if (kind == NSEC) {
        const char *titles[] = {"data", "model", "run", "stage"};
        const char *guess = ini_closest(inner, titles, 4);
        char hint[80] = "";
        if (guess) snprintf(hint, sizeof hint, "; did you mean [%s]?", guess);
        return error_at(err, errlen, lb, "unknown section [%s]%s sections: [data], [model], [run], [stage NAME]", inner,
                        guess ? hint : ";");
    }
    if (kind != SEC_STAGE && *name) return error_at(err, errlen, lb, "[%s] takes no name (got '%s')", inner, name);
    if (kind == SEC_STAGE) {
        if (!*name) return error_at(err, errlen, lb, "[stage] needs a name: [stage NAME]");
        if (!valid_stage_name(name) || strlen(name) >= sizeof ini->s->name)
            return error_at(err, errlen, lb, "stage name '%s': use up to 63 letters, digits, '_' and '-'", name);
    }
    const Section *dup = ini_find_section(ini, kind, name);
    if (dup && kind == SEC_STAGE) return error_at(err, errlen, lb, "duplicate stage name '%s' (first at line %d)", name, dup->line);
    if (dup) return error_at(err, errlen, lb, "duplicate section [%s] (first at line %d)", inner, dup->line);
    add_section(ini, kind, name, line);
    return 0;
}

int ini_read(Ini *ini, const char *path, char *err, size_t errlen) {
    memset(ini, 0, sizeof *ini);
    ini->path = path;
    FILE *f = fopen(path, "r");
    if (!f) return error_at(err, errlen, path, "cannot read: %s", strerror(errno));
    char *buf = NULL, lb[600];
    size_t cap = 0;
    int line = 0, rc = 0;
    while (getline(&buf, &cap, f) >= 0) {
        line++;
        char *s = buf;
        if (line == 1 && !strncmp(s, "\xEF\xBB\xBF", 3)) s += 3; /* a UTF-8 byte-order mark */
        s = ini_trim(s);
        if (!*s || *s == '#' || *s == ';') continue;
        ini_line_label(ini, line, lb, sizeof lb);
        if (*s == '[') {
            if ((rc = parse_section_header(ini, s, line, err, errlen))) break;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = error_at(err, errlen, lb, "expected 'key = value', a [section] or a comment, got '%s'", s);
            break;
        }
        *eq = 0;
        char *key = ini_trim(s);
        int bad_quote;
        char *value = clean_value(eq + 1, &bad_quote);
        if (!ini->n) {
            rc = error_at(err, errlen, lb, "'%s = %s' comes before any [section]", key, value);
            break;
        }
        Section *sec = &ini->s[ini->n - 1];
        char title[100];
        ini_section_title(sec, title, sizeof title);
        int keyok = *key != 0;
        for (const char *p = key; *p; p++) keyok &= isalnum((unsigned char)*p) || *p == '_';
        if (!keyok) {
            rc = error_at(err, errlen, lb, "%s: bad key '%s' (letters, digits and '_')", title, key);
            break;
        }
        if (bad_quote) {
            rc = error_at(err, errlen, lb, "%s %s: unbalanced quotes in the value", title, key);
            break;
        }
        if (!*value) {
            rc = error_at(err, errlen, lb, "%s %s has no value", title, key);
            break;
        }
        const Entry *dup = ini_find_entry(sec, key);
        if (dup) {
            rc = error_at(err, errlen, lb, "duplicate key '%s' in %s (first set at line %d)", key, title, dup->line);
            break;
        }
        add_entry(sec, key, value, line, NULL);
    }
    free(buf);
    fclose(f);
    if (rc) ini_free(ini);
    return rc;
}

/* "section.key=value", "stage NAME.key=value" or "NAME.key=value" */
int ini_apply_override(Ini *ini, const char *text, char *err, size_t errlen) {
    char lb[700], buf[1024];
    snprintf(lb, sizeof lb, "--set %s", text);
    if (strlen(text) >= sizeof buf) return error_at(err, errlen, lb, "too long");
    snprintf(buf, sizeof buf, "%s", text);
    char *eq = strchr(buf, '=');
    if (!eq) return error_at(err, errlen, lb, "expected section.key=value (a stage: stage NAME.key=value)");
    *eq = 0;
    char *dot = strrchr(buf, '.');
    if (!dot) return error_at(err, errlen, lb, "expected section.key=value (a stage: stage NAME.key=value)");
    *dot = 0;
    char *secname = ini_trim(buf), *key = ini_trim(dot + 1);
    int bad_quote;
    char *value = clean_value(eq + 1, &bad_quote);
    if (!*key || !*value || bad_quote) return error_at(err, errlen, lb, "expected section.key=value with a key and a value");
    SecKind kind = NSEC;
    const char *name = "";
    for (int k = 0; k < SEC_STAGE; k++)
        if (!strcmp(secname, ini_section_names[k])) kind = (SecKind)k;
    if (kind == NSEC) {
        kind = SEC_STAGE;
        name = secname;
        if (!strncmp(secname, "stage", 5) && isspace((unsigned char)secname[5])) name = ini_trim(secname + 5);
    }
    Section *s = ini_find_section(ini, kind, name);
    if (!s && kind != SEC_STAGE) s = add_section(ini, kind, "", 0);
    if (!s) {
        char list[1024] = "";
        for (int i = 0; i < ini->n; i++)
            if (ini->s[i].kind == SEC_STAGE)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", *list ? ", " : "", ini->s[i].name);
        return error_at(err, errlen, lb, "no section [data], [model], [run] or stage named '%s' in %s (stages: %s)", name,
                        ini->path, *list ? list : "none");
    }
    Entry *e = ini_find_entry(s, key);
    if (e) {
        free(e->value);
        e->value = dupstr(value);
        e->line = 0;
        e->set = text;
    } else {
        add_entry(s, key, value, 0, text);
    }
    return 0;
}

/* Quote a string that would not read back as itself. */
void ini_write_value(FILE *f, const char *v) {
    int quote = !*v || isspace((unsigned char)*v) || isspace((unsigned char)v[strlen(v) - 1]) || *v == '"';
    for (const char *p = v; *p && !quote; p++) quote = (*p == '#' || *p == ';') && p > v && isspace((unsigned char)p[-1]);
    fprintf(f, quote ? "\"%s\"\n" : "%s\n", v);
}
