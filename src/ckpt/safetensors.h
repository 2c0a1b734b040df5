/* ckpt/safetensors.h: reading and writing the safetensors format (8-byte little-endian header length,
 * a JSON header {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "value"}}, then the raw little-endian data). Reading validates
 * everything against the file size first: a truncated, foreign or hostile file is an error
 * message, never a crash. Writing is atomic: temporary file, fsync, rename, fsync of the folder. */
#ifndef CNN_SAFETENSORS_H
#define CNN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_U8, ST_BOOL, ST_NTYPES } StDType;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDType dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t bytes;
    const void *data;   /* inside StFile.blob */
} StTensor;

typedef struct {
    StTensor *tensors;
    int count;
    char **meta_keys, **meta_values;
    int nmeta;
    void *blob;         /* the whole file */
    size_t size;
} StFile;

const char *st_dtype_name(StDType);
size_t st_dtype_size(StDType);

/* Read and validate a whole file. Returns 0, or -1 with "path: what is wrong" in err. */
int st_read(const char *path, StFile *out, char *err, size_t errlen);
/* Same, from memory (for tests and fuzzing); the buffer is copied. */
int st_parse(const void *buf, size_t size, const char *label, StFile *out, char *err, size_t errlen);
/* Read and validate only the header (names, shapes, metadata; offsets checked against the file's
 * size): cheap for looking at metadata before loading. blob is NULL and every data NULL. */
int st_read_header(const char *path, StFile *out, char *err, size_t errlen);
const StTensor *st_find(const StFile *, const char *name);
const char *st_meta(const StFile *, const char *key);   /* NULL when absent */
void st_close(StFile *);

typedef struct StWriter StWriter;
StWriter *st_writer_new(void);
/* data is referenced, not copied, until st_write (names and metadata are copied); names must be
 * unique. A bad call (duplicate name, bad shape) is remembered and reported by st_write. */
void st_add(StWriter *, const char *name, StDType dtype, int ndim, const int64_t *shape, const void *data);
void st_add_meta(StWriter *, const char *key, const char *value);
/* Write atomically. Returns 0, or -1 with a message naming the file in err (the old file, if
 * any, is left as it was). */
int st_write(StWriter *, const char *path, char *err, size_t errlen);
void st_writer_free(StWriter *);

#endif
