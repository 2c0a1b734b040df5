/* pipeline/jpeg.c: JPEG decoding and writing through the libjpeg API of libjpeg-turbo (image.h).
 *
 * Decoding is the data loader's hot path and runs in several threads at once: every call owns its
 * libjpeg objects, reads the file with one read() and decodes from memory. libjpeg reports fatal
 * errors through error_exit and bad data through warnings; both come back here by longjmp, so a
 * corrupt file gives an error message and never exits the process or yields a half-grey image. */
#include "pipeline/image.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

#ifdef CNN_NO_JPEG
/* Built with make JPEG=0 (jpeglib.h was missing, e.g. on a GPU machine without the -dev package):
 * everything else works; these fail with a message that says why. */
static int no_jpeg(char *err, size_t errlen, const char *label) {
    return error_at(err, errlen, label ? label : "(memory)",
                    "this cnntrain was built without libjpeg (make JPEG=0): no JPEG decoding or writing; "
                    "install libjpeg62-turbo-dev and rebuild");
}
int jpeg_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *opt, Image *out,
                    int *scale_out, char *err, size_t errlen) {
    (void)data, (void)size, (void)opt;
    out->w = out->h = 0;
    out->rgb = NULL;
    if (scale_out) *scale_out = 1;
    return no_jpeg(err, errlen, label);
}
int jpeg_decode_file(const char *path, const JpegOptions *opt, Image *out, int *scale_out, char *err,
                     size_t errlen) {
    return jpeg_decode_mem(NULL, 0, path, opt, out, scale_out, err, errlen);
}
int jpeg_write_file(const char *path, const Image *im, int quality, char *err, size_t errlen) {
    (void)im, (void)quality;
    return no_jpeg(err, errlen, path);
}
const char *jpeg_library(void) { return "none (built with JPEG=0)"; }
#else

#include <jpeglib.h>
#include <jerror.h>

#define CNN_STR_(x) #x
#define CNN_STR(x) CNN_STR_(x)
#ifdef LIBJPEG_TURBO_VERSION
const char *jpeg_library(void) { return "libjpeg-turbo " CNN_STR(LIBJPEG_TURBO_VERSION); }
#else
const char *jpeg_library(void) { return "libjpeg API " CNN_STR(JPEG_LIB_VERSION); }
#endif

/* ---- errors ---- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} ErrMgr;

static void on_error_exit(j_common_ptr c) {
    ErrMgr *e = (ErrMgr *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings that leave every decoded pixel right: tolerated. Every other warning means missing or
 * corrupt entropy-coded data (truncated file, bad Huffman code, lost restart marker), which libjpeg
 * would paper over with grey or garbage blocks: an error here. */
static int harmless_warning(int code) {
    return code == JWRN_EXTRANEOUS_DATA   /* junk between a finished segment and the next marker */
        || code == JWRN_JFIF_MAJOR        /* unknown JFIF version number */
        || code == JWRN_ADOBE_XFORM       /* unknown Adobe transform code: libjpeg guesses from the component count */
        || code == JWRN_BOGUS_ICC;        /* the ICC profile is ignored anyway */
}

static void on_message(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace messages */
    if (harmless_warning(c->err->msg_code)) {
        c->err->num_warnings++;
        return;
    }
    on_error_exit(c);
}

static void no_output(j_common_ptr c) { (void)c; }

static struct jpeg_error_mgr *init_errors(ErrMgr *e) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error_exit;
    e->pub.emit_message = on_message;
    e->pub.output_message = no_output; /* never print to stderr from a worker thread */
    e->msg[0] = 0;
    return &e->pub;
}

/* ---- decoding ---- */

/* The largest DCT reduction (8, 4, 2) whose output short side, rounded up as libjpeg does, is still
 * >= min_short_side; 1 when none is. */
static int choose_denom(unsigned w, unsigned h, int min_short_side) {
    if (min_short_side <= 0) return 1;
    unsigned s = w < h ? w : h;
    for (int d = 8; d > 1; d /= 2)
        if ((s + (unsigned)d - 1) / (unsigned)d >= (unsigned)min_short_side) return d;
    return 1;
}

/* Everything a decode owns lives here, outside decode_run's frame, so nothing the error path reads
 * is a local modified between setjmp and longjmp. */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    ErrMgr err;
    uint8_t *pixels;   /* the output image, until handed over */
    uint8_t *cmyk;     /* CMYK row buffer */
    char why[160];     /* our own refusals (size, colour space) */
} Decode;

/* Adobe applications store CMYK inverted (0 = full ink), and so does libjpeg when it writes an Adobe
 * marker; without the marker the values are taken as ink amounts. */
static void cmyk_to_rgb(const uint8_t *src, uint8_t *dst, int w, int inverted) {
    for (int x = 0; x < w; x++, src += 4, dst += 3) {
        unsigned c = src[0], m = src[1], y = src[2], k = src[3];
        if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        dst[0] = (uint8_t)((c * k + 127) / 255);
        dst[1] = (uint8_t)((m * k + 127) / 255);
        dst[2] = (uint8_t)((y * k + 127) / 255);
    }
}

static int decode_run(Decode *d, const uint8_t *data, size_t size, const JpegOptions *opt, Image *out,
                      int *scale_out) {
    struct jpeg_decompress_struct *ci = &d->cinfo;
    if (setjmp(d->err.jump)) return -1;
    jpeg_mem_src(ci, data, (unsigned long)size);
    jpeg_read_header(ci, TRUE);

    long max_px = opt && opt->max_pixels > 0 ? opt->max_pixels : JPEG_DEFAULT_MAX_PIXELS;
    unsigned long long px = (unsigned long long)ci->image_width * ci->image_height;
    if (px > (unsigned long long)max_px) {
        snprintf(d->why, sizeof d->why, "the header claims %ux%u = %llu pixels, over the limit of %ld",
                 ci->image_width, ci->image_height, px, max_px);
        return -1;
    }
    int cmyk = 0;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE: case JCS_YCbCr: case JCS_RGB: ci->out_color_space = JCS_RGB; break;
    case JCS_CMYK: case JCS_YCCK: ci->out_color_space = JCS_CMYK, cmyk = 1; break;
    default:
        snprintf(d->why, sizeof d->why, "unsupported colour space (%d components)", ci->num_components);
        return -1;
    }
    int denom = choose_denom(ci->image_width, ci->image_height, opt ? opt->min_short_side : 0);
    ci->scale_num = 1;
    ci->scale_denom = (unsigned)denom;
    jpeg_start_decompress(ci);

    int w = (int)ci->output_width, h = (int)ci->output_height;
    size_t stride = (size_t)w * 3;
    d->pixels = malloc(stride * (size_t)h);
    if (!d->pixels) {
        snprintf(d->why, sizeof d->why, "out of memory for %dx%d pixels", w, h);
        return -1;
    }
    if (cmyk) {
        d->cmyk = malloc((size_t)w * 4);
        if (!d->cmyk) {
            snprintf(d->why, sizeof d->why, "out of memory for a %d pixel row", w);
            return -1;
        }
        int inverted = ci->saw_Adobe_marker;
        while (ci->output_scanline < ci->output_height) {
            JSAMPROW row = d->cmyk;
            int y = (int)ci->output_scanline;
            jpeg_read_scanlines(ci, &row, 1);
            cmyk_to_rgb(d->cmyk, d->pixels + (size_t)y * stride, w, inverted);
        }
    } else {
        /* Straight into the output, several rows per call (libjpeg's upsampler emits up to
         * rec_outbuf_height rows at once). */
        JSAMPROW rows[16];
        while (ci->output_scanline < ci->output_height) {
            int y = (int)ci->output_scanline, n = h - y < 16 ? h - y : 16;
            for (int i = 0; i < n; i++) rows[i] = d->pixels + (size_t)(y + i) * stride;
            jpeg_read_scanlines(ci, rows, (JDIMENSION)n);
        }
    }
    /* Read up to the EOI marker too: a file cut anywhere, even just before its EOI, is refused the
     * same way (libjpeg's decoder may or may not have read that far on its own). */
    jpeg_finish_decompress(ci);
    out->w = w;
    out->h = h;
    out->rgb = d->pixels;
    d->pixels = NULL;
    if (scale_out) *scale_out = denom;
    return 0;
}

/* -1 with a message unless the first n bytes of a size-byte file start like a JPEG (FF D8 FF). */
static int check_signature(const uint8_t *data, size_t n, uint64_t size, const char *label, char *err, size_t errlen) {
    if (size == 0) return error_at(err, errlen, label, "empty file");
    if (n >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return 0;
    const char *kind = image_format_name(image_sniff(data, n));
    if (kind) return error_at(err, errlen, label, "not a JPEG file (%s signature)", kind);
    if (n < 3) return error_at(err, errlen, label, "not a JPEG file (only %zu bytes)", n);
    return error_at(err, errlen, label, "not a JPEG file (starts with 0x%02x 0x%02x 0x%02x)", data[0], data[1], data[2]);
}

int jpeg_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *opt, Image *out,
                    int *scale_out, char *err, size_t errlen) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (scale_out) *scale_out = 1;
    if (!label) label = "(memory)";
    if (check_signature(data, size, size, label, err, errlen)) return -1;
    Decode *d = malloc(sizeof *d);
    if (!d) return error_at(err, errlen, label, "out of memory");
    d->pixels = d->cmyk = NULL;
    d->why[0] = 0;
    d->cinfo.err = init_errors(&d->err);
    jpeg_create_decompress(&d->cinfo);
    int rc = decode_run(d, data, size, opt, out, scale_out);
    jpeg_destroy_decompress(&d->cinfo);
    if (rc) {
        if (d->why[0]) error_at(err, errlen, label, "%s", d->why);
        else error_at(err, errlen, label, "bad JPEG: %s", d->err.msg);
    }
    free(d->pixels);
    free(d->cmyk);
    free(d);
    return rc;
}

int jpeg_decode_file(const char *path, const JpegOptions *opt, Image *out, int *scale_out, char *err,
                     size_t errlen) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (scale_out) *scale_out = 1;
    uint8_t *buf;
    size_t size;
    if (image_read_file(path, opt, check_signature, &buf, &size, err, errlen)) return -1;
    int rc = jpeg_decode_mem(buf, size, path, opt, out, scale_out, err, errlen);
    free(buf);
    return rc;
}

/* ---- writing ---- */

typedef struct {
    struct jpeg_compress_struct cinfo;
    ErrMgr err;
    unsigned char *buf; /* libjpeg's growing output buffer (malloc'd by jpeg_mem_dest) */
    unsigned long len;
} Encode;

static int encode_run(Encode *e, const Image *im, int quality) {
    struct jpeg_compress_struct *ci = &e->cinfo;
    if (setjmp(e->err.jump)) return -1;
    jpeg_mem_dest(ci, &e->buf, &e->len);
    ci->image_width = (JDIMENSION)im->w;
    ci->image_height = (JDIMENSION)im->h;
    ci->input_components = 3;
    ci->in_color_space = JCS_RGB;
    jpeg_set_defaults(ci);
    jpeg_set_quality(ci, quality, TRUE);
    jpeg_start_compress(ci, TRUE);
    size_t stride = (size_t)im->w * 3;
    while (ci->next_scanline < ci->image_height) {
        JSAMPROW row = im->rgb + (size_t)ci->next_scanline * stride;
        jpeg_write_scanlines(ci, &row, 1);
    }
    jpeg_finish_compress(ci);
    return 0;
}

int jpeg_write_file(const char *path, const Image *im, int quality, char *err, size_t errlen) {
    if (!path || !*path) return error_at(err, errlen, "(no path)", "jpeg_write_file needs a file name");
    if (!im || !im->rgb || im->w <= 0 || im->h <= 0 || im->w > JPEG_MAX_DIMENSION || im->h > JPEG_MAX_DIMENSION)
        return error_at(err, errlen, path, "not written: bad image (%dx%d)", im ? im->w : 0, im ? im->h : 0);
    if (quality < 1 || quality > 100)
        return error_at(err, errlen, path, "not written: quality %d is not in 1..100", quality);

    Encode *e = xmalloc(sizeof *e);
    e->buf = NULL;
    e->len = 0;
    e->cinfo.err = init_errors(&e->err);
    jpeg_create_compress(&e->cinfo);
    int rc = encode_run(e, im, quality);
    jpeg_destroy_compress(&e->cinfo);
    if (rc) {
        error_at(err, errlen, path, "not written: libjpeg: %s", e->err.msg);
        free(e->buf);
        free(e);
        return -1;
    }

    /* One helper for every whole-file write: a device or FIFO at path is refused, a symbolic link
     * written through, and readers see the old file or the whole new one. */
    AtomicFile a;
    if (atomic_open(&a, path, err, errlen)) rc = -1;
    else rc = atomic_commit(&a, !write_full(a.fd, e->buf, e->len), err, errlen);
    free(e->buf);
    free(e);
    return rc;
}

#endif /* CNN_NO_JPEG */
