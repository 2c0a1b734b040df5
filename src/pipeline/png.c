/* pipeline/png.c: PNG decoding through libpng (image.h), to 8-bit RGB as PIL's .convert('RGB') gives
 * it, which fastai trains on: grey replicated, palettes looked up, alpha and tRNS dropped (never
 * composited on a background), 16-bit samples cut to their high byte, gamma and colour profiles
 * ignored.
 *
 * Like jpeg.c it runs in several loader threads at once: each call owns its libpng objects and
 * reads from memory. libpng reports errors by calling our handler, which longjmps back to
 * decode_run; everything that path frees lives in a heap struct, not in locals changed after
 * setjmp. Warnings (a bad ancillary chunk, which libpng drops) are ignored, never printed. */
#include "pipeline/image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#ifdef CNN_NO_PNG
/* Built with make PNG=0 (png.h was missing): PNG files are refused, saying why. */
int png_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *opt, Image *out, char *err,
                   size_t errlen) {
    (void)data, (void)size, (void)opt;
    out->w = out->h = 0;
    out->rgb = NULL;
    return error_at(err, errlen, label ? label : "(memory)",
                    "PNG is not supported by this build (made with PNG=0, without libpng): install libpng-dev and "
                    "rebuild, or convert the file to JPEG");
}
const char *png_library(void) { return "none (built with PNG=0)"; }
#else

#include <png.h>

const char *png_library(void) { return "libpng " PNG_LIBPNG_VER_STRING; }

typedef struct {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t size, pos;
    uint8_t *pixels;   /* the output image, until handed over */
    png_bytep *rows;   /* row pointers into pixels (png_read_image needs them for interlaced files) */
    char msg[200];     /* libpng's error */
    char why[200];     /* our own refusals (size) */
} Decode;

static void on_error(png_structp png, png_const_charp msg) {
    Decode *d = png_get_error_ptr(png);
    snprintf(d->msg, sizeof d->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void read_mem(png_structp png, png_bytep out, size_t n) {
    Decode *d = png_get_io_ptr(png);
    if (n > d->size - d->pos) png_error(png, "the file ends early (truncated)");
    memcpy(out, d->data + d->pos, n);
    d->pos += n;
}

static int decode_run(Decode *d, const JpegOptions *opt, Image *out) {
    png_structp png = d->png;
    png_infop info = d->info;
    if (setjmp(png_jmpbuf(png))) return -1;
    png_set_read_fn(png, d, read_mem);
    png_read_info(png, info);

    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    long max_px = opt && opt->max_pixels > 0 ? opt->max_pixels : JPEG_DEFAULT_MAX_PIXELS;
    unsigned long long px = (unsigned long long)w * h;
    if (px > (unsigned long long)max_px) {
        snprintf(d->why, sizeof d->why, "the header claims %ux%u = %llu pixels, over the limit of %ld", (unsigned)w,
                 (unsigned)h, px, max_px);
        return -1;
    }
    /* To RGB, as PIL: strip_16 keeps the high byte (PIL's RGB;16B unpacker does the same). */
    if (depth == 16) png_set_strip_16(png);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);   /* also the alpha palette_to_rgb makes from tRNS */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8) {
        snprintf(d->why, sizeof d->why, "colour type %d at %d bits did not convert to 8-bit RGB", type, depth);
        return -1;
    }
    size_t stride = (size_t)w * 3;
    if (png_get_rowbytes(png, info) != stride) {
        snprintf(d->why, sizeof d->why, "unexpected row size %zu for %u pixels", (size_t)png_get_rowbytes(png, info),
                 (unsigned)w);
        return -1;
    }
    d->pixels = malloc(stride * h);
    d->rows = malloc(sizeof *d->rows * h);
    if (!d->pixels || !d->rows) {
        snprintf(d->why, sizeof d->why, "out of memory for %ux%u pixels", (unsigned)w, (unsigned)h);
        return -1;
    }
    for (png_uint_32 y = 0; y < h; y++) d->rows[y] = d->pixels + y * stride;
    png_read_image(png, d->rows);
    /* Up to IEND, checking the CRCs on the way: a file cut anywhere is refused, as jpeg.c does. */
    png_read_end(png, NULL);
    out->w = (int)w;
    out->h = (int)h;
    out->rgb = d->pixels;
    d->pixels = NULL;
    return 0;
}

int png_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *opt, Image *out, char *err,
                   size_t errlen) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (!label) label = "(memory)";
    if (size < 8 || png_sig_cmp(data, 0, 8)) return error_at(err, errlen, label, "not a PNG file");
    Decode *d = calloc(1, sizeof *d);
    if (!d) return error_at(err, errlen, label, "out of memory");
    d->data = data;
    d->size = size;
    d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, on_error, on_warning);
    if (d->png) d->info = png_create_info_struct(d->png);
    int rc = -1;
    if (!d->png || !d->info) snprintf(d->why, sizeof d->why, "libpng could not start (out of memory)");
    else rc = decode_run(d, opt, out);
    if (d->png) png_destroy_read_struct(&d->png, d->info ? &d->info : NULL, NULL);
    if (rc) {
        if (d->why[0]) error_at(err, errlen, label, "%s", d->why);
        else error_at(err, errlen, label, "bad PNG: %s", d->msg[0] ? d->msg : "unknown libpng error");
    }
    free(d->pixels);
    free(d->rows);
    free(d);
    return rc;
}

#endif /* CNN_NO_PNG */
