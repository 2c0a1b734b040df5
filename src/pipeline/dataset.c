/* pipeline/dataset.c: the list of labelled image files of a data set: dataset_open, the helpers its
 * two layouts share (dataset_list.h; the layouts: dataset_folder.c, dataset_csv.c) and the fixed
 * fraction kept for quick runs. Listing never decodes: it checks names, labels and that the files
 * exist, so a bad entry is reported here once with its file (and CSV line), and the loader only
 * meets files that exist. Every order is fixed (sorted names, CSV row order, a seeded split),
 * never readdir's. */
#include "pipeline/dataset.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/rng.h"
#include "base/util.h"
#include "pipeline/dataset_list.h"
#include "pipeline/label_map.h"

/* ---------------------------------------------------------------- helpers */

char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), n = a + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s%s%s", dir, a > 0 && dir[a - 1] != '/' ? "/" : "", name);
    return p;
}

int cmp_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A value quoted for a message: control characters shown as '?', bytes that are not UTF-8 as
 * \xNN (so the name can be found), long values cut, so that a corrupt file cannot flood or garble
 * the terminal. */
const char *shown_text(const char *s, char *buf, size_t size) {
    size_t k = 0, max = size - 5, n = strlen(s), i = 0;
    buf[k++] = '"';
    while (i < n) {
        size_t len = utf8_seq((const unsigned char *)s + i, n - i);
        if (k + (len ? len : 4) > max) break;
        if (!len) {
            k += (size_t)snprintf(buf + k, 5, "\\x%02x", (unsigned char)s[i++]);
        } else if (len == 1) {
            buf[k++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
            i++;
        } else {
            memcpy(buf + k, s + i, len);
            k += len, i += len;
        }
    }
    if (i < n) buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
    buf[k++] = '"';
    buf[k] = 0;
    return buf;
}

int has_control_char(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

/* One entry-level problem: printed and counted, or (strict) the error that stops the listing.
 * `where` is the file or folder, line 0 means none. */
void entry_problem(Listing *c, const char *where, int line, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char label[4096 + 16];
    if (line > 0)
        snprintf(label, sizeof label, "%s:%d", where, line);
    else
        snprintf(label, sizeof label, "%s", where);
    if (c->strict) {
        if (!c->failed) error_at(c->err, c->errlen, label, "%s", msg);
        c->failed = 1;
        return;
    }
    fprintf(stderr, "cnntrain: %s: %s, left out\n", label, msg);
    c->skipped++;
}

void list_push(SampleList *l, char *path, int label) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = xrealloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n].path = path;
    l->v[l->n].label = label;
    l->n++;
}

void list_free(SampleList *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i].path);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void names_free(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The folder must exist: -1 with a message naming it otherwise. */
void lists_to_dataset(SampleList *train, SampleList *valid, Dataset *ds) {
    ds->train = train->v, ds->ntrain = train->n;
    ds->valid = valid->v, ds->nvalid = valid->n;
    *train = (SampleList){0}, *valid = (SampleList){0};
}

int need_dir(const char *path, const char *what, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st)) return error_at(err, errlen, path, "cannot open the %s: %s", what, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return error_at(err, errlen, path, "the %s is not a folder", what);
    return 0;
}

/* ---------------------------------------------------------------- entry points */

/* Keeps ceil(fraction * n) samples of each class (at least one), chosen by a seeded permutation,
 * in their listed order: a smaller data set with the same class balance, for quick runs. */
typedef struct {
    uint64_t key;
    int index;
} Ranked;

static int cmp_ranked(const void *a, const void *b) {
    uint64_t x = ((const Ranked *)a)->key, y = ((const Ranked *)b)->key;
    return x < y ? -1 : x > y;
}

static void keep_fraction(Sample *v, int *count, int nclasses, double fraction, uint64_t seed) {
    int n = *count;
    Ranked *order = xmalloc(((size_t)n + 1) * sizeof *order);
    int *per_class = xcalloc((size_t)nclasses + 1, sizeof *per_class);
    Rng rng;
    rng_seed(&rng, seed ^ 0x5355425345544bULL);
    for (int i = 0; i < n; i++) {
        order[i] = (Ranked){rng_u64(&rng), i};
        per_class[v[i].label]++;
    }
    if (n > 1) qsort(order, (size_t)n, sizeof *order, cmp_ranked);
    unsigned char *keep = xcalloc((size_t)n + 1, 1);
    int *taken = xcalloc((size_t)nclasses + 1, sizeof *taken);
    for (int k = 0; k < n; k++) {
        int i = order[k].index, c = v[i].label;
        int want = (int)ceil(fraction * per_class[c] - 1e-9);
        if (taken[c] < (want < 1 ? 1 : want)) keep[i] = 1, taken[c]++;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (keep[i]) v[m++] = v[i];
        else free(v[i].path);
    }
    *count = m;
    free(order);
    free(per_class);
    free(keep);
    free(taken);
}

/* The display names from spec's label map (dataset.h): a map that was asked for must be read; the
 * default one only where it is. A map that names none of the classes is said on stderr. */
static int open_labels(const DatasetSpec *spec, Dataset *out, char *err, size_t errlen) {
    int asked = 0;
    char *path = label_map_path(spec->root, spec->format == DATA_CSV, spec->csv, spec->label_map, &asked);
    const char *want = asked ? spec->label_map : NULL;
    if (!path) return 0;
    LabelMap m;
    if (label_map_read(path, &m, err, errlen)) {
        if (want && err && errlen) {
            size_t used = strlen(err);
            snprintf(err + used, errlen - used, " ([data] label_map = %s)", want);
        }
        free(path);
        return -1;
    }
    int matched = 0;
    out->labels = label_map_names(&m, out->classes, out->nclasses, &matched);
    out->label_map = path;
    if (matched < out->nclasses)
        fprintf(stderr, "cnntrain: %s names %d of the %d classes%s; the others keep their class names\n", path, matched,
                out->nclasses, m.n && !matched ? " (its keys are not the data's labels)" : "");
    label_map_free(&m);
    return 0;
}

int dataset_open(const DatasetSpec *spec, int strict, Dataset *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = 0;
    if (!spec || !spec->root || !spec->root[0]) return error_at(err, errlen, "dataset", "no data folder given");
    if (need_dir(spec->root, "data folder", err, errlen)) {
        /* a first run's usual stumble: say where data comes from */
        struct stat st;
        if (err && errlen && stat(spec->root, &st) && errno == ENOENT) {
            size_t used = strlen(err);
            snprintf(err + used, errlen - used,
                     ". Give the folder of your data set (a config's [data] path, or --data), or make a small demo set "
                     "with `./train demo-data` (into data/demo); data/README.md says where to get Imagenette and Cassava");
        }
        return -1;
    }
    Listing c = {.strict = strict, .err = err, .errlen = errlen};
    int rc = spec->format == DATA_CSV ? dataset_open_csv(spec, &c, out, err, errlen) : dataset_open_folder(spec, &c, out, err, errlen);
    out->skipped = c.skipped;
    if (rc || c.failed || open_labels(spec, out, err, errlen)) {
        dataset_free(out);
        return -1;
    }
    if (spec->fraction > 0 && spec->fraction < 1) {
        keep_fraction(out->train, &out->ntrain, out->nclasses, spec->fraction, spec->seed);
        keep_fraction(out->valid, &out->nvalid, out->nclasses, spec->fraction, spec->seed + 1);
    }
    return 0;
}

void dataset_free(Dataset *ds) {
    if (!ds) return;
    if (ds->labels) names_free(ds->labels, ds->nclasses);
    free(ds->label_map);
    names_free(ds->classes, ds->nclasses);
    for (int i = 0; i < ds->ntrain; i++) free(ds->train[i].path);
    for (int i = 0; i < ds->nvalid; i++) free(ds->valid[i].path);
    free(ds->train);
    free(ds->valid);
    memset(ds, 0, sizeof *ds);
}
