/* report/confusion_plot.c: the confusion matrix heat map (confusion_plot.h) as a gnuplot script:
 * the counts in an inline data block drawn `with image`, the counts again `with labels`. */
#include "report/confusion_plot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/plot.h"

/* The tic list "('name' 0, 'name' 1, ...)" of an axis. */
static void tics(FILE *f, const char *axis, int classes, const char *const *names, const char *extra) {
    fprintf(f, "set %stics (", axis);
    for (int c = 0; c < classes; c++) {
        if (c) fputs(", ", f);
        if (names && names[c]) {
            plot_quote(f, names[c]);
        } else {
            fprintf(f, "'%d'", c);
        }
        fprintf(f, " %d", c);
    }
    fprintf(f, ") %s\n", extra);
}

int plot_confusion(const int *cm, int classes, const char *const *names, const char *dir, const char *png,
                   const char *title) {
    if (!plot_target_ok(dir, png)) return -1;
    int most = 0;
    for (long i = 0; i < (long)classes * classes; i++) most = cm[i] > most ? cm[i] : most;
    size_t longest = 1;
    for (int c = 0; names && c < classes; c++) longest = names[c] && strlen(names[c]) > longest ? strlen(names[c]) : longest;
    if (longest > 40) longest = 40;
    /* cells of 44 px down to 4; the names' length makes room on the left and below */
    int cell = classes <= 12 ? 44 : classes <= 40 ? 28 : classes <= 120 ? 12 : 4;
    int label_px = classes <= 120 ? 40 + 7 * (int)longest : 40;
    int side = cell * classes, width = side + label_px + 140, height = side + label_px + 80;
    width = width < 480 ? 480 : width;
    height = height < 400 ? 400 : height;

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        printf("plots: cannot write %s/%s's script\n", dir, png);
        return -1;
    }
    fputs("# Written by cnntrain; `gnuplot THIS_FILE` in this folder draws the PNG again.\n", f);
    fprintf(f,
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "    set terminal pngcairo size %d,%d noenhanced font ',10'\n"
            "} else {\n"
            "    set terminal png size %d,%d noenhanced\n"
            "}\n",
            width, height, width, height);
    fputs("set output ", f);
    plot_quote(f, png);
    fputs("\nset title ", f);
    plot_quote(f, title ? title : "Confusion matrix");
    fputs("\nset xlabel 'Predicted'\nset ylabel 'Actual'\nunset key\nset size ratio -1\n", f);
    /* row 0 at the top, as matplotlib's imshow draws it */
    fprintf(f, "set xrange [-0.5:%g]\nset yrange [%g:-0.5]\n", classes - 0.5, classes - 0.5);
    if (classes <= 120) {
        tics(f, "x", classes, names, "rotate by 90 right scale 0");
        tics(f, "y", classes, names, "scale 0");
    }
    /* matplotlib's Blues, from near white to dark blue */
    fputs("set palette defined (0 '#f7fbff', 0.25 '#c6dbef', 0.5 '#6baed6', 0.75 '#2171b5', 1 '#08306b')\n", f);
    /* whole counts on the colour bar, about five of them */
    fprintf(f, "set cbrange [0:%d]\nset cbtics %d\nset cblabel 'images'\n", most > 0 ? most : 1, most > 5 ? (most + 4) / 5 : 1);
    fputs("$cm << EOD\n", f);
    for (int a = 0; a < classes; a++)
        for (int p = 0; p < classes; p++) fprintf(f, "%d %d %d\n", p, a, cm[(size_t)a * classes + p]);
    fputs("EOD\n", f);
    fputs("plot $cm using 1:2:3 with image", f);
    if (classes <= 40) {
        /* fastai: white text where the count is above half the largest */
        double half = most / 2.0;
        fprintf(f,
                ", \\\n     $cm using 1:($3 > %g ? $2 : NaN):(sprintf('%%d', $3)) with labels textcolor 'white'"
                ", \\\n     $cm using 1:($3 > %g ? NaN : $2):(sprintf('%%d', $3)) with labels textcolor 'black'",
                half, half);
    }
    fputs("\nunset output\n", f);
    char script[1040];
    size_t n = strlen(png);
    snprintf(script, sizeof script, "%.*s.gp", n > 4 && !strcmp(png + n - 4, ".png") ? (int)n - 4 : (int)n, png);
    if (plot_script_run(f, &text, &len, dir, script)) return -1;
    if (plot_gnuplot_path()) printf("plots: %s/%s (script %s)\n", dir, png, script);
    return 0;
}
