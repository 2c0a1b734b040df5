/* ckpt/safetensors_header.h: private to ckpt/safetensors*.c: the JSON header parser
 * (safetensors_header.c) that st_read, st_parse and st_read_header (safetensors.c) share. */
#ifndef CNN_SAFETENSORS_HEADER_H
#define CNN_SAFETENSORS_HEADER_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt/safetensors.h"

/* Parse the header text (len bytes, after the 8-byte length) and check every tensor against the
 * data section (data_size bytes at data, which may be NULL for a header-only read). Fills f's
 * tensors and metadata. Returns 0, or -1 with "label: what is wrong" in err (f is then for
 * st_close). */
int st_parse_header(const unsigned char *text, size_t len, const unsigned char *data, uint64_t data_size,
                    const char *label, StFile *f, char *err, size_t errlen);

#endif
