/* test_best.c: [run] save, monitor and early_stop_patience (fastai's SaveModelCallback and
 * EarlyStoppingCallback), steps.csv and the end-of-run summary, on generated JPEGs: best.safetensors
 * holds the best epoch's weights, early stopping ends a fit after `patience` epochs without
 * improvement, both continue exactly through --resume, save = none keeps no model file yet
 * resumes, and steps.csv has a row per step with the schedule's lr. */
#include <setjmp.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TEST_DIR_TEMPLATE "/tmp/cnn_best_XXXXXX"
#include "testutil.h"

#include "ckpt/checkpoint.h"
#include "net/model.h"
#include "pipeline/demo_data.h"
#include "train/config.h"
#include "train/schedule.h"
#include "train/train.h"
#include "base/util.h"

/* 80 training images (8 per class, 10 classes): 5 batches of 16 per epoch. */
#define PER_EPOCH 5

static void make_data(void) {
    char err[1024];
    if (demo_data_write(in_dir("data"), 8, 3, 32, 9, err, sizeof err)) fail_msg("%s", err);
}

/* dir/NAME.ini: the demo data, xresnet_tiny on the CPU, [run] name = NAME, then `rest` ([run] keys
 * first, then stages). Returns its path. */
static const char *write_config(const char *name, const char *rest) {
    char text[4096];
    snprintf(text, sizeof text,
             "[data]\npath = %s/data\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nseed = 5\nout_dir = %s/runs\n"
             "name = %s\n%s",
             dir, dir, name, rest);
    char file[64];
    snprintf(file, sizeof file, "%s.ini", name);
    return write_text(file, text);
}

/* A new run of config (resume_dir NULL) or a resume of resume_dir, with up to one --set. */
static int run(const char *config, const char *resume_dir, const char *set) {
    char path[1200], err[1024], run_dir[1024];
    if (config) snprintf(path, sizeof path, "%s", config);
    else snprintf(path, sizeof path, "%s/config.ini", resume_dir);
    const char *sets[] = {set};
    Config cfg;
    if (config_load(path, sets, set ? 1 : 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    int rc = train_run(&cfg, resume_dir, run_dir, sizeof run_dir);
    config_free(&cfg);
    return rc;
}

/* One stage's epochs in metrics.csv: valid_loss and accuracy per row. Returns the count. */
static int stage_rows(const char *run_dir, const char *stage, double *loss, double *acc, int max) {
    char path[1200], line[512];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64];
        int epoch, stage_epoch;
        float tl;
        double vl, a;
        if (sscanf(line, "%63[^,],%d,%d,%f,%lf,%lf", name, &epoch, &stage_epoch, &tl, &vl, &a) == 6 && !strcmp(name, stage) &&
            n < max) {
            loss[n] = vl, acc[n] = a;
            n++;
        }
    }
    fclose(f);
    return n;
}

/* metrics.csv without its seconds column (timing differs between runs). */
static char *metrics_without_time(const char *run_dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    size_t n;
    char *text = (char *)slurp(path, &n), *out = xcalloc(n + 1, 1);
    int col = 0;
    for (size_t i = 0, k = 0; i < n; i++) {
        if (text[i] == ',') col++;
        if (text[i] == '\n') col = 0;
        if (col != 6 || text[i] == ',') out[k++] = text[i];
    }
    free(text);
    return out;
}

static char *file_text(const char *path) {
    size_t n;
    char *t = (char *)slurp(path, &n);
    t[n] = 0;
    return t;
}

/* The weights and statistics of a model file and of a resume checkpoint are the same, bit for bit. */
static void assert_same_weights(const char *model_file, const char *resume_file) {
    char err[1024];
    Model *m = model_build("xresnet_tiny", 10, err, sizeof err);
    assert_non_null(m);
    size_t pb = m->param_floats * sizeof(float), sb = (m->stat_floats + 1) * sizeof(float);
    float *p0 = xcalloc(1, pb), *s0 = xcalloc(1, sb), *p1 = xcalloc(1, pb), *s1 = xcalloc(1, sb), *am = xmalloc(pb),
          *av = xmalloc(pb);
    if (ckpt_load(model_file, m, p0, s0, err, sizeof err)) fail_msg("%s", err);
    StFile meta;
    if (ckpt_load_resume(resume_file, m, p1, s1, am, av, &meta, err, sizeof err)) fail_msg("%s", err);
    st_close(&meta);
    if (memcmp(p0, p1, pb) || memcmp(s0, s1, m->stat_floats * sizeof(float)))
        fail_msg("%s and %s hold different weights", model_file, resume_file);
    free(p0), free(s0), free(p1), free(s1), free(am), free(av);
    model_free(m);
}

/* A metadata value of a safetensors file (a static copy). */
static const char *meta_of(const char *path, const char *key) {
    static char value[256];
    char err[1024];
    StFile h;
    if (st_read_header(path, &h, err, sizeof err)) fail_msg("%s", err);
    const char *v = st_meta(&h, key);
    snprintf(value, sizeof value, "%s", v ? v : "(none)");
    st_close(&h);
    return value;
}

/* save = best, monitor = accuracy: best.safetensors is the first epoch with the highest accuracy
 * (strictly better, as fastai's min_delta 0: a later tie does not replace it; not the last epoch
 * here), bit for bit the weights the run had at that epoch's end (a run stopped
 * there), and a run stopped and resumed after that epoch keeps it (its best value is in the
 * resume checkpoint: without it a later, worse epoch would replace it). */
static void test_best_checkpoint_is_the_best_epoch(void **state) {
    (void)state;
    const char *stages = "save = best\nmonitor = accuracy\n"
                         "[stage hot]\ntype = fit\nepochs = 5\nsize = 32\nbatch = 16\nlr = 2e-2\n";
    assert_int_equal(run(write_config("best", stages), NULL, NULL), 0);
    const char *straight = in_dir("runs/best");
    double loss[8], acc[8];
    int n = stage_rows(straight, "hot", loss, acc, 8), best = 0;
    assert_int_equal(n, 5);
    for (int i = 1; i < n; i++)
        if (acc[i] > acc[best]) best = i;
    printf("accuracy per epoch: %.4f %.4f %.4f %.4f %.4f; best epoch %d\n", acc[0], acc[1], acc[2], acc[3], acc[4], best);
    assert_true(best < n - 1); /* else this checks nothing that final.safetensors would not */
    char path[1200], expect[16];
    snprintf(path, sizeof path, "%s/best.safetensors", straight);
    snprintf(expect, sizeof expect, "%d", best);
    assert_string_equal(meta_of(path, "best_epoch"), expect);
    assert_string_equal(meta_of(path, "monitor"), "accuracy");
    /* save = best keeps the final weights too, and no stage checkpoint or Adam state file */
    assert_int_equal(access(in_dir("runs/best/final.safetensors"), F_OK), 0);
    assert_int_equal(access(in_dir("runs/best/hot.safetensors"), F_OK), -1);
    assert_int_equal(access(in_dir("runs/best/final.train.safetensors"), F_OK), -1);
    assert_int_equal(access(in_dir("runs/best/best.train.safetensors"), F_OK), -1);

    /* the same run stopped at the best epoch's last step (before its validation): the weights then */
    char set[64];
    snprintf(set, sizeof set, "run.stop_after=%d", (best + 1) * PER_EPOCH);
    assert_int_equal(run(write_config("stopped", stages), NULL, set), TRAIN_STOPPED);
    const char *stopped = in_dir("runs/stopped");
    snprintf(path, sizeof path, "%s/best.safetensors", straight);
    char resume[1200];
    snprintf(resume, sizeof resume, "%s/resume.safetensors", stopped);
    assert_same_weights(path, resume);
    /* on, through the best epoch's validation, then stopped mid-epoch after it and resumed */
    assert_int_equal(run(NULL, stopped, "run.stop_after=2"), TRAIN_STOPPED);
    assert_int_equal(run(NULL, stopped, NULL), 0);
    char *ma = metrics_without_time(straight), *mb = metrics_without_time(stopped);
    assert_string_equal(ma, mb);
    free(ma), free(mb);
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/best.safetensors", straight);
    snprintf(b, sizeof b, "%s/best.safetensors", stopped);
    assert_same_tensors(a, b);
    assert_string_equal(meta_of(b, "best_epoch"), expect);
}

/* early_stop_patience = 2: the fit ends at the first epoch that is the second in a row without a
 * lower valid_loss (fastai's rule, worked out here from metrics.csv), the next stage still runs,
 * and a run stopped where one epoch had not improved resumes to the same end (the patience
 * counter is in the resume checkpoint). */
static void test_early_stopping(void **state) {
    (void)state;
    const char *stages = "early_stop_patience = 2\n"
                         "[stage hot]\ntype = fit\nepochs = 12\nsize = 32\nbatch = 16\nlr = 3e-2\n"
                         "[stage after]\ntype = fit_one_cycle\nepochs = 1\n";
    assert_int_equal(run(write_config("early", stages), NULL, NULL), 0);
    const char *straight = in_dir("runs/early");
    double loss[16], acc[16];
    int n = stage_rows(straight, "hot", loss, acc, 16);
    /* fastai's EarlyStoppingCallback: wait counts epochs since the best; stop when wait >= patience */
    double best = INFINITY;
    int wait = 0, expect = 0, first_wait = -1;
    for (int i = 0; i < 12; i++) {
        if (i >= n) fail_msg("the stage ran %d epochs; the rule stops it later (epoch %d, wait %d)", n, i, wait);
        if (loss[i] < best) best = loss[i], wait = 0;
        else if (++wait == 1 && first_wait < 0) first_wait = i;
        if (wait >= 2) {
            expect = i + 1;
            break;
        }
    }
    printf("early stopping: %d of 12 epochs (first epoch without improvement: %d)\n", n, first_wait);
    assert_true(expect > 0);
    assert_int_equal(n, expect);
    assert_int_equal(stage_rows(straight, "after", loss, acc, 16), 1);
    /* the default, save = stages: each training stage's weights and the final ones, no Adam state */
    assert_int_equal(access(in_dir("runs/early/hot.safetensors"), F_OK), 0);
    assert_int_equal(access(in_dir("runs/early/after.safetensors"), F_OK), 0);
    assert_int_equal(access(in_dir("runs/early/final.safetensors"), F_OK), 0);
    assert_int_equal(access(in_dir("runs/early/final.train.safetensors"), F_OK), -1);
    assert_int_equal(access(in_dir("runs/early/hot.train.safetensors"), F_OK), -1);
    char *log = file_text(in_dir("runs/early/log.txt"));
    ASSERT_HAS(log, "stage hot: early stopping: no improvement in valid_loss for 2 epochs");
    free(log);

    /* stopped just after the first epoch without improvement (wait 1 in the checkpoint), resumed */
    char set[64];
    snprintf(set, sizeof set, "run.stop_after=%d", (first_wait + 1) * PER_EPOCH + 2);
    assert_int_equal(run(write_config("early2", stages), NULL, set), TRAIN_STOPPED);
    assert_int_equal(run(NULL, in_dir("runs/early2"), NULL), 0);
    char *ma = metrics_without_time(straight), *mb = metrics_without_time(in_dir("runs/early2"));
    assert_string_equal(ma, mb);
    free(ma), free(mb);
}

/* save = none: no model file, only resume.safetensors, and the run still stops and resumes;
 * steps.csv has one row per step, numbered over the run, with the one-cycle schedule's lr, the
 * same through a resume; the summary line names the final and best accuracy from metrics.csv. */
static void test_save_none_steps_and_summary(void **state) {
    (void)state;
    const char *stages = "save = none\n[stage one]\ntype = fit_one_cycle\nepochs = 3\nsize = 32\nbatch = 16\nlr = 3e-3\n";
    const char *config = write_config("none", stages);
    assert_int_equal(run(config, NULL, "run.stop_after=7"), TRAIN_STOPPED);
    const char *run_dir = in_dir("runs/none");
    assert_int_equal(run(NULL, run_dir, NULL), 0);
    DIR *d = opendir(run_dir);
    assert_non_null(d);
    int checkpoints = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".safetensors")) {
            assert_string_equal(e->d_name, "resume.safetensors");
            checkpoints++;
        }
    closedir(d);
    assert_int_equal(checkpoints, 1);
    assert_int_equal(run(NULL, run_dir, NULL), 0); /* finished: nothing to do, nothing written */
    assert_int_equal(access(in_dir("runs/none/final.safetensors"), F_OK), -1);

    /* steps.csv: 15 steps, the lr the one-cycle schedule gives each */
    char path[1200], err[1024];
    snprintf(path, sizeof path, "%s/config.ini", run_dir);
    Config cfg;
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    FitPhase ph[2];
    stage_fit_phases(&cfg.stages[0], ph);
    config_free(&cfg);
    snprintf(path, sizeof path, "%s/steps.csv", run_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "step,stage,epoch,stage_epoch,batch,lr,momentum,loss\n");
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        long step;
        int epoch, stage_epoch, batch;
        float lr, mom, loss;
        if (sscanf(line, "%ld,one,%d,%d,%d,%f,%f,%f", &step, &epoch, &stage_epoch, &batch, &lr, &mom, &loss) != 7)
            fail_msg("steps.csv row %d: %s", rows + 1, line);
        assert_int_equal(step, rows);
        assert_int_equal(epoch, rows / PER_EPOCH);
        assert_int_equal(batch, rows % PER_EPOCH);
        float pos = one_cycle_pos(rows, 3 * PER_EPOCH);
        if (lr != one_cycle_lr(&ph[0].cycle, pos) || mom != one_cycle_mom(&ph[0].cycle, pos))
            fail_msg("steps.csv step %d: lr %g momentum %g, the schedule's %g %g", rows, lr, mom,
                     one_cycle_lr(&ph[0].cycle, pos), one_cycle_mom(&ph[0].cycle, pos));
        assert_true(isfinite(loss) && loss > 0);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 3 * PER_EPOCH);

    /* the summary, with the last epoch's accuracy as metrics.csv has it */
    double loss[4], acc[4];
    assert_int_equal(stage_rows(run_dir, "one", loss, acc, 4), 3);
    char *log = file_text(in_dir("runs/none/log.txt")), expect[128];
    snprintf(expect, sizeof expect, "summary: final accuracy %.4f (epoch 2, stage one)", acc[2]);
    ASSERT_HAS(log, expect);
    ASSERT_HAS(log, "resume.safetensors (weights and optimizer state");
    ASSERT_HAS(log, "on disk");
    free(log);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_best_checkpoint_is_the_best_epoch),
        cmocka_unit_test(test_early_stopping),
        cmocka_unit_test(test_save_none_steps_and_summary),
    };
    int setup = test_dir_setup(NULL);
    if (setup) return 1;
    make_data();
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_dir_teardown(NULL);
    return rc;
}
