/* pipeline/image.h: decoded images and the image file decoders: image_decode_file tells the format
 * from the first bytes (image.c) and hands JPEG to jpeg.c (libjpeg-turbo), PNG to png.c (libpng) and
 * WebP to webp.c (libwebp). Every decoder gives 8-bit RGB as PIL's .convert('RGB') does, which is
 * what fastai trains on: grey replicated, palettes looked up, alpha dropped (not composited). */
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

/* The *_decode_file calls refuse larger files before reading them (default 64 MB, [data] max_file_mb). */
#define JPEG_DEFAULT_MAX_FILE_BYTES 64000000LL

/* The decoding options of every format (the name is from when JPEG was the only one). */
typedef struct {
    int min_short_side;  /* decode at the smallest DCT scale (1/1, 1/2, 1/4, 1/8) whose shorter side
                          * is still >= this; 0 = full size (JPEG only: other formats decode at
                          * full size, scale 1) */
    long max_pixels;     /* 0 = JPEG_DEFAULT_MAX_PIXELS */
    long long max_file_bytes; /* the *_decode_file calls; 0 = JPEG_DEFAULT_MAX_FILE_BYTES */
} JpegOptions;

/* Decode a JPEG (from a file, or from memory) to RGB: grayscale and CMYK/YCCK are converted.
 * A missing, unreadable, empty, truncated or non-JPEG file, or one over max_pixels, returns -1
 * with a message naming the file in err. scale_out (may be NULL) gets the DCT scale denominator
 * used (1, 2, 4 or 8). jpeg_decode_file reads a file's first bytes before the rest: a file that
 * does not start like a JPEG, or is larger than max_file_bytes, is refused without being read. */
int jpeg_decode_file(const char *path, const JpegOptions *, Image *out, int *scale_out, char *err, size_t errlen);
int jpeg_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *, Image *out,
                    int *scale_out, char *err, size_t errlen);
/* Which JPEG library this binary has ("none ..." when built with JPEG=0), for --version. */
const char *jpeg_library(void);
/* Write an RGB image as a JPEG (the demo data set, show-batch grids). Atomic like checkpoints. */
int jpeg_write_file(const char *path, const Image *, int quality, char *err, size_t errlen);

/* ---- every format (image.c) ---- */

typedef enum {
    IMAGE_UNKNOWN, IMAGE_JPEG, IMAGE_PNG, IMAGE_WEBP,
    /* recognised, never decoded: named in the message that refuses them */
    IMAGE_GIF, IMAGE_TIFF, IMAGE_BMP, IMAGE_HEIF, IMAGE_GZIP, IMAGE_ZIP, IMAGE_TEXT
} ImageFormat;

/* The format the first n bytes of a file announce; IMAGE_UNKNOWN when none. */
ImageFormat image_sniff(const uint8_t *data, size_t n);
/* "JPEG", "PNG", "WebP", "GIF", ...; NULL for IMAGE_UNKNOWN. */
const char *image_format_name(ImageFormat);
/* Whether this build decodes the format (PNG=0 / WEBP=0 builds do not decode those). */
int image_format_decoded(ImageFormat);

/* Decode a JPEG, PNG or WebP file (or memory) to RGB, the format told by its first bytes, not its
 * name. Like jpeg_decode_file: a file that is none of these (a GIF, a TIFF, text) is refused by
 * name with what to do, without reading the rest; max_file_bytes and max_pixels hold for every
 * format; a corrupt or truncated file returns -1 with a message naming it. */
int image_decode_file(const char *path, const JpegOptions *, Image *out, int *scale_out, char *err, size_t errlen);
int image_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *, Image *out,
                     int *scale_out, char *err, size_t errlen);
/* The file reader both use: check sees the first bytes (up to 16) and the file's size and refuses
 * (-1, with the message) before anything else is read; a file over max_file_bytes is refused from
 * its size. *data (malloc'd, *size bytes) holds the whole file; 0, or -1 with the message. */
typedef int (*ImageHeadCheck)(const uint8_t *head, size_t n, uint64_t size, const char *path, char *err, size_t errlen);
int image_read_file(const char *path, const JpegOptions *, ImageHeadCheck check, uint8_t **data, size_t *size,
                    char *err, size_t errlen);

/* ---- PNG (png.c) and WebP (webp.c): from memory; image_decode_* read the file ---- */

/* 1, 2, 4, 8 and 16-bit grey, grey + alpha, palette (any tRNS ignored), RGB and RGBA, interlaced or
 * not. 16-bit samples keep their high byte (PIL's choice for RGB(A); for 16-bit grey PIL clips to
 * 255 instead, which whitens the image: not copied). Alpha is dropped. */
int png_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *, Image *out, char *err,
                   size_t errlen);
/* Still WebP, lossy or lossless, alpha dropped; an animated WebP is refused. */
int webp_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *, Image *out, char *err,
                    size_t errlen);
/* Which libpng / libwebp this binary has ("none ..." when built without), for --version. */
const char *png_library(void);
const char *webp_library(void);

#endif
