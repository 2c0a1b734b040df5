/* report/plot_lr_find.h: an LR range test's curve as a PNG (fastai's plot_lr_find), through gnuplot. */
#ifndef CNN_PLOT_LR_FIND_H
#define CNN_PLOT_LR_FIND_H

/* A point to mark on the curve, with its legend text. */
typedef struct {
    double x, y;
    char label[96];
} PlotMark;

/* The smoothed loss (and, behind it, the raw batch loss) of the first n points against the lr on a
 * log axis, the marks as points, into png_path (the script beside it). title may be NULL. Returns
 * 0 when drawn or when gnuplot is absent (a line says so), -1 when it failed (a line says why). */
int plot_lr_find(const char *png_path, const double *lr, const float *loss, const float *smooth, int n,
                 const PlotMark *marks, int nmarks, const char *title);

#endif
