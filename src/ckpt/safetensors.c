/* ckpt/safetensors.c: reading the safetensors format, and its dtypes. The header length is
 * checked against the file size before anything is read from the header; the header itself is
 * safetensors_header.c's, the writer safetensors_write.c. */
#include "ckpt/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "ckpt/safetensors_header.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format's data is little-endian)"
#endif

/* The reference implementation refuses headers over 100 MB; a real one is a few hundred KB. */
#define ST_HEADER_CAP 100000000ull

static const char *const dtype_names[ST_NTYPES] = {"F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL"};
static const size_t dtype_sizes[ST_NTYPES] = {4, 2, 2, 8, 8, 4, 1, 1};

const char *st_dtype_name(StDType t) { return (unsigned)t < ST_NTYPES ? dtype_names[t] : "?"; }
size_t st_dtype_size(StDType t) { return (unsigned)t < ST_NTYPES ? dtype_sizes[t] : 0; }

/* The 8-byte header length, checked against the file size: the one thing to trust before
 * looking at anything else. */
static int check_prefix(const unsigned char *first, uint64_t size, const char *label, uint64_t *hlen, char *err,
                        size_t errlen) {
    if (size == 0) return error_at(err, errlen, label, "the file is empty (not a safetensors file)");
    if (size < 8)
        return error_at(err, errlen, label, "the file is %llu bytes, too short for a safetensors file (truncated?)",
                    (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | first[i];
    if (n > ST_HEADER_CAP)
        return error_at(err, errlen, label, "header length %llu is over the %llu-byte limit (not a safetensors file?)",
                    (unsigned long long)n, ST_HEADER_CAP);
    if (n > size - 8)
        return error_at(err, errlen, label,
                    "header length %llu runs past the end of the %llu-byte file (truncated, or not a safetensors file)",
                    (unsigned long long)n, (unsigned long long)size);
    if (n < 2) return error_at(err, errlen, label, "header length %llu is too small for a JSON object", (unsigned long long)n);
    *hlen = n;
    return 0;
}

void st_close(StFile *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->blob);
    memset(f, 0, sizeof *f);
}

/* Parse a whole file image; takes ownership of buf (kept in out->blob, or freed on error). */
static int parse_blob(unsigned char *buf, size_t size, const char *label, StFile *out, char *err, size_t errlen) {
    uint64_t hlen = 0;
    if (check_prefix(buf, size, label, &hlen, err, errlen)) {
        free(buf);
        return -1;
    }
    if (st_parse_header(buf + 8, (size_t)hlen, buf + 8 + hlen, size - 8 - hlen, label, out, err, errlen)) {
        st_close(out);
        free(buf);
        return -1;
    }
    out->blob = buf;
    out->size = size;
    return 0;
}

int st_parse(const void *buf, size_t size, const char *label, StFile *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    unsigned char *copy = malloc(size ? size : 1);
    if (!copy) return error_at(err, errlen, label, "out of memory copying %zu bytes", size);
    if (size) memcpy(copy, buf, size);
    return parse_blob(copy, size, label, out, err, errlen);
}

int st_read(const char *path, StFile *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t size;
    if (read_whole_file(path, &buf, &size, err, errlen)) return -1;
    return parse_blob(buf, size, path, out, err, errlen);
}

int st_read_header(const char *path, StFile *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    uint64_t size, hlen = 0;
    unsigned char first[8] = {0};
    int fd = open_regular(path, &size, err, errlen);
    if (fd < 0) return -1;
    if (size >= 8 && read_full(fd, first, 8, 0, path, err, errlen)) {
        close(fd);
        return -1;
    }
    if (check_prefix(first, size, path, &hlen, err, errlen)) {
        close(fd);
        return -1;
    }
    unsigned char *h = xmalloc((size_t)hlen);
    if (read_full(fd, h, (size_t)hlen, 8, path, err, errlen)) {
        close(fd);
        free(h);
        return -1;
    }
    close(fd);
    int rc = st_parse_header(h, (size_t)hlen, NULL, size - 8 - hlen, path, out, err, errlen);
    free(h);
    if (rc) {
        st_close(out);
        return -1;
    }
    out->size = (size_t)size;
    return 0;
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}
