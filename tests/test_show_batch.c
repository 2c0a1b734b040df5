/* test_show_batch.c: the built-in font (glyph pixels where expected, clipping, widths) and the
 * show-batch grid (size, images where the layout says, titles drawn, the JPEG written). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmd/commands.h"
#include "pipeline/demo_data.h"
#include "report/font.h"
#include "pipeline/image.h"
#include "pipeline/loader.h"
#include "report/show_batch.h"
#include "base/util.h"

static const uint8_t INK[3] = {10, 20, 30};

static Image white_image(int w, int h) {
    Image im = {w, h, xmalloc((size_t)w * h * 3)};
    memset(im.rgb, 255, (size_t)w * h * 3);
    return im;
}

static const uint8_t *px(const Image *im, int x, int y) { return im->rgb + ((size_t)y * im->w + x) * 3; }

static int is_ink(const Image *im, int x, int y) {
    const uint8_t *p = px(im, x, y);
    return p[0] == INK[0] && p[1] == INK[1] && p[2] == INK[2];
}

static int count_ink(const Image *im) {
    int n = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) n += is_ink(im, x, y);
    return n;
}

/* 'L' at (2, 3), scale 1: the stem is column 2, rows 3..9, and the foot row 9, columns 2..6;
 * nothing else is touched. */
static void test_font_glyph_L(void **state) {
    (void)state;
    Image im = white_image(12, 12);
    font_draw(&im, 2, 3, "L", 1, INK);
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 12; x++) {
            int want = (x == 2 && y >= 3 && y <= 9) || (y == 9 && x >= 2 && x <= 6);
            if (is_ink(&im, x, y) != want) fail_msg("pixel (%d,%d): ink %d, want %d", x, y, !want, want);
            if (!want) assert_int_equal(px(&im, x, y)[0], 255);
        }
    image_free(&im);
}

/* 'I' at scale 3: font pixel (c, r) covers the 3x3 square at (x + 3c, y + 3r). Its stem is font
 * column 2, its serifs font columns 1..3 of rows 0 and 6. */
static void test_font_glyph_I_scaled(void **state) {
    (void)state;
    Image im = white_image(30, 30);
    int x0 = 4, y0 = 1;
    font_draw(&im, x0, y0, "I", 3, INK);
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 30; x++) {
            int c = (x - x0) >= 0 ? (x - x0) / 3 : -1, r = (y - y0) >= 0 ? (y - y0) / 3 : -1;
            int inside = c >= 0 && c < 5 && r >= 0 && r < 7;
            int want = inside && (c == 2 || ((r == 0 || r == 6) && c >= 1 && c <= 3));
            if (is_ink(&im, x, y) != want) fail_msg("pixel (%d,%d): ink %d, want %d", x, y, !want, want);
        }
    assert_int_equal(count_ink(&im), (7 + 4) * 9);
    image_free(&im);
}

/* Descenders use the cell's last row: "Ap" spans rows 0..7, "A" rows 0..6. */
static void test_font_descender(void **state) {
    (void)state;
    Image im = white_image(16, 12);
    font_draw(&im, 1, 2, "Ap", 1, INK);
    int top = 99, bottom = -1, bottom_a = -1;
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 16; x++)
            if (is_ink(&im, x, y)) {
                if (y < top) top = y;
                if (y > bottom) bottom = y;
                if (x < 1 + FONT_GLYPH_W && y > bottom_a) bottom_a = y;
            }
    assert_int_equal(top, 2);
    assert_int_equal(bottom_a, 2 + FONT_CAP_H - 1);
    assert_int_equal(bottom, 2 + FONT_GLYPH_H - 1);
    image_free(&im);
}

/* Two glyphs are one advance (6 font pixels) apart: "LL" is 'L' twice. */
static void test_font_advance(void **state) {
    (void)state;
    Image a = white_image(20, 10), b = white_image(20, 10);
    font_draw(&a, 1, 1, "LL", 1, INK);
    font_draw(&b, 1, 1, "L", 1, INK);
    font_draw(&b, 1 + FONT_ADVANCE, 1, "L", 1, INK);
    assert_memory_equal(a.rgb, b.rgb, 20 * 10 * 3);
    assert_int_equal(count_ink(&a), 2 * 11);
    image_free(&a);
    image_free(&b);
}

/* A character outside the set is an outlined box (20 pixels of a 5x7 border, hollow); a UTF-8
 * sequence is one box, not one per byte. */
static void test_font_unknown_is_box(void **state) {
    (void)state;
    const char *unknowns[] = {"~", "@", "\xc3\xa9" /* e acute */, "\t"};
    for (size_t k = 0; k < sizeof unknowns / sizeof unknowns[0]; k++) {
        Image im = white_image(16, 12);
        font_draw(&im, 3, 2, unknowns[k], 1, INK);
        for (int y = 0; y < 12; y++)
            for (int x = 0; x < 16; x++) {
                int inside = x >= 3 && x < 8 && y >= 2 && y < 9;
                int border = inside && (x == 3 || x == 7 || y == 2 || y == 8);
                if (is_ink(&im, x, y) != border) fail_msg("'%s' pixel (%d,%d)", unknowns[k], x, y);
            }
        image_free(&im);
    }
}

static void test_font_width(void **state) {
    (void)state;
    assert_int_equal(font_text_width("", 1), 0);
    assert_int_equal(font_text_width("A", 1), 5);
    assert_int_equal(font_text_width("AB", 1), 11);
    assert_int_equal(font_text_width("AB", 3), 33);
    assert_int_equal(font_text_width("n01440764", 2), (9 * 6 - 1) * 2);
    assert_int_equal(font_text_width("caf\xc3\xa9", 1), 4 * 6 - 1);
    assert_int_equal(font_text_chars("caf\xc3\xa9"), 4);
    /* The width is what is drawn: the last ink column of "AB" is width - 1. */
    Image im = white_image(40, 10);
    font_draw(&im, 0, 0, "AB", 1, INK);
    int last = -1;
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 40; x++)
            if (is_ink(&im, x, y) && x > last) last = x;
    assert_int_equal(last, font_text_width("AB", 1) - 1);
    image_free(&im);
}

/* Text hanging over every border, at large scales and far off the image: nothing is written
 * outside the pixel rows (guard bytes either side stay intact), and the parts inside are drawn. */
static void test_font_clipping(void **state) {
    (void)state;
    enum { W = 9, H = 7, GUARD = 4096 };
    uint8_t *mem = xmalloc(GUARD + W * H * 3 + GUARD);
    memset(mem, 0xA5, GUARD + W * H * 3 + GUARD);
    Image im = {W, H, mem + GUARD};
    memset(im.rgb, 255, W * H * 3);
    const int xs[] = {-1000000000, -40, -7, -3, 0, 4, 8, 9, 50, 1000000000};
    const int ys[] = {-1000000000, -30, -6, -2, 0, 3, 6, 7, 40, 1000000000};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++)
        for (size_t j = 0; j < sizeof ys / sizeof ys[0]; j++)
            for (int scale = 1; scale <= 4; scale += 3) font_draw(&im, xs[i], ys[j], "Ww_8%~", scale, INK);
    for (int k = 0; k < GUARD; k++) {
        assert_int_equal(mem[k], 0xA5);
        assert_int_equal(mem[GUARD + W * H * 3 + k], 0xA5);
    }
    /* 'L' starting 2 pixels left and 3 above: only the foot (row 6 of the glyph) from x=0..2 shows. */
    memset(im.rgb, 255, W * H * 3);
    font_draw(&im, -2, -3, "L", 1, INK);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) assert_int_equal(is_ink(&im, x, y), y == 3 && x <= 2);
    /* 'L' at the bottom-right corner: only its stem's top pixel is inside. */
    memset(im.rgb, 255, W * H * 3);
    font_draw(&im, W - 1, H - 1, "L", 1, INK);
    assert_int_equal(count_ink(&im), 1);
    assert_true(is_ink(&im, W - 1, H - 1));
    free(mem);
}

/* ------------------------------------------------------------------ show_batch */

/* A hand-made batch of solid colours, normalised as the loader's BATCH_F32 output is, with the
 * same pixels as BATCH_U8 in u8. */
enum { NB = 5, SIZE = 48 };
static const uint8_t COLOURS[NB][3] = {{230, 30, 30}, {30, 200, 40}, {40, 60, 220}, {240, 220, 40}, {128, 128, 128}};
static const char *const NAMES[] = {"LL", "dog", "n01440764", "bird", "a very long class name indeed"};

typedef struct {
    Batch b;
    float x[NB * 3 * SIZE * SIZE];
    uint8_t u8[NB * SIZE * SIZE * 3];
    int32_t labels[NB];
} SolidBatch;

static SolidBatch *solid_batch(int with_f32) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    SolidBatch *s = xcalloc(1, sizeof *s);
    for (int i = 0; i < NB; i++) {
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < SIZE * SIZE; p++) {
                s->x[(i * 3 + c) * SIZE * SIZE + p] = (COLOURS[i][c] / 255.0f - mean[c]) / std[c];
                s->u8[(i * SIZE * SIZE + p) * 3 + c] = COLOURS[i][c];
            }
        s->labels[i] = i;
    }
    s->b.n = NB;
    s->b.size = SIZE;
    s->b.x = with_f32 ? s->x : NULL;
    s->b.u8 = with_f32 ? NULL : s->u8;
    s->b.labels = s->labels;
    return s;
}

static void test_layout(void **state) {
    (void)state;
    ShowBatchLayout L = show_batch_layout(5, 48, 3);
    assert_int_equal(L.cols, 3);
    assert_int_equal(L.rows, 2);
    assert_true(L.margin >= 2 && L.margin <= 16);
    assert_true(L.text_scale >= 1);
    assert_true(L.title_h > FONT_GLYPH_H * L.text_scale);
    assert_int_equal(L.width, 3 * 48 + 4 * L.margin);
    assert_int_equal(L.height, 2 * (48 + L.title_h) + 3 * L.margin);
    int x, y;
    show_batch_cell(&L, 4, &x, &y);
    assert_int_equal(x, L.margin + 48 + L.margin);
    assert_int_equal(y, L.margin + L.title_h + 48 + L.margin + L.title_h);
    /* More columns than images: one row of just the images. */
    L = show_batch_layout(3, 48, 8);
    assert_int_equal(L.cols, 3);
    assert_int_equal(L.rows, 1);
    /* Titles grow with the image side. */
    assert_true(show_batch_layout(16, 224, 4).text_scale > show_batch_layout(16, 48, 4).text_scale);
}

/* Ink bounding box (dark pixels) within a box of the grid. */
static int dark_box(const Image *g, int x0, int y0, int x1, int y1, int thresh, int box[4]) {
    int n = 0;
    box[0] = box[1] = 1 << 30;
    box[2] = box[3] = -1;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            const uint8_t *p = px(g, x, y);
            if (p[0] < thresh && p[1] < thresh && p[2] < thresh) {
                n++;
                if (x < box[0]) box[0] = x;
                if (y < box[1]) box[1] = y;
                if (x > box[2]) box[2] = x;
                if (y > box[3]) box[3] = y;
            }
        }
    return n;
}

/* Rendered grid, exactly: each image's pixels are its colour (F32 round trip to the byte), the
 * rest of each cell and the margins are white except the title; titles are dark, centred over their
 * image, within the title band, and "LL" is two 'L' glyphs at the title scale. */
static void check_render(int with_f32) {
    SolidBatch *s = solid_batch(with_f32);
    Image g;
    char err[256];
    assert_int_equal(show_batch_render(&s->b, NAMES, NB, 3, &g, err, sizeof err), 0);
    ShowBatchLayout L = show_batch_layout(NB, SIZE, 3);
    assert_int_equal(g.w, L.width);
    assert_int_equal(g.h, L.height);
    uint8_t *seen = xcalloc((size_t)g.w * g.h, 1); /* pixels accounted for */
    for (int i = 0; i < NB; i++) {
        int x0, y0;
        show_batch_cell(&L, i, &x0, &y0);
        for (int y = y0; y < y0 + SIZE; y++)
            for (int x = x0; x < x0 + SIZE; x++) {
                const uint8_t *p = px(&g, x, y);
                for (int c = 0; c < 3; c++)
                    if (abs(p[c] - COLOURS[i][c]) > (with_f32 ? 1 : 0))
                        fail_msg("image %d pixel (%d,%d) channel %d: %d, want %d", i, x, y, c, p[c], COLOURS[i][c]);
                seen[(size_t)y * g.w + x] = 1;
            }
        /* The title: dark pixels only in the band above the image, centred on it. */
        int box[4];
        int n = dark_box(&g, x0 - L.margin / 2, y0 - L.title_h, x0 + SIZE + L.margin / 2, y0, 1, box);
        assert_true(n > 0);
        assert_true(box[0] >= x0 && box[2] < x0 + SIZE);
        assert_true(abs((box[0] + box[2]) - (2 * x0 + SIZE - 1)) <= 2 * L.text_scale + 1);
        assert_true(box[3] < y0);
        for (int y = y0 - L.title_h; y < y0; y++)
            for (int x = x0; x < x0 + SIZE; x++) seen[(size_t)y * g.w + x] = 1;
        if (i == 0) {
            /* "LL": the feet are one row, 2 glyphs x 5 columns of font pixels, at the bottom of the ink. */
            int foot = 0;
            for (int x = box[0]; x <= box[2]; x++) foot += px(&g, x, box[3])[0] == 0;
            assert_int_equal(foot, 2 * 5 * L.text_scale);
            assert_int_equal(box[2] - box[0] + 1, font_text_width("LL", L.text_scale));
            assert_int_equal(box[3] - box[1] + 1, FONT_CAP_H * L.text_scale);
        }
    }
    /* Everything else (margins, the empty sixth cell) is white. */
    for (int y = 0; y < g.h; y++)
        for (int x = 0; x < g.w; x++)
            if (!seen[(size_t)y * g.w + x]) {
                const uint8_t *p = px(&g, x, y);
                if (p[0] != 255 || p[1] != 255 || p[2] != 255) fail_msg("pixel (%d,%d) is not white", x, y);
            }
    free(seen);
    image_free(&g);
    free(s);
}

static void test_render_f32(void **state) {
    (void)state;
    check_render(1);
}

static void test_render_u8(void **state) {
    (void)state;
    check_render(0);
}

/* The JPEG on disk: the grid's size, each image's colour in its interior (within JPEG error), white
 * margins, dark title text. */
static void test_write_jpeg(void **state) {
    (void)state;
    SolidBatch *s = solid_batch(1);
    char dir[] = "/tmp/cnn_show_batch_XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/grid.jpg", dir);
    if (show_batch_write(&s->b, NAMES, NB, 3, path, err, sizeof err)) fail_msg("%s", err);
    Image g;
    if (jpeg_decode_file(path, NULL, &g, NULL, err, sizeof err)) fail_msg("%s", err);
    ShowBatchLayout L = show_batch_layout(NB, SIZE, 3);
    assert_int_equal(g.w, L.width);
    assert_int_equal(g.h, L.height);
    for (int i = 0; i < NB; i++) {
        int x0, y0;
        show_batch_cell(&L, i, &x0, &y0);
        /* 4 pixels in from the edges, where JPEG rings at the colour borders; 4:2:0 chroma blocks that
         * straddle the white margin still shift saturated colours by up to ~15. */
        for (int y = y0 + 4; y < y0 + SIZE - 4; y++)
            for (int x = x0 + 4; x < x0 + SIZE - 4; x++)
                for (int c = 0; c < 3; c++)
                    if (abs(px(&g, x, y)[c] - COLOURS[i][c]) > 20)
                        fail_msg("image %d pixel (%d,%d) channel %d: %d, want %d", i, x, y, c, px(&g, x, y)[c],
                                 COLOURS[i][c]);
        int box[4];
        assert_true(dark_box(&g, x0, y0 - L.title_h, x0 + SIZE, y0, 100, box) >= 2 * 5 * L.text_scale);
    }
    /* The top-left corner and the empty sixth cell are white. */
    assert_true(px(&g, 0, 0)[0] > 240 && px(&g, 0, 0)[1] > 240 && px(&g, 0, 0)[2] > 240);
    int x5, y5;
    show_batch_cell(&L, 5, &x5, &y5);
    for (int y = y5 + 4; y < y5 + SIZE - 4; y++)
        for (int x = x5 + 4; x < x5 + SIZE - 4; x++)
            for (int c = 0; c < 3; c++) assert_true(px(&g, x, y)[c] > 240);
    image_free(&g);
    unlink(path);
    rmdir(dir);
    free(s);
}


/* Issue 13.2: an output path (show-batch --out here; every whole-file write goes through util.h's
 * atomic writer) that exists and is not a regular file is refused and left as it was; a symbolic
 * link is written through: the file it leads to is replaced (or made), the link stays. */
static void test_write_refuses_nodes_and_follows_links(void **state) {
    (void)state;
    SolidBatch *s = solid_batch(1);
    char dir[] = "/tmp/cnn_show_batch_XXXXXX", path[128], target[128], err[512];
    assert_non_null(mkdtemp(dir));
    struct stat st;
    /* a FIFO and a folder */
    snprintf(path, sizeof path, "%s/fifo.jpg", dir);
    assert_int_equal(mkfifo(path, 0666), 0);
    assert_int_equal(show_batch_write(&s->b, NAMES, NB, 3, path, err, sizeof err), -1);
    if (!strstr(err, "fifo.jpg: exists and is a FIFO, not a regular file: not replaced")) fail_msg("%s", err);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    unlink(path);
    snprintf(path, sizeof path, "%s/folder.jpg", dir);
    assert_int_equal(mkdir(path, 0777), 0);
    assert_int_equal(write_file_atomic(path, "x", 1, err, sizeof err), -1);
    if (!strstr(err, "is a folder")) fail_msg("%s", err);
    rmdir(path);
    /* a link to an existing file, and a link to a file not there yet (relative, through two links) */
    snprintf(target, sizeof target, "%s/real.jpg", dir);
    assert_int_equal(write_file_atomic(target, "old", 3, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/link.jpg", dir);
    assert_int_equal(symlink(target, path), 0);
    if (show_batch_write(&s->b, NAMES, NB, 3, path, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    Image g;
    if (jpeg_decode_file(target, NULL, &g, NULL, err, sizeof err)) fail_msg("%s", err);
    image_free(&g);
    snprintf(path, sizeof path, "%s/hop2", dir);
    assert_int_equal(symlink("new.jpg", path), 0);
    snprintf(path, sizeof path, "%s/hop1", dir);
    assert_int_equal(symlink("hop2", path), 0);
    assert_int_equal(write_file_atomic(path, "new", 3, err, sizeof err), 0);
    snprintf(target, sizeof target, "%s/new.jpg", dir);
    size_t n = 0;
    uint8_t *data;
    if (read_whole_file(target, &data, &n, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(n, 3);
    assert_memory_equal(data, "new", 3);
    free(data);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(s);
}

/* Labels outside the class list get their number as a title; an empty batch is an error. */
static void test_odd_batches(void **state) {
    (void)state;
    SolidBatch *s = solid_batch(0);
    s->labels[1] = 99;
    s->labels[2] = -1;
    Image g;
    char err[256];
    assert_int_equal(show_batch_render(&s->b, NAMES, NB, 2, &g, err, sizeof err), 0);
    ShowBatchLayout L = show_batch_layout(NB, SIZE, 2);
    int x0, y0, box[4];
    show_batch_cell(&L, 1, &x0, &y0);
    assert_int_equal(dark_box(&g, x0, y0 - L.title_h, x0 + SIZE, y0, 1, box) > 0, 1);
    assert_int_equal(box[2] - box[0] + 1, font_text_width("99", L.text_scale));
    image_free(&g);
    assert_int_equal(show_batch_render(&s->b, NULL, 0, 2, &g, err, sizeof err), 0);
    image_free(&g);
    s->b.n = 0;
    assert_int_equal(show_batch_render(&s->b, NAMES, NB, 2, &g, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    free(s);
}

/* show-batch CONFIG --stage NAME: the data set and the stage's transforms come from the config. */
static void test_show_batch_from_config(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_show_XXXXXX", data[300], ini[300], out[300], err[512];
    assert_non_null(mkdtemp(root));
    snprintf(data, sizeof data, "%s/data", root);
    if (demo_data_write(data, 3, 1, 32, 2, err, sizeof err)) fail_msg("%s", err);
    snprintf(ini, sizeof ini, "%s/c.ini", root);
    FILE *f = fopen(ini, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s\n[model]\narch = xresnet18\n[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 24\n"
               "transform = rrc\n[stage b]\ntype = fit_one_cycle\nepochs = 1\nsize = 40\n", data);
    fclose(f);
    snprintf(out, sizeof out, "%s/grid.jpg", root);
    char *argv[] = {"train", "show-batch", ini, "--stage", "b", "--n", "4", "--cols", "2", "--out", out, NULL};
    assert_int_equal(cmd_show_batch(11, argv), 0);
    Image img;
    if (jpeg_decode_file(out, NULL, &img, NULL, err, sizeof err)) fail_msg("%s", err);
    ShowBatchLayout lay = show_batch_layout(4, 40, 2); /* stage b's size, carried transform */
    assert_int_equal(img.w, lay.width);
    assert_int_equal(img.h, lay.height);
    image_free(&img);
    char *bad[] = {"train", "show-batch", ini, "--stage", "c", "--out", out, NULL};
    assert_int_equal(cmd_show_batch(7, bad), 2);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_show_batch_from_config), cmocka_unit_test(test_font_glyph_L),      cmocka_unit_test(test_font_glyph_I_scaled),
        cmocka_unit_test(test_font_advance),      cmocka_unit_test(test_font_descender),
        cmocka_unit_test(test_font_unknown_is_box),
        cmocka_unit_test(test_font_width),        cmocka_unit_test(test_font_clipping),
        cmocka_unit_test(test_layout),            cmocka_unit_test(test_render_f32),
        cmocka_unit_test(test_render_u8),         cmocka_unit_test(test_write_jpeg),
        cmocka_unit_test(test_odd_batches),       cmocka_unit_test(test_write_refuses_nodes_and_follows_links),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
