/* test_train.c: the whole program path on generated JPEGs: a config with a one-cycle stage, TTA and
 * multi-size evaluation trains, lowers the loss, beats chance clearly, and leaves a run folder with
 * its resolved config, metrics and loadable checkpoints. */
#include <setjmp.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define TEST_DIR_TEMPLATE "/tmp/cnn_train_XXXXXX"
#include "testutil.h"

#include "backend/backend.h"
#include "ckpt/checkpoint.h"
#include "train/config.h"
#include "pipeline/demo_data.h"
#include "net/model.h"
#include "pipeline/synthetic.h"
#include "train/train.h"
#include "base/util.h"

/* Generated JPEGs in root/data, a config of `stages` on them (CPU, runs under root/runs), and
 * the run: its folder comes back in run_dir. */
static void train_on_demo(const char *root, const char *arch, int train_per_class, int valid_per_class, int side,
                          uint64_t seed, const char *stages, char *run_dir, size_t run_dir_len) {
    char path[1200], err[1024];
    snprintf(path, sizeof path, "%s/data", root);
    if (demo_data_write(path, train_per_class, valid_per_class, side, seed, err, sizeof err)) fail_msg("%s", err);
    snprintf(path, sizeof path, "%s/run.ini", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = %s\n[run]\ndevice = cpu\nseed = 3\nout_dir = %s/runs\n%s",
            root, arch, root, stages);
    fclose(f);
    Config cfg;
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(train_run(&cfg, NULL, run_dir, run_dir_len), 0);
    config_free(&cfg);
}

/* Runs `config` (new run) or resumes run_dir (config NULL) with one [run] override. */
static int run_with(const char *config, char *run_dir, size_t run_dir_len, const char *override) {
    char path[1200], err[1024];
    if (config) snprintf(path, sizeof path, "%s", config);
    else snprintf(path, sizeof path, "%s/config.ini", run_dir);
    const char *sets[] = {override};
    Config cfg;
    if (config_load(path, sets, override ? 1 : 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    char resume[1024];
    snprintf(resume, sizeof resume, "%s", run_dir);
    int rc = train_run(&cfg, config ? NULL : resume, run_dir, run_dir_len);
    config_free(&cfg);
    return rc;
}

/* metrics.csv without its seconds column (timing differs between runs). */
static char *metrics_without_time(const char *run_dir) {
    char path[1200], line[512];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0;
    char *out = xcalloc(cap, 1);
    while (fgets(line, sizeof line, f)) {
        int col = 0;
        for (char *p = line; *p && len + 2 < cap; p++) {
            if (*p == ',') col++;
            if (col != 6 || *p == ',') out[len++] = *p;
        }
    }
    fclose(f);
    return out;
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
    train_on_demo(root, "xresnet18", 50, 20, 32, 7,
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
    /* the Adam state lives in resume.safetensors only ([run] save): no NAME.train.safetensors */
    char train_path[1300];
    assert_int_equal(ckpt_train_path(path, train_path, sizeof train_path), 0);
    assert_int_equal(access(train_path, F_OK), -1);
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
    train_on_demo(root, "xresnet18", 12, 6, 48, 8,
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

/* Resume: the same schedule run straight through, and stopped (run.stop_after) and resumed five
 * times: mid-epoch, at an epoch's last batch (before its validation), inside fine_tune's frozen
 * and unfrozen parts and inside FixRes, with mixup, label smoothing and a progressive stage's
 * random crops: the final weights and every metrics.csv number must be bit for bit the same. */
static void test_resume_is_bit_for_bit(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], straight[1024], resumed[1024];
    assert_non_null(mkdtemp(root));
    /* 80 training images: 5 batches of 16 per epoch; 35 steps in all */
    train_on_demo(root, "xresnet_tiny", 8, 3, 32, 9,
                  "[stage one]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 16\nlr = 3e-3\n"
                  "label_smoothing = 0.1\nmixup = 0.4\n"
                  "[stage grow]\ntype = progressive\nepochs = 2\ninitial_scale = 0.5\nsize_increment = 8\nmode = crop\n"
                  "[stage tune]\ntype = fine_tune\nepochs = 1\nlr = 1e-3\n"
                  "[stage fix]\ntype = fixres\nepochs = 1\nsize = 40\nlr = 1e-3\n"
                  "[stage tta]\ntype = tta\nn = 1\n",
                  straight, sizeof straight);
    snprintf(path, sizeof path, "%s/run.ini", root);
    /* steps 3 (mid-epoch), 4 (no metrics row written in between), 10 (stage one's last batch),
     * 22 (tune, frozen), 27 (unfrozen), 33 (fix) */
    assert_int_equal(run_with(path, resumed, sizeof resumed, "run.stop_after=3"), TRAIN_STOPPED);
    const char *stops[] = {"run.stop_after=1", "run.stop_after=6", "run.stop_after=12", "run.stop_after=5",
                           "run.stop_after=6"};
    for (int i = 0; i < 5; i++) {
        if (i == 3) { /* a crash after a metrics row but before its checkpoint: the row must go */
            snprintf(path, sizeof path, "%s/metrics.csv", resumed);
            FILE *f = fopen(path, "a");
            fprintf(f, "junk,99,99,1,1,1,1,1\n");
            fclose(f);
        }
        assert_int_equal(run_with(NULL, resumed, sizeof resumed, stops[i]), TRAIN_STOPPED);
    }
    assert_int_equal(run_with(NULL, resumed, sizeof resumed, "run.stop_after=0"), 0);

    char *ma = metrics_without_time(straight), *mb = metrics_without_time(resumed);
    assert_string_equal(ma, mb);
    free(ma);
    free(mb);
    char a[1300], b[1300];
    snprintf(a, sizeof a, "%s/final.safetensors", straight);
    snprintf(b, sizeof b, "%s/final.safetensors", resumed);
    assert_same_tensors(a, b);
    /* a finished run has nothing left to do */
    assert_int_equal(run_with(NULL, resumed, sizeof resumed, NULL), 0);
    remove_tree(root);
}

static int run_program(const char *config, const char *resume_dir, long fsize_limit, const char *inject_nan, char *out,
                       size_t outlen) {
    int fd;
    pid_t pid = start_program(config, resume_dir, fsize_limit, inject_nan, &fd);
    return finish_program(pid, fd, out, outlen);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) ? -1 : (long)st.st_size;
}

/* Generated JPEGs in root/data plus `bad` files that are not JPEGs among the training images
 * (spread over the classes), and root/NAME.ini with `stages` on them; returns the config's path
 * (a static buffer). */
static const char *bad_data_config(const char *root, const char *name, int train_per_class, int bad, const char *stages) {
    static char cfg[1200];
    char path[1200], err[1024];
    snprintf(path, sizeof path, "%s/data", root);
    if (access(path, F_OK)) {
        if (demo_data_write(path, train_per_class, 1, 32, 9, err, sizeof err)) fail_msg("%s", err);
        for (int i = 0; i < bad; i++) {
            snprintf(path, sizeof path, "%s/data/train/%s/bad%d.jpg", root, synth_class_names[i % SYNTH_CLASSES], i);
            FILE *f = fopen(path, "w");
            assert_non_null(f);
            fprintf(f, "not a JPEG\n");
            fclose(f);
        }
    }
    snprintf(cfg, sizeof cfg, "%s/%s.ini", root, name);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nseed = 3\nout_dir = %s/runs\n%s",
            root, root, stages);
    fclose(f);
    return cfg;
}

/* Issue 13.3: a run over a folder with bad JPEGs, stopped early and resumed, equals the run that
 * never stopped at every later stage: the bad images the stopped run had found are known to every
 * later fit as they were to the uninterrupted run's. 91 images (11 bad), batch 16: each epoch
 * leaves 11 or more out at its end, so which bad images a fit knows changes its orders. */
static void test_resume_with_bad_images_is_bit_for_bit(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", straight[1024], resumed[1024], a[1300], b[1300];
    assert_non_null(mkdtemp(root));
    const char *cfg = bad_data_config(root, "run", 8, 11,
                                      "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 16\nlr = 3e-3\n"
                                      "[stage b]\ntype = fit\nepochs = 2\nlr = 1e-3\n"
                                      "[stage c]\ntype = fit_one_cycle\nepochs = 2\nlr = 1e-3\n"
                                      "[stage d]\ntype = fine_tune\nepochs = 2\nlr = 1e-3\n"
                                      "[stage e]\ntype = fit\nepochs = 2\nlr = 1e-4\n"
                                      "[stage f]\ntype = fit_one_cycle\nepochs = 2\nlr = 1e-4\n");
    assert_int_equal(run_with(cfg, straight, sizeof straight, NULL), 0);
    /* stopped in stage a's first epoch (some bad images found), then in stage c's first epoch */
    assert_int_equal(run_with(cfg, resumed, sizeof resumed, "run.stop_after=2"), TRAIN_STOPPED);
    assert_int_equal(run_with(NULL, resumed, sizeof resumed, "run.stop_after=13"), TRAIN_STOPPED);
    assert_int_equal(run_with(NULL, resumed, sizeof resumed, "run.stop_after=0"), 0);
    char *ma = metrics_without_time(straight), *mb = metrics_without_time(resumed);
    assert_string_equal(ma, mb);
    free(ma);
    free(mb);
    snprintf(a, sizeof a, "%s/final.safetensors", straight);
    snprintf(b, sizeof b, "%s/final.safetensors", resumed);
    assert_same_tensors(a, b);
    remove_tree(root);
}

/* Issue 13.6: a training batch is always full (drop_last): one that bad images left short is left
 * out, never trained on (a batch of 1 would reach batch norm); an epoch whose every batch was left
 * out says so and has no training loss (not 0); good images too few for one batch stop the run
 * with the counts. 20 good + 10 bad images, batch 8: the first epoch's 3 batches all hold a bad
 * image; the next one leaves out those found and trains. */
static void test_short_batches_are_dropped(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", out[1 << 15], run_dir[1024], path[1300];
    assert_non_null(mkdtemp(root));
    const char *cfg = bad_data_config(root, "run", 2, 10, "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 8\n");
    assert_int_equal(run_program(cfg, NULL, 0, NULL, out, sizeof out), 0);
    ASSERT_HAS(out, "epoch 0: 3 batches left out: bad images left them short of 8");
    ASSERT_HAS(out, "epoch 0 trained nothing");
    ASSERT_HAS(out, "\n0      #na#");
    ASSERT_LACKS(out, "epoch 1 trained nothing"); /* bad images in epoch 0's left-out tail still cost a batch */
    const char *p = strstr(out, "run folder ");
    assert_non_null(p);
    snprintf(run_dir, sizeof run_dir, "%.*s", (int)strcspn(p + 11, "\n"), p + 11);
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    size_t len;
    char *csv = (char *)slurp(path, &len);
    csv[len] = 0;
    ASSERT_HAS(csv, "\na,0,0,,"); /* no training loss for epoch 0 */
    ASSERT_LACKS(csv, "a,1,1,,");
    free(csv);
    /* batch 24: epoch 0's one batch holds bad images (8 found; 2 more in the tail); the 22 left make no batch */
    cfg = bad_data_config(root, "big", 2, 10, "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 24\n");
    assert_int_equal(run_program(cfg, NULL, 0, NULL, out, sizeof out), 1);
    ASSERT_HAS(out, "stage a, epoch 1: 8 of the 30 training images are bad (listed above); the 22 left make no batch of 24");
    remove_tree(root);
}

/* Issue 13.10: a training stage's batch larger than the training images is refused before the
 * run folder exists (and before the model is sized for it); an eval stage's batch 65536 over 10
 * validation images allocates for 10 (the run fits in 3 GB of address space); a NaN in the first
 * epoch says that there is no checkpoint yet instead of naming one that does not exist. */
static void test_batch_limits_and_first_epoch_nan(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", out[1 << 15], path[1300], cmd[1500];
    assert_non_null(mkdtemp(root));
    const char *cfg = bad_data_config(root, "huge", 2, 0, "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 65536\n");
    assert_int_equal(run_program(cfg, NULL, 0, NULL, out, sizeof out), 1);
    ASSERT_HAS(out, "huge.ini: [stage a] batch = 65536, but the data has 20 training images: no full batch");
    snprintf(path, sizeof path, "%s/runs", root);
    assert_int_equal(access(path, F_OK), -1);

    cfg = bad_data_config(root, "eval", 2, 0,
                          "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 8\n"
                          "[stage e]\ntype = eval\nsizes = 32\nbatch = 65536\n");
    snprintf(cmd, sizeof cmd, "ulimit -v 3000000 && OMP_NUM_THREADS=2 ./train %s > %s/eval.log 2>&1", cfg, root);
    int rc = system(cmd);
    if (rc) {
        snprintf(path, sizeof path, "%s/eval.log", root);
        size_t len;
        char *log = (char *)slurp(path, &len);
        log[len] = 0;
        fail_msg("exit status %d under a 3 GB address space limit: %s", rc, log);
    }

    cfg = bad_data_config(root, "nan", 2, 0, "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 8\n");
    assert_int_equal(run_program(cfg, NULL, 0, "1", out, sizeof out), 1);
    ASSERT_HAS(out, "stage a, epoch 0, step 0: the loss is nan; stopping (lower the learning rate?). No checkpoint was "
                    "written yet (the run stopped before its first epoch ended)");
    ASSERT_LACKS(out, "resume.safetensors");
    remove_tree(root);
}

/* Issue 13.10: --device cuda where there is no GPU or no driver says so and what to use, not CUDA's
 * "driver version is insufficient". (On a machine with a working GPU there is nothing to check.) */
static void test_cuda_without_a_gpu_says_use_cpu(void **state) {
    (void)state;
    char err[512] = "";
    Backend *be = backend_create("cuda", err, sizeof err);
    if (be) {
        backend_destroy(be);
        return;
    }
    printf("%s\n", err);
    ASSERT_LACKS(err, "insufficient");
    if (!strstr(err, "built without the CUDA backend")) ASSERT_HAS(err, "use cpu (--device cpu, or [run] device = cpu)");
}

/* A NaN loss stops the run naming the stage, epoch and step, and the last good resume checkpoint
 * stays; a full disk (a file size limit) while writing a checkpoint keeps the previous one, names
 * the file, and the run resumes from it. */
static void test_nan_and_full_disk_keep_the_last_checkpoint(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], err[4096], run_dir[1024], resume[1300];
    assert_non_null(mkdtemp(root));
    train_on_demo(root, "xresnet_tiny", 8, 3, 32, 5,
                  "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 16\nlr = 3e-3\n",
                  run_dir, sizeof run_dir);
    snprintf(path, sizeof path, "%s/run.ini", root);

    /* step 8 = epoch 1, batch 3 (5 batches an epoch) */
    assert_int_equal(run_program(path, NULL, 0, "8", err, sizeof err), 1);
    ASSERT_HAS(err, "stage a, epoch 1, step 7: the loss is nan");
    ASSERT_HAS(err, "resume.safetensors (stage 0, epoch 1, batch 0)");
    const char *runs = strstr(err, "checkpoint is ");
    assert_non_null(runs);
    runs += strlen("checkpoint is ");
    /* the run folder is the one the message names */
    snprintf(run_dir, sizeof run_dir, "%.*s", (int)(strstr(runs, "/resume.safetensors") - runs), runs);
    snprintf(resume, sizeof resume, "%s/resume.safetensors", run_dir);
    long before = file_size(resume);
    assert_true(before > 0);

    /* resume under a file size limit just below a checkpoint's size: the epoch's end cannot be saved */
    assert_int_equal(run_program(NULL, run_dir, before / 2, NULL, err, sizeof err), 1);
    ASSERT_HAS(err, resume);
    ASSERT_HAS(err, "File too large");
    ASSERT_HAS(err, "unchanged");
    assert_int_equal(file_size(resume), before);
    /* and without the limit it goes on from that checkpoint to the end */
    assert_int_equal(run_with(NULL, run_dir, sizeof run_dir, NULL), 0);
    snprintf(path, sizeof path, "%s/final.safetensors", run_dir);
    assert_true(file_size(path) > 0);
    /* killed after the last resume checkpoint, before final.safetensors: --resume writes it */
    char kept[1300];
    snprintf(kept, sizeof kept, "%s/final.kept", run_dir);
    assert_int_equal(rename(path, kept), 0);
    assert_int_equal(run_with(NULL, run_dir, sizeof run_dir, NULL), 0);
    assert_same_tensors(kept, path);
    remove_tree(root);
}

/* A finite loss with an inf gradient (injected after backward): with loss_scale = off the run stops
 * naming the parameter and the last good checkpoint; with dynamic loss scaling the step is skipped,
 * the scale halved, and the halved scale survives a stop and --resume. Dynamic scaling by powers
 * of two is exact in fp32: without an overflow, the weights equal an unscaled run's bit for bit. */
static void test_inf_gradient_stops_or_is_skipped(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], out[16384], run_dir[1024], dyn_dir[1024], a[1300], b[1300];
    assert_non_null(mkdtemp(root));
    const char *stage = "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 16\nlr = 3e-3\n";
    train_on_demo(root, "xresnet_tiny", 8, 3, 32, 5, stage, run_dir, sizeof run_dir);
    snprintf(path, sizeof path, "%s/run.ini", root);

    assert_int_equal(run_program(path, NULL, 0, "grad:8", out, sizeof out), 1);
    ASSERT_HAS(out, "stage a, epoch 1, step 7: 1 gradient values are inf or NaN (the first in 0.0.weight)");
    ASSERT_HAS(out, "resume.safetensors (stage 0, epoch 1, batch 0)");
    ASSERT_HAS(out, "valid_loss  accuracy  time\n0 "); /* epoch 0 finished */
    /* the check is read back one step late: an epoch's last step is still checked before its
     * validation and checkpoint (5 batches an epoch: step 4 is epoch 0's last) */
    assert_int_equal(run_program(path, NULL, 0, "grad:5", out, sizeof out), 1);
    ASSERT_HAS(out, "stage a, epoch 0, step 4: 1 gradient values are inf or NaN (the first in 0.0.weight)");
    ASSERT_HAS(out, "No checkpoint was written yet");
    assert_null(strstr(out, "valid_loss  accuracy  time\n0 ")); /* epoch 0's row never printed */

    assert_int_equal(run_with(path, dyn_dir, sizeof dyn_dir, "run.loss_scale=dynamic"), 0);
    snprintf(a, sizeof a, "%s/final.safetensors", run_dir);
    snprintf(b, sizeof b, "%s/final.safetensors", dyn_dir);
    assert_same_tensors(a, b);

    /* dynamic scaling with the inf gradient at step 8, stopped after step 9, then resumed */
    snprintf(path, sizeof path, "%s/dynamic.ini", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nseed = 3\nout_dir = %s/runs\n"
               "loss_scale = dynamic\nstop_after = 9\n%s", root, root, stage);
    fclose(f);
    assert_int_equal(run_program(path, NULL, 0, "grad:8", out, sizeof out), 0);
    ASSERT_HAS(out, "step 7: 1 gradient values inf or NaN at loss scale 65536: step skipped, scale 32768");
    ASSERT_HAS(out, "loss scaling: 1 steps skipped (inf/NaN gradients) in this process; scale now 32768");
    const char *go_on = strstr(out, "./train --resume ");
    assert_non_null(go_on);
    snprintf(run_dir, sizeof run_dir, "%s", go_on + strlen("./train --resume "));
    run_dir[strcspn(run_dir, "\n")] = 0;
    assert_int_equal(run_program(NULL, run_dir, 0, NULL, out, sizeof out), 0);
    ASSERT_HAS(out, "loss scaling: 0 steps skipped (inf/NaN gradients) in this process; scale now 32768");
    /* the skipped step changed the result */
    snprintf(a, sizeof a, "%s/final.safetensors", run_dir);
    StFile fa, fb;
    char err[1024];
    if (st_read(a, &fa, err, sizeof err) || st_read(b, &fb, err, sizeof err)) fail_msg("%s", err);
    int differ = 0;
    for (int i = 0; i < fa.count && !differ; i++)
        differ = memcmp(fa.tensors[i].data, st_find(&fb, fa.tensors[i].name)->data, fa.tensors[i].bytes) != 0;
    assert_true(differ);
    st_close(&fa);
    st_close(&fb);
    remove_tree(root);
}

/* [run] name: a fixed run folder. A second run into it, a name that leaves out_dir, or a non-empty
 * folder is refused before any work; --force removes the files the old run wrote (not its
 * subfolders, not a file of the user's). */
static void test_run_name_refuses_to_overwrite(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], out[16384], run_dir[1024], err[1024];
    assert_non_null(mkdtemp(root));
    const char *stage = "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 16\nlr = 3e-3\n";
    train_on_demo(root, "xresnet_tiny", 4, 2, 32, 5, stage, run_dir, sizeof run_dir);
    const char *names[] = {"exp1", "../escape", "other"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%d.ini", root, i);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nout_dir = %s/runs\nname = %s\n%s",
                root, root, names[i], stage);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/0.ini", root);
    assert_int_equal(run_program_to_end(path, NULL, out, sizeof out), 0);
    ASSERT_HAS(out, "run folder ");
    ASSERT_HAS(out, "/runs/exp1");
    assert_int_equal(run_program_to_end(path, NULL, out, sizeof out), 1);
    ASSERT_HAS(out, "/runs/exp1 holds a run already");
    ASSERT_HAS(out, "--force");
    assert_null(strstr(out, "epoch")); /* refused before any work */

    snprintf(path, sizeof path, "%s/1.ini", root);
    assert_int_equal(run_program_to_end(path, NULL, out, sizeof out), 1);
    ASSERT_HAS(out, "[run] name = ../escape would put the run outside");
    snprintf(path, sizeof path, "%s/escape", root);
    assert_int_equal(access(path, F_OK), -1);

    snprintf(path, sizeof path, "%s/runs/other", root);
    assert_int_equal(mkdir(path, 0777), 0);
    snprintf(path, sizeof path, "%s/runs/other/notes.txt", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/2.ini", root);
    assert_int_equal(run_program_to_end(path, NULL, out, sizeof out), 1);
    ASSERT_HAS(out, "/runs/other is not empty");

    /* --force: the old run's files go (a temporary file of a killed write too), a subfolder and a
     * file the run did not write stay, a new run is written */
    snprintf(path, sizeof path, "%s/runs/exp1/keep", root);
    assert_int_equal(mkdir(path, 0777), 0);
    snprintf(path, sizeof path, "%s/runs/exp1/stale.csv", root);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/runs/exp1/resume.safetensors.tmp.123.0", root);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/0.ini", root);
    Config cfg;
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    cfg.force = 1;
    assert_int_equal(train_run(&cfg, NULL, run_dir, sizeof run_dir), 0);
    config_free(&cfg);
    snprintf(path, sizeof path, "%s/runs/exp1/stale.csv", root);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/runs/exp1/resume.safetensors.tmp.123.0", root);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof path, "%s/runs/exp1/keep", root);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/runs/exp1/final.safetensors", root);
    assert_int_equal(access(path, F_OK), 0);
    remove_tree(root);
}


/* ./train with the given arguments (NULL-terminated), to its end; its output in out. */
static int run_train(char *out, size_t outlen, ...) {
    char *argv[16] = {"./train"};
    va_list ap;
    va_start(ap, outlen);
    for (int i = 1; i < 15 && (argv[i] = va_arg(ap, char *)); i++) {}
    va_end(ap);
    char log[] = "/tmp/cnn_train_err_XXXXXX";
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    unlink(log);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        char *envp[] = {"OMP_NUM_THREADS=2", NULL};
        execve("./train", argv, envp);
        _exit(127);
    }
    return finish_program(pid, fd, out, outlen);
}

static void touch(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int count_files(const char *folder) {
    DIR *d = opendir(folder);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A config on root/data with [run] name = name and out_dir = root/out_dir, at root/ini. */
static const char *name_config(const char *root, const char *ini, const char *out_dir, const char *name) {
    static char path[1200];
    snprintf(path, sizeof path, "%s/%s", root, ini);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nout_dir = %s/%s\nname = %s\n"
               "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 16\nlr = 3e-3\n", root, root, out_dir, name);
    fclose(f);
    return path;
}

/* Issue 13.1: --force never writes into a folder that is not a run folder (one without the
 * cnntrain-run mark), whatever it holds: a project folder, a class folder of the data, out_dir
 * itself (name = .); the refusal says what the folder holds, and nothing in it is touched. */
static void test_force_touches_only_run_folders(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], out[16384], run_dir[1024];
    assert_non_null(mkdtemp(root));
    train_on_demo(root, "xresnet_tiny", 4, 2, 32, 5, "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 16\n",
                  run_dir, sizeof run_dir);
    /* the run folder is recognisable */
    snprintf(path, sizeof path, "%s/cnntrain-run", run_dir);
    assert_int_equal(access(path, F_OK), 0);

    /* a project folder: README, Makefile, paper.tex */
    snprintf(path, sizeof path, "%s/paper", root);
    assert_int_equal(mkdir(path, 0777), 0);
    const char *files[] = {"README", "Makefile", "paper.tex"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/paper/%s", root, files[i]);
        touch(path, "mine\n");
    }
    const char *ini = name_config(root, "p.ini", ".", "paper");
    assert_int_equal(run_train(out, sizeof out, ini, "--force", NULL), 1);
    ASSERT_HAS(out, "is not a run folder");
    ASSERT_HAS(out, "README");
    ASSERT_HAS(out, "paper.tex");
    ASSERT_LACKS(out, "removed");
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/paper/%s", root, files[i]);
        assert_int_equal(access(path, F_OK), 0);
    }
    /* name = . : out_dir itself (here the project folder) */
    ini = name_config(root, "dot.ini", "paper", ".");
    assert_int_equal(run_train(out, sizeof out, ini, "--force", NULL), 1);
    ASSERT_HAS(out, "is not a run folder");
    snprintf(path, sizeof path, "%s/paper/README", root);
    assert_int_equal(access(path, F_OK), 0);

    /* a class folder of the training data, reached with ../ */
    ini = name_config(root, "c.ini", "runs", "../data/train/disc");
    snprintf(path, sizeof path, "%s/data/train/disc", root);
    int before = count_files(path);
    assert_true(before > 0);
    assert_int_equal(run_train(out, sizeof out, ini, "--force", NULL), 1);
    ASSERT_HAS(out, "is not a run folder");
    assert_int_equal(count_files(path), before);

    /* a run folder: --force replaces it, and keeps what its run did not write */
    ini = name_config(root, "r.ini", "runs", "exp");
    assert_int_equal(run_train(out, sizeof out, ini, NULL), 0);
    snprintf(path, sizeof path, "%s/runs/exp/notes.txt", root);
    touch(path, "my notes\n");
    assert_int_equal(run_train(out, sizeof out, ini, "--force", NULL), 0);
    ASSERT_HAS(out, "kept 1 files it did not write");
    assert_int_equal(access(path, F_OK), 0);
    remove_tree(root);
}


/* Replaces the first occurrence of from with to in the text file path. */
static void edit_file(const char *path, const char *from, const char *to) {
    size_t n;
    char *text = (char *)slurp(path, &n);
    text[n] = 0;
    char *at = strstr(text, from);
    if (!at) fail_msg("no \"%s\" in %s", from, path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    fclose(f);
    free(text);
}

/* Replace the first `from` in a binary file by `to` of the same length (a checkpoint's header). */
static void patch_bytes(const char *path, const char *from, const char *to) {
    size_t n, k = strlen(from);
    assert_int_equal(strlen(to), k);
    unsigned char *data = slurp(path, &n);
    unsigned char *at = memmem(data, n, from, k);
    if (!at) fail_msg("no %s in %s", from, path);
    memcpy(at, to, k);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    free(data);
}

/* Issue 13.8: --resume goes on with exactly the run that stopped, or refuses with the reason and
 * writes nothing: an edited config.ini, a changed seed, a data set that changed (count, or files
 * at the same count), a folder that was never a run (its metrics.csv stays as it was), a missing
 * or damaged metrics.csv. stop_after does not carry over to the resumed process. */
static void test_resume_refuses_what_breaks_the_record(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], path2[1200], out[16384], run_dir[1024], straight[1024];
    assert_non_null(mkdtemp(root));
    train_on_demo(root, "xresnet_tiny", 8, 3, 32, 5,
                  "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 16\nlr = 3e-3\n", straight, sizeof straight);
    snprintf(path, sizeof path, "%s/run.ini", root);
    assert_int_equal(run_with(path, run_dir, sizeof run_dir, "run.stop_after=3"), TRAIN_STOPPED);
    char config[1300], metrics[1300];
    snprintf(config, sizeof config, "%s/config.ini", run_dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", run_dir);

    /* an edited config.ini: named, refused */
    edit_file(config, "lr = 0.003", "lr = 0.001");
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "the config differs from the one the run started with: [stage a] 'lr = 0.003' when the run started, "
                    "'lr = 0.001' now");
    edit_file(config, "lr = 0.001", "lr = 0.003");
    edit_file(config, "seed = 3", "seed = 4");
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "[run] 'seed = 3' when the run started, 'seed = 4' now");
    edit_file(config, "seed = 4", "seed = 3");
    /* --set of a key that changes the numbers */
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, "--set", "run.seed=5", NULL), 2);
    ASSERT_HAS(out, "--resume takes only run.threads, run.stop_after overrides");

    /* the data set changed under the run: one image fewer, then one renamed */
    snprintf(path, sizeof path, "%s/data/train/disc/0.jpg", root);
    snprintf(path2, sizeof path2, "%s/data/moved.jpg", root);
    if (rename(path, path2)) fail_msg("cannot move %s: %s", path, strerror(errno));
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "changed since this checkpoint: 80 training / 30 validation images then, 79 / 30 now");
    snprintf(path2, sizeof path2, "%s/data/train/disc/renamed.jpg", root);
    snprintf(path, sizeof path, "%s/data/moved.jpg", root);
    assert_int_equal(rename(path, path2), 0);
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "the same counts, but other training files or labels");
    snprintf(path, sizeof path, "%s/data/train/disc/0.jpg", root);
    assert_int_equal(rename(path2, path), 0);

    /* metrics.csv damaged, then missing */
    size_t n;
    char *saved = (char *)slurp(metrics, &n);
    saved[n] = 0;
    edit_file(metrics, "stage,", "Stage,");
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "differ from what the checkpoint recorded");
    assert_int_equal(unlink(metrics), 0);
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "metrics.csv: cannot open");
    touch(metrics, saved);
    free(saved);

    /* the checkpoint's own metadata (resume_rows): a number that does not parse, then a key gone */
    snprintf(path, sizeof path, "%s/resume.safetensors", run_dir);
    patch_bytes(path, "\"phase\":\"0\"", "\"phase\":\"x\"");
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "resume.safetensors: metadata \"phase\" is bad: x");
    patch_bytes(path, "\"phase\":\"x\"", "\"phase\":\"0\"");
    patch_bytes(path, "\"frozen\"", "\"frozeX\"");
    assert_int_equal(run_train(out, sizeof out, "--resume", run_dir, NULL), 1);
    ASSERT_HAS(out, "resume.safetensors: metadata \"frozen\" is missing");
    patch_bytes(path, "\"frozeX\"", "\"frozen\"");

    /* a folder that was never a run, with a config.ini and a metrics.csv of its own */
    snprintf(path, sizeof path, "%s/notarun", root);
    assert_int_equal(mkdir(path, 0777), 0);
    snprintf(path, sizeof path, "%s/notarun/config.ini", root);
    touch(path, "[data]\n");
    snprintf(path2, sizeof path2, "%s/run.ini", root);
    size_t cn;
    char *cfg_text = (char *)slurp(path2, &cn);
    cfg_text[cn] = 0;
    touch(path, cfg_text);
    free(cfg_text);
    snprintf(path, sizeof path, "%s/notarun/metrics.csv", root);
    touch(path, "someone's,numbers\n1,2\n");
    snprintf(path2, sizeof path2, "%s/notarun", root);
    assert_int_equal(run_train(out, sizeof out, "--resume", path2, NULL), 1);
    ASSERT_HAS(out, "not a run folder");
    assert_int_equal(count_files(path2), 2); /* no lock, no log */
    saved = (char *)slurp(path, &n);
    saved[n] = 0;
    assert_string_equal(saved, "someone's,numbers\n1,2\n");
    free(saved);

    /* and the run, untouched by all of it, goes on to the end: stop_after=3 did not carry over */
    assert_int_equal(run_with(NULL, run_dir, sizeof run_dir, NULL), 0);
    char a[1300], b[1300];
    snprintf(a, sizeof a, "%s/final.safetensors", straight);
    snprintf(b, sizeof b, "%s/final.safetensors", run_dir);
    assert_same_tensors(a, b);
    remove_tree(root);
}

/* [data] augment_on = device on the cpu backend: the loader hands over decoded uint8 images and
 * their draws, the backend's warp_batch augments them, mix_images mixes them and shrink_batch
 * makes a progressive stage's smaller sides (what a GPU does with them). Training (plain, mixup,
 * progressive crops and resizes), validation and TTA give the host path's results bit for bit. */
static void test_device_augmentation_matches_host(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], host_dir[1024], dev_dir[1024], a[1300], b[1300];
    assert_non_null(mkdtemp(root));
    train_on_demo(root, "xresnet_tiny", 8, 3, 40, 5,
                  "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 16\nlr = 3e-3\ntransform = fastai\n"
                  "[stage m]\ntype = fit\nepochs = 1\nlr = 1e-3\nmixup = 0.4\nlabel_smoothing = 0.1\n"
                  "[stage p]\ntype = progressive\nepochs = 2\nsize = 40\nlr = 1e-3\ninitial_scale = 0.5\n"
                  "size_increment = 4\nmode = crop\n"
                  "[stage r]\ntype = progressive\nepochs = 1\nsize = 40\nlr = 1e-3\ninitial_scale = 0.6\n"
                  "size_increment = 4\nmode = resize\n"
                  "[stage t]\ntype = tta\n",
                  host_dir, sizeof host_dir);
    snprintf(path, sizeof path, "%s/run.ini", root);
    assert_int_equal(run_with(path, dev_dir, sizeof dev_dir, "data.augment_on=device"), 0);
    snprintf(a, sizeof a, "%s/final.safetensors", host_dir);
    snprintf(b, sizeof b, "%s/final.safetensors", dev_dir);
    assert_same_tensors(a, b);
    char *mh = metrics_without_time(host_dir), *md = metrics_without_time(dev_dir);
    assert_string_equal(mh, md);
    free(mh);
    free(md);
    snprintf(path, sizeof path, "%s/log.txt", dev_dir);
    size_t len;
    char *log = (char *)slurp(path, &len);
    log[len] = 0;
    ASSERT_HAS(log, "at 32px, augmented on the device");
    free(log);
    remove_tree(root);
}

/* Ctrl-C during training: the step ends, a resume checkpoint is written, the program exits with
 * 130 and says how to go on; --resume then finishes the run. */
static void test_ctrl_c_checkpoints_and_resumes(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], out[16384], run_dir[1024];
    assert_non_null(mkdtemp(root));
    train_on_demo(root, "xresnet_tiny", 8, 3, 32, 6,
                  "[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 16\nlr = 3e-3\n", run_dir, sizeof run_dir);
    /* the same data, a run long enough to be interrupted: 200 epochs */
    snprintf(path, sizeof path, "%s/long.ini", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nout_dir = %s/runs\n"
               "[stage a]\ntype = fit_one_cycle\nepochs = 200\nsize = 32\nbatch = 16\n", root, root);
    fclose(f);
    int fd;
    pid_t pid = start_program(path, NULL, 0, NULL, &fd);
    /* interrupt once the first epoch's row is out */
    for (int tries = 0; tries < 600; tries++) {
        ssize_t n = pread(fd, out, sizeof out - 1, 0);
        out[n > 0 ? n : 0] = 0;
        if (strstr(out, "\n0      ")) break;
        usleep(100000);
    }
    kill(pid, SIGINT);
    assert_int_equal(finish_program(pid, fd, out, sizeof out), 130);
    ASSERT_HAS(out, "stopped (Ctrl-C) in stage a");
    const char *go = strstr(out, "./train --resume ");
    assert_non_null(go);
    snprintf(run_dir, sizeof run_dir, "%.*s", (int)strcspn(go + 17, "\n"), go + 17);
    snprintf(path, sizeof path, "%s/resume.safetensors", run_dir);
    assert_int_equal(access(path, R_OK), 0);
    /* go on, and stop again with SIGTERM once it trains: 143, with a checkpoint again */
    pid = start_program(NULL, run_dir, 0, NULL, &fd);
    for (int tries = 0; tries < 600; tries++) {
        ssize_t n = pread(fd, out, sizeof out - 1, 0);
        out[n > 0 ? n : 0] = 0;
        if (strstr(out, "resuming at epoch")) break;
        usleep(100000);
    }
    kill(pid, SIGTERM);
    int rc = finish_program(pid, fd, out, sizeof out);
    if (rc != 143) fail_msg("exit status %d after SIGTERM: %s", rc, out);
    ASSERT_HAS(out, "stopped (SIGTERM) in stage a");
    remove_tree(root);
}

/* Drops every line equal to one of `lines` from the file at path. */
static void drop_lines(const char *path, const char *const *lines, int n) {
    size_t len;
    unsigned char *text = slurp(path, &len);
    char *out = xcalloc(len + 1, 1), *o = out;
    for (char *p = (char *)text, *end; p < (char *)text + len; p = end) {
        end = memchr(p, '\n', (size_t)((char *)text + len - p));
        end = end ? end + 1 : (char *)text + len;
        int drop = 0;
        for (int k = 0; k < n; k++) drop |= (size_t)(end - p) == strlen(lines[k]) + 1 && !memcmp(p, lines[k], strlen(lines[k]));
        if (!drop) memcpy(o, p, (size_t)(end - p)), o += end - p;
    }
    spit(path, out, (size_t)(o - out));
    free(out);
    free(text);
}

/* A run folder of an older ./train records its config without the keys added since; --resume
 * reads that record through today's schema (new keys at their defaults) and goes on. */
static void test_resume_a_run_of_an_older_build(void **state) {
    (void)state;
    char root[] = "/tmp/cnn_train_XXXXXX", path[1200], run_dir[1024], err[1024];
    assert_non_null(mkdtemp(root));
    snprintf(path, sizeof path, "%s/data", root);
    if (demo_data_write(path, 4, 2, 24, 3, err, sizeof err)) fail_msg("%s", err);
    snprintf(path, sizeof path, "%s/run.ini", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nout_dir = %s/runs\n"
               "stop_after = 2\n[stage a]\ntype = fit_one_cycle\nepochs = 1\nsize = 16\nbatch = 8\n", root, root);
    fclose(f);
    assert_int_equal(run_with(path, run_dir, sizeof run_dir, NULL), TRAIN_STOPPED);
    const char *added[] = {"save = stages", "monitor = valid_loss", "early_stop_patience = 0"};
    char mark[1300], ini[1300];
    snprintf(mark, sizeof mark, "%s/cnntrain-run", run_dir);
    snprintf(ini, sizeof ini, "%s/config.ini", run_dir);
    drop_lines(mark, added, 3);
    drop_lines(ini, added, 3);
    assert_int_equal(run_with(NULL, run_dir, sizeof run_dir, "run.stop_after=0"), 0);
    snprintf(path, sizeof path, "%s/final.safetensors", run_dir);
    assert_true(file_size(path) > 0);
    remove_tree(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_trains_and_writes_a_run_folder),
        cmocka_unit_test(test_progressive_then_fixres),
        cmocka_unit_test(test_resume_is_bit_for_bit),
        cmocka_unit_test(test_nan_and_full_disk_keep_the_last_checkpoint),
        cmocka_unit_test(test_ctrl_c_checkpoints_and_resumes),
        cmocka_unit_test(test_inf_gradient_stops_or_is_skipped),
        cmocka_unit_test(test_run_name_refuses_to_overwrite),
        cmocka_unit_test(test_force_touches_only_run_folders),
        cmocka_unit_test(test_resume_refuses_what_breaks_the_record),
        cmocka_unit_test(test_device_augmentation_matches_host),
        cmocka_unit_test(test_resume_with_bad_images_is_bit_for_bit),
        cmocka_unit_test(test_short_batches_are_dropped),
        cmocka_unit_test(test_batch_limits_and_first_epoch_nan),
        cmocka_unit_test(test_cuda_without_a_gpu_says_use_cpu),
        cmocka_unit_test(test_resume_a_run_of_an_older_build),
    };
    /* CNNTRAIN_TEST=GLOB runs only the tests whose names match it (cmocka's filter: `*bad*`) */
    if (getenv("CNNTRAIN_TEST")) cmocka_set_test_filter(getenv("CNNTRAIN_TEST"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
