/* test_eval.c: `train eval` on a checkpoint of an untrained xresnet18 and generated JPEGs: one
 * table row per test size over the whole validation split, TTA columns, the default output
 * folder, clear refusals of a checkpoint whose class list is not the data's; and plot_run, which
 * draws PNGs when gnuplot is installed and says it skipped them when it is not. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/checkpoint.h"
#include "cmd/commands.h"
#include "pipeline/dataset.h"
#include "pipeline/demo_data.h"
#include "train/config.h"
#include "train/eval.h"
#include "train/train.h"
#include "net/model.h"
#include "report/plot.h"
#include "base/rng.h"
#include "train/run_record.h"
#include "base/util.h"


#define TEST_DIR_TEMPLATE "/tmp/cnn_test_eval_XXXXXX"
#include "testutil.h"

enum { PER_CLASS_VALID = 2, CLASSES = 10, NVALID = PER_CLASS_VALID * CLASSES };

static char data_dir[600];
static char *class_names;  /* the data's classes, newline-joined, as train/resume.c writes them */

/* Save an initialised model of `classes` classes to dir/name with class_names (NULL: none). */
static void save_ckpt(const char *name, int classes, const char *names) {
    char err[1024];
    Model *m = model_build("xresnet18", classes, err, sizeof err);
    if (!m) fail_msg("%s", err);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    Rng r;
    rng_seed(&r, 5);
    model_init_host(m, &r, params, stats);
    const char *with[] = {"class_names", names, "stage", "final", "epochs_done", "4", NULL};
    const char *without[] = {"stage", "final", NULL};
    if (ckpt_save(in_dir(name), m, params, stats, names ? with : without, err, sizeof err)) fail_msg("%s", err);
    free(params);
    free(stats);
    model_free(m);
}

static int setup(void **state) {
    if (test_dir_setup(state)) return -1;
    char err[1024];
    snprintf(data_dir, sizeof data_dir, "%s/data", dir);
    if (demo_data_write(data_dir, 2, PER_CLASS_VALID, 32, 11, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    DatasetSpec spec = {DATA_FOLDER, data_dir, "train", "val", NULL, NULL, 0, 0, 1, NULL};
    Dataset d;
    if (dataset_open(&spec, 1, &d, err, sizeof err) || d.nclasses != CLASSES || d.nvalid != NVALID) {
        fprintf(stderr, "demo data: %s\n", err);
        return -1;
    }
    size_t len = 1;
    for (int i = 0; i < d.nclasses; i++) len += strlen(d.classes[i]) + 1;
    class_names = xcalloc(len, 1);
    for (int i = 0; i < d.nclasses; i++) {
        if (i) strcat(class_names, "\n");
        strcat(class_names, d.classes[i]);
    }
    dataset_free(&d);
    mkdir(in_dir("run"), 0755);
    save_ckpt("run/final.safetensors", CLASSES, class_names);
    return 0;
}

static int teardown(void **state) {
    free(class_names);
    return test_dir_teardown(state);
}

typedef struct {
    int size, images;
    float loss, acc, tta_loss, tta_acc;
} Row;

/* Rows of an eval.csv; the header must be `header`. */
static int read_eval_csv(const char *path, const char *header, Row *rows, int max) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    char line[512];
    assert_non_null(fgets(line, sizeof line, f));
    line[strcspn(line, "\n")] = 0;
    assert_string_equal(line, header);
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        Row *r = &rows[n++];
        r->tta_loss = r->tta_acc = NAN;
        int got = sscanf(line, "%d,%f,%f,%d,%f,%f", &r->size, &r->loss, &r->acc, &r->images, &r->tta_loss, &r->tta_acc);
        assert_true(got == 4 || got == 6);
    }
    fclose(f);
    return n;
}

static int is_png(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[8] = {0};
    size_t n = fread(b, 1, 8, f);
    fclose(f);
    return n == 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8);
}

static void check_row(const Row *r, int size) {
    assert_int_equal(r->size, size);
    assert_int_equal(r->images, NVALID);
    assert_true(r->acc >= 0 && r->acc <= 1);
    assert_true(isfinite(r->loss) && r->loss > 0);
}

/* The command line end to end: two sizes, every validation image at each. */
static void test_cmd_eval_two_sizes(void **state) {
    (void)state;
    char ckpt[600], out[600];
    snprintf(ckpt, sizeof ckpt, "%s", in_dir("run/final.safetensors"));
    snprintf(out, sizeof out, "%s", in_dir("out"));
    char *argv[] = {"train", "eval", ckpt, "--data", data_dir, "--sizes", "24,32", "--batch", "8", "--device", "cpu",
                    "--threads", "1", "--out", out, NULL};
    assert_int_equal(cmd_eval(15, argv), 0);
    Row rows[4];
    assert_int_equal(read_eval_csv(in_dir("out/eval.csv"), "size,loss,accuracy,images", rows, 4), 2);
    check_row(&rows[0], 24);
    check_row(&rows[1], 32);
    if (plot_gnuplot_path()) assert_true(is_png(in_dir("out/eval.png")));
    else assert_false(is_png(in_dir("out/eval.png")));
}

/* TTA adds two columns; without --out the files go beside the checkpoint; the FixRes ratio and
 * the plain centre crop run too. */
static void test_eval_tta_default_folder(void **state) {
    (void)state;
    EvalOptions o;
    eval_options_default(&o);
    int sizes[] = {32};
    o.checkpoint = in_dir("run/final.safetensors");
    o.data.root = data_dir;
    o.sizes = sizes;
    o.nsizes = 1;
    o.resize_ratio = 1.25f;
    o.batch = 16;
    o.device = "cpu";
    o.threads = 1;
    o.tta = 1;
    o.tta_n = 2;
    o.plot = 0;
    char err[1024];
    if (eval_checkpoint(&o, err, sizeof err)) fail_msg("%s", err);
    Row rows[2];
    assert_int_equal(read_eval_csv(in_dir("run/eval.csv"), "size,loss,accuracy,images,tta_loss,tta_accuracy", rows, 2), 1);
    check_row(&rows[0], 32);
    assert_true(rows[0].tta_acc >= 0 && rows[0].tta_acc <= 1);
    assert_true(isfinite(rows[0].tta_loss) && rows[0].tta_loss > 0);

    o.tta = 0;
    o.center_crop = 1;
    sizes[0] = 24;
    if (eval_checkpoint(&o, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(read_eval_csv(in_dir("run/eval.csv"), "size,loss,accuracy,images", rows, 2), 1);
    check_row(&rows[0], 24);
}

/* Evaluates `ckpt` (a name in dir) at one size into dir/refused; returns eval_checkpoint's code. */
static int eval_into_refused(const char *ckpt, char *err, size_t errlen) {
    EvalOptions o;
    eval_options_default(&o);
    int sizes[] = {32};
    o.checkpoint = in_dir(ckpt);
    o.data.root = data_dir;
    o.sizes = sizes;
    o.nsizes = 1;
    o.device = "cpu";
    o.threads = 1;
    o.out_dir = in_dir("refused");
    o.plot = 0;
    err[0] = 0;
    return eval_checkpoint(&o, err, errlen);
}

/* Issue 13.10: weights holding a NaN (a run that diverged) are refused naming the tensor, not
 * evaluated to a "nan" loss without a word. */
static void test_broken_weights_refused(void **state) {
    (void)state;
    char err[2048];
    Model *m = model_build("xresnet18", CLASSES, err, sizeof err);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    Rng r;
    rng_seed(&r, 5);
    model_init_host(m, &r, params, stats);
    params[m->params[3].offset + 2] = NAN;
    const char *meta[] = {"class_names", class_names, NULL};
    if (ckpt_save(in_dir("nan.safetensors"), m, params, stats, meta, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(eval_into_refused("nan.safetensors", err, sizeof err), -1);
    printf("refused: %s\n", err);
    ASSERT_STARTS(err, in_dir("nan.safetensors"));
    ASSERT_HAS(err, m->params[3].name);
    ASSERT_HAS(err, "holds inf or NaN values (NaN at index 2)");
    free(params);
    free(stats);
    model_free(m);
}

static void test_class_list_mismatch(void **state) {
    (void)state;
    char err[2048], names[1024];
    /* the same count, one name changed: which class, both names */
    snprintf(names, sizeof names, "%s", class_names);
    char *third = strchr(strchr(strchr(names, '\n') + 1, '\n') + 1, '\n') + 1; /* class 3 */
    char expect_data[128];
    snprintf(expect_data, sizeof expect_data, "'%.*s' in the data", (int)strcspn(third, "\n"), third);
    char renamed[1100];
    snprintf(renamed, sizeof renamed, "%.*szebra%s", (int)(third - names), names, third + strcspn(third, "\n"));
    save_ckpt("renamed.safetensors", CLASSES, renamed);
    assert_int_equal(eval_into_refused("renamed.safetensors", err, sizeof err), -1);
    printf("refused: %s\n", err);
    ASSERT_STARTS(err, in_dir("renamed.safetensors"));
    ASSERT_HAS(err, "differ at class 3 of 10");
    ASSERT_HAS(err, "'zebra' in the checkpoint");
    ASSERT_HAS(err, expect_data);
    ASSERT_HAS(err, "1 of 10 names differ");

    /* one class fewer: both counts, and the name the checkpoint lacks */
    *strrchr(names, '\n') = 0;
    save_ckpt("nine.safetensors", CLASSES, names);
    assert_int_equal(eval_into_refused("nine.safetensors", err, sizeof err), -1);
    printf("refused: %s\n", err);
    ASSERT_HAS(err, "the checkpoint has 9 classes");
    ASSERT_HAS(err, "has 10");
    ASSERT_HAS(err, "the first 9 agree, then the data has");

    /* no class names and a different number of outputs */
    save_ckpt("five.safetensors", 5, NULL);
    assert_int_equal(eval_into_refused("five.safetensors", err, sizeof err), -1);
    printf("refused: %s\n", err);
    ASSERT_HAS(err, "the model has 5 classes but the data");
    ASSERT_HAS(err, "has 10");

    /* the training-state file of a pair is not a model */
    save_ckpt("ten.safetensors", CLASSES, NULL);
    Model *m = model_build("xresnet18", CLASSES, err, sizeof err);
    float *zeros = xcalloc(m->param_floats + 1, sizeof(float));
    const char *meta[] = {CKPT_ID_KEY, "0123456789abcdef0123456789abcdef", NULL};
    if (ckpt_save_train(in_dir("ten.train.safetensors"), m, zeros, zeros, meta, err, sizeof err)) fail_msg("%s", err);
    free(zeros);
    model_free(m);
    assert_int_equal(eval_into_refused("ten.train.safetensors", err, sizeof err), -1);
    ASSERT_HAS(err, "training state");
    struct stat st;
    assert_int_not_equal(stat(in_dir("refused/eval.csv"), &st), 0); /* refused before any output */

    /* without class names but with the data's count it runs (and says it checked only the count) */
    assert_int_equal(eval_into_refused("ten.safetensors", err, sizeof err), 0);

    /* the command says it on stderr and exits 1 */
    char *argv[] = {"train", "eval", (char *)in_dir("renamed.safetensors"), "--data", data_dir, "--sizes", "32",
                    "--device", "cpu", NULL};
    assert_int_equal(cmd_eval(9, argv), 1);
}

/* stdout into a file while fn runs; returns its text (malloc'd). */
static char *capture_stdout(int (*fn)(const char *), const char *arg, int *rc) {
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), fd = open(in_dir("stdout.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    *rc = fn(arg);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    size_t n;
    char *text = (char *)slurp(in_dir("stdout.txt"), &n);
    text[n] = 0;
    printf("%s", text);
    return text;
}

/* A run folder whose name a shell would mangle, a stage name with a quote, a TTA row. */
static const char *write_run(const char *name) {
    static char run[600];
    snprintf(run, sizeof run, "%s", in_dir(name));
    assert_int_equal(mkdir(run, 0755), 0);
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.csv", run);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size\n"
          "small,0,0,2.100000,1.900000,0.310000,10.00,64\n"
          "small,1,1,1.700000,1.600000,0.420000,10.00,64\n"
          "it's big,2,0,1.500000,1.450000,0.510000,20.00,96\n"
          "it's big,3,1,1.300000,1.350000,0.560000,20.00,96\n"
          "tta,4,tta,,,0.590000,,96\n",
          f);
    fclose(f);
    snprintf(path, sizeof path, "%s/eval-sizes.csv", run);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("size,loss,accuracy,images\n64,1.6,0.48,500\n96,1.35,0.56,500\n128,1.4,0.55,500\n", f);
    fclose(f);
    /* after FixRes: the columns of `train eval --interpret`, then the training side */
    snprintf(path, sizeof path, "%s/eval-after.csv", run);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("size,loss,accuracy,images,error_rate,top5_accuracy,trained_size\n96,1.3,0.57,500,0.43,0.9,128\n"
          "128,1.2,0.60,500,0.40,0.91,128\n",
          f);
    fclose(f);
    return run;
}

static void test_plot_run(void **state) {
    (void)state;
    const char *run = write_run("run 'q' $(x) \"d\"");
    int rc;
    char *out = capture_stdout(plot_run, run, &rc);
    assert_int_equal(rc, 0);
    const char *pngs[] = {"loss.png", "accuracy.png", "size.png", "eval-sizes.png", "eval-after.png", "eval_stages.png"};
    char path[800];
    /* the script: the training side marked (from its column, found by name past the others),
     * both eval stages on one plot, no TTA curve made of error rates */
    snprintf(path, sizeof path, "%s/plots.gp", run);
    if (plot_gnuplot_path()) { /* without gnuplot no script is written */
        char *gp = read_text(path);
        ASSERT_HAS(gp, "'trained at 128'");
        ASSERT_HAS(gp, "'after (trained at 128)'");
        ASSERT_HAS(gp, "'sizes'");
        assert_null(strstr(gp, "with TTA"));
        free(gp);
    }
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", run, pngs[i]);
        if (plot_gnuplot_path()) {
            if (!is_png(path)) fail_msg("no PNG at %s", path);
            ASSERT_HAS(out, pngs[i]);
        } else {
            assert_false(is_png(path));
        }
    }
    if (!plot_gnuplot_path()) ASSERT_HAS(out, "plots: skipped");
    free(out);
}

/* Without gnuplot on PATH: one line, status 0, nothing drawn. */
static void test_plot_run_without_gnuplot(void **state) {
    (void)state;
    const char *run = write_run("run_nognuplot");
    char *old = getenv("PATH") ? strcpy(xmalloc(strlen(getenv("PATH")) + 1), getenv("PATH")) : NULL;
    setenv("PATH", "/nonexistent", 1);
    int rc;
    char *out = capture_stdout(plot_run, run, &rc);
    if (old) setenv("PATH", old, 1);
    else unsetenv("PATH");
    free(old);
    assert_int_equal(rc, 0);
    ASSERT_STARTS(out, "plots: skipped");
    ASSERT_HAS(out, "gnuplot is not installed");
    assert_non_null(strchr(out, '\n'));
    assert_string_equal(strchr(out, '\n'), "\n"); /* one line */
    char path[800];
    snprintf(path, sizeof path, "%s/loss.png", run);
    assert_false(is_png(path));
    free(out);
}


/* Issue 13.9: a CSV data set without is_val is split by valid_pct and split_seed. `eval` takes
 * the split from the checkpoint when not given, and refuses another split of the run's own data
 * (it would score training images); other data is evaluated as given. */
static void test_csv_split_from_checkpoint(void **state) {
    (void)state;
    char err[2048], path[1200], root[700];
    /* a Kaggle-style copy of the demo data: csv/train.csv, csv/train_images/<class>_<i>.jpg */
    snprintf(root, sizeof root, "%s", in_dir("csv"));
    snprintf(path, sizeof path, "%s/train_images", root);
    assert_int_equal(make_dirs(path), 0);
    snprintf(path, sizeof path, "%s/train.csv", root);
    FILE *csv = fopen(path, "w");
    assert_non_null(csv);
    fprintf(csv, "image_id,label\n");
    DatasetSpec folder = {DATA_FOLDER, data_dir, "train", "val", NULL, NULL, 0, 0, 1, NULL};
    Dataset fd;
    if (dataset_open(&folder, 1, &fd, err, sizeof err)) fail_msg("%s", err);
    for (int split = 0; split < 2; split++)
        for (int i = 0; i < (split ? fd.nvalid : fd.ntrain); i++) {
            const Sample *smp = split ? &fd.valid[i] : &fd.train[i];
            char id[64], dst[1300];
            snprintf(id, sizeof id, "%s_%d_%d.jpg", fd.classes[smp->label], split, i);
            snprintf(dst, sizeof dst, "%s/train_images/%s", root, id);
            assert_int_equal(link(smp->path, dst), 0);
            fprintf(csv, "%s,%s\n", id, fd.classes[smp->label]);
        }
    fclose(csv);
    dataset_free(&fd);

    /* the model's record: the run split valid_pct 0.25, split_seed 7 */
    DatasetSpec spec = {DATA_CSV, root, NULL, NULL, "train.csv", "train_images", 0.25f, 7, 1, NULL};
    Dataset d;
    if (dataset_open(&spec, 1, &d, err, sizeof err)) fail_msg("%s", err);
    char fp[DATA_FP_CHARS];
    data_fingerprint(&d, root, fp);
    int run_valid = d.nvalid;
    dataset_free(&d);
    Model *m = model_build("xresnet18", CLASSES, err, sizeof err);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    Rng r;
    rng_seed(&r, 5);
    model_init_host(m, &r, params, stats);
    const char *meta[] = {"class_names", class_names, "data", fp, "valid_pct", "0.25", "split_seed", "7", NULL};
    if (ckpt_save(in_dir("split.safetensors"), m, params, stats, meta, err, sizeof err)) fail_msg("%s", err);
    free(params);
    free(stats);
    model_free(m);

    EvalOptions o;
    eval_options_default(&o);
    int sizes[] = {24};
    o.checkpoint = in_dir("split.safetensors");
    o.data = spec;
    o.data.valid_pct = 0.2f; /* eval's defaults: what the user gets without the flags */
    o.data.seed = 42;
    o.sizes = sizes;
    o.nsizes = 1;
    o.device = "cpu";
    o.threads = 1;
    o.batch = 16;
    o.out_dir = in_dir("split_out");
    o.plot = 0;
    /* another split seed, given: refused before any work */
    o.given = EVAL_SPLIT_SEED;
    assert_int_equal(eval_checkpoint(&o, err, sizeof err), -1);
    ASSERT_HAS(err, "is the data set this model was trained on, split another way");
    ASSERT_HAS(err, "(valid_pct 0.25, split_seed 42; the run's: 0.25, 7)");
    assert_int_equal(access(in_dir("split_out/eval.csv"), F_OK), -1);
    /* not given: the checkpoint's split, exactly the run's validation images */
    o.given = 0;
    if (eval_checkpoint(&o, err, sizeof err)) fail_msg("%s", err);
    Row rows[2];
    assert_int_equal(read_eval_csv(in_dir("split_out/eval.csv"), "size,loss,accuracy,images", rows, 2), 1);
    assert_int_equal(rows[0].images, run_valid);
}

/* Issue 16: `train eval CKPT` with no other flag evaluates as the run validated: its data (and
 * `fraction` of it), its size, its validation transform (squash here, which `train eval`'s own
 * default, Resize + CenterCrop, is not), so it reproduces the run's last metrics.csv row to the
 * printed digit; eval.csv carries the training side. Without a run config it asks for --data. */
static void test_eval_defaults_to_the_run(void **state) {
    (void)state;
    char ini[2048], err[2048], run[700], ck[800], path[900];
    snprintf(ini, sizeof ini,
             "[data]\npath = %s\nfraction = 0.5\n[model]\narch = xresnet18\n[run]\ndevice = cpu\nseed = 3\nthreads = 1\n"
             "out_dir = %s/runs\nname = squashed\n[stage one]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 10\n"
             "lr = 5e-3\ntransform = rrc\nvalid_transform = squash\n",
             data_dir, dir);
    Config cfg;
    if (config_load(write_text("squashed.ini", ini), NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    int rc = train_run(&cfg, NULL, run, sizeof run);
    config_free(&cfg);
    assert_int_equal(rc, 0);
    /* the run's last epoch: stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size */
    snprintf(path, sizeof path, "%s/metrics.csv", run);
    char *metrics = read_text(path), want_loss[32] = "", want_acc[32] = "";
    for (char *line = strtok(metrics, "\n"); line; line = strtok(NULL, "\n"))
        if (!strncmp(line, "one,", 4)) assert_int_equal(sscanf(line, "%*[^,],%*[^,],%*[^,],%*[^,],%31[^,],%31[^,]", want_loss, want_acc), 2);
    free(metrics);
    assert_true(want_loss[0] && want_acc[0]);

    EvalOptions o;
    eval_options_default(&o);
    snprintf(ck, sizeof ck, "%s/final.safetensors", run);
    o.checkpoint = ck;
    o.device = "cpu";
    o.threads = 1;
    o.out_dir = in_dir("run_defaults");
    o.plot = 0;
    if (eval_checkpoint(&o, err, sizeof err)) fail_msg("%s", err);
    char *csv = read_text(in_dir("run_defaults/eval.csv")), loss[32], acc[32];
    int size = 0, images = 0, trained = 0;
    assert_true(!strncmp(csv, "size,loss,accuracy,images,trained_size\n", 39));
    assert_int_equal(sscanf(strchr(csv, '\n') + 1, "%d,%31[^,],%31[^,],%d,%d", &size, loss, acc, &images, &trained), 5);
    free(csv);
    assert_int_equal(size, 32);
    assert_int_equal(trained, 32);
    assert_int_equal(images, NVALID / 2); /* fraction 0.5 of each class */
    assert_string_equal(loss, want_loss);
    assert_string_equal(acc, want_acc);

    /* the transform is the run's: Resize + CenterCrop, asked for, scores the images otherwise */
    o.resize_ratio = 1.0f;
    if (eval_checkpoint(&o, err, sizeof err)) fail_msg("%s", err);
    csv = read_text(in_dir("run_defaults/eval.csv"));
    assert_int_equal(sscanf(strchr(csv, '\n') + 1, "%d,%31[^,],", &size, loss), 2);
    free(csv);
    assert_string_not_equal(loss, want_loss);

    /* no config.ini beside the checkpoint: the data and the size must be given */
    eval_options_default(&o);
    o.checkpoint = in_dir("run/final.safetensors");
    o.device = "cpu";
    o.plot = 0;
    assert_int_equal(eval_checkpoint(&o, err, sizeof err), -1);
    ASSERT_HAS(err, "give --sizes: there is no usable run config.ini beside it");
    int sizes[] = {32};
    o.sizes = sizes;
    o.nsizes = 1;
    assert_int_equal(eval_checkpoint(&o, err, sizeof err), -1);
    ASSERT_HAS(err, "give --data: there is no usable run config.ini beside it");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_eval_two_sizes),
        cmocka_unit_test(test_eval_tta_default_folder),
        cmocka_unit_test(test_class_list_mismatch),
        cmocka_unit_test(test_csv_split_from_checkpoint),
        cmocka_unit_test(test_broken_weights_refused),
        cmocka_unit_test(test_eval_defaults_to_the_run),
        cmocka_unit_test(test_plot_run),
        cmocka_unit_test(test_plot_run_without_gnuplot),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
