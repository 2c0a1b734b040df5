/* test_jpeg.c: JPEG decoding and writing (src/pipeline/jpeg.c) and the demo data set (src/pipeline/demo_data.c).
 *
 * The reference for decoded pixels is libjpeg itself, driven the plain way (stdio source, default
 * settings) by this file, so a full-size decode must match byte for byte. Every file used is made here
 * in a temporary folder, except the optional smoke check over a class folder of the shared Imagenette
 * copy (../shared/data/..., relative to the repository root, where the tests run). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

#include "pipeline/demo_data.h"
#include "pipeline/image.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_jpeg_XXXXXX"
#include "testutil.h"

#define IMAGENETTE_CLASS "../shared/data/imagenette2-224/val/n01440764"

/* A photo-like test picture: smooth gradients, a hard-edged disc and a little noise. */
static void pattern(int w, int h, unsigned seed, uint8_t *rgb) {
    uint32_t s = seed * 2654435761u + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float u = (float)x / (float)w, v = (float)y / (float)h;
            float c[3] = {128 + 100 * sinf(6 * u + (float)seed) * cosf(4 * v), 230 * u, 40 + 200 * v};
            float dx = (float)x - 0.35f * (float)w, dy = (float)y - 0.5f * (float)h, r = 0.25f * (float)h;
            if (dx * dx + dy * dy < r * r) c[0] = 240, c[1] = 40, c[2] = 60;
            for (int k = 0; k < 3; k++) {
                s = s * 1664525u + 1013904223u;
                float p = c[k] + (float)((int)(s >> 28) - 8);
                rgb[((size_t)y * w + x) * 3 + k] = (uint8_t)(p < 0 ? 0 : p > 255 ? 255 : p);
            }
        }
}

/* ---- an encoder and a reference decoder, straight libjpeg ---- */

typedef struct {
    int quality;
    int progressive;
    int sub444;          /* 1: no chroma subsampling */
    int restart_rows;    /* restart marker every N MCU rows */
    int arith;           /* arithmetic coding */
    int ycck;            /* CMYK input stored as YCCK */
    int no_adobe;        /* CMYK without the Adobe marker */
} EncOpt;

/* Encode pixels of `comps` components in colour space cs (JCS_RGB, JCS_GRAYSCALE, JCS_CMYK). */
static unsigned char *encode(const uint8_t *px, int w, int h, int comps, J_COLOR_SPACE cs, const EncOpt *o,
                             size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, o && o->quality ? o->quality : 90, TRUE);
    if (o && o->ycck) jpeg_set_colorspace(&c, JCS_YCCK);
    if (o && o->no_adobe) c.write_Adobe_marker = FALSE;
    if (o && o->sub444)
        for (int i = 0; i < c.num_components; i++) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    if (o && o->progressive) jpeg_simple_progression(&c);
    if (o && o->restart_rows) c.restart_in_rows = o->restart_rows;
    if (o && o->arith) c.arith_code = TRUE;
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)px + (size_t)c.next_scanline * w * comps;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *len = n;
    return buf;
}

/* Decode a file with libjpeg the textbook way into out_cs (JCS_RGB or JCS_GRAYSCALE), at 1/denom. */
static uint8_t *ref_decode(const char *path, J_COLOR_SPACE out_cs, int denom, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct jpeg_decompress_struct d;
    struct jpeg_error_mgr jerr;
    d.err = jpeg_std_error(&jerr);
    jpeg_create_decompress(&d);
    jpeg_stdio_src(&d, f);
    jpeg_read_header(&d, TRUE);
    d.out_color_space = out_cs;
    d.scale_num = 1;
    d.scale_denom = (unsigned)denom;
    jpeg_start_decompress(&d);
    *w = (int)d.output_width;
    *h = (int)d.output_height;
    size_t stride = (size_t)d.output_width * d.output_components;
    uint8_t *px = xmalloc(stride * d.output_height);
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = px + d.output_scanline * stride;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    fclose(f);
    return px;
}

static const char *write_pattern_jpeg(const char *name, int w, int h, const EncOpt *o) {
    uint8_t *px = xmalloc((size_t)w * h * 3);
    pattern(w, h, (unsigned)(w + h), px);
    size_t n;
    unsigned char *jpg = encode(px, w, h, 3, JCS_RGB, o, &n);
    const char *path = in_dir(name);
    spit(path, jpg, n);
    free(jpg);
    free(px);
    return path;
}

static Image decode_ok(const char *path, int min_short_side, int *scale) {
    JpegOptions o = {min_short_side, 0, 0};
    Image im;
    char err[512];
    if (jpeg_decode_file(path, &o, &im, scale, err, sizeof err)) fail_msg("%s", err);
    assert_non_null(im.rgb);
    return im;
}

/* ---- tests ---- */

/* Full-size decodes equal libjpeg's own, byte for byte, for the common encodings; DCT-scaled ones
 * equal libjpeg's at the same scale. */
static void test_matches_libjpeg(void **state) {
    (void)state;
    static const struct {
        const char *name;
        int w, h;
        EncOpt o;
    } cases[] = {
        {"base420.jpg", 160, 120, {.quality = 85}},
        {"base444.jpg", 160, 120, {.quality = 95, .sub444 = 1}},
        {"odd.jpg", 257, 199, {.quality = 75}},
        {"progressive.jpg", 200, 150, {.quality = 90, .progressive = 1}},
        {"restart.jpg", 200, 150, {.quality = 90, .restart_rows = 1}},
        {"arith.jpg", 120, 90, {.quality = 90, .arith = 1}},
        {"tiny.jpg", 1, 1, {.quality = 90}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_pattern_jpeg(cases[i].name, cases[i].w, cases[i].h, &cases[i].o);
        for (int denom = 1; denom <= 8; denom *= 2) {
            /* the smallest min_short_side that picks this denominator (a tiny image may go smaller) */
            int s = cases[i].w < cases[i].h ? cases[i].w : cases[i].h, min = denom == 1 ? 0 : (s + denom - 1) / denom;
            int rw, rh, scale;
            Image im = decode_ok(path, min, &scale);
            if (s >= 8 && scale != denom) fail_msg("%s: scale 1/%d, expected 1/%d", path, scale, denom);
            uint8_t *ref = ref_decode(path, JCS_RGB, scale, &rw, &rh);
            assert_int_equal(im.w, rw);
            assert_int_equal(im.h, rh);
            if (memcmp(im.rgb, ref, (size_t)rw * rh * 3))
                fail_msg("%s at 1/%d: pixels differ from libjpeg's", cases[i].name, scale);
            image_free(&im);
            free(ref);
        }
        /* the in-memory entry point gives the same */
        size_t n;
        unsigned char *bytes = slurp(path, &n);
        int rw, rh;
        uint8_t *ref = ref_decode(path, JCS_RGB, 1, &rw, &rh);
        Image im;
        char err[512];
        if (jpeg_decode_mem(bytes, n, "mem", NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(im.w, rw);
        assert_int_equal(im.h, rh);
        assert_memory_equal(im.rgb, ref, (size_t)rw * rh * 3);
        image_free(&im);
        assert_null(im.rgb);
        free(ref);
        free(bytes);
    }
}

/* Box-average the full decode by f (w, h multiples of f). */
static uint8_t *box_down(const Image *im, int f) {
    int w = im->w / f, h = im->h / f;
    uint8_t *o = xmalloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int j = 0; j < f; j++)
                    for (int i = 0; i < f; i++) sum += im->rgb[((size_t)(y * f + j) * im->w + x * f + i) * 3 + c];
                o[((size_t)y * w + x) * 3 + c] = (uint8_t)((sum + f * f / 2) / (f * f));
            }
    return o;
}

/* A DCT-scaled decode is close to a full decode box-averaged to the same size: the reduced IDCT
 * keeps the low frequencies, which is what averaging keeps. Bound: mean absolute error <= 1.5 levels
 * (of 255) per channel at every scale; measured 0.4 to 0.6 on this picture (4:2:0 and 4:4:4), and
 * 0.35 to 0.63 on average over the Imagenette val images. */
static void test_scaled_close_to_box(void **state) {
    (void)state;
    const EncOpt opts[2] = {{.quality = 95}, {.quality = 95, .sub444 = 1}};
    for (int k = 0; k < 2; k++) {
        const char *path = write_pattern_jpeg(k ? "box444.jpg" : "box420.jpg", 320, 240, &opts[k]);
        int scale;
        Image full = decode_ok(path, 0, &scale);
        assert_int_equal(scale, 1);
        for (int f = 2; f <= 8; f *= 2) {
            Image small = decode_ok(path, 240 / f, &scale);
            assert_int_equal(scale, f);
            assert_int_equal(small.w, 320 / f);
            assert_int_equal(small.h, 240 / f);
            uint8_t *box = box_down(&full, f);
            double mae = 0;
            size_t n = (size_t)small.w * small.h * 3;
            for (size_t i = 0; i < n; i++) mae += abs((int)small.rgb[i] - (int)box[i]);
            mae /= (double)n;
            print_message("  %s 1/%d: mean abs difference from a box downscale %.2f\n", k ? "4:4:4" : "4:2:0", f, mae);
            if (mae > 1.5) fail_msg("1/%d: mean absolute error %.2f > 1.5", f, mae);
            free(box);
            image_free(&small);
        }
        image_free(&full);
    }
}

/* min_short_side picks the largest reduction whose output short side (rounded up, as libjpeg rounds)
 * is still >= the minimum. */
static void test_scale_choice(void **state) {
    (void)state;
    static const struct { int w, h, min, denom; } cases[] = {
        {400, 300, 0, 1},   {400, 300, 100, 2}, {400, 300, 150, 2}, {400, 300, 151, 1}, {400, 300, 300, 1},
        {400, 300, 1000, 1}, {400, 300, 75, 4},  {400, 300, 76, 2},  {400, 300, 38, 8},  {400, 300, 39, 4},
        {400, 300, 1, 8},   {300, 400, 100, 2}, {300, 400, 38, 8},  {224, 224, 128, 1}, {224, 224, 112, 2},
        {224, 224, 64, 2},  {224, 224, 56, 4},  {224, 224, 29, 4},  {224, 224, 28, 8},  {225, 225, 29, 8},
        {225, 225, 30, 4},  {500, 333, 42, 8},  {500, 333, 43, 4},  {7, 5, 1, 8},       {7, 5, 2, 4},       {7, 5, 3, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w = cases[i].w, h = cases[i].h, d = cases[i].denom;
        uint8_t *gray = xcalloc((size_t)w * h, 1);
        size_t n;
        unsigned char *jpg = encode(gray, w, h, 1, JCS_GRAYSCALE, NULL, &n);
        const char *path = in_dir("scale.jpg");
        spit(path, jpg, n);
        int scale;
        Image im = decode_ok(path, cases[i].min, &scale);
        if (scale != d || im.w != (w + d - 1) / d || im.h != (h + d - 1) / d)
            fail_msg("%dx%d min %d: got 1/%d (%dx%d), expected 1/%d (%dx%d)", w, h, cases[i].min, scale, im.w, im.h, d,
                     (w + d - 1) / d, (h + d - 1) / d);
        image_free(&im);
        free(jpg);
        free(gray);
    }
}

/* A one-component JPEG comes out as RGB with R = G = B = libjpeg's grey. */
static void test_grayscale(void **state) {
    (void)state;
    int w = 123, h = 77;
    uint8_t *rgb = xmalloc((size_t)w * h * 3), *g = xmalloc((size_t)w * h);
    pattern(w, h, 3, rgb);
    for (int i = 0; i < w * h; i++) g[i] = (uint8_t)((rgb[3 * i] + 2 * rgb[3 * i + 1] + rgb[3 * i + 2]) / 4);
    size_t n;
    unsigned char *jpg = encode(g, w, h, 1, JCS_GRAYSCALE, NULL, &n);
    const char *path = in_dir("gray.jpg");
    spit(path, jpg, n);
    int rw, rh;
    uint8_t *ref = ref_decode(path, JCS_GRAYSCALE, 1, &rw, &rh);
    Image im = decode_ok(path, 0, NULL);
    assert_int_equal(im.w, w);
    assert_int_equal(im.h, h);
    for (int i = 0; i < w * h; i++)
        if (im.rgb[3 * i] != ref[i] || im.rgb[3 * i + 1] != ref[i] || im.rgb[3 * i + 2] != ref[i])
            fail_msg("pixel %d: (%d,%d,%d), libjpeg grey %d", i, im.rgb[3 * i], im.rgb[3 * i + 1], im.rgb[3 * i + 2],
                     ref[i]);
    image_free(&im);
    free(ref);
    free(jpg);
    free(g);
    free(rgb);
}

/* CMYK and YCCK: four flat quadrants of known ink amounts come out as
 * RGB = 255 * (1 - ink) * (1 - black), within 4 levels (the JPEG error at quality 100). With an
 * Adobe marker (libjpeg writes one for CMYK) the stored values are inverted, Adobe's convention. */
static void test_cmyk(void **state) {
    (void)state;
    static const uint8_t ink[4][4] = {{0, 0, 0, 0}, {255, 0, 0, 0}, {40, 160, 220, 30}, {0, 100, 0, 200}};
    const int w = 32, h = 32;
    static const struct { const char *name; EncOpt o; } kinds[] = {
        {"cmyk_adobe.jpg", {.quality = 100}},
        {"ycck_adobe.jpg", {.quality = 100, .ycck = 1}},
        {"cmyk_plain.jpg", {.quality = 100, .no_adobe = 1}},
    };
    uint8_t *px = xmalloc((size_t)w * h * 4);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int inverted = !kinds[k].o.no_adobe;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 4; c++) {
                    uint8_t v = ink[(y >= h / 2) * 2 + (x >= w / 2)][c];
                    px[((size_t)y * w + x) * 4 + c] = inverted ? (uint8_t)(255 - v) : v;
                }
        size_t n;
        unsigned char *jpg = encode(px, w, h, 4, JCS_CMYK, &kinds[k].o, &n);
        const char *path = in_dir(kinds[k].name);
        spit(path, jpg, n);
        Image im = decode_ok(path, 0, NULL);
        assert_int_equal(im.w, w);
        for (int q = 0; q < 4; q++) {
            /* the centre of each quadrant, away from block edges between quadrants */
            int x = (q % 2) * w / 2 + w / 4, y = (q / 2) * h / 2 + h / 4;
            for (int c = 0; c < 3; c++) {
                int want = (int)lround((255.0 - ink[q][c]) * (255.0 - ink[q][3]) / 255.0);
                int got = im.rgb[((size_t)y * w + x) * 3 + c];
                if (abs(got - want) > 4) fail_msg("%s quadrant %d channel %d: %d, expected %d", kinds[k].name, q, c, got, want);
            }
        }
        image_free(&im);
        free(jpg);
    }
    free(px);
}

static void expect_bad(const char *path, const JpegOptions *o, const char *what) {
    Image im = {7, 7, (uint8_t *)&im};
    char err[512] = "";
    int scale = 0;
    if (jpeg_decode_file(path, o, &im, &scale, err, sizeof err) != -1) fail_msg("%s: decoded, expected an error", path);
    ASSERT_HAS(err, path);
    if (what) ASSERT_HAS(err, what);
    assert_null(im.rgb);
    assert_int_equal(im.w, 0);
    assert_int_equal(im.h, 0);
}

static size_t find_marker(const unsigned char *b, size_t n, unsigned char m) {
    for (size_t i = 2; i + 1 < n; i++)
        if (b[i] == 0xFF && b[i + 1] == m) return i;
    fail_msg("marker 0x%02x not found", m);
    return 0;
}

/* Missing, empty, random, non-JPEG and truncated files: -1 with the path in the message, never an
 * exit or a crash, and nothing allocated. */
static void test_bad_files(void **state) {
    (void)state;
    expect_bad(in_dir("missing.jpg"), NULL, "No such file");
    spit(in_dir("empty.jpg"), "", 0);
    expect_bad(in_dir("empty.jpg"), NULL, "empty");
    expect_bad(dir, NULL, "not a regular file");

    unsigned char noise[4096];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)((s = s * 1664525u + 1013904223u) >> 24);
    spit(in_dir("random.jpg"), noise, sizeof noise);
    expect_bad(in_dir("random.jpg"), NULL, "not a JPEG");

    static const unsigned char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0";
    spit(in_dir("png.jpg"), png, sizeof png - 1);
    expect_bad(in_dir("png.jpg"), NULL, "not a JPEG file (PNG signature)");
    spit(in_dir("gif.jpg"), "GIF89a\x10\0\x10\0", 10);
    expect_bad(in_dir("gif.jpg"), NULL, "GIF");
    spit(in_dir("short.jpg"), "\xFF\xD8", 2);
    expect_bad(in_dir("short.jpg"), NULL, NULL);

    /* Truncated inside the headers, at the start of the scan, in the middle and near the end of the
     * entropy-coded data: baseline, progressive and with restart markers. */
    const EncOpt kinds[3] = {{.quality = 90}, {.quality = 90, .progressive = 1}, {.quality = 90, .restart_rows = 1}};
    for (int k = 0; k < 3; k++) {
        const char *full = write_pattern_jpeg("whole.jpg", 96, 64, &kinds[k]);
        size_t n;
        unsigned char *b = slurp(full, &n);
        size_t sos = find_marker(b, n, 0xDA), data = sos + 2 + ((size_t)b[sos + 2] << 8 | b[sos + 3]);
        size_t cuts[] = {1, 3, 4, 20, sos, sos + 5, data, data + 10, (data + n) / 2, n - 60, n - 20, n - 8};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            char name[64];
            snprintf(name, sizeof name, "cut%d_%zu.jpg", k, cuts[c]);
            spit(in_dir(name), b, cuts[c]);
            expect_bad(in_dir(name), NULL, NULL);
        }
        /* cut just before the final EOI marker: refused too, as libjpeg calls it a premature end */
        spit(in_dir("noeoi.jpg"), b, n - 2);
        expect_bad(in_dir("noeoi.jpg"), NULL, "Premature end of JPEG file");
        free(b);
    }
}

/* Bytes flipped at random in the entropy-coded data: an error or a well-formed image, never a crash. */
static void test_corrupt_bytes(void **state) {
    (void)state;
    const char *full = write_pattern_jpeg("fuzz_src.jpg", 64, 48, &(EncOpt){.quality = 80});
    size_t n;
    unsigned char *b = slurp(full, &n), *c = xmalloc(n);
    size_t sos = find_marker(b, n, 0xDA);
    uint32_t s = 99;
    int refused = 0;
    for (int t = 0; t < 300; t++) {
        memcpy(c, b, n);
        for (int k = 0; k < 1 + t % 4; k++) {
            s = s * 1664525u + 1013904223u;
            size_t at = t % 3 == 0 ? (s >> 8) % n : sos + (s >> 8) % (n - sos);
            s = s * 1664525u + 1013904223u;
            c[at] = (unsigned char)(s >> 24);
        }
        Image im;
        char err[512];
        if (jpeg_decode_mem(c, n, "fuzz.jpg", NULL, &im, NULL, err, sizeof err)) {
            ASSERT_HAS(err, "fuzz.jpg");
            assert_null(im.rgb);
            refused++;
        } else {
            assert_true(im.w > 0 && im.h > 0 && (long)im.w * im.h <= JPEG_DEFAULT_MAX_PIXELS);
            image_free(&im);
        }
    }
    /* Most flipped bytes still make valid Huffman codes (wrong pixels, which no decoder can tell);
     * the rest must be refused cleanly. */
    print_message("  %d of 300 corrupted files refused\n", refused);
    assert_true(refused > 0);
    free(c);
    free(b);
}

/* A header claiming more pixels than max_pixels is refused from the header, before any pixel
 * buffer exists (the message is the limit's, not an allocation failure). */
static void test_max_pixels(void **state) {
    (void)state;
    const char *full = write_pattern_jpeg("small.jpg", 40, 25, &(EncOpt){.quality = 90});
    size_t n;
    unsigned char *b = slurp(full, &n);
    size_t sof = find_marker(b, n, 0xC0);
    b[sof + 5] = 60000 >> 8, b[sof + 6] = 60000 & 255; /* height */
    b[sof + 7] = 60000 >> 8, b[sof + 8] = 60000 & 255; /* width */
    spit(in_dir("huge.jpg"), b, n);
    expect_bad(in_dir("huge.jpg"), NULL, "60000x60000");
    expect_bad(in_dir("huge.jpg"), &(JpegOptions){0, 0, 0}, "over the limit");
    expect_bad(in_dir("huge.jpg"), &(JpegOptions){128, 0, 0}, "over the limit");
    /* the limit is inclusive */
    JpegOptions at = {0, 1000, 0}, below = {0, 999, 0};
    Image im;
    char err[512];
    if (jpeg_decode_file(full, &at, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    image_free(&im);
    expect_bad(full, &below, "over the limit of 999");
    free(b);
}

/* A written JPEG is exactly what libjpeg's defaults make at that quality and decodes back close to the
 * original (mean error <= 5 levels at quality 95, <= 8 at 50, on a picture with per-channel noise
 * that 4:2:0 chroma cannot keep); the write replaces an existing file; no temporary file is left,
 * also when the write fails. */
static void test_write_roundtrip(void **state) {
    (void)state;
    int w = 150, h = 100;
    Image src = {w, h, xmalloc((size_t)w * h * 3)};
    pattern(w, h, 7, src.rgb);
    char err[512];
    const char *path = in_dir("written.jpg");
    spit(path, "old", 3);
    for (int q = 50; q <= 95; q += 45) {
        if (jpeg_write_file(path, &src, q, err, sizeof err)) fail_msg("%s", err);
        size_t n, m;
        unsigned char *want = encode(src.rgb, w, h, 3, JCS_RGB, &(EncOpt){.quality = q}, &n), *got = slurp(path, &m);
        assert_int_equal(m, n);
        assert_memory_equal(got, want, n);
        free(want);
        free(got);
        Image back = decode_ok(path, 0, NULL);
        assert_int_equal(back.w, w);
        assert_int_equal(back.h, h);
        double mae = 0;
        for (size_t i = 0; i < (size_t)w * h * 3; i++) mae += abs((int)back.rgb[i] - (int)src.rgb[i]);
        mae /= (double)w * h * 3;
        print_message("  quality %d: mean abs error %.2f\n", q, mae);
        if (mae > (q == 95 ? 5.0 : 8.0)) fail_msg("quality %d: mean absolute error %.2f", q, mae);
        image_free(&back);
    }
    assert_int_equal(count_temp_files(dir), 0);

    /* failures: a missing folder, a bad quality, a bad image; the old file stays */
    assert_int_equal(jpeg_write_file(in_dir("nope/x.jpg"), &src, 90, err, sizeof err), -1);
    ASSERT_HAS(err, "nope/x.jpg");
    assert_int_equal(jpeg_write_file(path, &src, 0, err, sizeof err), -1);
    ASSERT_HAS(err, "quality");
    Image bad = {0, 10, src.rgb};
    assert_int_equal(jpeg_write_file(path, &bad, 90, err, sizeof err), -1);
    ASSERT_HAS(err, path);
    Image still = decode_ok(path, 0, NULL);
    assert_int_equal(still.w, w);
    image_free(&still);
    assert_int_equal(count_temp_files(dir), 0);
    image_free(&src);
}

/* ---- several threads at once ---- */

#define THREAD_FILES 6
static const char *thread_paths[THREAD_FILES];
static Image thread_want[THREAD_FILES];

static void *decode_worker(void *arg) {
    long bad = 0;
    (void)arg;
    for (int rep = 0; rep < 20; rep++)
        for (int i = 0; i < THREAD_FILES; i++) {
            Image im;
            char err[512];
            JpegOptions o = {i % 2 ? 40 : 0, 0, 0};
            int rc = jpeg_decode_file(thread_paths[i], &o, &im, NULL, err, sizeof err);
            if (!thread_want[i].rgb) {
                bad += rc != -1 || !strstr(err, thread_paths[i]);
                continue;
            }
            bad += rc || im.w != thread_want[i].w || im.h != thread_want[i].h ||
                   memcmp(im.rgb, thread_want[i].rgb, (size_t)im.w * im.h * 3);
            image_free(&im);
        }
    return (void *)bad;
}

/* Decoding is reentrant: four threads decoding good and bad files get what one thread gets. */
static void test_threads(void **state) {
    (void)state;
    static const EncOpt o[4] = {{.quality = 90}, {.quality = 80, .progressive = 1}, {.quality = 70}, {.quality = 95, .sub444 = 1}};
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "thread%d.jpg", i);
        thread_paths[i] = strdup(write_pattern_jpeg(name, 100 + 20 * i, 90, &o[i]));
    }
    size_t n;
    unsigned char *b = slurp(thread_paths[0], &n);
    spit(in_dir("thread_cut.jpg"), b, n / 2);
    free(b);
    thread_paths[4] = strdup(in_dir("thread_cut.jpg"));
    thread_paths[5] = strdup(in_dir("thread_missing.jpg"));
    for (int i = 0; i < THREAD_FILES; i++) {
        char err[512];
        JpegOptions opt = {i % 2 ? 40 : 0, 0, 0};
        if (jpeg_decode_file(thread_paths[i], &opt, &thread_want[i], NULL, err, sizeof err)) thread_want[i].rgb = NULL;
    }
    assert_non_null(thread_want[3].rgb);
    assert_null(thread_want[4].rgb);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, decode_worker, NULL), 0);
    long bad = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (long)r;
    }
    assert_int_equal(bad, 0);
    for (int i = 0; i < THREAD_FILES; i++) {
        image_free(&thread_want[i]);
        free((void *)thread_paths[i]);
    }
}

/* ---- demo data ---- */

static int count_entries(const char *folder) {
    DIR *d = opendir(folder);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* The layout ROOT/{train,valid}/<class>/<i>.jpg with the asked counts and size; the same seed writes
 * the same bytes, another seed other images; a larger count keeps the first images; a folder with
 * files this run would not write is refused. */
static void test_demo_data(void **state) {
    (void)state;
    char err[512], a[512], b[512];
    const char *r1 = strdup(in_dir("demo1")), *r2 = strdup(in_dir("demo2")), *r3 = strdup(in_dir("demo3"));
    if (demo_data_write(r1, 3, 2, 32, 5, err, sizeof err)) fail_msg("%s", err);
    if (demo_data_write(r2, 3, 2, 32, 5, err, sizeof err)) fail_msg("%s", err);
    if (demo_data_write(r3, 3, 2, 32, 6, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(count_entries(r1), 2);
    int differ = 0;
    for (int s = 0; s < 2; s++) {
        const char *split = s ? "val" : "train";
        int count = s ? 2 : 3;
        snprintf(a, sizeof a, "%s/%s", r1, split);
        assert_int_equal(count_entries(a), SYNTH_CLASSES);
        for (int c = 0; c < SYNTH_CLASSES; c++) {
            snprintf(a, sizeof a, "%s/%s/%s", r1, split, synth_class_names[c]);
            assert_int_equal(count_entries(a), count);
            for (int i = 0; i < count; i++) {
                snprintf(a, sizeof a, "%s/%s/%s/%d.jpg", r1, split, synth_class_names[c], i);
                Image im = decode_ok(a, 0, NULL);
                assert_int_equal(im.w, 32);
                assert_int_equal(im.h, 32);
                image_free(&im);
                snprintf(b, sizeof b, "%s/%s/%s/%d.jpg", r2, split, synth_class_names[c], i);
                if (!same_file(a, b)) fail_msg("%s and %s differ: same seed", a, b);
                snprintf(b, sizeof b, "%s/%s/%s/%d.jpg", r3, split, synth_class_names[c], i);
                differ += !same_file(a, b);
            }
        }
    }
    assert_int_equal(differ, SYNTH_CLASSES * 5);

    /* more images per class: the first ones unchanged; rerunning is fine */
    if (demo_data_write(r2, 4, 2, 32, 5, err, sizeof err)) fail_msg("%s", err);
    if (demo_data_write(r2, 4, 2, 32, 5, err, sizeof err)) fail_msg("%s", err);
    snprintf(a, sizeof a, "%s/train/disc", r2);
    assert_int_equal(count_entries(a), 4);
    snprintf(a, sizeof a, "%s/train/dots/2.jpg", r1);
    snprintf(b, sizeof b, "%s/train/dots/2.jpg", r2);
    assert_true(same_file(a, b));
    assert_int_equal(count_temp_files(in_dir("demo2/train/dots")), 0);

    /* fewer than on disk: refused, naming the folder and the file */
    assert_int_equal(demo_data_write(r2, 3, 2, 32, 5, err, sizeof err), -1);
    ASSERT_HAS(err, "demo2/train/disc");
    ASSERT_HAS(err, "3.jpg");
    assert_int_equal(demo_data_write(r2, 0, 0, 32, 5, err, sizeof err), -1);
    assert_int_equal(demo_data_write(r2, 1, 1, 4, 5, err, sizeof err), -1);
    free((void *)r1);
    free((void *)r2);
    free((void *)r3);
}

/* ---- the shared Imagenette copy ---- */

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every image of one Imagenette class folder decodes, equal to libjpeg's own decode, and at half
 * size with min_short_side 64. */
static void test_imagenette_folder(void **state) {
    (void)state;
    DIR *d = opendir(IMAGENETTE_CLASS);
    if (!d) {
        print_message("  skipped: %s not found (run from the repository root with ../shared beside it)\n",
                      IMAGENETTE_CLASS);
        skip();
    }
    char **names = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            names = xrealloc(names, (size_t)(n + 1) * sizeof *names);
            names[n++] = strdup(e->d_name);
        }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    int gray = 0;
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", IMAGENETTE_CLASS, names[i]);
        int scale, rw, rh;
        Image im = decode_ok(path, 0, &scale);
        assert_int_equal(scale, 1);
        uint8_t *ref = ref_decode(path, JCS_RGB, 1, &rw, &rh);
        assert_int_equal(im.w, rw);
        assert_int_equal(im.h, rh);
        if (memcmp(im.rgb, ref, (size_t)rw * rh * 3)) fail_msg("%s: pixels differ from libjpeg's", path);
        int is_gray = 1;
        for (size_t p = 0; p < (size_t)im.w * im.h && is_gray; p++)
            is_gray = im.rgb[3 * p] == im.rgb[3 * p + 1] && im.rgb[3 * p] == im.rgb[3 * p + 2];
        gray += is_gray;
        image_free(&im);
        free(ref);
        Image half = decode_ok(path, 64, &scale);
        assert_int_equal(scale, rw >= 128 && rh >= 128 ? 2 : 1);
        assert_int_equal(half.w, (rw + scale - 1) / scale);
        image_free(&half);
        free(names[i]);
    }
    free(names);
    print_message("  %s: %d images decoded (%d grey)\n", IMAGENETTE_CLASS, n, gray);
    assert_true(n > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_libjpeg),
        cmocka_unit_test(test_scaled_close_to_box),
        cmocka_unit_test(test_scale_choice),
        cmocka_unit_test(test_grayscale),
        cmocka_unit_test(test_cmyk),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_corrupt_bytes),
        cmocka_unit_test(test_max_pixels),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_demo_data),
        cmocka_unit_test(test_imagenette_folder),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
