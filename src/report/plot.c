/* report/plot.c: metrics.csv and eval-*.csv as PNGs through one gnuplot script (see plot.h). */
#include "report/plot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"

extern char **environ;

const char *plot_gnuplot_path(void) {
    static char found[4096];
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin"; /* what execvp assumes without PATH */
    for (const char *p = path;;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        /* an empty entry means the current folder, as for the shell */
        int n = len ? snprintf(found, sizeof found, "%.*s/gnuplot", (int)len, p) : snprintf(found, sizeof found, "./gnuplot");
        struct stat st;
        if (n > 0 && (size_t)n < sizeof found && !stat(found, &st) && S_ISREG(st.st_mode) && !access(found, X_OK)) return found;
        if (!colon) break;
        p = colon + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------------------- reading the CSVs */

typedef struct {
    double *v;
    int n, cap;
} Column;

static void col_push(Column *c, double x) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->v = xrealloc(c->v, (size_t)c->cap * sizeof *c->v);
    }
    c->v[c->n++] = x;
}

/* A number, or NaN for an empty or malformed field (gnuplot leaves NaN points out). */
static double field_num(const char *s) {
    char *end;
    double x = strtod(s, &end);
    return end == s || *end ? NAN : x;
}

/* Split line (newline already stripped) in place at commas; returns the field count. */
static int split_csv(char *line, char **fields, int max) {
    int n = 0;
    for (char *p = line; n < max;) {
        fields[n++] = p;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p = c + 1;
    }
    return n;
}

static int read_line(FILE *f, char *buf, size_t len) {
    if (!fgets(buf, (int)len, f)) return 0;
    buf[strcspn(buf, "\r\n")] = 0;
    return 1;
}

typedef struct {
    Column size, loss, acc, images, tta_loss, tta_acc;
    int has_tta;
} EvalTable;

static void eval_table_free(EvalTable *t) {
    free(t->size.v), free(t->loss.v), free(t->acc.v), free(t->images.v), free(t->tta_loss.v), free(t->tta_acc.v);
    memset(t, 0, sizeof *t);
}

/* size,loss,accuracy,images[,tta_loss,tta_accuracy]: 0, or -1 with a line printed. */
static int eval_table_read(const char *path, EvalTable *t) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("plots: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024], *fld[8];
    if (!read_line(f, line, sizeof line) || strncmp(line, "size,loss,accuracy", 18)) {
        printf("plots: %s: not an evaluation table (header size,loss,accuracy,...); left out\n", path);
        fclose(f);
        return -1;
    }
    t->has_tta = strstr(line, "tta_accuracy") != NULL;
    while (read_line(f, line, sizeof line)) {
        int n = split_csv(line, fld, 8);
        if (n < 3) continue;
        col_push(&t->size, field_num(fld[0]));
        col_push(&t->loss, field_num(fld[1]));
        col_push(&t->acc, field_num(fld[2]));
        col_push(&t->images, n > 3 ? field_num(fld[3]) : NAN);
        col_push(&t->tta_loss, n > 4 ? field_num(fld[4]) : NAN);
        col_push(&t->tta_acc, n > 5 ? field_num(fld[5]) : NAN);
    }
    fclose(f);
    return 0;
}

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
    if (!read_line(f, line, sizeof line) || strncmp(line, "stage,epoch,stage_epoch,", 24)) {
        printf("plots: %s: not a metrics table (header stage,epoch,stage_epoch,...)\n", path);
        fclose(f);
        return -1;
    }
    int cap = 0;
    while (read_line(f, line, sizeof line)) {
        if (split_csv(line, fld, 9) < 8) continue;
        if (!strcmp(fld[2], "tta")) {
            col_push(&m->tta_epoch, field_num(fld[1]));
            col_push(&m->tta_acc, field_num(fld[5]));
            continue;
        }
        if (isnan(field_num(fld[1]))) continue;
        if (m->epoch.n == cap) {
            cap = cap ? 2 * cap : 16;
            m->stage = xrealloc(m->stage, (size_t)cap * sizeof *m->stage);
        }
        size_t len = strlen(fld[0]);
        m->stage[m->epoch.n] = memcpy(xmalloc(len + 1), fld[0], len + 1);
        col_push(&m->epoch, field_num(fld[1]));
        col_push(&m->train_loss, field_num(fld[3]));
        col_push(&m->valid_loss, field_num(fld[4]));
        col_push(&m->acc, field_num(fld[5]));
        col_push(&m->size, field_num(fld[7]));
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
    if (!read_line(f, line, sizeof line) || strncmp(line, "step,stage,epoch,stage_epoch,batch,lr,momentum,", 47)) {
        printf("plots: %s: not a step table (header step,stage,epoch,...); lr.png left out\n", path);
        fclose(f);
        return -1;
    }
    long rows = 0;
    while (read_line(f, line, sizeof line)) rows++;
    long every = rows / STEP_POINTS + 1, k = 0;
    rewind(f);
    read_line(f, line, sizeof line);
    while (read_line(f, line, sizeof line)) {
        if (split_csv(line, fld, 9) < 8) continue;
        if (strcmp(fld[1], prev)) {
            if (*prev) col_push(&t->stage_step, field_num(fld[0]));
            t->stage_name = xrealloc(t->stage_name, (size_t)(t->stage_step.n + 1) * sizeof *t->stage_name);
            size_t len = strlen(fld[1]);
            t->stage_name[t->stage_step.n] = memcpy(xmalloc(len + 1), fld[1], len + 1);
            snprintf(prev, sizeof prev, "%s", fld[1]);
        }
        if (k++ % every) continue;
        col_push(&t->step, field_num(fld[0]));
        col_push(&t->lr, field_num(fld[5]));
        col_push(&t->mom, field_num(fld[6]));
    }
    fclose(f);
    return t->step.n > 0;
}

/* ------------------------------------------------------------------------- writing the script */

/* A gnuplot single-quoted string: no escapes inside except '' for a quote. Control characters
 * (which would end the command) become '?'. */
static void gp_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\'') fputs("''", f);
        else fputc(c < 0x20 || c == 0x7f ? '?' : c, f);
    }
    fputc('\'', f);
}

static void gp_num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, " %.8g", x);
    else fputs(" NaN", f);
}

/* An explicit range from the finite values of up to two columns, padded, at least min_span
 * wide, within [floor, ceil]: gnuplot's autoscale warns and guesses on a single point. */
static void gp_range(FILE *f, const char *axis, const Column *a, const Column *b, double pad, double min_span,
                     double floor_, double ceil_) {
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < 2; k++) {
        const Column *c = k ? b : a;
        for (int i = 0; c && i < c->n; i++)
            if (isfinite(c->v[i])) {
                lo = c->v[i] < lo ? c->v[i] : lo;
                hi = c->v[i] > hi ? c->v[i] : hi;
            }
    }
    if (lo > hi) return; /* nothing finite: leave it to gnuplot */
    double span = hi - lo;
    lo -= pad * span, hi += pad * span;
    if (hi - lo < min_span) {
        double mid = 0.5 * (lo + hi);
        lo = mid - 0.5 * min_span, hi = mid + 0.5 * min_span;
    }
    if (lo < floor_) lo = floor_;
    if (hi > ceil_) hi = ceil_;
    fprintf(f, "set %srange [%.8g:%.8g]\n", axis, lo, hi);
}

static void gp_header(FILE *f) {
    fputs("# Written by cnntrain; `gnuplot THIS_FILE` in this folder draws the PNGs again.\n"
          "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "    set terminal pngcairo size 900,540 noenhanced font ',10'\n"
          "} else {\n"
          "    set terminal png size 900,540 noenhanced\n"
          "}\n"
          "set grid\n"
          "set key outside right top\n",
          f);
}

/* Between plots: what one plot set must not leak into the next. */
static void gp_clear(FILE *f) { fputs("unset label\nunset arrow\nunset xtics\nset xtics\nset autoscale\n", f); }

/* Stage names over an epoch plot: a dashed line where a stage starts (after the first) and the
 * stage's name at the top. */
static void gp_stage_marks(FILE *f, const Metrics *m) {
    for (int i = 0; i < m->epoch.n; i++) {
        if (i > 0 && !strcmp(m->stage[i], m->stage[i - 1])) continue;
        double x = m->epoch.v[i] - 0.5;
        if (i > 0) fprintf(f, "set arrow from %.8g, graph 0 to %.8g, graph 1 nohead dashtype 2 linecolor 'gray50'\n", x, x);
        fputs("set label ", f);
        gp_quote(f, m->stage[i]);
        fprintf(f, " at %.8g, graph 0.96 left offset character 0.4, 0 textcolor 'gray30'\n", x);
    }
}

static void gp_datablock(FILE *f, const char *name, const Column *const *cols, int ncols) {
    fprintf(f, "$%s << EOD\n", name);
    for (int i = 0; i < cols[0]->n; i++) {
        for (int k = 0; k < ncols; k++) gp_num(f, cols[k]->v[i]);
        fputc('\n', f);
    }
    fputs("EOD\n", f);
}

static void gp_output(FILE *f, const char *png) {
    fputs("set output ", f);
    gp_quote(f, png);
    fputc('\n', f);
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
            gp_quote(f, t->stage_name[i]);
            fprintf(f, " at %.8g, graph 0.96 left offset character 0.4, 0 textcolor 'gray30'\n", x);
        }
        fprintf(f, "set title '%s'\nset ylabel '%s'\nplot $steps using 1:%d with lines linewidth 2 notitle\n",
                k ? "momentum (Adam beta1)" : "learning rate", k ? "beta1" : "lr", k ? 3 : 2);
    }
    fputs("unset multiplot\n", f);
}

static void gp_eval_plot(FILE *f, const EvalTable *t, const char *block, const char *png, const char *title) {
    const Column *cols[] = {&t->size, &t->loss, &t->acc, &t->tta_acc};
    gp_datablock(f, block, cols, 4);
    gp_clear(f);
    gp_range(f, "x", &t->size, NULL, 0.08, 32, 0, INFINITY);
    gp_range(f, "y", &t->acc, t->has_tta ? &t->tta_acc : NULL, 0.15, 0.04, 0, 1.02);
    gp_output(f, png);
    fputs("set title ", f);
    gp_quote(f, title);
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

/* ------------------------------------------------------------------------- running gnuplot */

/* gnuplot SCRIPT with dir as its working directory and stdin from /dev/null; no shell. posix_spawn
 * rather than fork: the caller may be a training process with gigabytes mapped. */
static int run_gnuplot(const char *gnuplot, const char *dir, const char *script) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addchdir_np(&fa, dir);
    char *args[] = {"gnuplot", (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, gnuplot, &fa, NULL, args, environ), status = 0;
    posix_spawn_file_actions_destroy(&fa);
    if (rc) {
        printf("plots: cannot start %s: %s\n", gnuplot, strerror(rc));
        return -1;
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            printf("plots: waiting for gnuplot: %s\n", strerror(errno));
            return -1;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFEXITED(status)) printf("plots: gnuplot failed (exit status %d) on %s/%s\n", WEXITSTATUS(status), dir, script);
    else printf("plots: gnuplot was killed (signal %d) on %s/%s\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0, dir, script);
    return -1;
}

static const char *skip_reason(void) { return "gnuplot is not installed (not found on PATH; apt-get install gnuplot-nox)"; }

static int has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* gnuplot writes the PNGs itself, in place (through a symbolic link): a target that exists and is
 * not a regular file (a device, a FIFO) is refused first (util.h's output_target). */
static int png_target_ok(const char *dir, const char *png) {
    char path[5200], err[1024], *target;
    snprintf(path, sizeof path, "%s/%s", dir, png);
    if (output_target(path, &target, err, sizeof err)) {
        printf("plots: %s\n", err);
        return 0;
    }
    free(target);
    return 1;
}

/* The script, written whole (util.h's atomic write) from the memory stream f. 0, or -1 said. */
static int write_script(FILE *f, char **text, size_t *len, const char *path) {
    char err[1024];
    int bad = fclose(f) != 0;
    if (!bad && write_file_atomic(path, *text, *len, err, sizeof err)) {
        printf("plots: %s\n", err);
        bad = 1;
    } else if (bad) {
        printf("plots: cannot write %s: %s\n", path, strerror(errno));
    }
    free(*text);
    *text = NULL;
    return bad ? -1 : 0;
}

static int is_eval_csv(const struct dirent *e) {
    return !strncmp(e->d_name, "eval-", 5) && has_suffix(e->d_name, ".csv") && strlen(e->d_name) > 9;
}

int plot_run(const char *run_dir) {
    const char *gnuplot = plot_gnuplot_path();
    if (!gnuplot) {
        printf("plots: skipped for %s: %s\n", run_dir, skip_reason());
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
        if (have_metrics && png_target_ok(run_dir, "loss.png") && png_target_ok(run_dir, "accuracy.png") &&
            png_target_ok(run_dir, "size.png")) {
            gp_epoch_plots(f, &m);
            snprintf(drawn, sizeof drawn, "loss.png accuracy.png size.png");
            nplots += 3;
        }
        snprintf(path, sizeof path, "%s/steps.csv", run_dir);
        Steps steps;
        if (steps_read(path, &steps) > 0 && png_target_ok(run_dir, "lr.png")) {
            gp_step_plots(f, &steps);
            size_t used = strlen(drawn);
            snprintf(drawn + used, sizeof drawn - used, "%slr.png", used ? " " : "");
            nplots++;
        }
        steps_free(&steps);
        for (int i = 0; i < nnames; i++) {
            const char *name = names[i]->d_name;
            snprintf(path, sizeof path, "%s/%s", run_dir, name);
            EvalTable t;
            if (eval_table_read(path, &t)) continue;
            char png[512];
            snprintf(png, sizeof png, "%.*s.png", (int)(strlen(name) - 4), name);
            if (t.size.n > 0 && png_target_ok(run_dir, png)) {
                char block[32], title[600];
                snprintf(block, sizeof block, "eval%d", i);
                snprintf(title, sizeof title, "accuracy vs test size (%s)", name);
                gp_eval_plot(f, &t, block, png, title);
                size_t used = strlen(drawn);
                snprintf(drawn + used, sizeof drawn - used, "%s%s", used ? " " : "", png);
                nplots++;
            }
            eval_table_free(&t);
        }
        fputs("unset output\n", f);
        snprintf(path, sizeof path, "%s/plots.gp", run_dir);
        if (write_script(f, &text, &text_len, path)) ok = 0;
    }
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(names);
    if (have_metrics) metrics_free(&m);
    if (!ok) return -1;
    if (!nplots) {
        printf("plots: nothing to plot in %s (no epochs in metrics.csv, no eval-*.csv)\n", run_dir);
        return 0;
    }
    if (run_gnuplot(gnuplot, run_dir, "plots.gp")) return -1;
    printf("plots: %s in %s (script plots.gp)\n", drawn, run_dir);
    return 0;
}

int plot_eval(const char *csv_path, const char *png_path, const char *title) {
    const char *gnuplot = plot_gnuplot_path();
    if (!gnuplot) {
        printf("plots: skipped %s: %s\n", png_path, skip_reason());
        return 0;
    }
    EvalTable t;
    if (eval_table_read(csv_path, &t)) return -1;
    /* the folder, the PNG's name in it, and the script's name beside it */
    const char *slash = strrchr(png_path, '/');
    char dir[4096], png[1024], script[1040];
    if (slash) snprintf(dir, sizeof dir, "%.*s", slash == png_path ? 1 : (int)(slash - png_path), png_path);
    else snprintf(dir, sizeof dir, ".");
    snprintf(png, sizeof png, "%s", slash ? slash + 1 : png_path);
    snprintf(script, sizeof script, "%.*s.gp", has_suffix(png, ".png") ? (int)strlen(png) - 4 : (int)strlen(png), png);
    char path[5200];
    snprintf(path, sizeof path, "%s/%s", dir, script);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = png_target_ok(dir, png) ? open_memstream(&text, &text_len) : NULL;
    if (!f) {
        eval_table_free(&t);
        return -1;
    }
    gp_header(f);
    gp_eval_plot(f, &t, "eval", png, title ? title : "accuracy vs test size");
    fputs("unset output\n", f);
    eval_table_free(&t);
    if (write_script(f, &text, &text_len, path)) return -1;
    if (run_gnuplot(gnuplot, dir, script)) return -1;
    printf("plots: %s (script %s)\n", png_path, script);
    return 0;
}

void plot_quote(FILE *f, const char *s) { gp_quote(f, s); }

int plot_draw(const char *png_path, const char *body) {
    const char *gnuplot = plot_gnuplot_path();
    if (!gnuplot) {
        printf("plots: skipped %s: %s\n", png_path, skip_reason());
        return 0;
    }
    const char *slash = strrchr(png_path, '/');
    char dir[4096], png[1024], script[1040], path[5200];
    if (slash) snprintf(dir, sizeof dir, "%.*s", slash == png_path ? 1 : (int)(slash - png_path), png_path);
    else snprintf(dir, sizeof dir, ".");
    snprintf(png, sizeof png, "%s", slash ? slash + 1 : png_path);
    snprintf(script, sizeof script, "%.*s.gp", has_suffix(png, ".png") ? (int)strlen(png) - 4 : (int)strlen(png), png);
    snprintf(path, sizeof path, "%s/%s", dir, script);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = png_target_ok(dir, png) ? open_memstream(&text, &text_len) : NULL;
    if (!f) return -1;
    gp_header(f);
    gp_output(f, png);
    fputs(body, f);
    fputs("unset output\n", f);
    if (write_script(f, &text, &text_len, path)) return -1;
    if (run_gnuplot(gnuplot, dir, script)) return -1;
    printf("plots: %s (script %s)\n", png_path, script);
    return 0;
}

/* ------------------------------------------------------------------------- for other plots */

int plot_target_ok(const char *dir, const char *png) { return png_target_ok(dir, png); }

int plot_script_run(FILE *f, char **text, size_t *len, const char *dir, const char *script) {
    const char *gnuplot = plot_gnuplot_path();
    char path[5200];
    snprintf(path, sizeof path, "%s/%s", dir, script);
    if (write_script(f, text, len, path)) return -1;
    if (!gnuplot) {
        printf("plots: skipped the plot of %s: %s\n", path, skip_reason());
        return 0;
    }
    return run_gnuplot(gnuplot, dir, script);
}
