/* test_transfer.c: transfer learning in a run: a cnn_learner model (fastai's head) starts from a
 * pretrained plain network, frozen as fastai's cnn_learner is: only the head and the batch norms
 * train, and the rest of the body keeps the pretrained weights; freeze and unfreeze clear the
 * optimizer state; an lr range reaches each parameter group at its own rate. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TEST_DIR_TEMPLATE "/tmp/cnn_transfer_XXXXXX"
#include "testutil.h"

#include "ckpt/checkpoint.h"
#include "train/config.h"
#include "pipeline/demo_data.h"
#include "net/model.h"
#include "train/train.h"

static void run_config(const char *name, const char *text, char *run_dir, size_t len) {
    char path[1200], err[2048];
    snprintf(path, sizeof path, "%s/%s.ini", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[run]\ndevice = cpu\nseed = 4\nout_dir = %s/runs\n%s", dir, dir, text);
    fclose(f);
    Config cfg;
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(train_run(&cfg, NULL, run_dir, len), 0);
    config_free(&cfg);
}

/* A checkpoint's weights, and its adam_step metadata. */
static float *weights(Model *m, const char *run_dir, const char *stage, int *adam_step) {
    char path[1300], err[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", run_dir, stage);
    float *p = xmalloc(m->param_floats * sizeof(float)), *s = xmalloc((m->stat_floats + 1) * sizeof(float));
    if (ckpt_load(path, m, p, s, err, sizeof err)) fail_msg("%s", err);
    free(s);
    StFile h;
    if (st_read_header(path, &h, err, sizeof err)) fail_msg("%s", err);
    *adam_step = atoi(st_meta(&h, "adam_step"));
    st_close(&h);
    return p;
}

/* Mean |a - b| over the parameters of group g, of batch-norm ones (bn = 1) or the others. */
static double mean_change(const Model *m, const float *a, const float *b, int g, int bn) {
    double sum = 0;
    size_t n = 0;
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        int is_bn = p->kind == P_BN_WEIGHT || p->kind == P_BN_BIAS;
        if (p->group != g || is_bn != bn) continue;
        for (size_t k = 0; k < p->count; k++) sum += fabs((double)a[p->offset + k] - b[p->offset + k]);
        n += p->count;
    }
    return n ? sum / (double)n : 0;
}

static void test_freeze_and_discriminative_rates(void **state) {
    (void)state;
    char path[1200], err[1024], pre[1024], run[1024];
    snprintf(path, sizeof path, "%s/data", dir);
    if (demo_data_write(path, 8, 3, 32, 2, err, sizeof err)) fail_msg("%s", err);
    run_config("pre", "[model]\narch = xresnet_tiny\n[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 16\n", pre,
               sizeof pre);
    char text[2048];
    snprintf(text, sizeof text,
             "[model]\narch = xresnet_tiny_fastai_head\npretrained = %s/final.safetensors\n"
             "[stage frozen]\ntype = fit\nepochs = 1\nsize = 32\nbatch = 16\nlr = 1e-3\n"
             "[stage spread]\ntype = fit\nepochs = 1\nlr = 1e-6..1e-2\nfreeze = no\n",
             pre);
    run_config("transfer", text, run, sizeof run);

    Model *m = model_build("xresnet_tiny_fastai_head", 10, err, sizeof err);
    assert_non_null(m);
    assert_int_equal(m->ngroups, 3);
    /* the pretrained body as the transfer run started: load the plain checkpoint into it */
    float *start = xcalloc(m->param_floats, sizeof(float)), *stats = xcalloc(m->stat_floats + 1, sizeof(float));
    Model *plain = model_build("xresnet_tiny", 10, err, sizeof err);
    float *pp = xmalloc(plain->param_floats * sizeof(float)), *ps = xmalloc((plain->stat_floats + 1) * sizeof(float));
    snprintf(path, sizeof path, "%s/final.safetensors", pre);
    if (ckpt_load(path, plain, pp, ps, err, sizeof err)) fail_msg("%s", err);
    /* body parameter i of the cnn_learner model is "0." + the plain name */
    int matched = 0;
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        for (int j = 0; j < plain->nparams && p->group < 2; j++)
            if (!strncmp(p->name, "0.", 2) && !strcmp(p->name + 2, plain->params[j].name)) {
                memcpy(start + p->offset, pp + plain->params[j].offset, p->count * sizeof(float));
                matched++;
            }
    }
    assert_true(matched > 10);

    int step_frozen, step_spread;
    float *after_frozen = weights(m, run, "frozen", &step_frozen), *after_spread = weights(m, run, "spread", &step_spread);
    /* frozen: body weights exactly as pretrained, body batch norms and the head trained */
    for (int g = 0; g < 2; g++) {
        assert_true(mean_change(m, start, after_frozen, g, 0) == 0.0);
        assert_true(mean_change(m, start, after_frozen, g, 1) > 0.0);
    }
    assert_true(mean_change(m, start, after_frozen, 2, 0) > 0.0);
    /* unfreeze cleared the moments: Adam's step count restarted (5 batches an epoch) */
    assert_int_equal(step_frozen, 5);
    assert_int_equal(step_spread, 5);
    /* lr 1e-6, 1e-4, 1e-2 over the groups: Adam moves each by about its lr per step */
    double d0 = mean_change(m, after_frozen, after_spread, 0, 0), d1 = mean_change(m, after_frozen, after_spread, 1, 0),
           d2 = mean_change(m, after_frozen, after_spread, 2, 0);
    printf("mean |change| per group after an epoch at lr 1e-6..1e-2: %.3g %.3g %.3g\n", d0, d1, d2);
    assert_true(d0 > 0 && d0 < 1e-5 && d1 > 1e-5 && d1 < 1e-3 && d2 > 1e-3);
    free(start);
    free(stats);
    free(pp);
    free(ps);
    free(after_frozen);
    free(after_spread);
    model_free(plain);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_freeze_and_discriminative_rates),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
