/* test_png.c: PNG and WebP decoding (src/pipeline/png.c, webp.c), the format dispatch by first bytes
 * (image.c) and image data sets that mix formats (dataset_folder.c, the loader, ./train).
 *
 * PNGs of every colour type and bit depth, interlaced or not, are written here with libpng itself
 * from known samples; the expected RGB is computed from those samples by the rules of PIL's
 * .convert('RGB') (what fastai trains on), and where a python3 with PIL is installed, PIL's own
 * output is compared too. Corrupt and truncated files must come back as errors naming the file
 * (the sanitizer build runs this too). Every file is made in a temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CNN_NO_WEBP
#include <webp/decode.h>
#include <webp/encode.h>
#endif

#include "pipeline/dataset.h"
#include "pipeline/demo_data.h"
#include "pipeline/image.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_png_XXXXXX"
#include "testutil.h"

static void expect_error(const char *path, const char *label, const char *what) {
    Image im = {0};
    char err[512] = "";
    int rc = image_decode_file(path, NULL, &im, NULL, err, sizeof err);
    if (rc != -1) fail_msg("%s: decoded %dx%d, expected an error with \"%s\"", path, im.w, im.h, what);
    assert_null(im.rgb);
    ASSERT_STARTS(err, label);
    ASSERT_HAS(err, what);
}

/* ---- other formats, recognised by their first bytes ---- */

static void test_other_formats_are_named(void **state) {
    (void)state;
    static const struct {
        const char *name, *bytes;
        size_t n;
        const char *what;
    } cases[] = {
        {"a.gif", "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 13, "GIF is not supported (JPEG, PNG and WebP are): convert it"},
        {"a.bmp", "BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00", 12, "BMP is not supported"},
        {"a.tif", "II*\x00\x08\x00\x00\x00\x00\x00", 10, "TIFF is not supported"},
        {"a.heic", "\x00\x00\x00\x18" "ftypheic\x00\x00\x00\x00", 16, "HEIF/AVIF/MP4 is not supported"},
        {"page.jpg", "<!DOCTYPE html><html>", 21, "not an image file (HTML/XML text signature)"},
        {"odd.png", "\x01\x02\x03\x04\x05", 5, "not a JPEG, PNG or WebP file (starts with 0x01 0x02 0x03)"},
        {"empty.png", "", 0, "empty file"},
        {"two.png", "\x89P", 2, "not an image file (only 2 bytes)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path = in_dir(cases[i].name);
        spit(path, cases[i].bytes, cases[i].n);
        char label[600];
        snprintf(label, sizeof label, "%s: ", path);
        expect_error(path, label, cases[i].what);
        /* and from memory, labelled */
        Image im;
        char err[512];
        assert_int_equal(image_decode_mem((const uint8_t *)cases[i].bytes, cases[i].n, "mem", NULL, &im, NULL, err, sizeof err), -1);
        ASSERT_STARTS(err, "mem: ");
        ASSERT_HAS(err, cases[i].what);
    }
}

#ifndef CNN_NO_PNG

#include "png_cases.h"

static const char *case_path(int i) {
    static char name[64];
    const PngCase *c = &png_cases[i];
    snprintf(name, sizeof name, "t%d_d%d_%s%s_%d.png", c->type, c->depth, c->interlace ? "i" : "p", c->trns ? "_trns" : "", i);
    return in_dir(name);
}

static void check_pixels(const PngCase *c, unsigned seed, const Image *im, const char *path) {
    assert_int_equal(im->w, c->w);
    assert_int_equal(im->h, c->h);
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++) {
            uint8_t want[3];
            expected_rgb(c, x, y, seed, want);
            const uint8_t *got = im->rgb + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
            if (memcmp(got, want, 3))
                fail_msg("%s (type %d, %d bits): pixel (%d,%d) is %d,%d,%d, expected %d,%d,%d", path, c->type, c->depth, x,
                         y, got[0], got[1], got[2], want[0], want[1], want[2]);
        }
}

/* Every colour type, bit depth, interlacing and tRNS: exact pixels, from a file and from memory. */
static void test_every_color_type(void **state) {
    (void)state;
    for (int i = 0; i < NCASES; i++) {
        const char *path = case_path(i);
        write_png(path, &png_cases[i], (unsigned)i);
        Image im;
        char err[512];
        int scale = 0;
        if (image_decode_file(path, NULL, &im, &scale, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(scale, 1);
        check_pixels(&png_cases[i], (unsigned)i, &im, path);
        image_free(&im);
        size_t n;
        unsigned char *bytes = slurp(path, &n);
        JpegOptions o = {64, 0, 0};   /* a JPEG-only option: PNG decodes at full size anyway */
        if (image_decode_mem(bytes, n, "mem.png", &o, &im, &scale, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(scale, 1);
        check_pixels(&png_cases[i], (unsigned)i, &im, path);
        image_free(&im);
        free(bytes);
    }
}

/* A python3 that has PIL (the Debian one when PATH's has none), or NULL. */
static const char *python_with_pil(void) {
    static const char *const tries[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof tries / sizeof *tries; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "%s -c 'import PIL.Image' >/dev/null 2>&1", tries[i]);
        if (system(cmd) == 0) return tries[i];
    }
    return NULL;
}

/* The same files through PIL's Image.open(f).convert('RGB'), as fastai loads them: equal bytes,
 * except 16-bit grey, where PIL clips to 255 and we keep the high byte (png.c says why). */
static void test_matches_pil(void **state) {
    (void)state;
    const char *py = python_with_pil();
    if (!py) {
        printf("      (no python3 with PIL: the comparison with PIL is skipped; apt-get install python3-pil)\n");
        return;
    }
    int compared = 0, gray16 = 0;
    for (int i = 0; i < NCASES; i++) {
        const PngCase *c = &png_cases[i];
        const char *path = case_path(i);
        write_png(path, c, (unsigned)i);
        const char *raw = in_dir("pil.rgb");
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "%s -W ignore -c 'import sys, PIL.Image as I; open(sys.argv[2], \"wb\").write(I.open(sys.argv[1]).convert(\"RGB\").tobytes())' '%s' '%s'",
                 py, path, raw);
        assert_int_equal(system(cmd), 0);
        size_t n;
        unsigned char *pil = slurp(raw, &n);
        Image im;
        char err[512];
        if (image_decode_file(path, NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(n, (size_t)im.w * (size_t)im.h * 3);
        if (c->type == PNG_COLOR_TYPE_GRAY && c->depth == 16) {
            /* PIL: min(v, 255); ours: v >> 8 */
            for (size_t k = 0; k < n; k++) {
                unsigned v = sample_at(c, (int)(k / 3 % (size_t)c->w), (int)(k / 3 / (size_t)c->w), 0, (unsigned)i);
                assert_int_equal(pil[k], v > 255 ? 255 : v);
                assert_int_equal(im.rgb[k], v >> 8);
            }
            gray16++;
        } else if (memcmp(pil, im.rgb, n)) {
            size_t k = 0;
            while (pil[k] == im.rgb[k]) k++;
            fail_msg("%s: byte %zu is %d here, %d in PIL", path, k, im.rgb[k], pil[k]);
        }
        compared++;
        image_free(&im);
        free(pil);
    }
    printf("      %d PNGs decode as PIL's convert('RGB') does (%d 16-bit grey: high byte, PIL clips)\n", compared, gray16);
}

/* The bytes of an interlaced RGB PNG with a tEXt chunk (the corruption tests' victim). */
static unsigned char *victim(size_t *n) {
    const PngCase c = {PNG_COLOR_TYPE_RGB, 8, 1, 0, 23, 17};
    const char *path = in_dir("victim.png");
    write_png(path, &c, 99);
    return slurp(path, n);
}

/* The offset of the first chunk of this type, or 0. */
static size_t find_chunk(const unsigned char *b, size_t n, const char *type) {
    for (size_t off = 8; off + 12 <= n;) {
        if (!memcmp(b + off + 4, type, 4)) return off;
        off += 12 + get32(b + off);
    }
    return 0;
}

/* Cut anywhere, a byte flipped in a critical chunk, zlib data broken under a right CRC: an error
 * naming the file, never a crash or a half image. */
static void test_corrupt_and_truncated(void **state) {
    (void)state;
    size_t n;
    unsigned char *good = victim(&n);
    unsigned char *b = xmalloc(n);
    Image im;
    char err[512];
    for (size_t cut = 0; cut < n; cut++) {
        int rc = image_decode_mem(good, cut, "cut.png", NULL, &im, NULL, err, sizeof err);
        if (rc != -1) fail_msg("cut at %zu of %zu bytes: decoded", cut, n);
        assert_null(im.rgb);
        ASSERT_STARTS(err, "cut.png: ");
    }
    /* a cut file from disk, as the loader meets it */
    spit(in_dir("cut.png"), good, n - 20);
    expect_error(in_dir("cut.png"), in_dir("cut.png"), "bad PNG");
    spit(in_dir("cut2.png"), good, n / 2);
    expect_error(in_dir("cut2.png"), in_dir("cut2.png"), "bad PNG: ");

    /* a flipped byte in IHDR and in IDAT: libpng's CRC check */
    size_t ihdr = find_chunk(good, n, "IHDR"), idat = find_chunk(good, n, "IDAT");
    assert_true(ihdr && idat);
    memcpy(b, good, n);
    b[ihdr + 8 + 9] ^= 0x40;
    assert_int_equal(image_decode_mem(b, n, "ihdr.png", NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "ihdr.png: bad PNG: IHDR: CRC error");
    memcpy(b, good, n);
    b[idat + 8 + get32(good + idat) / 2] ^= 0x01;
    assert_int_equal(image_decode_mem(b, n, "idat.png", NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "idat.png: bad PNG: IDAT: ");   /* zlib's check or the CRC, whichever libpng meets first */

    /* broken compressed data under a right CRC: zlib's error, through libpng's longjmp */
    memcpy(b, good, n);
    uint32_t len = get32(good + idat);
    for (uint32_t k = 2; k < len; k++) b[idat + 8 + k] = (uint8_t)(k * 131);
    put32(b + idat + 8 + len, crc32_of(b + idat + 4, len + 4));
    assert_int_equal(image_decode_mem(b, n, "zlib.png", NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_STARTS(err, "zlib.png: bad PNG: ");

    /* a bad CRC on an ancillary chunk (tEXt): libpng drops the chunk, the pixels are all there */
    size_t text = find_chunk(good, n, "tEXt");
    assert_true(text);
    memcpy(b, good, n);
    b[text + 8] ^= 0x20;
    Image ref;
    if (image_decode_mem(good, n, "good.png", NULL, &ref, NULL, err, sizeof err)) fail_msg("%s", err);
    if (image_decode_mem(b, n, "text.png", NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    assert_memory_equal(im.rgb, ref.rgb, (size_t)ref.w * (size_t)ref.h * 3);
    image_free(&im);
    image_free(&ref);

    /* a zero width in IHDR with its CRC right */
    memcpy(b, good, n);
    put32(b + ihdr + 8, 0);
    put32(b + ihdr + 8 + 13, crc32_of(b + ihdr + 4, 17));
    assert_int_equal(image_decode_mem(b, n, "zero.png", NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_STARTS(err, "zero.png: bad PNG: ");

    /* every single-byte flip after the signature: an error or an image, never a crash (ASan run) */
    for (size_t k = 8; k < n; k++) {
        memcpy(b, good, n);
        b[k] ^= (uint8_t)(1u << (k % 8));
        if (image_decode_mem(b, n, "flip.png", NULL, &im, NULL, err, sizeof err) == 0) {
            assert_int_equal(im.w, 23);
            image_free(&im);
        } else {
            assert_null(im.rgb);
            ASSERT_STARTS(err, "flip.png: ");
        }
    }
    free(b);
    free(good);
}

/* [data] max_megapixels and max_file_mb hold for PNG as for JPEG. */
static void test_size_limits(void **state) {
    (void)state;
    size_t n;
    unsigned char *good = victim(&n);   /* 23x17 = 391 pixels */
    const char *path = in_dir("limits.png");
    spit(path, good, n);
    Image im;
    char err[512];
    JpegOptions at = {0, 391, 0}, below = {0, 390, 0};
    if (image_decode_file(path, &at, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    image_free(&im);
    assert_int_equal(image_decode_file(path, &below, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "the header claims 23x17 = 391 pixels, over the limit of 390");
    JpegOptions small = {.max_file_bytes = (long long)n - 1};
    assert_int_equal(image_decode_file(path, &small, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "over the limit of");
    ASSERT_HAS(err, "[data] max_file_mb");

    /* a header claiming 40000 x 40000 (1.6 Gpx) with its CRC right: refused before any allocation */
    size_t ihdr = find_chunk(good, n, "IHDR");
    put32(good + ihdr + 8, 40000);
    put32(good + ihdr + 12, 40000);
    put32(good + ihdr + 8 + 13, crc32_of(good + ihdr + 4, 17));
    spit(path, good, n);
    expect_error(path, path, "over the limit of 67108864");
    free(good);
}

/* The format comes from the bytes, not the name: a PNG named .jpg decodes. */
static void test_png_named_jpg(void **state) {
    (void)state;
    const PngCase c = {PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, 0, 10, 10};
    const char *path = in_dir("really_a_png.jpg");
    write_png(path, &c, 5);
    Image im;
    char err[512];
    if (image_decode_file(path, NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    check_pixels(&c, 5, &im, path);
    image_free(&im);
    /* jpeg_decode_file itself still says what it is */
    assert_int_equal(jpeg_decode_file(path, NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "not a JPEG file (PNG signature)");
}

#else /* CNN_NO_PNG */

static void test_png_refused_without_libpng(void **state) {
    (void)state;
    const char *path = in_dir("a.png");
    spit(path, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
    expect_error(path, path, "PNG is not supported by this build (made with PNG=0, without libpng): install libpng-dev");
}

#endif /* CNN_NO_PNG */

/* ---- WebP ---- */

#ifndef CNN_NO_WEBP
static void test_webp(void **state) {
    (void)state;
    int w = 21, h = 13;
    uint8_t *rgba = xmalloc((size_t)w * h * 4), *rgb = xmalloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++) {
        for (int k = 0; k < 3; k++) rgb[3 * i + k] = rgba[4 * i + k] = (uint8_t)(i * (7 + 3 * k) + k * 50);
        rgba[4 * i + 3] = (uint8_t)(1 + i % 255);   /* no fully transparent pixel: lossless keeps its RGB */
    }
    uint8_t *out = NULL;
    Image im;
    char err[512];
    /* lossless RGB and RGBA: exact, alpha dropped */
    for (int alpha = 0; alpha < 2; alpha++) {
        size_t n = alpha ? WebPEncodeLosslessRGBA(rgba, w, h, w * 4, &out) : WebPEncodeLosslessRGB(rgb, w, h, w * 3, &out);
        assert_true(n > 0);
        const char *path = in_dir(alpha ? "rgba.webp" : "rgb.webp");
        spit(path, out, n);
        WebPFree(out);
        if (image_decode_file(path, NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(im.w, w);
        assert_int_equal(im.h, h);
        assert_memory_equal(im.rgb, rgb, (size_t)w * h * 3);
        image_free(&im);
    }
    /* lossy: libwebp's plain decode, byte for byte; cut short: an error naming the file */
    size_t n = WebPEncodeRGB(rgb, w, h, w * 3, 90, &out);
    assert_true(n > 40);
    if (image_decode_mem(out, n, "lossy.webp", NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    int rw, rh;
    uint8_t *ref = WebPDecodeRGB(out, n, &rw, &rh);
    assert_non_null(ref);
    assert_true(rw == w && rh == h);
    assert_memory_equal(im.rgb, ref, (size_t)w * h * 3);
    WebPFree(ref);
    image_free(&im);
    for (size_t cut = 0; cut < n; cut += 7) {
        assert_int_equal(image_decode_mem(out, cut, "cut.webp", NULL, &im, NULL, err, sizeof err), -1);
        ASSERT_STARTS(err, "cut.webp: ");
    }
    JpegOptions small = {0, w * h - 1, 0};
    assert_int_equal(image_decode_mem(out, n, "big.webp", &small, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "over the limit of");
    WebPFree(out);
    /* an animated WebP (VP8X with the animation flag): refused by name */
    static const uint8_t anim[] = {'R', 'I', 'F', 'F', 30, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X', 10, 0, 0, 0,
                                   0x02, 0, 0, 0, 9, 0, 0, 9, 0, 0, 'A', 'N', 'I', 'M', 6, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(image_decode_mem(anim, sizeof anim, "anim.webp", NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "anim.webp: animated WebP is not supported");
    free(rgba);
    free(rgb);
}
#else
static void test_webp(void **state) {
    (void)state;
    const char *path = in_dir("a.webp");
    spit(path, "RIFF\x1e\0\0\0WEBPVP8L", 16);
    expect_error(path, path, "WebP is not supported by this build (made with WEBP=0, without libwebp): install libwebp-dev");
}
#endif

/* ---- data sets mixing formats ---- */

#ifndef CNN_NO_PNG
/* Re-save a JPEG as a PNG of colour type `type` (grey: the red channel) next to it, and remove it. */
static void jpeg_to_png(const char *jpg, int type) {
    Image im;
    char err[512], png_path[1024];
    if (jpeg_decode_file(jpg, NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    snprintf(png_path, sizeof png_path, "%.*s.png", (int)(strlen(jpg) - 4), jpg);
    FILE *f = fopen(png_path, "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng could not write %s", png_path);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)im.w, (png_uint_32)im.h, 8, type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    int n = channels_of(type);
    uint8_t *row = xmalloc((size_t)im.w * 4);
    for (int y = 0; y < im.h; y++) {
        for (int x = 0; x < im.w; x++)
            for (int k = 0; k < n; k++) row[x * n + k] = k < 3 ? im.rgb[((size_t)y * im.w + x) * 3 + k] : 200;
        png_write_row(png, row);
    }
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    assert_int_equal(fclose(f), 0);
    free(row);
    image_free(&im);
    assert_int_equal(unlink(jpg), 0);
}

/* A folder data set with JPEGs, PNGs (RGB, RGBA, grey) and a WebP lists them all and reports a GIF;
 * ./train trains on it without skipping any image. */
static void test_mixed_folder_trains(void **state) {
    (void)state;
    char root[600], path[1200], err[1024];
    snprintf(root, sizeof root, "%s/mixed", dir);
    if (demo_data_write(root, 4, 2, 32, 11, err, sizeof err)) fail_msg("%s", err);
    static const int types[] = {PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA, PNG_COLOR_TYPE_GRAY};
    int pngs = 0;
    for (int c = 0; c < SYNTH_CLASSES; c++)
        for (int i = 0; i < 4; i++) {
            if ((c + i) % 2) continue;
            snprintf(path, sizeof path, "%s/train/%s/%d.jpg", root, synth_class_names[c], i);
            jpeg_to_png(path, types[(c + i) % 3]);
            pngs++;
        }
    snprintf(path, sizeof path, "%s/val/%s/0.jpg", root, synth_class_names[1]);
    jpeg_to_png(path, PNG_COLOR_TYPE_RGB);
    int extra = 0;
#ifndef CNN_NO_WEBP
    {
        Image im;
        snprintf(path, sizeof path, "%s/train/%s/1.jpg", root, synth_class_names[2]);
        if (jpeg_decode_file(path, NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
        uint8_t *out;
        size_t n = WebPEncodeLosslessRGB(im.rgb, im.w, im.h, im.w * 3, &out);
        snprintf(path, sizeof path, "%s/train/%s/extra.webp", root, synth_class_names[2]);
        spit(path, out, n);
        WebPFree(out);
        image_free(&im);
        extra = 1;
    }
#endif
    snprintf(path, sizeof path, "%s/train/%s/anim.gif", root, synth_class_names[3]);
    spit(path, "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 13);

    DatasetSpec spec = {.format = DATA_FOLDER, .root = root};
    Dataset ds;
    if (dataset_open(&spec, 0, &ds, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(ds.ntrain, 4 * SYNTH_CLASSES + extra);
    assert_int_equal(ds.nvalid, 2 * SYNTH_CLASSES);
    assert_int_equal(ds.skipped, 1);   /* the GIF */
    int listed_png = 0;
    for (int i = 0; i < ds.ntrain; i++) listed_png += strstr(ds.train[i].path, ".png") != NULL;
    assert_int_equal(listed_png, pngs);
    dataset_free(&ds);
    /* strict: the GIF is the error, by name */
    assert_int_equal(dataset_open(&spec, 1, &ds, err, sizeof err), -1);
    ASSERT_HAS(err, "anim.gif: 1 image file in this folder (this one: GIF) has a format this build does not decode");
    dataset_free(&ds);

    snprintf(path, sizeof path, "%s/run.ini", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nseed = 3\nout_dir = %s/runs\n"
               "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 8\n",
            root, dir);
    fclose(f);
    static char out[1 << 16];
    int rc = run_program_to_end(path, NULL, out, sizeof out);
    if (rc) fail_msg("./train failed (%d): %s", rc, out);
    ASSERT_HAS(out, "anim.gif");
    ASSERT_LACKS(out, "skipped a bad image");
}
#endif

static void test_version_names_the_decoders(void **state) {
    (void)state;
    char cmd[] = "./train --version", out[2048];
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    assert_int_equal(pclose(p), 0);
    ASSERT_HAS(out, "\npng: ");
    ASSERT_HAS(out, "\nwebp: ");
#ifndef CNN_NO_PNG
    ASSERT_HAS(out, "png: libpng 1.");
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_other_formats_are_named),
#ifndef CNN_NO_PNG
        cmocka_unit_test(test_every_color_type),
        cmocka_unit_test(test_matches_pil),
        cmocka_unit_test(test_corrupt_and_truncated),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_png_named_jpg),
        cmocka_unit_test(test_mixed_folder_trains),
#else
        cmocka_unit_test(test_png_refused_without_libpng),
#endif
        cmocka_unit_test(test_webp),
        cmocka_unit_test(test_version_names_the_decoders),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
