/* report/show_batch.h: a batch as a picture, like fastai's show_batch: a grid of the images each with its
 * class name as a title above it, on white. The drawing is separate from `train show-batch`'s
 * option parsing so a config-driven caller can reuse it. */
#ifndef CNN_SHOW_BATCH_H
#define CNN_SHOW_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/image.h"
#include "pipeline/loader.h"

/* Where things go in the grid (all in pixels). Image i sits in row i / cols, column i % cols, its
 * top-left corner at (margin + col*(size+margin), margin + row*(title_h+size+margin) + title_h);
 * its title is centred over it in the title_h band, text_scale font pixels per pixel at most. */
typedef struct {
    int n, size, cols, rows;
    int margin;       /* white space around and between cells */
    int text_scale;   /* font scale of the titles (a title too wide for its image is drawn smaller
                       * or cut short with "..") */
    int title_h;      /* title band: text height + a gap before the image */
    int width, height;
} ShowBatchLayout;

ShowBatchLayout show_batch_layout(int n, int size, int cols);
/* Top-left corner of image i. */
void show_batch_cell(const ShowBatchLayout *, int i, int *x, int *y);

/* Draw title centred in the band [x0, x0+width) of g whose bottom text row is at text_bottom, in
 * colour rgb: as large as fits up to max_scale, else at scale 1 cut short with "..". */
void show_batch_title(Image *g, const char *title, int x0, int width, int text_bottom, int max_scale, const uint8_t rgb[3]);

/* Draw batch b into *out (allocated; free with image_free). The pixels come from b->x when set
 * (BATCH_F32: the ImageNet normalisation is undone, so lighting shows) and otherwise from b->u8
 * (BATCH_U8). Titles are class_names[label], or the label number when it is outside
 * [0, nclasses) or class_names is NULL. cols < 1 means one row. Returns 0, or -1 with err. */
int show_batch_render(const Batch *b, const char *const *class_names, int nclasses, int cols, Image *out, char *err,
                      size_t errlen);
/* show_batch_render, then write the grid as a JPEG of quality 90 at path. */
int show_batch_write(const Batch *b, const char *const *class_names, int nclasses, int cols, const char *path,
                     char *err, size_t errlen);

#endif
