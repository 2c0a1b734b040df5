/* png_cases.h: for tests/test_png.c: PNGs of every colour type and bit depth written with libpng from
 * known samples, the RGB that PIL's .convert('RGB') makes of each pixel, and PNG's CRC-32 to forge
 * chunks whose checksum is right but whose content is not. Needs libpng (not built with PNG=0);
 * include after <cmocka.h>: a failed write fails the test. */
#ifndef CNN_PNG_CASES_H
#define CNN_PNG_CASES_H

#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"

/* PNG's CRC-32 (the zlib one). */
static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* ---- writing test PNGs with libpng ---- */

typedef struct {
    int type, depth, interlace, trns;   /* trns: write a tRNS chunk (grey, RGB and palette) */
    int w, h;
} PngCase;

/* One pixel's samples: n = channels of the colour type, each < 2^depth (palette: an index). */
static int channels_of(int type) {
    switch (type) {
    case PNG_COLOR_TYPE_GRAY: case PNG_COLOR_TYPE_PALETTE: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    default: return 4;
    }
}

static unsigned sample_at(const PngCase *c, int x, int y, int k, unsigned seed) {
    uint32_t s = (uint32_t)x * 73856093u ^ (uint32_t)y * 19349663u ^ (uint32_t)k * 83492791u ^ seed;
    s ^= s >> 13, s *= 0x5bd1e995u, s ^= s >> 15;
    unsigned max = c->type == PNG_COLOR_TYPE_PALETTE ? (1u << (c->depth < 8 ? c->depth : 8)) - 1 : (1u << c->depth) - 1;
    /* every row starts with the extremes, so 0 and max are always there */
    if (x == 0) return 0;
    if (x == 1) return max;
    return s % (max + 1);
}

static png_color palette_entry(int i) { return (png_color){(png_byte)(i * 37 + 5), (png_byte)(255 - i * 11), (png_byte)(i * i)}; }

/* What PIL's .convert('RGB') gives for one pixel (16-bit grey: the high byte, see png.c). */
static void expected_rgb(const PngCase *c, int x, int y, unsigned seed, uint8_t out[3]) {
    unsigned v[4] = {0};
    for (int k = 0; k < channels_of(c->type); k++) v[k] = sample_at(c, x, y, k, seed);
    int color = c->type & PNG_COLOR_MASK_COLOR;
    if (c->type == PNG_COLOR_TYPE_PALETTE) {
        png_color p = palette_entry((int)v[0]);
        out[0] = p.red, out[1] = p.green, out[2] = p.blue;
        return;
    }
    for (int k = 0; k < 3; k++) {
        unsigned s = v[color ? k : 0];
        if (c->depth == 16) s >>= 8;
        else if (c->depth < 8) s = s * 255 / ((1u << c->depth) - 1);
        out[k] = (uint8_t)s;
    }
}

static void write_png(const char *path, const PngCase *c, unsigned seed) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng could not write %s", path);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, c->depth, c->type,
                 c->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (c->type == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[256];
        int n = 1 << c->depth;
        for (int i = 0; i < n; i++) pal[i] = palette_entry(i);
        png_set_PLTE(png, info, pal, n);
        if (c->trns) {
            png_byte alpha[256];
            for (int i = 0; i < n; i++) alpha[i] = (png_byte)(i * 97);
            png_set_tRNS(png, info, alpha, n, NULL);
        }
    } else if (c->trns) {
        png_color_16 t = {0, 1, 1, 1, 1};   /* the value 1: those pixels are transparent, PIL keeps their colour */
        png_set_tRNS(png, info, NULL, 0, &t);
    }
    png_text text = {PNG_TEXT_COMPRESSION_NONE, "Comment", "cnntrain test", 13, 0, NULL, NULL};
    png_set_text(png, info, &text, 1);
    png_write_info(png, info);
    png_set_interlace_handling(png);
    int n = channels_of(c->type);
    size_t rowbytes = ((size_t)c->w * (size_t)n * (size_t)c->depth + 7) / 8;
    png_bytep image = xcalloc((size_t)c->h, rowbytes);
    png_bytep *rows = xmalloc(sizeof *rows * (size_t)c->h);
    for (int y = 0; y < c->h; y++) {
        rows[y] = image + (size_t)y * rowbytes;
        for (int x = 0; x < c->w; x++)
            for (int k = 0; k < n; k++) {
                unsigned s = sample_at(c, x, y, k, seed);
                size_t i = (size_t)x * (size_t)n + (size_t)k;
                if (c->depth == 16) rows[y][2 * i] = (png_byte)(s >> 8), rows[y][2 * i + 1] = (png_byte)s;
                else if (c->depth == 8) rows[y][i] = (png_byte)s;
                else rows[y][i * (size_t)c->depth / 8] |= (png_byte)(s << (8 - c->depth - (int)(i * (size_t)c->depth % 8)));
            }
    }
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(image);
    assert_int_equal(fclose(f), 0);
}

static const PngCase png_cases[] = {
    {PNG_COLOR_TYPE_GRAY, 1, 0, 0, 13, 7},        {PNG_COLOR_TYPE_GRAY, 2, 1, 0, 13, 7},
    {PNG_COLOR_TYPE_GRAY, 4, 0, 1, 9, 11},        {PNG_COLOR_TYPE_GRAY, 8, 1, 1, 17, 5},
    {PNG_COLOR_TYPE_GRAY, 16, 0, 0, 10, 9},       {PNG_COLOR_TYPE_GRAY, 16, 1, 1, 10, 9},
    {PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0, 12, 6},  {PNG_COLOR_TYPE_GRAY_ALPHA, 16, 1, 0, 7, 12},
    {PNG_COLOR_TYPE_PALETTE, 1, 0, 0, 15, 3},     {PNG_COLOR_TYPE_PALETTE, 2, 1, 1, 11, 8},
    {PNG_COLOR_TYPE_PALETTE, 4, 0, 1, 9, 9},      {PNG_COLOR_TYPE_PALETTE, 8, 1, 1, 33, 17},
    {PNG_COLOR_TYPE_PALETTE, 8, 0, 0, 20, 4},     {PNG_COLOR_TYPE_RGB, 8, 0, 0, 16, 16},
    {PNG_COLOR_TYPE_RGB, 8, 1, 1, 31, 13},        {PNG_COLOR_TYPE_RGB, 16, 0, 0, 8, 8},
    {PNG_COLOR_TYPE_RGB, 16, 1, 1, 9, 14},        {PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, 0, 14, 10},
    {PNG_COLOR_TYPE_RGB_ALPHA, 8, 1, 0, 25, 19},  {PNG_COLOR_TYPE_RGB_ALPHA, 16, 0, 0, 6, 5},
    {PNG_COLOR_TYPE_RGB_ALPHA, 16, 1, 0, 5, 6},   {PNG_COLOR_TYPE_RGB, 8, 1, 0, 1, 1},
    {PNG_COLOR_TYPE_RGB, 8, 0, 0, 200, 1},        {PNG_COLOR_TYPE_GRAY, 8, 1, 0, 1, 90},
};
#define NCASES (int)(sizeof png_cases / sizeof *png_cases)

#endif
