/* report/gnuplot.h: inside report/ only: what its plots share. Numeric columns read from CSV
 * files, the parts of a gnuplot script (data goes inline as data blocks, names single-quoted),
 * and writing a script whole and running gnuplot on it in the output folder (see plot.h). */
#ifndef CNN_GNUPLOT_H
#define CNN_GNUPLOT_H

#include <stddef.h>
#include <stdio.h>

/* One numeric column of a CSV file. */
typedef struct {
    double *v;
    int n, cap;
} Column;

void gp_col_push(Column *c, double x);
/* A number, or NaN for an empty or malformed field (gnuplot leaves NaN points out). */
double gp_field_num(const char *s);
/* Split line (newline already stripped) in place at commas; returns the field count. */
int gp_split_csv(char *line, char **fields, int max);
/* One line without its line end; 0 at the end of the file. */
int gp_read_line(FILE *f, char *buf, size_t len);
int gp_has_suffix(const char *s, const char *suffix);

/* The script's parts. */
void gp_header(FILE *f);                 /* terminal, grid, key: once at the top */
void gp_clear(FILE *f);                  /* between plots: what one must not leak into the next */
void gp_output(FILE *f, const char *png);
void gp_num(FILE *f, double x);          /* " 1.5", or " NaN" */
/* $name << EOD: one row per value of cols[0], ncols numbers each. */
void gp_datablock(FILE *f, const char *name, const Column *const *cols, int ncols);
/* set {axis}range from the finite values of a (and b), padded by pad of the span, at least
 * min_span wide, within [floor_, ceil_]. */
void gp_range(FILE *f, const char *axis, const Column *a, const Column *b, double pad, double min_span, double floor_,
              double ceil_);

/* The script, written whole (util.h's atomic write) from the memory stream f. 0, or -1 said. */
int gp_write_script(FILE *f, char **text, size_t *len, const char *path);
/* gnuplot SCRIPT in dir, stdin from /dev/null, no shell. 0, or -1 with a line printed. */
int gp_run(const char *gnuplot, const char *dir, const char *script);
/* Why a plot was skipped when gnuplot is absent. */
const char *gp_skip_reason(void);

/* plot_eval.c, for plot_run: evaluation tables as plots in the run's script. An eval table:
 * columns by name from the header (size,loss,accuracy[,images][,tta_loss,tta_accuracy]
 * [,trained_size] ...). */
typedef struct {
    Column size, loss, acc, tta_acc;
    int has_tta;
    int trained_size;        /* the side the model trained at (column trained_size), 0 unknown */
} EvalTable;
/* 0, or -1 with a line printed (unreadable, or not an evaluation table). */
int eval_table_read(const char *path, EvalTable *t);
void eval_table_free(EvalTable *t);
/* Accuracy (and with TTA) vs test size into png (NULL: the output is set already), the training
 * size marked. block: the data block's name, unique in the script. */
void gp_eval_plot(FILE *f, const EvalTable *t, const char *block, const char *png, const char *title);
/* Several tables' accuracy on one plot (FixRes: before and after), each curve titled by its
 * name and training size. */
void gp_eval_compare(FILE *f, const EvalTable *t, const char *const *names, int n, const char *png, const char *title);

#endif
