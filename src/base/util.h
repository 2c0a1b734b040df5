/* base/util.h: the few helpers everything uses: fatal errors, checked allocation, timing. */
#ifndef CNN_UTIL_H
#define CNN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define CNN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CNN_NORETURN __attribute__((noreturn))
#define CNN_NONNULL_RESULT __attribute__((returns_nonnull))
#else
#define CNN_PRINTF(a, b)
#define CNN_NORETURN
#define CNN_NONNULL_RESULT
#endif

/* Print "cnntrain: <message>" to stderr and exit(1). */
CNN_NORETURN void die(const char *fmt, ...) CNN_PRINTF(1, 2);
/* A run of several processes (dist/dist.h): die() names the rank (prefix, e.g. "rank 1 of 2: ") and
 * stops through exit_fn (which ends every rank) instead of exit(); NULLs restore the plain die(). */
void die_set_handler(const char *prefix, void (*exit_fn)(int code));
/* Write "label: message" into err (errlen bytes, always terminated) and return -1: the error
 * convention of every function that reports instead of exiting. */
int error_at(char *err, size_t errlen, const char *label, const char *fmt, ...) CNN_PRINTF(4, 5);
#if defined(__clang_analyzer__) && !defined(CNN_UTIL_C)
/* The static analyzer does not look inside variadic functions: tell it error_at returns -1. */
#define error_at(...) (error_at(__VA_ARGS__), -1)
#endif
void *xmalloc(size_t bytes) CNN_NONNULL_RESULT;
void *xcalloc(size_t count, size_t size) CNN_NONNULL_RESULT;
void *xrealloc(void *p, size_t bytes) CNN_NONNULL_RESULT;
char *xstrdup(const char *s) CNN_NONNULL_RESULT;

/* A growing list of formatted strings (problems to report, names loaded ...). Zero-initialise. */
typedef struct {
    char **items;
    int n, cap;
} StrList;
void strlist_add(StrList *, const char *fmt, ...) CNN_PRINTF(2, 3);
void strlist_free(StrList *);
/* UTF-8 (checkpoint metadata and class names must be): utf8_seq is the length of the valid
 * sequence at s (1 to 4; avail bytes there), or 0 when there is none (a stray continuation byte,
 * a cut or overlong sequence, a surrogate, past U+10FFFF); utf8_valid says whether all of s is. */
size_t utf8_seq(const unsigned char *s, size_t avail);
int utf8_valid(const char *s);
double now_seconds(void);   /* monotonic */
/* mkdir -p: returns 0, or -1 with errno set (the failing component is left in path's prefix). */
int make_dirs(const char *path);

/* Reading files, with errors as "PATH: message" in err (error_at).
 * open_regular: a read-only descriptor for path, which must be a regular file, and its size; or -1
 * ("cannot open: ...", "cannot stat: ...", "not a regular file"). */
int open_regular(const char *path, uint64_t *size, char *err, size_t errlen);
/* Exactly n bytes of fd from offset off (any n: read() moves at most ~2 GB per call); or -1
 * ("the file got shorter while being read", "read failed: ..."). path names the file in err. */
int read_full(int fd, void *buf, size_t n, uint64_t off, const char *path, char *err, size_t errlen);
/* The whole of the regular file path in a malloc'd buffer (*data, *size bytes; an empty file gives
 * a 1-byte buffer and size 0); or -1 with the errors above or "out of memory reading its N bytes". */
int read_whole_file(const char *path, uint8_t **data, size_t *size, char *err, size_t errlen);
/* Writing: all n bytes to fd (retrying short writes), or -1 with errno set (ENOSPC where write()
 * returns 0). */
int write_full(int fd, const void *data, size_t n);
/* fsync the folder holding path (".", or "/" for a top-level path), so a rename into it survives a
 * crash: 0, or -1 with errno set. A file system that cannot sync a folder (EINVAL) counts as 0. */
int sync_parent_folder(const char *path);
/* The end of an atomic write: fd is open on tmp, and ok says whether all the data went into it (if
 * not, errno still says why). fsync and close fd, rename tmp over path, sync path's folder. 0, or -1
 * with "PATH: STEP TMP failed: ... (the old file, if any, is unchanged)" in err and tmp removed, or
 * "PATH: written, but syncing its folder failed: ..." where only the last step failed. fd is closed
 * either way; tmp (the name) stays the caller's. */
int commit_temp_file(int fd, int ok, const char *tmp, const char *path, char *err, size_t errlen);

/* Every file we write whole (checkpoints, show-batch's JPEG, eval's CSV, the run folder's files)
 * goes through these, so that what is at a path the user named is never replaced blindly.
 * output_target: where a write of path lands. A symbolic link is written through (the file it
 * leads to is replaced, the link stays); a path that exists and is not a regular file (a device, a
 * FIFO, a folder, a socket) is refused, since renaming over it would replace the node itself. 0
 * with *target malloc'd (path, or the end of its links; it may not exist yet), or -1 with
 * "PATH: exists and is a character device, not a regular file: not replaced" in err. */
int output_target(const char *path, char **target, char *err, size_t errlen);
/* An atomic write of path: data goes to a temporary file beside the target (output_target), which
 * atomic_commit syncs and renames over it, so readers see the old file or the whole new one. An
 * existing file's permissions are kept. */
typedef struct {
    int fd;          /* the temporary file, open for writing */
    char *tmp;       /* its name: "<target>.tmp.<pid>.<n>" */
    char *target;    /* the file the rename replaces */
} AtomicFile;
int atomic_open(AtomicFile *a, const char *path, char *err, size_t errlen);
/* ok: whether every write into a->fd succeeded (if not, errno still says why). 0, or -1 as
 * commit_temp_file; a is released either way. */
int atomic_commit(AtomicFile *a, int ok, char *err, size_t errlen);
/* Gives up: the temporary file goes, the target is untouched. */
void atomic_abort(AtomicFile *a);
/* The whole of data as path, atomically: atomic_open + write + atomic_commit. */
int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen);

/* One CSV field as RFC 4180 writes it: quoted, its quotes doubled, when it holds a comma, a quote or
 * a line break (predictions, interpretation tables). */
void csv_write_field(FILE *f, const char *s);

#endif
