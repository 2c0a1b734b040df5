/* pipeline/csv.h: RFC 4180 records from a buffer, for the CSV data set layout (dataset_csv.c):
 * quoted fields ("" for a quote, commas and line breaks inside), LF, CRLF or CR line ends, spaces
 * and tabs around unquoted fields dropped. A malformed record is still returned, marked bad, so
 * its line can be reported and the rest of the file read. */
#ifndef CNN_CSV_H
#define CNN_CSV_H

#include <stddef.h>

enum { CSV_OK, CSV_UNTERMINATED, CSV_AFTER_QUOTE, CSV_NUL };

/* Set s, len and line (1) and start pos past a byte-order mark; the rest starts zeroed. */
typedef struct {
    const char *s;
    size_t len, pos;
    int line;          /* physical line of the next character */
    char *buf;         /* the current record's fields, each NUL-terminated */
    size_t blen, bcap;
    size_t *off;
    int nf, fcap;
    int quoted0;       /* the first field was quoted (a quoted "" is not a blank line) */
    int bad;           /* CSV_*: what is wrong with the current record */
} Csv;

/* The next record (nf fields); 0 at the end of the input. Its first line is line_out. */
int csv_next(Csv *, int *line_out);
/* Field i (0 <= i < nf) of the current record. */
const char *csv_field(const Csv *, int i);
/* The record buffers (not s). */
void csv_free(Csv *);

#endif
