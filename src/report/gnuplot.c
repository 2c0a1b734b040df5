/* report/gnuplot.c: what every plot of report/ shares (gnuplot.h): numeric CSV columns, the parts
 * of a gnuplot script, writing it whole and running gnuplot on it without a shell. */
#include "report/gnuplot.h"

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
#include "report/plot.h"

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

void gp_col_push(Column *c, double x) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->v = xrealloc(c->v, (size_t)c->cap * sizeof *c->v);
    }
    c->v[c->n++] = x;
}

/* A number, or NaN for an empty or malformed field (gnuplot leaves NaN points out). */
double gp_field_num(const char *s) {
    char *end;
    double x = strtod(s, &end);
    return end == s || *end ? NAN : x;
}

/* Split line (newline already stripped) in place at commas; returns the field count. */
int gp_split_csv(char *line, char **fields, int max) {
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

int gp_read_line(FILE *f, char *buf, size_t len) {
    if (!fgets(buf, (int)len, f)) return 0;
    buf[strcspn(buf, "\r\n")] = 0;
    return 1;
}

/* ------------------------------------------------------------------------- writing the script */

/* A gnuplot single-quoted string: no escapes inside except '' for a quote. Control characters
 * (which would end the command) become '?'. */
void plot_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\'') fputs("''", f);
        else fputc(c < 0x20 || c == 0x7f ? '?' : c, f);
    }
    fputc('\'', f);
}

void gp_num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, " %.8g", x);
    else fputs(" NaN", f);
}

/* An explicit range from the finite values of up to two columns, padded, at least min_span
 * wide, within [floor, ceil]: gnuplot's autoscale warns and guesses on a single point. */
void gp_range(FILE *f, const char *axis, const Column *a, const Column *b, double pad, double min_span,
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

void gp_header(FILE *f) {
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
void gp_clear(FILE *f) { fputs("unset label\nunset arrow\nunset xtics\nset xtics\nset autoscale\n", f); }


void gp_datablock(FILE *f, const char *name, const Column *const *cols, int ncols) {
    fprintf(f, "$%s << EOD\n", name);
    for (int i = 0; i < cols[0]->n; i++) {
        for (int k = 0; k < ncols; k++) gp_num(f, cols[k]->v[i]);
        fputc('\n', f);
    }
    fputs("EOD\n", f);
}

void gp_output(FILE *f, const char *png) {
    fputs("set output ", f);
    plot_quote(f, png);
    fputc('\n', f);
}
/* ------------------------------------------------------------------------- running gnuplot */

/* gnuplot SCRIPT with dir as its working directory and stdin from /dev/null; no shell. posix_spawn
 * rather than fork: the caller may be a training process with gigabytes mapped. */
int gp_run(const char *gnuplot, const char *dir, const char *script) {
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

const char *gp_skip_reason(void) { return "gnuplot is not installed (not found on PATH; apt-get install gnuplot-nox)"; }

int gp_has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* gnuplot writes the PNGs itself, in place (through a symbolic link): a target that exists and is
 * not a regular file (a device, a FIFO) is refused first (util.h's output_target). */
int plot_target_ok(const char *dir, const char *png) {
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
int gp_write_script(FILE *f, char **text, size_t *len, const char *path) {
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

int plot_draw(const char *png_path, const char *body) {
    const char *gnuplot = plot_gnuplot_path();
    if (!gnuplot) {
        printf("plots: skipped %s: %s\n", png_path, gp_skip_reason());
        return 0;
    }
    const char *slash = strrchr(png_path, '/');
    char dir[4096], png[1024], script[1040], path[5200];
    if (slash) snprintf(dir, sizeof dir, "%.*s", slash == png_path ? 1 : (int)(slash - png_path), png_path);
    else snprintf(dir, sizeof dir, ".");
    snprintf(png, sizeof png, "%s", slash ? slash + 1 : png_path);
    snprintf(script, sizeof script, "%.*s.gp", gp_has_suffix(png, ".png") ? (int)strlen(png) - 4 : (int)strlen(png), png);
    snprintf(path, sizeof path, "%s/%s", dir, script);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = plot_target_ok(dir, png) ? open_memstream(&text, &text_len) : NULL;
    if (!f) return -1;
    gp_header(f);
    gp_output(f, png);
    fputs(body, f);
    fputs("unset output\n", f);
    if (gp_write_script(f, &text, &text_len, path)) return -1;
    if (gp_run(gnuplot, dir, script)) return -1;
    printf("plots: %s (script %s)\n", png_path, script);
    return 0;
}

/* ------------------------------------------------------------------------- for other plots */

int plot_script_run(FILE *f, char **text, size_t *len, const char *dir, const char *script) {
    const char *gnuplot = plot_gnuplot_path();
    char path[5200];
    snprintf(path, sizeof path, "%s/%s", dir, script);
    if (gp_write_script(f, text, len, path)) return -1;
    if (!gnuplot) {
        printf("plots: skipped the plot of %s: %s\n", path, gp_skip_reason());
        return 0;
    }
    return gp_run(gnuplot, dir, script);
}
