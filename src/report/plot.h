/* report/plot.h: a run's curves as PNGs, drawn by gnuplot when it is installed.
 *
 * The data goes into the gnuplot script itself (inline data blocks), and gnuplot runs with the
 * output folder as its working directory on a script named relatively, so no path ever passes
 * through a shell or into the script; the only names in it are the PNGs', single-quoted. The
 * script stays beside the PNGs: `gnuplot plots.gp` in that folder draws them again.
 * Messages go to stdout, one line each, starting with "plots: ". */
#ifndef CNN_PLOT_H
#define CNN_PLOT_H

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

#endif
