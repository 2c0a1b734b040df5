/* report/show_batch.c: laying out and drawing a batch grid (see show_batch.h). */
#include "report/show_batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/augment.h"
#include "report/font.h"
#include "base/util.h"

static const uint8_t WHITE = 255;
static const uint8_t TEXT_RGB[3] = {0, 0, 0};

ShowBatchLayout show_batch_layout(int n, int size, int cols) {
    ShowBatchLayout L;
    memset(&L, 0, sizeof L);
    if (n < 0) n = 0;
    if (size < 1) size = 1;
    if (cols < 1 || cols > n) cols = n > 0 ? n : 1;
    L.n = n;
    L.size = size;
    L.cols = cols;
    L.rows = n > 0 ? (n + cols - 1) / cols : 1;
    /* Titles about a tenth of the image high, as matplotlib's default title is next to fastai's
     * figsize; margins grow slowly with the image so small grids stay compact. */
    L.margin = 4 + size / 48;
    L.text_scale = (size + 32) / 80 > 1 ? (size + 32) / 80 : 1;
    L.title_h = FONT_GLYPH_H * L.text_scale + L.text_scale + 1; /* + a gap before the image */
    L.width = L.cols * size + (L.cols + 1) * L.margin;
    L.height = L.rows * (L.title_h + size) + (L.rows + 1) * L.margin;
    return L;
}

void show_batch_cell(const ShowBatchLayout *L, int i, int *x, int *y) {
    int r = i / L->cols, c = i % L->cols;
    *x = L->margin + c * (L->size + L->margin);
    *y = L->margin + r * (L->title_h + L->size + L->margin) + L->title_h;
}

static uint8_t to_byte(float v) {
    float f = v * 255.0f + 0.5f;
    if (!(f >= 0.0f)) return 0; /* also NaN */
    return f >= 255.0f ? 255 : (uint8_t)f;
}

/* Copy image i of the batch to (x0, y0) of the grid as RGB bytes. */
static void blit(const Batch *b, int i, Image *g, int x0, int y0) {
    int s = b->size;
    size_t plane = (size_t)s * s;
    for (int y = 0; y < s; y++) {
        uint8_t *o = g->rgb + ((size_t)(y0 + y) * g->w + x0) * 3;
        if (b->x) {
            const float *src = b->x + (size_t)i * 3 * plane + (size_t)y * s;
            for (int x = 0; x < s; x++)
                for (int c = 0; c < 3; c++) o[3 * x + c] = to_byte(src[c * plane + x] * imagenet_std[c] + imagenet_mean[c]);
        } else {
            memcpy(o, b->u8 + ((size_t)i * plane + (size_t)y * s) * 3, (size_t)s * 3);
        }
    }
}

void show_batch_title(Image *g, const char *title, int x0, int width, int text_bottom, int max_scale, const uint8_t rgb[3]) {
    int scale = max_scale;
    while (scale > 1 && font_text_width(title, scale) > width) scale--;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", title);
    if (font_text_width(buf, scale) > width) {
        /* Drop whole characters (never half a UTF-8 sequence) until "text.." fits. */
        size_t len = strlen(buf);
        for (;;) {
            while (len > 0 && ((unsigned char)buf[len - 1] & 0xC0) == 0x80) len--;
            if (len > 0) len--; /* the lead byte (or a plain character) */
            if (len + 3 > sizeof buf) continue;
            memcpy(buf + len, "..", 3);
            if (len == 0 || font_text_width(buf, scale) <= width) break;
        }
    }
    int w = font_text_width(buf, scale);
    font_draw(g, x0 + (width - w) / 2, text_bottom - FONT_GLYPH_H * scale, buf, scale, rgb);
}

int show_batch_render(const Batch *b, const char *const *class_names, int nclasses, int cols, Image *out, char *err,
                      size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!b || b->n < 1 || b->size < 1 || (!b->x && !b->u8) || !b->labels)
        return error_at(err, errlen, "show-batch", "an empty batch: nothing to draw");
    ShowBatchLayout L = show_batch_layout(b->n, b->size, cols);
    out->w = L.width;
    out->h = L.height;
    out->rgb = xmalloc((size_t)L.width * L.height * 3);
    memset(out->rgb, WHITE, (size_t)L.width * L.height * 3);
    int gap = L.title_h - FONT_GLYPH_H * L.text_scale;
    for (int i = 0; i < b->n; i++) {
        int x, y;
        show_batch_cell(&L, i, &x, &y);
        blit(b, i, out, x, y);
        int label = b->labels[i];
        char num[32];
        const char *title = class_names && label >= 0 && label < nclasses && class_names[label] ? class_names[label] : NULL;
        if (!title) {
            snprintf(num, sizeof num, "%d", label);
            title = num;
        }
        show_batch_title(out, title, x, L.size, y - gap, L.text_scale, TEXT_RGB);
    }
    return 0;
}

int show_batch_write(const Batch *b, const char *const *class_names, int nclasses, int cols, const char *path,
                     char *err, size_t errlen) {
    Image g;
    if (show_batch_render(b, class_names, nclasses, cols, &g, err, errlen)) return -1;
    int rc = jpeg_write_file(path, &g, 90, err, errlen);
    image_free(&g);
    return rc;
}
