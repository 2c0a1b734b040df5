/* report/image_grid.h: a grid of images each under a title of one or more coloured lines, with a
 * heading across the top: fastai's plot_top_losses and show_results pictures. Built on
 * show_batch.h's layout and title drawing, so every grid of ours looks alike. */
#ifndef CNN_IMAGE_GRID_H
#define CNN_IMAGE_GRID_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/image.h"
#include "report/show_batch.h"

#define GRID_TITLE_LINES 2

typedef struct {
    const char *text[GRID_TITLE_LINES];     /* line j, top first; NULL or "": an empty line */
    uint8_t rgb[GRID_TITLE_LINES][3];       /* its colour */
} GridTitle;

/* Where things go: show_batch's layout with a title band of `lines` lines and a heading band
 * (when heading is set) on top. Images smaller than min_side are drawn `zoom` times larger (a
 * whole factor, nearest neighbour, so pixels stay sharp and titles have room), side = size*zoom. */
typedef struct {
    ShowBatchLayout cells;   /* cells.size is the drawn side; its title_h and height include our bands */
    int zoom, heading_h;
} ImageGridLayout;

ImageGridLayout image_grid_layout(int n, int size, int cols, int lines, const char *heading, int min_side);
/* Top-left corner of image i. */
void image_grid_cell(const ImageGridLayout *, int i, int *x, int *y);

/* n images (u8: n x size x size x 3, HWC bytes) in rows of cols (cols < 1: one row), image i
 * under titles[i] (lines lines of text), heading (NULL: none) centred above the grid, laid out by
 * image_grid_layout. *out is allocated (image_free). Returns 0, or -1 with err. */
int image_grid_render(const uint8_t *u8, int n, int size, int cols, const GridTitle *titles, int lines,
                      const char *heading, int min_side, Image *out, char *err, size_t errlen);
/* image_grid_render, then the grid as a JPEG of quality 90 at path. */
int image_grid_write(const uint8_t *u8, int n, int size, int cols, const GridTitle *titles, int lines,
                     const char *heading, int min_side, const char *path, char *err, size_t errlen);

#endif
