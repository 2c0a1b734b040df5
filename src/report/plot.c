/* report/plot.c: a run folder's metrics.csv, steps.csv and eval-*.csv as PNGs through one gnuplot
 * script (see plot.h). */
#include "report/plot.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"
#include "report/gnuplot.h"

typedef struct {
    Column epoch, train_loss, valid_loss, acc, size;  /* one per epoch row */
    char **stage;                                      /* the epoch rows' stage names */
    Column tta_epoch, tta_acc;                         /* rows with stage_epoch "tta" */
} Metrics;

static void metrics_free(Metrics *m) {
    for (int i = 0; i < m->epoch.n; i++) free(m->stage[i]);
    free(m->stage);
    free(m->epoch.v), free(m->train_loss.v), free(m->valid_loss.v), free(m->acc.v), free(m->size.v);
    free(m->tta_epoch.v), free(m->tta_acc.v);
    memset(m, 0, sizeof *m);
}

/* stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size. Returns 1 when read, 0 when
 * the file is absent, -1 when it is unreadable or not a metrics table (a line printed). */
static int metrics_read(const char *path, Metrics *m) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        printf("plots: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[2048], *fld[9];
    if (!gp_read_line(f, line, sizeof line) || strncmp(line, "stage,epoch,stage_epoch,", 24)) {
        printf("plots: %s: not a metrics table (header stage,epoch,stage_epoch,...)\n", path);
        fclose(f);
        return -1;
    }
    int cap = 0;
    while (gp_read_line(f, line, sizeof line)) {
        if (gp_split_csv(line, fld, 9) < 8) continue;
        if (!strcmp(fld[2], "tta")) {
            gp_col_push(&m->tta_epoch, gp_field_num(fld[1]));
            gp_col_push(&m->tta_acc, gp_field_num(fld[5]));
            continue;
        }
        if (isnan(gp_field_num(fld[1]))) continue;
        if (m->epoch.n == cap) {
            cap = cap ? 2 * cap : 16;
            m->stage = xrealloc(m->stage, (size_t)cap * sizeof *m->stage);
        }
        size_t len = strlen(fld[0]);
        m->stage[m->epoch.n] = memcpy(xmalloc(len + 1), fld[0], len + 1);
        gp_col_push(&m->epoch, gp_field_num(fld[1]));
        gp_col_push(&m->train_loss, gp_field_num(fld[3]));
        gp_col_push(&m->valid_loss, gp_field_num(fld[4]));
        gp_col_push(&m->acc, gp_field_num(fld[5]));
        gp_col_push(&m->size, gp_field_num(fld[7]));
    }
    fclose(f);
    return 1;
}

/* steps.csv (step,stage,epoch,stage_epoch,batch,lr,momentum,loss): the schedule per step, thinned
 * to at most STEP_POINTS rows (the curves are smooth); stage starts from every row. */
#define STEP_POINTS 20000
typedef struct {
    Column step, lr, mom;
    Column stage_step;      /* the first step of each stage after the first */
    char **stage_name;      /* every stage's name, stage_step.n + 1 of them */
} Steps;

static void steps_free(Steps *t) {
    for (int i = 0; i <= t->stage_step.n && t->stage_name; i++) free(t->stage_name[i]);
    free(t->stage_name);
    free(t->step.v), free(t->lr.v), free(t->mom.v), free(t->stage_step.v);
    memset(t, 0, sizeof *t);
}

/* 1 when read with rows, 0 when absent or empty, -1 (a line printed) when not a steps table. */
static int steps_read(const char *path, Steps *t) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1024], *fld[9], prev[256] = "";
    if (!gp_read_line(f, line, sizeof line) || strncmp(line, "step,stage,epoch,stage_epoch,batch,lr,momentum,", 47)) {
        printf("plots: %s: not a step table (header step,stage,epoch,...); lr.png left out\n", path);
        fclose(f);
        return -1;
    }
    long rows = 0;
    while (gp_read_line(f, line, sizeof line)) rows++;
    long every = rows / STEP_POINTS + 1, k = 0;
    rewind(f);
    gp_read_line(f, line, sizeof line);
    while (gp_read_line(f, line, sizeof line)) {
        if (gp_split_csv(line, fld, 9) < 8) continue;
        if (strcmp(fld[1], prev)) {
            if (*prev) gp_col_push(&t->stage_step, gp_field_num(fld[0]));
            t->stage_name = xrealloc(t->stage_name, (size_t)(t->stage_step.n + 1) * sizeof *t->stage_name);
            size_t len = strlen(fld[1]);
            t->stage_name[t->stage_step.n] = memcpy(xmalloc(len + 1), fld[1], len + 1);
            snprintf(prev, sizeof prev, "%s", fld[1]);
        }
        if (k++ % every) continue;
        gp_col_push(&t->step, gp_field_num(fld[0]));
        gp_col_push(&t->lr, gp_field_num(fld[5]));
        gp_col_push(&t->mom, gp_field_num(fld[6]));
    }
    fclose(f);
    return t->step.n > 0;
}

/* Stage names over an epoch plot: a dashed line where a stage starts (after the first) and the
 * stage's name at the top. */
static void gp_stage_marks(FILE *f, const Metrics *m) {
    for (int i = 0; i < m->epoch.n; i++) {
        if (i > 0 && !strcmp(m->stage[i], m->stage[i - 1])) continue;
        double x = m->epoch.v[i] - 0.5;
        if (i > 0) fprintf(f, "set arrow from %.8g, graph 0 to %.8g, graph 1 nohead dashtype 2 linecolor 'gray50'\n", x, x);
        fputs("set label ", f);
        plot_quote(f, m->stage[i]);
        fprintf(f, " at %.8g, graph 0.96 left offset character 0.4, 0 textcolor 'gray30'\n", x);
    }
}

static void gp_epoch_plots(FILE *f, const Metrics *m) {
    const Column *cols[] = {&m->epoch, &m->train_loss, &m->valid_loss, &m->acc, &m->size};
    gp_datablock(f, "epochs", cols, 5);
    double x0 = m->epoch.v[0], x1 = m->epoch.v[m->epoch.n - 1];
    /* whole epochs as tics while they fit; beyond that gnuplot's own choice */
    const char *xr = x1 - x0 <= 20 ? "set xrange [%.8g:%.8g]\nset xlabel 'epoch (over all stages)'\nset xtics 1\n"
                                   : "set xrange [%.8g:%.8g]\nset xlabel 'epoch (over all stages)'\n";

    gp_clear(f);
    fprintf(f, xr, x0 - 0.5, x1 + 0.5);
    gp_range(f, "y", &m->train_loss, &m->valid_loss, 0.08, 0.05, 0, INFINITY);
    gp_stage_marks(f, m);
    gp_output(f, "loss.png");
    fputs("set title 'loss per epoch'\nset ylabel 'loss'\n"
          "plot $epochs using 1:2 with linespoints pointtype 7 title 'train loss', \\\n"
          "     $epochs using 1:3 with linespoints pointtype 5 title 'valid loss'\n",
          f);

    gp_clear(f);
    fprintf(f, xr, x0 - 0.5, x1 + 0.5);
    gp_range(f, "y", &m->acc, m->tta_acc.n ? &m->tta_acc : NULL, 0.1, 0.02, 0, 1);
    gp_stage_marks(f, m);
    if (m->tta_acc.n) {
        const Column *tc[] = {&m->tta_epoch, &m->tta_acc};
        gp_datablock(f, "tta", tc, 2);
    }
    gp_output(f, "accuracy.png");
    fputs("set title 'validation accuracy per epoch'\nset ylabel 'accuracy'\n"
          "plot $epochs using 1:4 with linespoints pointtype 7 title 'accuracy'",
          f);
    /* a TTA row carries the epochs done so far: it belongs at the last epoch trained */
    if (m->tta_acc.n) fputs(", \\\n     $tta using ($1 - 1):2 with points pointtype 9 pointsize 2 title 'TTA'", f);
    fputs("\n", f);

    gp_clear(f);
    fprintf(f, xr, x0 - 0.5, x1 + 0.5);
    gp_range(f, "y", &m->size, NULL, 0.1, 16, 0, INFINITY);
    gp_stage_marks(f, m);
    gp_output(f, "size.png");
    fputs("set title 'image side per epoch (the size schedule)'\nset ylabel 'pixels'\n"
          "plot $epochs using 1:5 with histeps linecolor 1 title 'train size', $epochs using 1:5 with points pointtype 7 linecolor 1 notitle\n",
          f);
}

/* lr.png: fastai's recorder.plot_sched, the learning rate (of the last parameter group, the head)
 * and Adam's beta1 per training step, side by side, stage starts dashed. */
static void gp_step_plots(FILE *f, const Steps *t) {
    const Column *cols[] = {&t->step, &t->lr, &t->mom};
    gp_datablock(f, "steps", cols, 3);
    gp_clear(f);
    gp_output(f, "lr.png");
    fputs("set multiplot layout 1,2 title 'schedule per training step'\nset xlabel 'step (over all stages)'\n", f);
    for (int k = 0; k < 2; k++) {
        gp_clear(f);
        fputs("set xtics autofreq\n", f); /* not the epoch plots' whole epochs */
        gp_range(f, "x", &t->step, NULL, 0, 1, -INFINITY, INFINITY);
        gp_range(f, "y", k ? &t->mom : &t->lr, NULL, 0.08, k ? 0.01 : 1e-9, 0, INFINITY);
        for (int i = 0; i <= t->stage_step.n; i++) {
            double x = i ? t->stage_step.v[i - 1] : t->step.v[0];
            if (i) fprintf(f, "set arrow from %.8g, graph 0 to %.8g, graph 1 nohead dashtype 2 linecolor 'gray50'\n", x, x);
            fputs("set label ", f);
            plot_quote(f, t->stage_name[i]);
            fprintf(f, " at %.8g, graph 0.96 left offset character 0.4, 0 textcolor 'gray30'\n", x);
        }
        fprintf(f, "set title '%s'\nset ylabel '%s'\nplot $steps using 1:%d with lines linewidth 2 notitle\n",
                k ? "momentum (Adam beta1)" : "learning rate", k ? "beta1" : "lr", k ? 3 : 2);
    }
    fputs("unset multiplot\n", f);
}

/* "a.png b.png" + " c.png" */
static void append_name(char *list, size_t cap, const char *name) {
    size_t used = strlen(list);
    snprintf(list + used, cap - used, "%s%s", used ? " " : "", name);
}

static int is_eval_csv(const struct dirent *e) {
    return !strncmp(e->d_name, "eval-", 5) && gp_has_suffix(e->d_name, ".csv") && strlen(e->d_name) > 9;
}

int plot_run(const char *run_dir) {
    const char *gnuplot = plot_gnuplot_path();
    if (!gnuplot) {
        printf("plots: skipped for %s: %s\n", run_dir, gp_skip_reason());
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    Metrics m;
    int have_metrics = metrics_read(path, &m) > 0 && m.epoch.n > 0;
    struct dirent **names = NULL;
    int nnames = scandir(run_dir, &names, is_eval_csv, alphasort);
    if (nnames < 0) {
        printf("plots: cannot list %s: %s\n", run_dir, strerror(errno));
        if (have_metrics) metrics_free(&m);
        return -1;
    }

    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    char drawn[2048] = "";
    int ok = f != NULL, nplots = 0;
    if (!f) printf("plots: cannot write %s/plots.gp: %s\n", run_dir, strerror(errno));
    if (f) {
        gp_header(f);
        if (have_metrics && plot_target_ok(run_dir, "loss.png") && plot_target_ok(run_dir, "accuracy.png") &&
            plot_target_ok(run_dir, "size.png")) {
            gp_epoch_plots(f, &m);
            snprintf(drawn, sizeof drawn, "loss.png accuracy.png size.png");
            nplots += 3;
        }
        snprintf(path, sizeof path, "%s/steps.csv", run_dir);
        Steps steps;
        if (steps_read(path, &steps) > 0 && plot_target_ok(run_dir, "lr.png")) {
            gp_step_plots(f, &steps);
            append_name(drawn, sizeof drawn, "lr.png");
            nplots++;
        }
        steps_free(&steps);
        EvalTable *tables = xcalloc((size_t)nnames + 1, sizeof *tables);
        const char **stage = xcalloc((size_t)nnames + 1, sizeof *stage);
        double *mtime = xcalloc((size_t)nnames + 1, sizeof *mtime);
        int ntables = 0;
        for (int i = 0; i < nnames; i++) {
            char *name = names[i]->d_name;
            snprintf(path, sizeof path, "%s/%s", run_dir, name);
            EvalTable t;
            if (eval_table_read(path, &t)) continue;
            char png[512];
            snprintf(png, sizeof png, "%.*s.png", (int)(strlen(name) - 4), name);
            if (t.size.n > 0 && plot_target_ok(run_dir, png)) {
                char block[32], title[600];
                snprintf(block, sizeof block, "eval%d", i);
                snprintf(title, sizeof title, "accuracy vs test size (%s)", name);
                gp_eval_plot(f, &t, block, png, title);
                append_name(drawn, sizeof drawn, png);
                nplots++;
            }
            struct stat st;
            if (t.size.n > 0 && !stat(path, &st)) { /* kept for the plot of them all, in the order written */
                name[strlen(name) - 4] = 0; /* "eval-NAME.csv" -> the stage's NAME */
                stage[ntables] = name + 5;
                mtime[ntables] = (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
                tables[ntables++] = t;
            } else {
                eval_table_free(&t);
            }
        }
        /* FixRes before and after (every eval stage) on one plot */
        for (int i = 1; i < ntables; i++)
            for (int j = i; j > 0 && mtime[j] < mtime[j - 1]; j--) {
                EvalTable t = tables[j];
                const char *n = stage[j];
                double mt = mtime[j];
                tables[j] = tables[j - 1], stage[j] = stage[j - 1], mtime[j] = mtime[j - 1];
                tables[j - 1] = t, stage[j - 1] = n, mtime[j - 1] = mt;
            }
        if (ntables > 1 && plot_target_ok(run_dir, "eval_stages.png")) {
            gp_eval_compare(f, tables, stage, ntables, "eval_stages.png", "accuracy vs test size, every eval stage of the run");
            append_name(drawn, sizeof drawn, "eval_stages.png");
            nplots++;
        }
        for (int i = 0; i < ntables; i++) eval_table_free(&tables[i]);
        free(tables), free(stage), free(mtime);
        fputs("unset output\n", f);
        snprintf(path, sizeof path, "%s/plots.gp", run_dir);
        if (gp_write_script(f, &text, &text_len, path)) ok = 0;
    }
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(names);
    if (have_metrics) metrics_free(&m);
    if (!ok) return -1;
    if (!nplots) {
        printf("plots: nothing to plot in %s (no epochs in metrics.csv, no eval-*.csv)\n", run_dir);
        return 0;
    }
    if (gp_run(gnuplot, run_dir, "plots.gp")) return -1;
    printf("plots: %s in %s (script plots.gp)\n", drawn, run_dir);
    return 0;
}
