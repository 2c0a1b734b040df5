/* pipeline/csv.c: the RFC 4180 record reader of the CSV data set layout (csv.h). */
#include "pipeline/csv.h"

#include <stdlib.h>

#include "base/util.h"

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

int csv_next(Csv *p, int *line_out) {
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

const char *csv_field(const Csv *p, int i) { return p->buf + p->off[i]; }

void csv_free(Csv *p) {
    free(p->buf);
    free(p->off);
    p->buf = NULL;
    p->off = NULL;
}
