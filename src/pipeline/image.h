/* pipeline/image.h: decoded images and JPEG decoding (libjpeg API of libjpeg-turbo). */
#ifndef CNN_IMAGE_H
#define CNN_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* 8-bit RGB, rows of w*3 bytes (HWC). */
typedef struct {
    int w, h;
    uint8_t *rgb;
} Image;

void image_free(Image *);

/* Refuse images whose header claims more pixels than this before allocating (default 64 Mpx). */
#define JPEG_DEFAULT_MAX_PIXELS (64L * 1024 * 1024)

/* jpeg_decode_file refuses larger files before reading them (default 64 MB, [data] max_file_mb). */
#define JPEG_DEFAULT_MAX_FILE_BYTES 64000000LL

typedef struct {
    int min_short_side;  /* decode at the smallest DCT scale (1/1, 1/2, 1/4, 1/8) whose shorter side
                          * is still >= this; 0 = full size */
    long max_pixels;     /* 0 = JPEG_DEFAULT_MAX_PIXELS */
    long long max_file_bytes; /* jpeg_decode_file; 0 = JPEG_DEFAULT_MAX_FILE_BYTES */
} JpegOptions;

/* Decode a JPEG (from a file, or from memory) to RGB: grayscale and CMYK/YCCK are converted.
 * A missing, unreadable, empty, truncated or non-JPEG file, or one over max_pixels, returns -1
 * with a message naming the file in err. scale_out (may be NULL) gets the DCT scale denominator
 * used (1, 2, 4 or 8). jpeg_decode_file reads a file's first bytes before the rest: a file that
 * does not start like a JPEG, or is larger than max_file_bytes, is refused without being read. */
int jpeg_decode_file(const char *path, const JpegOptions *, Image *out, int *scale_out, char *err, size_t errlen);
int jpeg_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *, Image *out,
                    int *scale_out, char *err, size_t errlen);
/* Write an RGB image as a JPEG (the demo data set, show-batch grids). Atomic like checkpoints. */
/* Which JPEG library this binary has ("none ..." when built with JPEG=0), for --version. */
const char *jpeg_library(void);
int jpeg_write_file(const char *path, const Image *, int quality, char *err, size_t errlen);

#endif
