/* pipeline/dataset_list.h: private to pipeline/dataset*.c: what the two layouts share while they
 * list a data set (dataset.c): the listing's state with its problem report, the growing sample
 * list, paths and the quoting of names in messages; and the layouts themselves
 * (dataset_folder.c, dataset_csv.c), which dataset_open calls. */
#ifndef CNN_DATASET_LIST_H
#define CNN_DATASET_LIST_H

#include <stddef.h>

#include "base/util.h"
#include "pipeline/dataset.h"

typedef struct {
    int strict;
    int skipped;
    int failed;   /* strict, and the first problem is now in err */
    char *err;
    size_t errlen;
} Listing;

/* One entry-level problem: printed and counted, or (strict) the error that stops the listing.
 * `where` is the file or folder, line 0 means none. */
void entry_problem(Listing *c, const char *where, int line, const char *fmt, ...) CNN_PRINTF(4, 5);

typedef struct {
    Sample *v;
    int n, cap;
} SampleList;

void list_push(SampleList *l, char *path, int label);   /* takes path */
void list_free(SampleList *l);
/* The two splits' lists become the data set's (the lists are left empty). */
void lists_to_dataset(SampleList *train, SampleList *valid, Dataset *ds);

/* dir/name, allocated. */
char *path_join(const char *dir, const char *name);
/* qsort and bsearch comparison of two char * */
int cmp_strings(const void *a, const void *b);
/* s quoted for a message in buf: control characters as '?', bytes that are not UTF-8 as \xNN,
 * cut to fit. Returns buf. */
const char *shown_text(const char *s, char *buf, size_t size);
int has_control_char(const char *s);
/* The folder must exist: -1 with a message naming it (as "the <what>") otherwise. */
int need_dir(const char *path, const char *what, char *err, size_t errlen);

/* The two layouts: fill ds (classes, train, valid), counting problems in c. Return 0 or -1 with
 * the error in err; ds is freed by the caller either way. */
int dataset_open_folder(const DatasetSpec *spec, Listing *c, Dataset *ds, char *err, size_t errlen);
int dataset_open_csv(const DatasetSpec *spec, Listing *c, Dataset *ds, char *err, size_t errlen);

#endif
