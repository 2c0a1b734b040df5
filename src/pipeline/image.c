/* pipeline/image.c: one way in for every image file (image.h): the format is told from the first
 * bytes, never from the name (data sets in the wild hold PNGs named .jpg), and the file goes to
 * its decoder (jpeg.c, png.c, webp.c). Formats we recognise but do not decode are refused by name
 * with what to do, before the rest of the file is read. */
#include "pipeline/image.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"

void image_free(Image *im) {
    if (!im) return;
    free(im->rgb);
    im->rgb = NULL;
    im->w = im->h = 0;
}

ImageFormat image_sniff(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return IMAGE_JPEG;
    if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return IMAGE_PNG;
    if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) return IMAGE_WEBP;
    if (n >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6))) return IMAGE_GIF;
    if (n >= 4 && (!memcmp(d, "II*\0", 4) || !memcmp(d, "MM\0*", 4))) return IMAGE_TIFF;
    if (n >= 12 && !memcmp(d + 4, "ftyp", 4)) return IMAGE_HEIF;
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return IMAGE_BMP;
    if (n >= 2 && d[0] == 0x1f && d[1] == 0x8b) return IMAGE_GZIP;
    if (n >= 4 && !memcmp(d, "PK\3\4", 4)) return IMAGE_ZIP;
    if (n >= 1 && d[0] == '<') return IMAGE_TEXT;
    return IMAGE_UNKNOWN;
}

const char *image_format_name(ImageFormat f) {
    switch (f) {
    case IMAGE_JPEG: return "JPEG";
    case IMAGE_PNG: return "PNG";
    case IMAGE_WEBP: return "WebP";
    case IMAGE_GIF: return "GIF";
    case IMAGE_TIFF: return "TIFF";
    case IMAGE_HEIF: return "HEIF/AVIF/MP4";
    case IMAGE_BMP: return "BMP";
    case IMAGE_GZIP: return "gzip";
    case IMAGE_ZIP: return "zip";
    case IMAGE_TEXT: return "HTML/XML text";
    case IMAGE_UNKNOWN: break;
    }
    return NULL;
}

/* Which decoders this build has (make JPEG=0, PNG=0, WEBP=0 leave theirs out). */
#ifdef CNN_NO_JPEG
#define HAVE_JPEG_DECODER 0
#else
#define HAVE_JPEG_DECODER 1
#endif
#ifdef CNN_NO_PNG
#define HAVE_PNG_DECODER 0
#else
#define HAVE_PNG_DECODER 1
#endif
#ifdef CNN_NO_WEBP
#define HAVE_WEBP_DECODER 0
#else
#define HAVE_WEBP_DECODER 1
#endif

int image_format_decoded(ImageFormat f) {
    static const int built[] = {[IMAGE_JPEG] = HAVE_JPEG_DECODER, [IMAGE_PNG] = HAVE_PNG_DECODER,
                                [IMAGE_WEBP] = HAVE_WEBP_DECODER};
    return (int)f >= 0 && (size_t)f < sizeof built / sizeof *built && built[f];
}

static int decode_known(ImageFormat f, const uint8_t *data, size_t size, const char *label, const JpegOptions *opt,
                        Image *out, int *scale_out, char *err, size_t errlen) {
    if (f == IMAGE_PNG) return png_decode_mem(data, size, label, opt, out, err, errlen);
    if (f == IMAGE_WEBP) return webp_decode_mem(data, size, label, opt, out, err, errlen);
    return jpeg_decode_mem(data, size, label, opt, out, scale_out, err, errlen);
}

/* -1 with a message unless the first n bytes (of a size-byte file) are a format we decode. */
static int check_format(const uint8_t *d, size_t n, uint64_t size, const char *label, char *err, size_t errlen) {
    if (size == 0) return error_at(err, errlen, label, "empty file");
    ImageFormat f = image_sniff(d, n);
    const char *name = image_format_name(f);
    switch (f) {
    case IMAGE_JPEG: case IMAGE_PNG: case IMAGE_WEBP:
        if (image_format_decoded(f)) return 0;
        /* built without its library: the decoder's stub refuses it, saying which package to install */
        Image none;
        return decode_known(f, NULL, 0, label, NULL, &none, NULL, err, errlen);
    case IMAGE_GIF: case IMAGE_TIFF: case IMAGE_BMP: case IMAGE_HEIF:
        return error_at(err, errlen, label,
                        "%s is not supported (JPEG, PNG and WebP are): convert it, e.g. with ImageMagick: "
                        "mogrify -format png FILE",
                        name);
    case IMAGE_GZIP: case IMAGE_ZIP: case IMAGE_TEXT:
        return error_at(err, errlen, label, "not an image file (%s signature)", name);
    case IMAGE_UNKNOWN: break;
    }
    if (n < 3) return error_at(err, errlen, label, "not an image file (only %zu bytes)", n);
    return error_at(err, errlen, label, "not a JPEG, PNG or WebP file (starts with 0x%02x 0x%02x 0x%02x)", d[0], d[1],
                    d[2]);
}

int image_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *opt, Image *out,
                     int *scale_out, char *err, size_t errlen) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (scale_out) *scale_out = 1;
    if (!label) label = "(memory)";
    if (check_format(data, size, size, label, err, errlen)) return -1;
    return decode_known(image_sniff(data, size), data, size, label, opt, out, scale_out, err, errlen);
}

int image_read_file(const char *path, const JpegOptions *opt, ImageHeadCheck check, uint8_t **data, size_t *size,
                    char *err, size_t errlen) {
    *data = NULL;
    *size = 0;
    /* The first bytes, then the size, before the rest: a huge file that is no image (a video named
     * .jpg) or is over the limit is refused without reading it (reading first cost 3 GB and 20 s
     * per loader thread for a 3 GB file). */
    uint64_t bytes;
    int fd = open_regular(path, &bytes, err, errlen);
    if (fd < 0) return -1;
    uint8_t head[16], *buf = NULL;
    size_t n = bytes < sizeof head ? (size_t)bytes : sizeof head;
    long long max = opt && opt->max_file_bytes > 0 ? opt->max_file_bytes : JPEG_DEFAULT_MAX_FILE_BYTES;
    int rc = -1;
    if (read_full(fd, head, n, 0, path, err, errlen) || check(head, n, bytes, path, err, errlen)) goto done;
    if (bytes > (uint64_t)max) {
        error_at(err, errlen, path, "%llu bytes, over the limit of %lld bytes for an image file ([data] max_file_mb)",
                 (unsigned long long)bytes, max);
        goto done;
    }
    buf = malloc((size_t)bytes);
    if (!buf) {
        error_at(err, errlen, path, "out of memory reading its %llu bytes", (unsigned long long)bytes);
        goto done;
    }
    memcpy(buf, head, n);
    if (read_full(fd, buf + n, (size_t)bytes - n, n, path, err, errlen)) goto done;
    *data = buf;
    *size = (size_t)bytes;
    buf = NULL;
    rc = 0;
done:
    close(fd);
    free(buf);
    return rc;
}

int image_decode_file(const char *path, const JpegOptions *opt, Image *out, int *scale_out, char *err,
                      size_t errlen) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (scale_out) *scale_out = 1;
    uint8_t *buf;
    size_t size;
    if (image_read_file(path, opt, check_format, &buf, &size, err, errlen)) return -1;
    int rc = decode_known(image_sniff(buf, size < 16 ? size : 16), buf, size, path, opt, out, scale_out, err, errlen);
    free(buf);
    return rc;
}
