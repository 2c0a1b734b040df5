/* test_lr_find.c: fastai's LR range test (train/lr_find.h). The bookkeeping against fastai's own
 * code on fixed loss curves (tests/ref/fastai_lr_find.txt, scripts/fastai_reference_lr_find.py):
 * the lrs, the smoothed losses, where stop_div stops, and the minimum / steep / valley suggestions.
 * Then on real images (a 1% sample of ../shared/data/imagenette2-224, or generated JPEGs without
 * it): `./train lr_find` runs every batch when the lr cannot diverge and stops early when it
 * does, its suggestions lie within the lrs it ran; an lr_find stage between two stages leaves the
 * weights, batch-norm statistics and Adam moments bit for bit as they were; `--from` a run's
 * resume.safetensors (or an older run's model + .train.safetensors pair) gives that stage's curve,
 * from a model file alone the same first loss but fresh moments. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/checkpoint.h"
#include "net/model.h"
#include "pipeline/demo_data.h"
#include "report/plot.h"
#include "train/config.h"
#include "train/lr_find.h"
#include "train/train.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_lr_find_XXXXXX"
#include "testutil.h"

static char data_ini[1200]; /* the [data] section of the configs */

static int setup(void **state) {
    if (test_dir_setup(state)) return -1;
    if (!access("../shared/data/imagenette2-224/train", R_OK)) {
        snprintf(data_ini, sizeof data_ini, "[data]\npath = ../shared/data/imagenette2-224\nfraction = 0.01\n");
    } else {
        char err[1024], data[600];
        snprintf(data, sizeof data, "%s/data", dir);
        if (demo_data_write(data, 10, 2, 32, 11, err, sizeof err)) return fprintf(stderr, "demo data: %s\n", err), -1;
        fprintf(stderr, "(../shared/data/imagenette2-224 not found: generated JPEGs instead)\n");
        snprintf(data_ini, sizeof data_ini, "[data]\npath = %s\n", data);
    }
    return 0;
}

/* ------------------------------------------------------------------------- against fastai */

typedef struct {
    char name[64];
    LrFindOptions o;
    double raw[200], lr[200], smooth[200];
    int nraw, nlr, nsmooth, batches;
    int ok[3];
    double sugg[3][3]; /* lr, point lr, point loss */
} RefCurve;

static int read_numbers(char *rest, double *out, int max) {
    int n = 0;
    for (char *tok = strtok(rest, " \n"); tok && n < max; tok = strtok(NULL, " \n")) out[n++] = strtod(tok, NULL);
    return n;
}

static int read_ref(RefCurve *curves, int max) {
    FILE *f = fopen("tests/ref/fastai_lr_find.txt", "r");
    if (!f) fail_msg("tests/ref/fastai_lr_find.txt: not found (scripts/fastai_reference_lr_find.py writes it)");
    static char line[20000];
    int n = -1;
    while (fgets(line, sizeof line, f)) {
        RefCurve *c = n >= 0 ? &curves[n] : NULL;
        if (!strncmp(line, "curve ", 6)) {
            assert_true(++n < max);
            c = &curves[n];
            memset(c, 0, sizeof *c);
            double start, end;
            int num_it, stop;
            assert_int_equal(sscanf(line + 6, "%63s %lf %lf %d %d", c->name, &start, &end, &num_it, &stop), 5);
            c->o = (LrFindOptions){start, end, num_it, stop};
        } else if (c && !strncmp(line, "raw ", 4)) c->nraw = read_numbers(line + 4, c->raw, 200);
        else if (c && !strncmp(line, "lr ", 3)) c->nlr = read_numbers(line + 3, c->lr, 200);
        else if (c && !strncmp(line, "smooth ", 7)) c->nsmooth = read_numbers(line + 7, c->smooth, 200);
        else if (c && !strncmp(line, "batches ", 8)) c->batches = atoi(line + 8);
        else if (c && !strncmp(line, "suggest ", 8)) {
            char nm[32], v[3][64];
            int got = sscanf(line + 8, "%31s %63s %63s %63s", nm, v[0], v[1], v[2]);
            int k = !strcmp(nm, "minimum") ? 0 : !strcmp(nm, "steep") ? 1 : 2;
            c->ok[k] = got == 4;
            for (int j = 0; j < 3 && got == 4; j++) c->sugg[k][j] = strtod(v[j], NULL);
        }
    }
    fclose(f);
    return n + 1;
}

/* The loop of lr_find.c's range test on a fixed loss sequence: the same schedule, smoothing and
 * stopping rule. */
static void replay(const RefCurve *r, LrFindCurve *c) {
    memset(c, 0, sizeof *c);
    c->num_it = lr_find_iterations(&r->o);
    SmoothLoss s = {0};
    float best = INFINITY;
    for (int i = 0; i < r->nraw; i++) {
        float v = smooth_loss_add(&s, (float)r->raw[i]);
        lr_find_curve_push(c, lr_find_lr(&r->o, i), (float)r->raw[i], v);
        if (v < best) best = v;
        if (r->o.stop_div && v > 4 * best) break;
        if (c->n >= c->num_it) break;
    }
}

static void test_against_fastai(void **state) {
    (void)state;
    static RefCurve ref[16];
    int n = read_ref(ref, 16);
    assert_true(n >= 5);
    for (int k = 0; k < n; k++) {
        const RefCurve *r = &ref[k];
        LrFindCurve c;
        replay(r, &c);
        if (c.n != r->batches) fail_msg("%s: %d batches run, fastai ran %d", r->name, c.n, r->batches);
        for (int i = 0; i < c.n; i++) {
            if (c.lr[i] != r->lr[i]) fail_msg("%s: lr %d is %.17g, fastai's %.17g", r->name, i, c.lr[i], r->lr[i]);
            if ((float)r->smooth[i] != c.smooth[i]) /* float32 both sides, bit for bit */
                fail_msg("%s: smoothed loss %d is %.9g, fastai's %.9g", r->name, i, (double)c.smooth[i], r->smooth[i]);
        }
        LrSuggestion s[LR_SUGGEST_COUNT];
        lr_find_suggest(&c, s);
        for (int j = 0; j < LR_SUGGEST_COUNT; j++) {
            if (s[j].ok != r->ok[j]) fail_msg("%s: %s ok %d, fastai %d", r->name, s[j].name, s[j].ok, r->ok[j]);
            if (!s[j].ok) continue;
            if (s[j].lr != r->sugg[j][0] || s[j].point_lr != r->sugg[j][1] ||
                s[j].point_loss != (float)r->sugg[j][2])
                fail_msg("%s: %s = %.17g at (%.17g, %.9g); fastai: %.17g at (%.17g, %.9g)", r->name, s[j].name, s[j].lr,
                         s[j].point_lr, (double)s[j].point_loss, r->sugg[j][0], r->sugg[j][1], r->sugg[j][2]);
        }
        lr_find_curve_free(&c);
    }
}

/* fastai's printout: Python's repr of each float. */
static void test_python_repr(void **state) {
    (void)state;
    const struct { double x; const char *want; } cases[] = {
        {0.001, "0.001"}, {10.0, "10.0"}, {1e-05, "1e-05"}, {6.918309736647643e-05, "6.918309736647643e-05"},
        {0.0012022644514217973, "0.0012022644514217973"}, {0.1, "0.1"}, {2.5, "2.5"}, {1e16, "1e+16"},
        {123456.0, "123456.0"}, {0.0001, "0.0001"}, {-0.5, "-0.5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char buf[64];
        python_float_repr(cases[i].x, buf, sizeof buf);
        assert_string_equal(buf, cases[i].want);
    }
    LrSuggestion s[3] = {{"minimum", 1, 0.001, 0.01, 1}, {"steep", 0, 0, 0, 0}, {"valley", 1, 3e-05, 3e-05, 1}};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    lr_find_print_suggestions(f, s, 3);
    fclose(f);
    assert_string_equal(text, "SuggestedLRs(minimum=0.001, steep=None, valley=3e-05)\n");
    free(text);
}

/* ------------------------------------------------------------------------- on real images */

static const char *write_config(const char *name, const char *stages) {
    static char text[4000];
    snprintf(text, sizeof text, "%s[model]\narch = xresnet_tiny\n[run]\nout_dir = %s/runs\nthreads = 2\nseed = 3\n%s", data_ini,
             dir, stages);
    return write_text(name, text);
}

typedef struct {
    int n;
    double lr[400];
    double smooth[400];
} Csv;

static void read_csv(const char *path, Csv *c) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("%s: not written", path);
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "iteration,lr,loss,smooth_loss\n");
    c->n = 0;
    int it;
    double loss;
    while (c->n < 400 && fscanf(f, "%d,%lf,%lf,%lf\n", &it, &c->lr[c->n], &loss, &c->smooth[c->n]) == 4) {
        assert_int_equal(it, c->n);
        c->n++;
    }
    fclose(f);
}

/* The suggestions the command printed (SuggestedLRs(minimum=..., steep=..., valley=...)). */
static void printed_suggestions(const char *out, double v[3]) {
    const char *p = strstr(out, "SuggestedLRs(minimum=");
    if (!p) fail_msg("no suggestions printed: %s", out);
    assert_int_equal(sscanf(p, "SuggestedLRs(minimum=%lf, steep=%lf, valley=%lf)", &v[0], &v[1], &v[2]), 3);
}

static int run_cmd(char *out, size_t len, const char *args) {
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=2 ./train lr_find %s 2>&1", args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_command_bounds_and_divergence(void **state) {
    (void)state;
    const char *ini = write_config("cmd.ini", "[stage one]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 8\n");
    static char out[20000], args[1500];
    Csv c;
    double v[3];
    /* an lr too small to move anything: every batch runs (fastai's num_it) */
    snprintf(args, sizeof args, "%s --start 1e-7 --end 1e-5 --iters 30 --out %s", ini, in_dir("small"));
    if (run_cmd(out, sizeof out, args)) fail_msg("%s", out);
    read_csv(in_dir("small/lr_find.csv"), &c);
    assert_int_equal(c.n, 30);
    assert_true(c.lr[0] == 1e-7);
    assert_true(fabs(c.lr[29] / (1e-7 * pow(100, 29.0 / 30)) - 1) < 1e-9);
    printed_suggestions(out, v);
    assert_true(v[0] >= 1e-8 && v[0] <= 1e-6); /* minimum: a tenth of an lr that ran */
    for (int k = 1; k < 3; k++) assert_true(v[k] >= 1e-7 && v[k] <= 1e-5);
    ASSERT_LACKS(out, "diverged");
    if (plot_gnuplot_path()) assert_int_equal(access(in_dir("small/lr_find.png"), R_OK), 0);

    /* an lr that must blow up: it stops long before its 100 batches, the last smoothed loss over
     * 4x the best */
    snprintf(args, sizeof args, "%s --start 1e-4 --end 1e6 --iters 100 --out %s", ini, in_dir("big"));
    if (run_cmd(out, sizeof out, args)) fail_msg("%s", out);
    read_csv(in_dir("big/lr_find.csv"), &c);
    ASSERT_HAS(out, "diverged");
    assert_true(c.n < 100);
    /* it stops at the first smoothed loss over 4x the best before it (finite: not a NaN's stop) */
    double best = INFINITY;
    for (int i = 0; i < c.n - 1; i++) {
        best = fmin(best, c.smooth[i]);
        assert_true(c.smooth[i] <= 4 * best);
    }
    assert_true(isfinite(c.smooth[c.n - 1]) && c.smooth[c.n - 1] > 4 * best);
    /* the same without stop_div runs them all */
    snprintf(args, sizeof args, "%s --start 1e-4 --end 1e6 --iters 40 --no-stop-div --out %s", ini, in_dir("nostop"));
    run_cmd(out, sizeof out, args);
    read_csv(in_dir("nostop/lr_find.csv"), &c);
    assert_int_equal(c.n, 40);
}

/* An lr_find stage between a training stage and the end: the final checkpoint (after lr_find) is
 * the training stage's checkpoint (before it), every tensor bit for bit (weights, batch-norm
 * statistics and counts), and the resume checkpoint's tensors (those and Adam's moments) are those
 * of the same run without the lr_find stage. */
static void test_stage_restores_everything(void **state) {
    (void)state;
    static char text[4000];
    snprintf(text, sizeof text,
             "%s[model]\narch = xresnet_tiny\n[run]\nout_dir = %s/runs\nname = staged\nthreads = 2\nseed = 3\n"
             "[stage one]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 8\nlr = 3e-3\n"
             "[stage find]\ntype = lr_find\nnum_it = 25\nend_lr = 100\nmixup = 0.4\n",
             data_ini, dir);
    const char *path = write_text("stage.ini", text);
    Config cfg;
    char err[2048], run_dir[1024];
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(cfg.stages[1].type, STAGE_LR_FIND);
    assert_int_equal(cfg.stages[1].lrf_num_it, 25);
    assert_true(cfg.stages[1].mom_max == 0.9f);
    assert_int_equal(train_run(&cfg, NULL, run_dir, sizeof run_dir), 0);
    config_free(&cfg);
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/one.safetensors", run_dir);
    snprintf(b, sizeof b, "%s/final.safetensors", run_dir);
    assert_same_tensors(a, b);
    /* the Adam moments and counters: the run's resume checkpoint (after lr_find) against that of the
     * same run without the lr_find stage */
    snprintf(text, sizeof text,
             "%s[model]\narch = xresnet_tiny\n[run]\nout_dir = %s/runs\nname = plain\nthreads = 2\nseed = 3\n"
             "[stage one]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 8\nlr = 3e-3\n",
             data_ini, dir);
    path = write_text("plain.ini", text);
    char plain_dir[1024];
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(train_run(&cfg, NULL, plain_dir, sizeof plain_dir), 0);
    config_free(&cfg);
    snprintf(a, sizeof a, "%s/resume.safetensors", plain_dir);
    snprintf(b, sizeof b, "%s/resume.safetensors", run_dir);
    assert_same_tensors(a, b);
    snprintf(a, sizeof a, "%s/lr_find-find.csv", run_dir);
    Csv c;
    read_csv(a, &c);
    assert_true(c.n >= 6 && c.n <= 25);
    snprintf(a, sizeof a, "%s/find.safetensors", run_dir);
    assert_int_equal(access(a, F_OK), -1); /* no checkpoint of its own */
    snprintf(a, sizeof a, "%s/log.txt", run_dir);
    size_t len;
    char *log = (char *)slurp(a, &len);
    ASSERT_HAS(log, "SuggestedLRs(minimum=");
    free(log);
}

/* lr_find --stage find --from FROM into OUT_NAME: it says `says` and draws exactly want's curve. */
static void assert_curve_from(const char *ini, const char *from, const char *out_name, const char *says,
                              const unsigned char *want, size_t want_len) {
    char args[1500], out[16384];
    snprintf(args, sizeof args, "%s --stage find --from %s --out %s", ini, from, in_dir(out_name));
    if (run_cmd(out, sizeof out, args)) fail_msg("%s", out);
    ASSERT_HAS(out, says);
    char path[1024];
    snprintf(path, sizeof path, "%s/lr_find.csv", in_dir(out_name));
    size_t len;
    unsigned char *csv = slurp(path, &len);
    if (len != want_len || memcmp(csv, want, len)) fail_msg("--from %s: not the stage's curve:\n%s", from, csv);
    free(csv);
}

/* `lr_find --from`, against the lr_find stage of a run (one training stage, then lr_find):
 * - the run's resume.safetensors: the stage's lr_find-find.csv, byte for byte (the same weights,
 *   statistics, Adam moments and step, and the batches of the same epoch);
 * - an older run's pair, a model file and the .train.safetensors of the same save beside it (made
 *   here from the resume's tensors): the same again;
 * - the model file alone: the same first loss (the same weights on the same batch, before any
 *   step), then another curve: fresh moments. */
static void test_from_checkpoint(void **state) {
    (void)state;
    static char text[4000], out[20000], args[1800];
    snprintf(text, sizeof text,
             "%s[model]\narch = xresnet_tiny\n[run]\nout_dir = %s/runs\nname = fromrun\nthreads = 2\nseed = 3\n"
             "[stage one]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 8\nlr = 3e-3\n"
             "[stage find]\ntype = lr_find\nnum_it = 12\nend_lr = 100\nmixup = 0.4\n",
             data_ini, dir);
    char ini[512], err[2048], run_dir[512], path[1200], model_path[512], train_path[600];
    snprintf(ini, sizeof ini, "%s", write_text("from.ini", text)); /* (in_dir's buffers are reused) */
    /* the run by the same ./train as the lr_find commands below: the sanitized test program's own
     * build rounds differently, and the curves are compared byte for byte */
    snprintf(path, sizeof path, "OMP_NUM_THREADS=2 ./train %s > %s 2>&1", ini, in_dir("fromrun.log"));
    if (system(path)) fail_msg("./train %s failed (log: %s)", ini, in_dir("fromrun.log"));
    snprintf(run_dir, sizeof run_dir, "%s/runs/fromrun", dir);
    snprintf(path, sizeof path, "%s/lr_find-find.csv", run_dir);
    size_t stage_len;
    unsigned char *stage_csv = slurp(path, &stage_len);
    Csv stage_curve, c;
    read_csv(path, &stage_curve);
    assert_true(stage_curve.n >= 6);

    snprintf(path, sizeof path, "%s/resume.safetensors", run_dir);
    assert_curve_from(ini, path, "from_resume", "Adam moments (step ", stage_csv, stage_len);

    /* the pair an older ./train wrote: model file and moments under one checkpoint id */
    snprintf(path, sizeof path, "%s/resume.safetensors", run_dir);
    StFile hdr;
    if (st_read_header(path, &hdr, err, sizeof err)) fail_msg("%s", err);
    Model *m = model_build("xresnet_tiny", atoi(st_meta(&hdr, "classes")), err, sizeof err);
    if (!m) fail_msg("%s", err);
    float *p = calloc(m->param_floats, sizeof(float)), *s = calloc(m->stat_floats + 1, sizeof(float));
    float *am = calloc(m->param_floats, sizeof(float)), *av = calloc(m->param_floats, sizeof(float));
    StFile meta;
    if (ckpt_load_resume(path, m, p, s, am, av, &meta, err, sizeof err)) fail_msg("%s", err);
    char id[CKPT_ID_CHARS + 1];
    ckpt_new_id(id);
    const char *pair_meta[] = {CKPT_ID_KEY, id, "epochs_done", st_meta(&meta, "epochs_done"), "adam_step",
                               st_meta(&meta, "adam_step"), NULL};
    snprintf(model_path, sizeof model_path, "%s", in_dir("e1.safetensors"));
    if (ckpt_save(model_path, m, p, s, pair_meta, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(ckpt_train_path(model_path, train_path, sizeof train_path), 0);
    if (ckpt_save_train(train_path, m, am, av, pair_meta, err, sizeof err)) fail_msg("%s", err);
    st_close(&meta);
    st_close(&hdr);
    free(p), free(s), free(am), free(av);
    model_free(m);
    assert_curve_from(ini, model_path, "from_pair", "Adam moments from ", stage_csv, stage_len);

    /* the model file alone */
    char moved[512];
    snprintf(moved, sizeof moved, "%s", in_dir("moved.safetensors"));
    assert_int_equal(rename(train_path, moved), 0);
    snprintf(args, sizeof args, "%s --stage find --from %s --out %s", ini, model_path, in_dir("from_model"));
    if (run_cmd(out, sizeof out, args)) fail_msg("%s", out);
    ASSERT_HAS(out, "fresh Adam moments");
    read_csv(in_dir("from_model/lr_find.csv"), &c);
    assert_true(c.n >= 2);
    assert_true(c.smooth[0] == stage_curve.smooth[0]); /* the loss before any step */
    assert_true(c.smooth[1] != stage_curve.smooth[1]);  /* after a step with other moments */

    /* the moments file itself is refused, saying what to give */
    snprintf(args, sizeof args, "%s --stage find --from %s --out %s", ini, moved, in_dir("from_train"));
    assert_int_not_equal(run_cmd(out, sizeof out, args), 0);
    ASSERT_HAS(out, "give the model file beside it, or the run's resume.safetensors");
    free(stage_csv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_fastai),
        cmocka_unit_test(test_python_repr),
        cmocka_unit_test(test_command_bounds_and_divergence),
        cmocka_unit_test(test_stage_restores_everything),
        cmocka_unit_test(test_from_checkpoint),
    };
    return cmocka_run_group_tests(tests, setup, test_dir_teardown);
}
