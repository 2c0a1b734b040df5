/* base/util.c: fatal errors, checked allocation, timing, the one atomic writer of files, and CSV fields (see util.h). */
#define CNN_UTIL_C /* error_at is defined here, not the analyzer's macro (util.h) */
#include "base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Set by dist_init in a run of several processes: the rank's name before every message, and the
 * exit that stops every rank. */
static const char *die_prefix = "";
static void (*die_exit)(int code);

void die_set_handler(const char *prefix, void (*exit_fn)(int code)) {
    die_prefix = prefix ? prefix : "";
    die_exit = exit_fn;
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cnntrain: %s", die_prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (die_exit) die_exit(1);
    exit(1);
}

int error_at(char *err, size_t errlen, const char *label, const char *fmt, ...) {
    if (!err || !errlen) return -1;
    int k = snprintf(err, errlen, "%s: ", label);
    if (k >= 0 && (size_t)k < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory allocating %zu bytes", bytes);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) die("out of memory allocating %zu bytes", bytes);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

void strlist_add(StrList *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *item = xmalloc(len > 0 ? (size_t)len + 1 : 1);
    va_start(ap, fmt);
    vsnprintf(item, len > 0 ? (size_t)len + 1 : 1, fmt, ap);
    va_end(ap);
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 32;
        l->items = xrealloc(l->items, (size_t)l->cap * sizeof *l->items);
    }
    l->items[l->n++] = item;
}

void strlist_free(StrList *l) {
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int make_dirs(const char *path) {
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

int open_regular(const char *path, uint64_t *size, char *err, size_t errlen) {
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer, forever. Cleared below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return error_at(err, errlen, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return error_at(err, errlen, path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return error_at(err, errlen, path, "not a regular file");
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    *size = (uint64_t)st.st_size;
    return fd;
}

int read_full(int fd, void *buf, size_t n, uint64_t off, const char *path, char *err, size_t errlen) {
    unsigned char *b = buf;
    while (n) {
        ssize_t r = pread(fd, b, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return error_at(err, errlen, path, "read failed: %s", strerror(errno));
        if (r == 0) return error_at(err, errlen, path, "the file got shorter while being read");
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int read_whole_file(const char *path, uint8_t **data, size_t *size, char *err, size_t errlen) {
    *data = NULL;
    *size = 0;
    uint64_t n = 0;
    int fd = open_regular(path, &n, err, errlen);
    if (fd < 0) return -1;
    uint8_t *buf = n <= SIZE_MAX ? malloc(n ? (size_t)n : 1) : NULL;
    if (!buf) {
        close(fd);
        return error_at(err, errlen, path, "out of memory reading its %llu bytes", (unsigned long long)n);
    }
    /* One read for a regular file, unless interrupted or the file system returns it in parts. */
    if (read_full(fd, buf, (size_t)n, 0, path, err, errlen)) {
        close(fd);
        free(buf);
        return -1;
    }
    close(fd);
    *data = buf;
    *size = (size_t)n;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 when it is not one (overlong forms,
 * surrogates and code points past U+10FFFF are invalid). */
size_t utf8_seq(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (avail < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

int utf8_valid(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

int write_full(int fd, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int sync_parent_folder(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
    char *dir = xmalloc(n + 1);
    memcpy(dir, slash ? path : ".", n);
    dir[n] = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    free(dir);
    if (fd < 0) return -1;
    if (fsync(fd) && errno != EINVAL) rc = -1; /* some file systems cannot sync a folder */
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int commit_temp_file(int fd, int ok, const char *tmp, const char *path, char *err, size_t errlen) {
    const char *step = "writing";
    if (ok && fsync(fd)) ok = 0, step = "syncing";
    int e = errno;
    if (close(fd) && ok) ok = 0, step = "closing", e = errno;
    if (ok && rename(tmp, path)) ok = 0, step = "renaming", e = errno;
    if (!ok) {
        unlink(tmp);
        return error_at(err, errlen, path, "%s %s failed: %s (the old file, if any, is unchanged)", step, tmp, strerror(e));
    }
    if (sync_parent_folder(path))
        return error_at(err, errlen, path, "written, but syncing its folder failed: %s", strerror(errno));
    return 0;
}

static const char *node_kind(mode_t m) {
    return S_ISDIR(m) ? "a folder" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
         : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

int output_target(const char *path, char **target, char *err, size_t errlen) {
    *target = NULL;
    if (!path || !*path) {
        error_at(err, errlen, "(no path)", "an output needs a file name");
        return -1;
    }
    char *cur = xstrdup(path);
    for (int hops = 0;; hops++) {
        struct stat st;
        if (lstat(cur, &st)) {
            if (errno == ENOENT) break; /* a new file (its folder is checked when it is created) */
            error_at(err, errlen, path, "cannot stat %s: %s", cur, strerror(errno));
            free(cur);
            return -1;
        }
        if (S_ISREG(st.st_mode)) break;
        if (!S_ISLNK(st.st_mode)) {
            if (strcmp(cur, path)) error_at(err, errlen, path, "leads to %s, which is %s, not a regular file: not replaced", cur, node_kind(st.st_mode));
            else error_at(err, errlen, path, "exists and is %s, not a regular file: not replaced", node_kind(st.st_mode));
            free(cur);
            return -1;
        }
        char link[4096];
        ssize_t n = hops < 40 ? readlink(cur, link, sizeof link - 1) : -1;
        if (n < 0) {
            error_at(err, errlen, path, "cannot follow its symbolic links: %s", hops < 40 ? strerror(errno) : "more than 40");
            free(cur);
            return -1;
        }
        link[n] = 0;
        /* a relative link is relative to the folder holding it */
        const char *slash = strrchr(cur, '/');
        size_t dlen = link[0] != '/' && slash ? (size_t)(slash - cur) + 1 : 0;
        char *next = xmalloc(dlen + (size_t)n + 1);
        memcpy(next, cur, dlen);
        memcpy(next + dlen, link, (size_t)n + 1);
        free(cur);
        cur = next;
    }
    *target = cur;
    return 0;
}

int atomic_open(AtomicFile *a, const char *path, char *err, size_t errlen) {
    static atomic_ulong counter; /* threads writing the same path never share a temporary name */
    a->fd = -1;
    a->tmp = NULL;
    if (output_target(path, &a->target, err, errlen)) return -1;
    size_t tlen = strlen(a->target) + 48;
    a->tmp = xmalloc(tlen);
    snprintf(a->tmp, tlen, "%s.tmp.%ld.%lu", a->target, (long)getpid(), atomic_fetch_add(&counter, 1));
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (a->fd < 0) {
        error_at(err, errlen, path, "cannot create the temporary file %s: %s", a->tmp, strerror(errno));
        free(a->tmp);
        free(a->target);
        a->tmp = a->target = NULL;
        return -1;
    }
    struct stat st;
    if (!stat(a->target, &st)) fchmod(a->fd, st.st_mode & 07777);
    return 0;
}

int atomic_commit(AtomicFile *a, int ok, char *err, size_t errlen) {
    int rc = commit_temp_file(a->fd, ok, a->tmp, a->target, err, errlen);
    free(a->tmp);
    free(a->target);
    a->fd = -1;
    a->tmp = a->target = NULL;
    return rc;
}

void atomic_abort(AtomicFile *a) {
    if (a->fd >= 0) close(a->fd);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->target);
    a->fd = -1;
    a->tmp = a->target = NULL;
}

int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    AtomicFile a;
    if (atomic_open(&a, path, err, errlen)) return -1;
    return atomic_commit(&a, !write_full(a.fd, data, n), err, errlen);
}

void csv_write_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}
