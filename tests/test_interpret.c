/* test_interpret.c: fastai's ClassificationInterpretation (train/interpret.h) on real JPEGs and a
 * briefly trained xresnet_tiny: `train eval --interpret` and the interpret stage write a confusion
 * matrix that sums to the validation count with eval's correct count on its diagonal, per-class
 * precision and recall that match a hand count from it, most_confused sorted as fastai sorts it,
 * top-5 >= top-1, and grids of the expected size; the rows of a pass map to their images even
 * when the loader skips a bad one; and the functions themselves on hand-made probabilities. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/commands.h"
#include "pipeline/dataset.h"
#include "pipeline/demo_data.h"
#include "pipeline/image.h"
#include "pipeline/loader.h"
#include "report/image_grid.h"
#include "report/plot.h"
#include "train/config.h"
#include "train/interpret.h"
#include "train/train.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_interpret_XXXXXX"
#include "testutil.h"

enum { CLASSES = 10, PER_CLASS_VALID = 4, NVALID = CLASSES * PER_CLASS_VALID, SIDE = 32, TOP_LOSSES = 4 };

static char run_dir[1024];

/* Demo JPEGs and a 4-epoch run on them whose last stage is an interpret stage. */
static int setup(void **state) {
    if (test_dir_setup(state)) return -1;
    char err[1024];
    if (demo_data_write(in_dir("data"), 10, PER_CLASS_VALID, SIDE, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    FILE *f = fopen(in_dir("run.ini"), "w");
    if (!f) return -1;
    fprintf(f,
            "[data]\npath = %s\n[model]\narch = xresnet_tiny\n[run]\ndevice = cpu\nseed = 3\nthreads = 2\nout_dir = %s\n"
            "name = r\n[stage fit]\ntype = fit_one_cycle\nepochs = 4\nsize = %d\nbatch = 16\nlr = 1e-2\n"
            "[stage interp]\ntype = interpret\ntop_losses = %d\n",
            in_dir("data"), in_dir("runs"), SIDE, TOP_LOSSES);
    fclose(f);
    Config cfg;
    if (config_load(in_dir("run.ini"), NULL, 0, &cfg, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    int rc = train_run(&cfg, NULL, run_dir, sizeof run_dir);
    config_free(&cfg);
    return rc;
}

/* ------------------------------------------------------------------------- reading the files */

typedef struct {
    int n;
    char names[CLASSES][32];
    int cm[CLASSES][CLASSES];
} Matrix;

static void read_confusion(const char *path, Matrix *m) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    char line[1024];
    assert_non_null(fgets(line, sizeof line, f));
    line[strcspn(line, "\n")] = 0;
    assert_true(!strncmp(line, "actual\\predicted,", 17));
    m->n = 0;
    for (char *p = line + 17; p && m->n < CLASSES; m->n++) {
        char *c = strchr(p, ',');
        snprintf(m->names[m->n], sizeof m->names[0], "%.*s", c ? (int)(c - p) : (int)strlen(p), p);
        p = c ? c + 1 : NULL;
    }
    assert_int_equal(m->n, CLASSES);
    for (int a = 0; a < CLASSES; a++) {
        assert_non_null(fgets(line, sizeof line, f));
        char *p = strchr(line, ',');
        assert_non_null(p);
        assert_int_equal((int)(p - line), (int)strlen(m->names[a])); /* rows in the columns' order */
        assert_true(!strncmp(line, m->names[a], strlen(m->names[a])));
        for (int k = 0; k < CLASSES; k++) {
            assert_non_null(p);
            m->cm[a][k] = (int)strtol(p + 1, &p, 10);
        }
    }
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
}

static int class_index(const Matrix *m, const char *name) {
    for (int c = 0; c < m->n; c++)
        if (!strcmp(m->names[c], name)) return c;
    fail_msg("unknown class '%s'", name);
    return -1;
}

/* eval.csv's single row with the --interpret columns. */
typedef struct {
    int size, images;
    double loss, acc, error_rate, top5;
} EvalRow;

static void read_eval_row(const char *path, EvalRow *r) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    char line[512];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "size,loss,accuracy,images,error_rate,top5_accuracy,trained_size\n");
    assert_non_null(fgets(line, sizeof line, f));
    assert_int_equal(sscanf(line, "%d,%lf,%lf,%d,%lf,%lf", &r->size, &r->loss, &r->acc, &r->images, &r->error_rate, &r->top5), 6);
    fclose(f);
}

static void jpeg_size(const char *path, int *w, int *h) {
    Image im;
    char err[512];
    if (jpeg_decode_file(path, NULL, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    *w = im.w, *h = im.h;
    image_free(&im);
}

static void check_grid(const char *path, int n, const char *heading) {
    int cols = 1, w, h;
    while (cols * cols < n) cols++;
    ImageGridLayout g = image_grid_layout(n, SIDE, cols, 2, heading, INTERPRET_GRID_MIN_SIDE);
    assert_true(g.cells.size >= INTERPRET_GRID_MIN_SIDE && g.cells.size % SIDE == 0);
    jpeg_size(path, &w, &h);
    assert_int_equal(w, g.cells.width);
    assert_int_equal(h, g.cells.height);
}

/* The checks on one interpretation's files (prefix: "" for eval, "interp-" for the stage). */
static void check_interpretation(const char *folder, const char *prefix, int expect_images, int expect_correct,
                                 int top_losses, Matrix *m) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%sconfusion.csv", folder, prefix);
    read_confusion(path, m);
    int total = 0, diagonal = 0;
    for (int a = 0; a < CLASSES; a++)
        for (int p = 0; p < CLASSES; p++) total += m->cm[a][p], diagonal += a == p ? m->cm[a][p] : 0;
    assert_int_equal(total, expect_images);
    assert_int_equal(diagonal, expect_correct);

    /* per_class.csv against a hand count: column sums are the predictions, row sums the support */
    snprintf(path, sizeof path, "%s/%sper_class.csv", folder, prefix);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512], name[64];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "class,precision,recall,f1,accuracy,support,predicted\n");
    for (int c = 0; c < CLASSES; c++) {
        double precision, recall, f1, accuracy;
        int support, predicted, col = 0, row = 0;
        assert_non_null(fgets(line, sizeof line, f));
        assert_int_equal(sscanf(line, "%63[^,],%lf,%lf,%lf,%lf,%d,%d", name, &precision, &recall, &f1, &accuracy, &support,
                                &predicted), 7);
        assert_string_equal(name, m->names[c]);
        for (int k = 0; k < CLASSES; k++) col += m->cm[k][c], row += m->cm[c][k];
        assert_int_equal(support, row);
        assert_int_equal(predicted, col);
        assert_true(fabs(precision - (col ? (double)m->cm[c][c] / col : 0)) < 1e-6);
        assert_true(fabs(recall - (row ? (double)m->cm[c][c] / row : 0)) < 1e-6);
        assert_true(fabs(accuracy - recall) < 1e-6);
        assert_true(fabs(f1 - (precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0)) < 1e-6);
    }
    fclose(f);

    /* most_confused: every off-diagonal cell >= 1 once, with its count, by count descending and
     * then in row-major order */
    snprintf(path, sizeof path, "%s/%smost_confused.csv", folder, prefix);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "actual,predicted,count\n");
    int seen[CLASSES][CLASSES] = {{0}}, pairs = 0, prev_count = INT32_MAX, prev_cell = -1, off_diagonal = 0;
    char actual[64], predicted[64];
    int count;
    while (fgets(line, sizeof line, f)) {
        assert_int_equal(sscanf(line, "%63[^,],%63[^,],%d", actual, predicted, &count), 3);
        int a = class_index(m, actual), p = class_index(m, predicted), cell = a * CLASSES + p;
        assert_true(a != p);
        assert_int_equal(count, m->cm[a][p]);
        assert_false(seen[a][p]);
        seen[a][p] = 1;
        assert_true(count < prev_count || (count == prev_count && cell > prev_cell));
        prev_count = count, prev_cell = cell;
        pairs++;
    }
    fclose(f);
    for (int a = 0; a < CLASSES; a++)
        for (int p = 0; p < CLASSES; p++) off_diagonal += a != p && m->cm[a][p] >= 1;
    assert_int_equal(pairs, off_diagonal);

    snprintf(path, sizeof path, "%s/%stop_losses.jpg", folder, prefix);
    check_grid(path, top_losses, "Prediction/Actual/Loss/Probability");
    snprintf(path, sizeof path, "%s/%sshow_results.jpg", folder, prefix);
    check_grid(path, 9, "Actual / Predicted (green: right, red: wrong)");
    snprintf(path, sizeof path, "%s/%sconfusion.png", folder, prefix);
    struct stat st;
    if (plot_gnuplot_path()) assert_true(!stat(path, &st) && st.st_size > 1000);
}

/* ------------------------------------------------------------------------- the tests */

/* `train eval --interpret`: the files agree with eval's own figures and with the run's. */
static void test_eval_interpret(void **state) {
    (void)state;
    char ckpt[1200], out[600];
    snprintf(ckpt, sizeof ckpt, "%s/final.safetensors", run_dir);
    snprintf(out, sizeof out, "%s", in_dir("ev"));
    char *argv[] = {"train", "eval", ckpt, "--data", (char *)in_dir("data"), "--sizes", "32", "--interpret", "--device", "cpu",
                    "--threads", "2", "--out", out, NULL};
    assert_int_equal(cmd_eval(14, argv), 0);
    EvalRow r;
    read_eval_row(in_dir("ev/eval.csv"), &r);
    assert_int_equal(r.images, NVALID);
    int correct = (int)lround(r.acc * r.images);
    assert_true(fabs(r.error_rate - (1 - r.acc)) < 1e-6);
    assert_true(r.top5 >= r.acc && r.top5 <= 1);
    assert_true(correct > NVALID / CLASSES); /* trained: better than chance, so the matrix has a diagonal */
    Matrix m;
    check_interpretation(out, "", NVALID, correct, 9, &m);

    /* the interpret stage (the same images at the same side, through its fastai valid transform,
     * which on square 32-pixel images is the identity as eval's Resize + CenterCrop is) */
    Matrix s;
    check_interpretation(run_dir, "interp-", NVALID, correct, TOP_LOSSES, &s);
    assert_memory_equal(s.cm, m.cm, sizeof m.cm);
    size_t len;
    char path[1200];
    snprintf(path, sizeof path, "%s/log.txt", run_dir);
    char *log = (char *)slurp(path, &len);
    ASSERT_HAS(log, "stage interp: interpretation");
    ASSERT_HAS(log, "most_confused(min_val=1)");
    free(log);

    /* without --interpret eval.csv keeps its columns (and the run's training side) */
    char *plain[] = {"train", "eval", ckpt, "--data", (char *)in_dir("data"), "--sizes", "32", "--device", "cpu", "--out",
                     (char *)in_dir("plain"), NULL};
    assert_int_equal(cmd_eval(11, plain), 0);
    char *csv = (char *)slurp(in_dir("plain/eval.csv"), &len);
    assert_true(!strncmp(csv, "size,loss,accuracy,images,trained_size\n", 39));
    free(csv);
    struct stat st;
    assert_int_not_equal(stat(in_dir("plain/confusion.csv"), &st), 0);
}

/* A bad JPEG in the validation set: the loader skips it, and the rows still map to their images
 * (the class after it would be shifted by one otherwise); eval --interpret counts the good ones. */
static void test_rows_map_past_a_bad_image(void **state) {
    (void)state;
    char err[1024];
    assert_int_equal(demo_data_write(in_dir("bad"), 2, 2, SIDE, 4, err, sizeof err), 0);
    spit(in_dir("bad/val/checker/9.jpg"), "not a jpeg", 10); /* sorts after 0.jpg and 1.jpg */
    DatasetSpec spec = {DATA_FOLDER, in_dir("bad"), "train", "val", NULL, NULL, 0, 0, 1, NULL};
    Dataset d;
    assert_int_equal(dataset_open(&spec, 1, &d, err, sizeof err), 0);
    assert_int_equal(d.nvalid, 2 * CLASSES + 1);
    LoaderSpec ls = {0};
    ls.samples = d.valid;
    ls.count = d.nvalid;
    ls.tf = transform_defaults(TF_RESIZE_CENTER_CROP, SIDE, 0);
    ls.batch = 4;
    ls.threads = 2;
    ls.format = BATCH_U8;
    Loader *L = loader_create(&ls, err, sizeof err);
    assert_non_null(L);
    int32_t labels[64];
    int n = 0, sample[64];
    loader_start_epoch(L, 0, 0);
    for (const Batch *b; (b = loader_next(L));) {
        memcpy(labels + n, b->labels, (size_t)b->n * sizeof *labels);
        n += b->n;
    }
    assert_int_equal(n, 2 * CLASSES);
    assert_int_equal(interp_loader_order(L, d.nvalid, n, sample, err, sizeof err), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(labels[i], d.valid[sample[i]].label);
        assert_true(strstr(d.valid[sample[i]].path, "9.jpg") == NULL);
        if (i) assert_true(sample[i] > sample[i - 1]);
    }
    assert_int_equal(interp_loader_order(L, d.nvalid, n + 1, sample, err, sizeof err), -1); /* counts disagree */
    ASSERT_HAS(err, "cannot be matched");
    loader_destroy(L);
    dataset_free(&d);

    char ckpt[1200];
    snprintf(ckpt, sizeof ckpt, "%s/final.safetensors", run_dir);
    char *argv[] = {"train", "eval", ckpt, "--data", (char *)in_dir("bad"), "--sizes", "32", "--interpret", "--device", "cpu",
                    "--top-losses", "3", "--out", (char *)in_dir("bad_out"), NULL};
    assert_int_equal(cmd_eval(14, argv), 0);
    Matrix m;
    read_confusion(in_dir("bad_out/confusion.csv"), &m);
    int total = 0;
    for (int a = 0; a < CLASSES; a++)
        for (int p = 0; p < CLASSES; p++) total += m.cm[a][p];
    assert_int_equal(total, 2 * CLASSES);
    check_grid(in_dir("bad_out/top_losses.jpg"), 3, "Prediction/Actual/Loss/Probability");
}

/* The functions on probabilities made by hand: fastai's orders and counts. */
static void test_functions_by_hand(void **state) {
    (void)state;
    enum { N = 6, C = 5 };
    const float probs[N][C] = {
        {0.70f, 0.10f, 0.10f, 0.05f, 0.05f}, /* label 0: right */
        {0.60f, 0.30f, 0.04f, 0.03f, 0.03f}, /* label 1: predicted 0 */
        {0.50f, 0.40f, 0.04f, 0.03f, 0.03f}, /* label 1: predicted 0 */
        {0.05f, 0.05f, 0.10f, 0.20f, 0.60f}, /* label 2: predicted 4, p(label) 3rd */
        {0.20f, 0.20f, 0.20f, 0.20f, 0.20f}, /* label 3: all equal: predicted 0 (argmax's first) */
        {0.01f, 0.02f, 0.03f, 0.04f, 0.90f}, /* label 0: predicted 4, p(label) last */
    };
    const int32_t labels[N] = {0, 1, 1, 2, 3, 0};
    Interpretation t;
    interp_compute(&probs[0][0], labels, N, C, &t);
    assert_int_equal(t.correct, 1);
    assert_int_equal(t.confusion[1 * C + 0], 2);
    assert_int_equal(t.confusion[3 * C + 0], 1);
    assert_int_equal(t.predicted[4], 0);
    assert_true(fabsf(t.loss[5] - -logf(0.01f)) < 1e-5f);
    assert_true(fabsf(t.confidence[1] - 0.60f) < 1e-6f);

    ConfusedPair *pairs;
    int n = interp_most_confused(&t, 1, &pairs);
    assert_int_equal(n, 4);
    /* (1,0) twice first; then the ones in row-major order: (0,4), (2,4), (3,0) */
    const int want[4][3] = {{1, 0, 2}, {0, 4, 1}, {2, 4, 1}, {3, 0, 1}};
    for (int i = 0; i < n; i++) {
        assert_int_equal(pairs[i].actual, want[i][0]);
        assert_int_equal(pairs[i].predicted, want[i][1]);
        assert_int_equal(pairs[i].count, want[i][2]);
    }
    free(pairs);
    assert_int_equal(interp_most_confused(&t, 2, &pairs), 1);
    free(pairs);

    int idx[N];
    assert_int_equal(interp_top_losses(&t, 3, idx), 3);
    assert_int_equal(idx[0], 5); /* -log 0.01 */
    assert_int_equal(idx[1], 3); /* -log 0.10 */
    assert_int_equal(idx[2], 4); /* -log 0.20 */
    assert_int_equal(interp_top_losses(&t, 100, idx), N);

    ClassScores s = interp_class_scores(&t, 0); /* 1 right of 2 actual; predicted 4 times */
    assert_int_equal(s.support, 2);
    assert_int_equal(s.predicted, 4);
    assert_true(fabs(s.precision - 0.25) < 1e-9 && fabs(s.recall - 0.5) < 1e-9);
    s = interp_class_scores(&t, 2); /* never predicted: precision 0, as sklearn's zero_division */
    assert_true(s.precision == 0 && s.recall == 0 && s.f1 == 0);

    /* ranks of the labels: 0, 1, 1, 2, 3 (row 4's ties rank by index, as argmax), 4 */
    assert_int_equal(interp_topk_correct(&probs[0][0], labels, N, C, 1), t.correct);
    assert_int_equal(interp_topk_correct(&probs[0][0], labels, N, C, 2), 3);
    assert_int_equal(interp_topk_correct(&probs[0][0], labels, N, C, 3), 4);
    assert_int_equal(interp_topk_correct(&probs[0][0], labels, N, C, 4), 5);
    assert_int_equal(interp_topk_correct(&probs[0][0], labels, N, C, 5), N);
    interp_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_functions_by_hand),
        cmocka_unit_test(test_eval_interpret),
        cmocka_unit_test(test_rows_map_past_a_bad_image),
    };
    return cmocka_run_group_tests(tests, setup, test_dir_teardown);
}
