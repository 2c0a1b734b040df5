/* pipeline/dataset_csv.c: the Kaggle CSV layout of a data set: ROOT/<csv> with columns
 * image_id,label[,is_val] and the images in ROOT/<images_dir>/. The file is read as RFC 4180
 * records (a malformed one is kept, marked, so its line can be reported); every row is checked
 * (the id stays inside the images folder and names a regular file, the label is usable, an image
 * listed twice is caught by its file) and reported with its line when it is not; then come the
 * integer or text classes, the split from is_val or a seeded valid_pct, and the samples in row
 * order. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/rng.h"
#include "base/util.h"
#include "pipeline/dataset_list.h"

/* ---------------------------------------------------------------- CSV reader */

enum { CSV_OK, CSV_UNTERMINATED, CSV_AFTER_QUOTE, CSV_NUL };

/* RFC 4180 records from a buffer: quoted fields ("" for a quote, commas and line breaks inside),
 * LF, CRLF or CR line ends. Spaces and tabs around unquoted fields are dropped. */
typedef struct {
    const char *s;
    size_t len, pos;
    int line;          /* physical line of the next character */
    char *buf;         /* the current record's fields, each NUL-terminated */
    size_t blen, bcap;
    size_t *off;
    int nf, fcap;
    int quoted0;       /* the first field was quoted (a quoted "" is not a blank line) */
    int bad;
} Csv;

static void csv_putc(Csv *p, char ch) {
    if (p->blen == p->bcap) {
        p->bcap = p->bcap ? 2 * p->bcap : 256;
        p->buf = xrealloc(p->buf, p->bcap);
    }
    p->buf[p->blen++] = ch;
}

static int at_line_end(const Csv *p) { return p->pos >= p->len || p->s[p->pos] == '\n' || p->s[p->pos] == '\r'; }

static void skip_line_end(Csv *p) {
    if (p->pos < p->len && p->s[p->pos] == '\r') p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '\n') p->pos++;
    p->line++;
}

/* The next record; 0 at the end of the input. Its first line is line_out. */
static int csv_next(Csv *p, int *line_out) {
    if (p->pos >= p->len) return 0;
    *line_out = p->line;
    p->blen = 0;
    p->nf = 0;
    p->bad = CSV_OK;
    p->quoted0 = 0;
    for (;;) {
        if (p->nf == p->fcap) {
            p->fcap = p->fcap ? 2 * p->fcap : 16;
            p->off = xrealloc(p->off, (size_t)p->fcap * sizeof *p->off);
        }
        p->off[p->nf] = p->blen;
        while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t')) p->pos++;
        if (p->pos < p->len && p->s[p->pos] == '"') {
            if (p->nf == 0) p->quoted0 = 1;
            p->pos++;
            for (;;) {
                if (p->pos >= p->len) {
                    p->bad = CSV_UNTERMINATED;
                    break;
                }
                char ch = p->s[p->pos++];
                if (ch == '"') {
                    if (p->pos < p->len && p->s[p->pos] == '"') {
                        csv_putc(p, '"');
                        p->pos++;
                        continue;
                    }
                    break;
                }
                if (ch == '\n' || (ch == '\r' && !(p->pos < p->len && p->s[p->pos] == '\n'))) p->line++;
                if (ch == 0 && !p->bad) p->bad = CSV_NUL;
                csv_putc(p, ch);
            }
            while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t')) p->pos++;
            if (!at_line_end(p) && p->s[p->pos] != ',') {
                if (!p->bad) p->bad = CSV_AFTER_QUOTE;
                while (!at_line_end(p) && p->s[p->pos] != ',') p->pos++;   /* resynchronise */
            }
        } else {
            size_t start = p->blen;
            while (!at_line_end(p) && p->s[p->pos] != ',') {
                if (p->s[p->pos] == 0 && !p->bad) p->bad = CSV_NUL;
                csv_putc(p, p->s[p->pos++]);
            }
            while (p->blen > start && (p->buf[p->blen - 1] == ' ' || p->buf[p->blen - 1] == '\t')) p->blen--;
        }
        csv_putc(p, 0);
        p->nf++;
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len) skip_line_end(p);
        return 1;
    }
}

static const char *csv_field(const Csv *p, int i) { return p->buf + p->off[i]; }

/* ---------------------------------------------------------------- CSV layout */

typedef struct {
    int line;
    int bad;           /* CSV_* from the reader */
    int nf;
    char *id, *label, *isval;
    int is_val;        /* once checked */
    long long value;   /* the label as an integer, in integer mode */
    dev_t dev;         /* the image file, once found: two ids naming one file are one image */
    ino_t ino;
    int ok;
} Row;

/* Optional sign and decimal digits, within long long. */
static int parse_int(const char *s, long long *out) {
    const char *q = s;
    int neg = 0;
    if (*q == '+' || *q == '-') neg = *q++ == '-';
    if (!*q) return 0;
    unsigned long long v = 0;
    for (; *q; q++) {
        if (*q < '0' || *q > '9') return 0;
        unsigned d = (unsigned)(*q - '0');
        if (v > (9223372036854775808ULL - d) / 10) return 0;
        v = v * 10 + d;
    }
    if (!neg && v > 9223372036854775807ULL) return 0;
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 1;
}

static int parse_bool(const char *s, int *out) {
    if (!strcasecmp(s, "true") || !strcmp(s, "1")) return *out = 1, 1;
    if (!strcasecmp(s, "false") || !strcmp(s, "0")) return *out = 0, 1;
    return 0;
}

/* Why an image id would reach outside the images folder (or cannot name a file), or NULL. */
static const char *id_escape(const char *id) {
    if (id[0] == '/') return "is an absolute path";
    if (strchr(id, '\\')) return "has a backslash (use / between folders)";
    for (const char *c = id; *c;) {
        const char *end = strchr(c, '/');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        if (n == 2 && c[0] == '.' && c[1] == '.') return "has a \"..\" component";
        if (!end) break;
        c = end + 1;
    }
    return NULL;
}

/* Open addressing set of accepted images -> their row, for the duplicate check. Keyed by the
 * file (device and inode), not the id's text: "./x.jpg", "x.jpg", "a//x.jpg" or a link to it are
 * the same image. */
typedef struct {
    int *slot;   /* row index + 1, 0 = empty */
    size_t mask;
} IdSet;

/* The row already holding the file st describes, or -1 after inserting `row` (which takes st's
 * device and inode). */
static int idset_add(IdSet *set, Row *rows, int row, const struct stat *st) {
    Row *r = &rows[row];
    r->dev = st->st_dev;
    r->ino = st->st_ino;
    uint64_t h = ((uint64_t)r->ino ^ (uint64_t)r->dev * 0x9E3779B97F4A7C15ULL) * 1099511628211ULL;
    for (size_t i = (size_t)(h ^ h >> 29) & set->mask;; i = (i + 1) & set->mask) {
        if (!set->slot[i]) {
            set->slot[i] = row + 1;
            return -1;
        }
        const Row *o = &rows[set->slot[i] - 1];
        if (o->ino == r->ino && o->dev == r->dev) return set->slot[i] - 1;
    }
}

/* Row r names the image of the earlier row `first`. With the same label (or when first was
 * already refused) r is a repeat and left out; with another label neither can be trusted, and
 * they could land in both splits: both left out, each message naming the other line. */
static void repeated(Listing *c, const char *csv, const Row *r, Row *first, int int_mode) {
    char a[96], b[96], la[96], lb[96], as[112] = "";
    int same = int_mode ? r->value == first->value : !strcmp(r->label, first->label);   /* "03" is 3 */
    if (!first->ok || same) {
        if (strcmp(r->id, first->id)) snprintf(as, sizeof as, " (as %s)", shown_text(first->id, b, sizeof b));
        entry_problem(c, csv, r->line, "image_id %s already listed on line %d%s", shown_text(r->id, a, sizeof a), first->line, as);
        return;
    }
    entry_problem(c, csv, r->line, "image_id %s is the image of line %d (%s) with another label (%s here, %s there): both "
            "rows left out", shown_text(r->id, a, sizeof a), first->line, shown_text(first->id, b, sizeof b),
            shown_text(r->label, la, sizeof la), shown_text(first->label, lb, sizeof lb));
    entry_problem(c, csv, first->line, "image_id %s is listed again on line %d with another label", shown_text(first->id, b, sizeof b),
            r->line);
    first->ok = 0;
}

static int read_file(const char *path, char **data, size_t *size, char *err, size_t errlen) {
    /* a FIFO would block and /dev/zero never end: only regular files */
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return error_at(err, errlen, path, "the CSV file is not a regular file");
    FILE *f = fopen(path, "rb");
    if (!f) return error_at(err, errlen, path, "cannot open the CSV file: %s", strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = xmalloc(cap);
    for (;;) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        b = xrealloc(b, cap);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return error_at(err, errlen, path, "cannot read the CSV file");
    }
    *data = b;
    *size = n;
    return 0;
}

static void rows_free(Row *rows, int n) {
    for (int i = 0; i < n; i++) free(rows[i].id), free(rows[i].label), free(rows[i].isval);
    free(rows);
}

/* The header: which columns hold image_id, label and is_val (fastai's "is_valid" is taken too). */
static int csv_header(Csv *p, const char *csv, int line, int *col_id, int *col_label, int *col_val, char *err,
                      size_t errlen) {
    char where[4096 + 16];
    snprintf(where, sizeof where, "%s:%d", csv, line);
    if (p->bad) return error_at(err, errlen, where, "malformed header row (bad quoting)");
    *col_id = *col_label = *col_val = -1;
    for (int i = 0; i < p->nf; i++) {
        const char *name = csv_field(p, i);
        int *col = !strcmp(name, "image_id") ? col_id
                   : !strcmp(name, "label")  ? col_label
                   : !strcmp(name, "is_val") || !strcmp(name, "is_valid") ? col_val
                                                                          : NULL;
        if (!col) continue;
        if (*col >= 0)
            return error_at(err, errlen, where, "the header names the column \"%s\" twice (columns %d and %d)",
                            csv_field(p, *col), *col + 1, i + 1);
        *col = i;
    }
    if (*col_id < 0 || *col_label < 0)
        return error_at(err, errlen, where, "the header must name an image_id and a label column (it has %d column%s, "
                        "first \"%.40s\")", p->nf, p->nf == 1 ? "" : "s", csv_field(p, 0));
    return 0;
}

int dataset_open_csv(const DatasetSpec *spec, Listing *c, Dataset *ds, char *err, size_t errlen) {
    char *csv = path_join(spec->root, spec->csv ? spec->csv : "train.csv");
    char *images = path_join(spec->root, spec->images_dir ? spec->images_dir : "train_images");
    char *data = NULL, *path = NULL;
    Csv p = {0};
    Row *rows = NULL;
    int nrows = 0, rc = -1;
    IdSet set = {0};
    SampleList tl = {0}, vl = {0};
    unsigned char *trained = NULL;
    char **keys = NULL;
    char sb[96], sb2[96];

    if (read_file(csv, &data, &p.len, err, errlen) || need_dir(images, "images folder", err, errlen)) goto done;
    p.s = data;
    p.line = 1;
    if (p.len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) p.pos = 3;   /* a UTF-8 byte order mark */

    /* pass 1: the records, as text */
    int line, col_id = -1, col_label = -1, col_val = -1, header = 0, cap = 0;
    while (csv_next(&p, &line)) {
        if (p.nf == 1 && !p.quoted0 && !p.bad && csv_field(&p, 0)[0] == 0) continue;   /* blank line */
        if (!header) {
            if (csv_header(&p, csv, line, &col_id, &col_label, &col_val, err, errlen)) goto done;
            header = p.nf;
            continue;
        }
        if (nrows == cap) {
            cap = cap ? 2 * cap : 1024;
            rows = xrealloc(rows, (size_t)cap * sizeof *rows);
        }
        Row *r = &rows[nrows++];
        memset(r, 0, sizeof *r);
        r->line = line;
        r->bad = p.bad;
        r->nf = p.nf;
        if (p.nf == header) {
            r->id = xstrdup(csv_field(&p, col_id));
            r->label = xstrdup(csv_field(&p, col_label));
            if (col_val >= 0) r->isval = xstrdup(csv_field(&p, col_val));
        }
    }
    if (!header) {
        error_at(err, errlen, csv, "empty file: no header row");
        goto done;
    }

    /* Integer labels when most are (a pandas int column): then the odd text label is a mistake
     * to report, and labels are compared by value ("03" is class 3), sorted numerically. */
    int nint = 0, nlabel = 0;
    for (int i = 0; i < nrows; i++) {
        if (rows[i].bad || !rows[i].label || !rows[i].label[0]) continue;
        nlabel++;
        nint += parse_int(rows[i].label, &rows[i].value);
    }
    int int_mode = nlabel > 0 && 2 * nint > nlabel;

    /* pass 2: check every row, in file order */
    set.mask = 1;
    while (set.mask < 2 * (size_t)nrows + 1) set.mask <<= 1;
    set.slot = xcalloc(set.mask, sizeof *set.slot);
    set.mask--;
    for (int i = 0; i < nrows && !c->failed; i++) {
        Row *r = &rows[i];
        const char *why;
        int dup;
        struct stat st;
        if (r->bad == CSV_UNTERMINATED)
            entry_problem(c, csv, r->line, "a quoted field is never closed (the rest of the file is in it)");
        else if (r->bad == CSV_AFTER_QUOTE)
            entry_problem(c, csv, r->line, "text after a closing quote");
        else if (r->bad == CSV_NUL)
            entry_problem(c, csv, r->line, "a NUL byte in the row");
        else if (r->nf != header)
            entry_problem(c, csv, r->line, "%d field%s where the header has %d", r->nf, r->nf == 1 ? "" : "s", header);
        else if (!r->id[0])
            entry_problem(c, csv, r->line, "empty image_id");
        else if (has_control_char(r->id))
            entry_problem(c, csv, r->line, "image_id %s has a control character", shown_text(r->id, sb, sizeof sb));
        else if ((why = id_escape(r->id)))
            entry_problem(c, csv, r->line, "image_id %s %s: images must be inside %s", shown_text(r->id, sb, sizeof sb), why,
                    images);
        else if (!r->label[0])
            entry_problem(c, csv, r->line, "empty label");
        else if (has_control_char(r->label))
            entry_problem(c, csv, r->line, "bad label %s (a control character)", shown_text(r->label, sb, sizeof sb));
        else if (!utf8_valid(r->label))   /* text labels are class names, stored in checkpoints' JSON */
            entry_problem(c, csv, r->line, "bad label %s (not valid UTF-8)", shown_text(r->label, sb, sizeof sb));
        else if (int_mode && !parse_int(r->label, &r->value))
            entry_problem(c, csv, r->line, "bad label %s (the other labels are integers)", shown_text(r->label, sb, sizeof sb));
        else if (int_mode && r->value < 0)
            entry_problem(c, csv, r->line, "label %lld is negative (integer labels are class numbers 0, 1, 2, ...)", r->value);
        else if (r->isval && !r->isval[0])
            entry_problem(c, csv, r->line, "empty is_val");
        else if (r->isval && !parse_bool(r->isval, &r->is_val))
            entry_problem(c, csv, r->line, "bad is_val %s (True/False/true/false/1/0)", shown_text(r->isval, sb, sizeof sb));
        else {
            free(path);
            path = path_join(images, r->id);
            if (stat(path, &st))
                entry_problem(c, csv, r->line, "image_id %s: %s (in %s)", shown_text(r->id, sb, sizeof sb),
                        errno == ENOENT ? "no such file" : strerror(errno), images);
            else if (!S_ISREG(st.st_mode))
                entry_problem(c, csv, r->line, "image_id %s is not a regular file (in %s)", shown_text(r->id, sb, sizeof sb),
                        images);
            else if ((dup = idset_add(&set, rows, i, &st)) < 0)
                r->ok = 1;
            else
                repeated(c, csv, r, &rows[dup], int_mode);
        }
    }
    if (c->failed) goto done;

    /* Integer labels are class numbers, as in Kaggle's train.csv: output k is label k, never a
     * renumbering (fastai's sorted vocabulary would make -1, 0..4, 99 seven classes, output 6 being
     * label 99). The classes are 0..N-1, N the first number no usable row has; a label past a gap
     * is refused with its line. Counted over both splits, so N does not depend on the split. */
    int nint_classes = 0;
    if (int_mode) {
        unsigned char *seen = xcalloc((size_t)nrows + 1, 1);
        int first = -1;
        for (int i = 0; i < nrows; i++) {
            if (!rows[i].ok) continue;
            if (first < 0) first = i;
            if (rows[i].value < nrows) seen[rows[i].value] = 1;
        }
        while (nint_classes < nrows && seen[nint_classes]) nint_classes++;
        free(seen);
        if (first >= 0 && nint_classes == 0) {
            char where[4096 + 16];
            snprintf(where, sizeof where, "%s:%d", csv, rows[first].line);
            error_at(err, errlen, where, "label %lld: integer labels are class numbers from 0, and no row has label 0 "
                     "(number the classes from 0, or give them names)", rows[first].value);
            goto done;
        }
        for (int i = 0; i < nrows && !c->failed; i++)
            if (rows[i].ok && rows[i].value >= nint_classes) {
                entry_problem(c, csv, rows[i].line, "label %lld is not one of the classes 0..%d (integer labels are class "
                        "numbers, and no row has label %d)", rows[i].value, nint_classes - 1, nint_classes);
                rows[i].ok = 0;
            }
        if (c->failed) goto done;
    }

    int nok = 0;
    for (int i = 0; i < nrows; i++) nok += rows[i].ok;
    if (col_val < 0) {
        /* fastai's RandomSplitter: a seeded permutation, the first int(valid_pct * n) rows go to
         * validation; both splits then keep the file's row order. */
        if (!(spec->valid_pct > 0 && spec->valid_pct < 1)) {
            error_at(err, errlen, csv, "no is_val column, and valid_pct %g is not in (0, 1)", (double)spec->valid_pct);
            goto done;
        }
        int *ok = xmalloc((size_t)nok * sizeof *ok + 1), k = 0;
        for (int i = 0; i < nrows; i++)
            if (rows[i].ok) ok[k++] = i;
        Rng root, split;
        rng_seed(&root, spec->seed);
        split = rng_split(&root, 0x73706c6974ULL);   /* "split": its own stream for this purpose */
        for (int i = nok - 1; i > 0; i--) {
            int j = (int)rng_below(&split, (uint32_t)i + 1), t = ok[i];
            ok[i] = ok[j], ok[j] = t;
        }
        /* the small epsilon keeps e.g. 0.7f * 10 (6.9999998) at 7, as 0.7 * 10 is in Python */
        int nv = (int)((double)spec->valid_pct * nok + 1e-6);
        for (int i = 0; i < nok; i++) rows[ok[i]].is_val = i < nv;
        free(ok);
    }

    /* classes: 0..N-1 (integer labels), or the distinct text labels of the training rows, sorted
     * (fastai's vocabulary); trained: which classes have a training row */
    int nk = 0, nc = int_mode ? nint_classes : 0;
    keys = xmalloc((size_t)nok * sizeof *keys + 1);
    trained = xcalloc((size_t)nint_classes + 1, 1);
    for (int i = 0; i < nrows; i++) {
        if (!rows[i].ok || rows[i].is_val) continue;
        if (int_mode) trained[rows[i].value] = 1;
        keys[nk++] = rows[i].label;
    }
    if (nk == 0) {
        error_at(err, errlen, csv, "no usable training rows (%d row%s, %d left out)", nrows, nrows == 1 ? "" : "s",
                 c->skipped);
        goto done;
    }
    if (!int_mode) {
        qsort(keys, (size_t)nk, sizeof *keys, cmp_strings);
        for (int i = 0; i < nk; i++)
            if (i == 0 || strcmp(keys[i], keys[nc - 1])) keys[nc++] = keys[i];
    }
    ds->classes = xmalloc((size_t)nc * sizeof *ds->classes);
    for (int i = 0; i < nc; i++) {
        if (int_mode) {
            snprintf(sb, sizeof sb, "%d", i);
            ds->classes[i] = xstrdup(sb);
        } else {
            ds->classes[i] = xstrdup(keys[i]);
        }
    }
    ds->nclasses = nc;

    /* the samples; a validation label no training row has cannot be learned: reported */
    for (int i = 0; i < nrows && !c->failed; i++) {
        Row *r = &rows[i];
        if (!r->ok) continue;
        int label = -1;
        if (int_mode && trained[r->value]) label = (int)r->value;
        char **hit = int_mode ? NULL : bsearch(&r->label, keys, (size_t)nc, sizeof *keys, cmp_strings);
        if (hit) label = (int)(hit - keys);
        if (label < 0) {
            entry_problem(c, csv, r->line, "label %s appears only in validation rows", shown_text(r->label, sb2, sizeof sb2));
            continue;
        }
        list_push(r->is_val ? &vl : &tl, path_join(images, r->id), label);
    }
    if (c->failed) goto done;
    if (vl.n == 0) {
        if (col_val >= 0)
            error_at(err, errlen, csv, "the validation split is empty (no usable row has is_val true)");
        else
            error_at(err, errlen, csv, "the validation split is empty (valid_pct %g of %d usable rows)",
                     (double)spec->valid_pct, nok);
        goto done;
    }
    lists_to_dataset(&tl, &vl, ds);
    rc = 0;
done:
    list_free(&tl);
    list_free(&vl);
    free(trained);
    free(keys);
    free(set.slot);
    rows_free(rows, nrows);
    free(p.buf);
    free(p.off);
    free(data);
    free(path);
    free(csv);
    free(images);
    return rc;
}
