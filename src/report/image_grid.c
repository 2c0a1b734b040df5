/* report/image_grid.c: drawing a titled image grid (image_grid.h) with show_batch's layout. */
#include "report/image_grid.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "report/font.h"

static const uint8_t BLACK[3] = {0, 0, 0};

ImageGridLayout image_grid_layout(int n, int size, int cols, int lines, const char *heading, int min_side) {
    ImageGridLayout g;
    if (size < 1) size = 1;
    g.zoom = size < min_side ? (min_side + size - 1) / size : 1;
    g.cells = show_batch_layout(n, size * g.zoom, cols);
    ShowBatchLayout *L = &g.cells;
    int s = L->text_scale, line_h = FONT_GLYPH_H * s + s; /* a line and the gap under it */
    /* show_batch's band holds one line; ours holds `lines`, and a heading band goes on top */
    L->title_h = lines * line_h + 1;
    g.heading_h = heading && *heading ? line_h + L->margin : 0;
    L->height = L->rows * (L->title_h + L->size) + (L->rows + 1) * L->margin + g.heading_h;
    return g;
}

void image_grid_cell(const ImageGridLayout *g, int i, int *x, int *y) {
    show_batch_cell(&g->cells, i, x, y);
    *y += g->heading_h;
}

int image_grid_render(const uint8_t *u8, int n, int size, int cols, const GridTitle *titles, int lines,
                      const char *heading, int min_side, Image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!u8 || n < 1 || size < 1 || lines < 1 || lines > GRID_TITLE_LINES)
        return error_at(err, errlen, "image grid", "nothing to draw (%d images of side %d, %d title lines)", n, size, lines);
    ImageGridLayout g = image_grid_layout(n, size, cols, lines, heading, min_side);
    const ShowBatchLayout *L = &g.cells;
    int s = L->text_scale, line_h = FONT_GLYPH_H * s + s, side = L->size, z = g.zoom;
    out->w = L->width;
    out->h = L->height;
    out->rgb = xmalloc((size_t)L->width * L->height * 3);
    memset(out->rgb, 255, (size_t)L->width * L->height * 3);
    if (g.heading_h) show_batch_title(out, heading, 0, L->width, L->margin + FONT_GLYPH_H * s, s, BLACK);
    for (int i = 0; i < n; i++) {
        int x, y;
        image_grid_cell(&g, i, &x, &y);
        const uint8_t *img = u8 + (size_t)i * size * size * 3;
        for (int r = 0; r < side; r++) {
            uint8_t *o = out->rgb + ((size_t)(y + r) * L->width + x) * 3;
            const uint8_t *src = img + (size_t)(r / z) * size * 3;
            for (int c = 0; c < side; c++) memcpy(o + 3 * c, src + 3 * (c / z), 3);
        }
        for (int j = 0; titles && j < lines; j++) {
            const char *t = titles[i].text[j];
            if (t && *t) show_batch_title(out, t, x, side, y - (s + 1) - (lines - 1 - j) * line_h, s, titles[i].rgb[j]);
        }
    }
    return 0;
}

int image_grid_write(const uint8_t *u8, int n, int size, int cols, const GridTitle *titles, int lines,
                     const char *heading, int min_side, const char *path, char *err, size_t errlen) {
    Image g;
    if (image_grid_render(u8, n, size, cols, titles, lines, heading, min_side, &g, err, errlen)) return -1;
    int rc = jpeg_write_file(path, &g, 90, err, errlen);
    image_free(&g);
    return rc;
}
