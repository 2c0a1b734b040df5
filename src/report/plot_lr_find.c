/* report/plot_lr_find.c: an LR range test's curve as fastai's plot_lr_find draws it (smoothed loss
 * against a log-scale lr, the suggestions as points), through report/plot.c's gnuplot runner. */
#include "report/plot_lr_find.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "report/plot.h"

static void num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, " %.9g", x);
    else fputs(" NaN", f);
}

int plot_lr_find(const char *png_path, const double *lr, const float *loss, const float *smooth, int n,
                 const PlotMark *marks, int nmarks, const char *title) {
    if (n < 1) {
        printf("plots: %s: no points to plot\n", png_path);
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        printf("plots: %s: out of memory\n", png_path);
        return -1;
    }
    fputs("$curve << EOD\n", f);
    for (int i = 0; i < n; i++) {
        num(f, lr[i]), num(f, loss[i]), num(f, smooth[i]);
        fputc('\n', f);
    }
    fputs("EOD\n", f);
    for (int k = 0; k < nmarks; k++) {
        fprintf(f, "$mark%d << EOD\n", k);
        num(f, marks[k].x), num(f, marks[k].y);
        fputs("\nEOD\n", f);
    }
    /* the y range from the smoothed curve (fastai plots only that): the raw losses of the last
     * batches before a divergence would flatten everything else */
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(smooth[i])) lo = fmin(lo, smooth[i]), hi = fmax(hi, smooth[i]);
    if (lo <= hi) {
        double pad = fmax(0.08 * (hi - lo), 0.02);
        fprintf(f, "set yrange [%.9g:%.9g]\n", lo - pad, hi + pad);
    }
    if (n > 1 && lr[0] > 0 && lr[n - 1] > lr[0]) fprintf(f, "set xrange [%.9g:%.9g]\n", lr[0], lr[n - 1]);
    fputs("set logscale x 10\nset format x '%.0e'\nset xlabel 'learning rate (log scale)'\nset ylabel 'loss'\n"
          "set key inside top left box opaque\nset title ",
          f);
    plot_quote(f, title ? title : "lr_find: smoothed training loss vs learning rate");
    fputs("\nplot $curve using 1:2 with lines linecolor 'gray70' title 'batch loss', \\\n"
          "     $curve using 1:3 with lines linewidth 2 linecolor rgb '#1f77b4' title 'smoothed loss (beta 0.98)'",
          f);
    static const char *const colors[] = {"#ff7f0e", "#2ca02c", "#d62728", "#9467bd"}; /* matplotlib's next colours */
    for (int k = 0; k < nmarks; k++) {
        fprintf(f, ", \\\n     $mark%d using 1:2 with points pointtype 7 pointsize 2 linecolor rgb '%s' title ", k,
                colors[k % 4]);
        plot_quote(f, marks[k].label);
    }
    fputs("\n", f);
    if (fclose(f)) {
        free(text);
        printf("plots: %s: out of memory\n", png_path);
        return -1;
    }
    int rc = plot_draw(png_path, text);
    free(text);
    return rc;
}
