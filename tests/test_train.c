/* test_train.c: the whole program path on generated JPEGs: a config with a one-cycle stage, TTA and
 * multi-size evaluation trains, lowers the loss, beats chance clearly, and leaves a run folder with
 * its resolved config, metrics and loadable checkpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "checkpoint.h"
#include "config.h"
#include "demo_data.h"
#include "model.h"
#include "train.h"
#include "util.h"

/* Generated JPEGs in root/data, a config of `stages` on them (CPU, runs under root/runs), and
 * the run: its folder comes back in run_dir. */
static void train_on_demo(const char *root, int train_per_class, int valid_per_class, int side, uint64_t seed,
                          const char *stages, char *run_dir, size_t run_dir_len) {
    char path[1200], err[1024];
    snprintf(path, sizeof path, "%s/data", root);
    if (demo_data_write(path, train_per_class, valid_per_class, side, seed, err, sizeof err)) fail_msg("%s", err);
    snprintf(path, sizeof path, "%s/run.ini", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet18\n[run]\ndevice = cpu\nseed = 3\nout_dir = %s/runs\n%s",
            root, root, stages);
    fclose(f);
    Config cfg;
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(train_run(&cfg, run_dir, run_dir_len), 0);
    config_free(&cfg);
}

static void remove_tree(const char *root) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void test_config_trains_and_writes_a_run_folder(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], err[1024], run_dir[1024];
    assert_non_null(mkdtemp(root));
    train_on_demo(root, 50, 20, 32, 7,
                  "[stage small]\ntype = fit_one_cycle\nepochs = 5\nsize = 32\nbatch = 32\nlr = 5e-3\n"
                  "transform = fastai\nmin_scale = 0.75\n"
                  "[stage tta]\ntype = tta\nn = 2\n"
                  "[stage sizes]\ntype = eval\nsizes = 24,32\n",
                  run_dir, sizeof run_dir);

    /* metrics.csv: 5 epochs, the loss going down, accuracy well above chance (10%) */
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    float first_loss = 0, last_loss = 0, last_acc = 0;
    int epochs = 0;
    assert_non_null(fgets(line, sizeof line, f)); /* header */
    while (fgets(line, sizeof line, f)) {
        char stage[64];
        int epoch, stage_epoch;
        float tl, vl, acc;
        if (sscanf(line, "%63[^,],%d,%d,%f,%f,%f", stage, &epoch, &stage_epoch, &tl, &vl, &acc) == 6 && !strcmp(stage, "small")) {
            if (epochs == 0) first_loss = tl;
            last_loss = tl;
            last_acc = acc;
            epochs++;
        }
    }
    fclose(f);
    printf("train loss %.3f -> %.3f, valid accuracy %.1f%%\n", first_loss, last_loss, 100 * last_acc);
    assert_int_equal(epochs, 5);
    assert_true(last_loss < 0.8f * first_loss);
    assert_true(last_acc > 0.35f);

    /* the eval stage's table, the resolved config, and a checkpoint that loads into the model */
    snprintf(path, sizeof path, "%s/eval-sizes.csv", run_dir);
    f = fopen(path, "r");
    assert_non_null(f);
    int rows = 0;
    while (fgets(line, sizeof line, f)) rows++;
    fclose(f);
    assert_int_equal(rows, 3);
    snprintf(path, sizeof path, "%s/config.ini", run_dir);
    Config cfg;
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("resolved config: %s", err);
    config_free(&cfg);
    Model *m = model_build("xresnet18", 10, err, sizeof err);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    snprintf(path, sizeof path, "%s/final.safetensors", run_dir);
    if (ckpt_load(path, m, params, stats, err, sizeof err)) fail_msg("%s", err);
    char train_path[1300];
    assert_int_equal(ckpt_train_path(path, train_path, sizeof train_path), 0);
    if (ckpt_check_pair(path, train_path, err, sizeof err)) fail_msg("%s", err);
    free(params);
    free(stats);
    model_free(m);
    remove_tree(root);
}

static float *load_weights(const char *path, Model *m, float **stats) {
    char err[1024];
    float *params = xmalloc(m->param_floats * sizeof(float));
    *stats = xmalloc(m->stat_floats * sizeof(float));
    if (ckpt_load(path, m, params, *stats, err, sizeof err)) fail_msg("%s", err);
    return params;
}

/* A progressive stage runs at growing sides; a FixRes stage then changes only the classifier and
 * the last batch norm's running statistics (trainable = head), nothing else. */
static void test_progressive_then_fixres(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], err[1024], run_dir[1024];
    assert_non_null(mkdtemp(root));
    train_on_demo(root, 12, 6, 48, 8,
                  "[stage grow]\ntype = progressive\nepochs = 2\nsize = 48\nbatch = 16\nlr = 3e-3\n"
                  "initial_scale = 0.5\ndelay_fraction = 0.25\nfinetune_fraction = 0.25\nsize_increment = 8\n"
                  "[stage fix]\ntype = fixres\nepochs = 1\nsize = 40\nbatch = 16\nlr = 1e-3\ntrainable = head\n",
                  run_dir, sizeof run_dir);

    /* metrics.csv's size column: the side of each epoch's last batch grows to the full 48 */
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int sides[2] = {0, 0}, k = 0;
    while (fgets(line, sizeof line, f)) {
        char stage[64];
        int a, b, side;
        float x, y, z, t;
        if (sscanf(line, "%63[^,],%d,%d,%f,%f,%f,%f,%d", stage, &a, &b, &x, &y, &z, &t, &side) == 8 && !strcmp(stage, "grow") && k < 2)
            sides[k++] = side;
    }
    fclose(f);
    assert_int_equal(sides[0], 32);
    assert_int_equal(sides[1], 48);

    Model *m = model_build("xresnet18", 10, err, sizeof err);
    float *s0, *s1;
    snprintf(path, sizeof path, "%s/grow.safetensors", run_dir);
    float *p0 = load_weights(path, m, &s0);
    snprintf(path, sizeof path, "%s/fix.safetensors", run_dir);
    float *p1 = load_weights(path, m, &s1);
    int last_bn = -1;
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].op == OP_BN) last_bn = i;
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        int head = p->kind == P_LINEAR_WEIGHT || p->kind == P_LINEAR_BIAS;
        int same = !memcmp(p0 + p->offset, p1 + p->offset, p->count * sizeof(float));
        if (head ? same : !same) fail_msg("%s %s in the FixRes stage", p->name, head ? "did not change" : "changed");
    }
    for (int i = 0; i < m->nnodes; i++) {
        const Node *n = &m->nodes[i];
        if (n->op != OP_BN) continue;
        int same = !memcmp(s0 + n->stat, s1 + n->stat, 2 * (size_t)n->features * sizeof(float));
        if (i == last_bn ? same : !same)
            fail_msg("running statistics of %s %s", n->name, i == last_bn ? "did not adapt" : "changed");
    }
    free(p0);
    free(p1);
    free(s0);
    free(s1);
    model_free(m);
    remove_tree(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_trains_and_writes_a_run_folder),
        cmocka_unit_test(test_progressive_then_fixres),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
