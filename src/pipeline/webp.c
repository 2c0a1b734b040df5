/* pipeline/webp.c: still WebP decoding through libwebp (image.h), to 8-bit RGB with the alpha
 * channel dropped, as PIL's .convert('RGB') gives it (PIL decodes WebP with libwebp too). libwebp
 * decodes from memory and reports errors by return value, so many loader threads can call this
 * at once. An animated WebP is refused: we take no frame of it silently. */
#include "pipeline/image.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"

#ifdef CNN_NO_WEBP
/* Built with make WEBP=0 (webp/decode.h was missing): WebP files are refused, saying why. */
int webp_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *opt, Image *out, char *err,
                    size_t errlen) {
    (void)data, (void)size, (void)opt;
    out->w = out->h = 0;
    out->rgb = NULL;
    return error_at(err, errlen, label ? label : "(memory)",
                    "WebP is not supported by this build (made with WEBP=0, without libwebp): install libwebp-dev "
                    "and rebuild, or convert the file: dwebp FILE -o FILE.png");
}
const char *webp_library(void) { return "none (built with WEBP=0)"; }
#else

#include <webp/decode.h>

const char *webp_library(void) {
    static char name[48];
    int v = WebPGetDecoderVersion();
    snprintf(name, sizeof name, "libwebp %d.%d.%d", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
    return name;
}

static const char *status_text(VP8StatusCode s) {
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt data";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "a feature libwebp does not support";
    case VP8_STATUS_SUSPENDED: return "decoding suspended";
    case VP8_STATUS_USER_ABORT: return "decoding aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the file ends early (truncated)";
    case VP8_STATUS_OK: break;
    }
    return "unknown error";
}

int webp_decode_mem(const uint8_t *data, size_t size, const char *label, const JpegOptions *opt, Image *out, char *err,
                    size_t errlen) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (!label) label = "(memory)";
    WebPBitstreamFeatures f;
    VP8StatusCode s = WebPGetFeatures(data, size, &f);
    if (s != VP8_STATUS_OK) return error_at(err, errlen, label, "bad WebP: %s", status_text(s));
    if (f.has_animation)
        return error_at(err, errlen, label,
                        "animated WebP is not supported: convert one frame to a still image (e.g. anim_dump or "
                        "ImageMagick's convert 'FILE[0]' FILE.png)");
    long max_px = opt && opt->max_pixels > 0 ? opt->max_pixels : JPEG_DEFAULT_MAX_PIXELS;
    unsigned long long px = (unsigned long long)f.width * (unsigned long long)f.height;
    if (f.width <= 0 || f.height <= 0) return error_at(err, errlen, label, "bad WebP: %dx%d pixels", f.width, f.height);
    if (px > (unsigned long long)max_px)
        return error_at(err, errlen, label, "the header claims %dx%d = %llu pixels, over the limit of %ld", f.width,
                        f.height, px, max_px);
    size_t stride = (size_t)f.width * 3, bytes = stride * (size_t)f.height;
    uint8_t *pixels = malloc(bytes);
    if (!pixels) return error_at(err, errlen, label, "out of memory for %dx%d pixels", f.width, f.height);
    /* Checks the whole bitstream: a cut or damaged file fails here, it is not padded with grey. */
    if (!WebPDecodeRGBInto(data, size, pixels, bytes, (int)stride)) {
        free(pixels);
        return error_at(err, errlen, label, "bad WebP: the image data is corrupt or truncated");
    }
    out->w = f.width;
    out->h = f.height;
    out->rgb = pixels;
    return 0;
}

#endif /* CNN_NO_WEBP */
