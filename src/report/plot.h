/* report/plot.h: a run's curves as PNGs, drawn by gnuplot when it is installed.
 *
 * The data goes into the gnuplot script itself (inline data blocks), and gnuplot runs with the
 * output folder as its working directory on a script named relatively, so no path ever passes
 * through a shell or into the script; the only names in it are the PNGs', single-quoted. The
 * script stays beside the PNGs: `gnuplot plots.gp` in that folder draws them again.
 * Messages go to stdout, one line each, starting with "plots: ". */
#ifndef CNN_PLOT_H
#define CNN_PLOT_H

#include <stddef.h>
#include <stdio.h>

/* The full path of gnuplot found on PATH, in a static buffer, or NULL when there is none. */
const char *plot_gnuplot_path(void);

/* From run_dir/metrics.csv: loss.png (train and valid loss per epoch), accuracy.png (per epoch,
 * with any TTA results as points), size.png (image side per epoch: the schedule); from
 * run_dir/steps.csv, lr.png (learning rate and momentum per step, fastai's plot_sched); and for every
 * run_dir/eval-<name>.csv: eval-<name>.png (accuracy vs test size). Script: plots.gp.
 * Returns 0 when drawn, when gnuplot is absent (one line says plots were skipped and why) and when
 * there is nothing to plot; -1 when the folder cannot be read or written or gnuplot failed (a
 * line says which). Never exits. */
int plot_run(const char *run_dir);

/* One evaluation table (CSV header size,loss,accuracy,images[,tta_loss,tta_accuracy]) as accuracy
 * vs test size, into png_path, with the script beside it (png_path's ".png" replaced by ".gp").
 * title may be NULL. Returns as plot_run. */
int plot_eval(const char *csv_path, const char *png_path, const char *title);

/* For the other plot files (plot_*.c): one PNG from the caller's gnuplot commands. body follows
 * the common header (terminal, grid, key) and `set output`; the script is written beside the PNG
 * (".png" replaced by ".gp") and gnuplot run in that folder. Returns as plot_eval. */
int plot_draw(const char *png_path, const char *body);
/* s as a gnuplot single-quoted string (for titles and labels in a body). */
void plot_quote(FILE *f, const char *s);
/* For other plots in report/, which write their own scripts the same way. */
/* Whether gnuplot may write dir/png: 0 (a line printed) when it exists and is not a regular file. */
int plot_target_ok(const char *dir, const char *png);
/* Closes the memory stream f (open_memstream(text, len)), writes its script as dir/script
 * atomically and runs gnuplot on it in dir; *text is freed. Without gnuplot the script is still
 * written and a line says the plot was skipped (0). 0, or -1 with a line printed. */
int plot_script_run(FILE *f, char **text, size_t *len, const char *dir, const char *script);

#endif
