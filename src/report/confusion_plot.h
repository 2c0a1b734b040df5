/* report/confusion_plot.h: a confusion matrix as a PNG heat map drawn by gnuplot, like fastai's
 * plot_confusion_matrix: actual classes down, predicted across, class names on both axes, the
 * count in each cell (white on dark cells), matplotlib's "Blues" colours. */
#ifndef CNN_CONFUSION_PLOT_H
#define CNN_CONFUSION_PLOT_H

/* cm: classes x classes counts, [actual * classes + predicted]; names: the class names (NULL:
 * numbers). Draws dir/png with its script dir/<png less .png>.gp beside it. Cell counts are
 * written while classes <= 40 and names while classes <= 120 (beyond, a plain heat map). Returns
 * as plot_eval (report/plot.h): 0 when drawn or when gnuplot is absent (a line says so), -1 with a
 * line printed when it failed. */
int plot_confusion(const int *cm, int classes, const char *const *names, const char *dir, const char *png,
                   const char *title);

#endif
