/* util.h: the few helpers everything uses: fatal errors, checked allocation, timing. */
#ifndef CNN_UTIL_H
#define CNN_UTIL_H

#include <stddef.h>

#if defined(__GNUC__)
#define CNN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CNN_NORETURN __attribute__((noreturn))
#else
#define CNN_PRINTF(a, b)
#define CNN_NORETURN
#endif

/* Print "cnntrain: <message>" to stderr and exit(1). */
CNN_NORETURN void die(const char *fmt, ...) CNN_PRINTF(1, 2);
/* Write "label: message" into err (errlen bytes, always terminated) and return -1: the error
 * convention of every function that reports instead of exiting. */
int error_at(char *err, size_t errlen, const char *label, const char *fmt, ...) CNN_PRINTF(4, 5);
void *xmalloc(size_t bytes);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t bytes);
double now_seconds(void);   /* monotonic */
/* mkdir -p: returns 0, or -1 with errno set (the failing component is left in path's prefix). */
int make_dirs(const char *path);

#endif
