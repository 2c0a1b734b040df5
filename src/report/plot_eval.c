/* report/plot_eval.c: evaluation tables (eval.csv, eval-<stage>.csv) as accuracy vs test size:
 * one table's plot, and every eval stage of a run on one plot (plot.h). */
#include "report/plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/gnuplot.h"

void eval_table_free(EvalTable *t) {
    free(t->size.v), free(t->loss.v), free(t->acc.v), free(t->tta_acc.v);
    memset(t, 0, sizeof *t);
}

enum { MAX_COLS = 16 };

/* The columns by their header names: the files gain columns (tta, error_rate, trained_size) in
 * several combinations. */
int eval_table_read(const char *path, EvalTable *t) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("plots: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024], *fld[MAX_COLS];
    if (!gp_read_line(f, line, sizeof line) || strncmp(line, "size,loss,accuracy", 18)) {
        printf("plots: %s: not an evaluation table (header size,loss,accuracy,...); left out\n", path);
        fclose(f);
        return -1;
    }
    int tta = -1, trained = -1, nh = gp_split_csv(line, fld, MAX_COLS);
    for (int i = 0; i < nh; i++) {
        if (!strcmp(fld[i], "tta_accuracy")) tta = i;
        if (!strcmp(fld[i], "trained_size")) trained = i;
    }
    t->has_tta = tta >= 0;
    while (gp_read_line(f, line, sizeof line)) {
        int n = gp_split_csv(line, fld, MAX_COLS);
        if (n < 3) continue;
        gp_col_push(&t->size, gp_field_num(fld[0]));
        gp_col_push(&t->loss, gp_field_num(fld[1]));
        gp_col_push(&t->acc, gp_field_num(fld[2]));
        gp_col_push(&t->tta_acc, tta >= 0 && tta < n ? gp_field_num(fld[tta]) : NAN);
        double ts = trained >= 0 && trained < n ? gp_field_num(fld[trained]) : NAN;
        if (ts >= 1 && ts <= 65536) t->trained_size = (int)ts;
    }
    fclose(f);
    return 0;
}

/* A dashed vertical line at the training size, labelled, when it is known. */
static void gp_trained_mark(FILE *f, int side, const char *text) {
    if (side <= 0) return;
    fprintf(f, "set arrow from %d, graph 0 to %d, graph 1 nohead dashtype 2 linecolor 'gray40'\n", side, side);
    fputs("set label ", f);
    plot_quote(f, text);
    fprintf(f, " at %d, graph 0.05 left offset character 0.4, 0 textcolor 'gray30'\n", side);
}

void gp_eval_plot(FILE *f, const EvalTable *t, const char *block, const char *png, const char *title) {
    const Column *cols[] = {&t->size, &t->loss, &t->acc, &t->tta_acc};
    gp_datablock(f, block, cols, 4);
    gp_clear(f);
    Column sizes = t->size;
    double ts = t->trained_size;
    if (t->trained_size > 0) { /* the mark inside the x range, even when no test size is near it */
        sizes.n = 0, sizes.cap = 0, sizes.v = NULL;
        for (int i = 0; i < t->size.n; i++) gp_col_push(&sizes, t->size.v[i]);
        gp_col_push(&sizes, ts);
    }
    gp_range(f, "x", &sizes, NULL, 0.08, 32, 0, INFINITY);
    if (sizes.v != t->size.v) free(sizes.v);
    gp_range(f, "y", &t->acc, t->has_tta ? &t->tta_acc : NULL, 0.15, 0.04, 0, 1.02);
    char mark[64];
    snprintf(mark, sizeof mark, "trained at %d", t->trained_size);
    gp_trained_mark(f, t->trained_size, mark);
    if (png) gp_output(f, png);
    fputs("set title ", f);
    plot_quote(f, title);
    fputs("\nset xlabel 'test image side (pixels)'\nset ylabel 'accuracy'\n", f);
    fprintf(f,
            "plot $%s using 1:3:xtic(1) with linespoints pointtype 7 title 'accuracy', \\\n"
            "     $%s using 1:3:(sprintf('%%.3f', $3)) with labels offset character 0, 1 notitle",
            block, block);
    if (t->has_tta)
        fprintf(f,
                ", \\\n     $%s using 1:4 with linespoints pointtype 5 title 'with TTA', \\\n"
                "     $%s using 1:4:(sprintf('%%.3f', $4)) with labels offset character 0, -1 notitle",
                block, block);
    fputs("\n", f);
}

void gp_eval_compare(FILE *f, const EvalTable *t, const char *const *names, int n, const char *png, const char *title) {
    Column all = {NULL, 0, 0}, acc = {NULL, 0, 0};
    for (int k = 0; k < n; k++) {
        char block[32];
        snprintf(block, sizeof block, "cmp%d", k);
        const Column *cols[] = {&t[k].size, &t[k].acc};
        gp_datablock(f, block, cols, 2);
        for (int i = 0; i < t[k].size.n; i++) gp_col_push(&all, t[k].size.v[i]), gp_col_push(&acc, t[k].acc.v[i]);
        if (t[k].trained_size > 0) gp_col_push(&all, t[k].trained_size);
    }
    gp_clear(f);
    gp_range(f, "x", &all, NULL, 0.08, 32, 0, INFINITY);
    gp_range(f, "y", &acc, NULL, 0.15, 0.04, 0, 1.02);
    free(all.v), free(acc.v);
    for (int k = 0; k < n; k++) {
        int dup = 0; /* one mark per training size */
        for (int j = 0; j < k; j++) dup |= t[j].trained_size == t[k].trained_size;
        char mark[64];
        snprintf(mark, sizeof mark, "trained at %d", t[k].trained_size);
        if (!dup) gp_trained_mark(f, t[k].trained_size, mark);
    }
    gp_output(f, png);
    fputs("set title ", f);
    plot_quote(f, title);
    fputs("\nset xlabel 'test image side (pixels)'\nset ylabel 'accuracy'\nplot ", f);
    for (int k = 0; k < n; k++) {
        char name[300];
        if (t[k].trained_size > 0) snprintf(name, sizeof name, "%s (trained at %d)", names[k], t[k].trained_size);
        else snprintf(name, sizeof name, "%s", names[k]);
        fprintf(f, "%s$cmp%d using 1:2 with linespoints pointtype %d title ", k ? ", \\\n     " : "", k, 7 + k % 4);
        plot_quote(f, name);
        fprintf(f, ", \\\n     $cmp%d using 1:2:(sprintf('%%.3f', $2)) with labels offset character 0, %d notitle", k,
                k % 2 ? -1 : 1);
    }
    fputs("\n", f);
}

int plot_eval(const char *csv_path, const char *png_path, const char *title) {
    if (!plot_gnuplot_path()) {
        printf("plots: skipped %s: %s\n", png_path, gp_skip_reason());
        return 0;
    }
    EvalTable t;
    if (eval_table_read(csv_path, &t)) return -1;
    char *body = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&body, &len);
    if (!f) {
        eval_table_free(&t);
        printf("plots: cannot draw %s: %s\n", png_path, strerror(errno));
        return -1;
    }
    gp_eval_plot(f, &t, "eval", NULL, title ? title : "accuracy vs test size");
    eval_table_free(&t);
    int rc = fclose(f) ? -1 : plot_draw(png_path, body);
    free(body);
    return rc;
}
