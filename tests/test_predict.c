/* test_predict.c: `train predict` on a tiny model trained here (generated JPEGs, one epoch, with a
 * label map): on the validation folder it scores what the run and `train eval` scored; top-k
 * probabilities come sorted and sum to at most 1; one image prints its classes and display names;
 * a corrupt image is reported and skipped; the CSV is written, replaced when it is ours and kept
 * when it is not (unless --force); a CSV of image ids gives a submission; the label map reader
 * names the line and column of bad JSON. */
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

#include "cmd/commands.h"
#include "pipeline/demo_data.h"
#include "pipeline/label_map.h"
#include "train/config.h"
#include "train/eval.h"
#include "train/train.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_predict_XXXXXX"
#include "testutil.h"

enum { CLASSES = 10, PER_CLASS_VALID = 3, NVALID = CLASSES * PER_CLASS_VALID, TOPK = 3 };

static char run_dir[600], ckpt[700], data_dir[600];
static double run_valid_acc; /* the run's own last validation accuracy (metrics.csv) */

/* Every class gets a display name "Shape <class>" but one (dots), which keeps its class name. */
static const char *classes[CLASSES] = {"checker", "cross", "disc", "dots", "dstripes", "hstripes", "ring", "square", "triangle", "vstripes"};

static int setup(void **state) {
    if (test_dir_setup(state)) return -1;
    char err[1024], path[1400];
    snprintf(data_dir, sizeof data_dir, "%s/data", dir);
    if (demo_data_write(data_dir, 4, PER_CLASS_VALID, 32, 11, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    char json[1024] = "{";
    for (int i = 0; i < CLASSES; i++)
        if (strcmp(classes[i], "dots"))
            snprintf(json + strlen(json), sizeof json - strlen(json), "%s\"%s\": \"Shape %s\"", i ? ", " : "", classes[i], classes[i]);
    strcat(json, "}\n");
    snprintf(path, sizeof path, "%s/names.json", data_dir);
    spit(path, json, strlen(json));
    /* valid_transform = resize: the test transform of `train eval`, so the three figures compare */
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[data]\npath = %s\nlabel_map = names.json\n[model]\narch = xresnet18\n[run]\ndevice = cpu\nseed = 3\nthreads = 2\n"
             "out_dir = %s/runs\nname = tiny\n[stage one]\ntype = fit_one_cycle\nepochs = 1\nsize = 32\nbatch = 16\nlr = 5e-3\n"
             "transform = rrc\nvalid_transform = resize\n",
             data_dir, dir);
    const char *cfg_path = write_text("run.ini", ini);
    Config cfg;
    if (config_load(cfg_path, NULL, 0, &cfg, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    int rc = train_run(&cfg, NULL, run_dir, sizeof run_dir);
    config_free(&cfg);
    if (rc) return -1;
    snprintf(ckpt, sizeof ckpt, "%s/final.safetensors", run_dir);
    /* the last validation row of metrics.csv: stage,epoch,...,valid_loss,accuracy,... */
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *field[8];
        int n = 0;
        for (char *p = strtok(line, ","); p && n < 8; p = strtok(NULL, ",")) field[n++] = p;
        if (n >= 6 && !strcmp(field[0], "one")) run_valid_acc = atof(field[5]);
    }
    fclose(f);
    return 0;
}

/* Runs cmd_predict with argv (NULL-terminated after "train", "predict"), stdout and stderr into
 * dir/out.txt; returns its status and the text in *text (malloc'd). */
static int predict(char **text, const char *first, ...) {
    char *argv[40] = {"train", "predict"};
    int argc = 2;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 39; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    fflush(stdout), fflush(stderr);
    int fd = open(in_dir("out.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644), so = dup(1), se = dup(2);
    assert_true(fd >= 0);
    dup2(fd, 1), dup2(fd, 2);
    int rc = cmd_predict(argc, argv);
    fflush(stdout), fflush(stderr);
    dup2(so, 1), dup2(se, 2);
    close(so), close(se), close(fd);
    size_t n;
    *text = (char *)slurp(in_dir("out.txt"), &n);
    (*text)[n] = 0;
    return rc;
}

/* The validation folder: the CSV's predicted class equals the image's folder as often as the
 * run's last validation and `train eval` at the run's size say; every row's top-k is sorted,
 * sums to at most 1, starts with the predicted class, and the name column holds the label map's. */
static void test_folder_matches_eval(void **state) {
    (void)state;
    char val[700], *out;
    snprintf(val, sizeof val, "%s/val", data_dir);
    assert_int_equal(predict(&out, ckpt, val, "--top-k", "3", "--out", in_dir("preds.csv"), "--device", "cpu", "--batch", "7",
                             "--threads", "2", NULL), 0);
    ASSERT_HAS(out, "stage 'one'");
    ASSERT_HAS(out, "Resize(32) + CenterCrop(32)");
    ASSERT_HAS(out, "images/s");
    ASSERT_HAS(out, "class names: the checkpoint's class_labels");
    free(out);

    char *csv = read_text(in_dir("preds.csv")), *save = NULL;
    int rows = 0, correct = 0, named = 0;
    for (char *line = strtok_r(csv, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!rows++) {
            assert_string_equal(line, "path,class,probability,name,class_1,probability_1,class_2,probability_2,class_3,probability_3");
            continue;
        }
        char *f[16], *s2 = NULL;
        int n = 0;
        for (char *p = strtok_r(line, ",", &s2); p && n < 16; p = strtok_r(NULL, ",", &s2)) f[n++] = p;
        assert_int_equal(n, 4 + 2 * TOPK);
        char folder[64];
        const char *end = strrchr(f[0], '/'), *start = end;
        while (start > f[0] && start[-1] != '/') start--;
        snprintf(folder, sizeof folder, "%.*s", (int)(end - start), start);
        correct += !strcmp(folder, f[1]);
        assert_string_equal(f[1], f[4]);
        assert_true(fabs(atof(f[2]) - atof(f[5])) < 1e-6);
        double sum = 0, prev = 2;
        for (int j = 0; j < TOPK; j++) {
            double p = atof(f[5 + 2 * j]);
            assert_true(p >= 0 && p <= prev);
            prev = p;
            sum += p;
        }
        assert_true(sum <= 1.0 + 1e-5);
        char want[80];
        snprintf(want, sizeof want, "Shape %s", f[1]);
        if (!strcmp(f[1], "dots")) assert_string_equal(f[3], "dots");
        else assert_string_equal(f[3], want), named++;
    }
    free(csv);
    assert_int_equal(rows - 1, NVALID);
    assert_true(named > 0 || correct >= 0);
    assert_true(fabs((double)correct / NVALID - run_valid_acc) < 1e-5);

    EvalOptions o;
    eval_options_default(&o);
    int sizes[] = {32};
    o.checkpoint = ckpt;
    o.data.root = data_dir;
    o.sizes = sizes;
    o.nsizes = 1;
    o.device = "cpu";
    o.threads = 2;
    o.plot = 0;
    o.out_dir = in_dir("eval");
    char err[1024];
    if (eval_checkpoint(&o, err, sizeof err)) fail_msg("%s", err);
    char *ev = read_text(in_dir("eval/eval.csv"));
    double eval_acc = 0;
    assert_int_equal(sscanf(strchr(ev, '\n') + 1, "%*d,%*f,%lf", &eval_acc), 1);
    free(ev);
    assert_true(fabs((double)correct / NVALID - eval_acc) < 1e-5);

    /* our own file is replaced without --force */
    assert_int_equal(predict(&out, ckpt, val, "--out", in_dir("preds.csv"), "--device", "cpu", NULL), 0);
    free(out);
}

/* One image: its top-k on stdout, with the display names. */
static void test_single_image(void **state) {
    (void)state;
    char img[700], *out;
    snprintf(img, sizeof img, "%s/val/square/0.jpg", data_dir);
    assert_int_equal(predict(&out, ckpt, img, "--top-k", "10", "--device", "cpu", NULL), 0);
    ASSERT_HAS(out, img);
    ASSERT_HAS(out, ", probability ");
    /* ten ranked lines, each with a class, and every class but dots with its display name */
    for (int i = 0; i < CLASSES; i++) {
        char want[80];
        snprintf(want, sizeof want, "  %s", classes[i]);
        ASSERT_HAS(out, want);
        if (strcmp(classes[i], "dots")) {
            snprintf(want, sizeof want, "%s  Shape %s", classes[i], classes[i]);
            ASSERT_HAS(out, want);
        }
    }
    ASSERT_HAS(out, "\n  10  ");
    ASSERT_LACKS(out, "wrote");
    /* the same class and probability as its row in the folder's CSV (test_folder_matches_eval's):
     * every image's row is its own */
    char *csv = read_text(in_dir("preds.csv")), *row = strstr(csv, img), *line1 = strstr(out, ": ");
    assert_non_null(row);
    assert_non_null(line1);
    char cls[64], pcls[64];
    double p = 0, pp = 0;
    assert_int_equal(sscanf(row + strlen(img), ",%63[^,],%lf", cls, &p), 2);
    assert_int_equal(sscanf(strstr(out, "\n  1  "), "\n  1  %lf  %63s", &pp, pcls), 2);
    assert_string_equal(cls, pcls);
    assert_true(fabs(p - pp) < 1e-6);
    free(csv);
    free(out);
}

/* A corrupt image among good ones: reported with its path, skipped, counted. */
static void test_corrupt_image_skipped(void **state) {
    (void)state;
    char *out, src[700];
    mkdir(in_dir("mixed"), 0755);
    mkdir(in_dir("mixed/ring"), 0755);
    for (int i = 0; i < 2; i++) {
        size_t n;
        snprintf(src, sizeof src, "%s/val/ring/%d.jpg", data_dir, i);
        unsigned char *b = slurp(src, &n);
        char name[64];
        snprintf(name, sizeof name, "mixed/ring/%d.jpg", i);
        spit(in_dir(name), b, n);
        free(b);
    }
    write_text("mixed/ring/broken.jpg", "\xff\xd8\xff not really a JPEG");
    write_text("mixed/notes.txt", "not an image");
    assert_int_equal(predict(&out, ckpt, in_dir("mixed"), "--out", in_dir("mixed.csv"), "--device", "cpu", NULL), 0);
    ASSERT_HAS(out, "mixed/ring/broken.jpg");
    ASSERT_HAS(out, "predict: 2 images in");
    ASSERT_HAS(out, "1 bad image skipped");
    ASSERT_HAS(out, "1 file that is not images ignored");
    free(out);
    char *csv = read_text(in_dir("mixed.csv"));
    int lines = 0;
    for (char *p = csv; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 3);
    ASSERT_LACKS(csv, "broken");
    free(csv);
}

/* A file that is not a predictions CSV of ours is kept, and the message says how to replace it. */
static void test_other_file_not_overwritten(void **state) {
    (void)state;
    char val[700], *out;
    snprintf(val, sizeof val, "%s/val", data_dir);
    const char *mine = write_text("mine.csv", "id,score\n1,2\n");
    assert_int_equal(predict(&out, ckpt, val, "--out", mine, "--device", "cpu", NULL), 1);
    ASSERT_HAS(out, "--force");
    ASSERT_HAS(out, "not replaced");
    free(out);
    char *kept = read_text(mine);
    assert_string_equal(kept, "id,score\n1,2\n");
    free(kept);
    assert_int_equal(predict(&out, ckpt, val, "--out", mine, "--device", "cpu", "--force", NULL), 0);
    free(out);
    kept = read_text(mine);
    ASSERT_STARTS(kept, "path,class,probability,");
    free(kept);
    assert_int_equal(count_temp_files(dir), 0);
}

/* A Kaggle-style CSV of image ids: a submission with its column names, images found beside it;
 * TTA runs through the shared pass. */
static void test_csv_submission(void **state) {
    (void)state;
    char *out, line[128];
    mkdir(in_dir("kaggle"), 0755);
    mkdir(in_dir("kaggle/test_images"), 0755);
    FILE *f = fopen(in_dir("kaggle/sample_submission.csv"), "w");
    assert_non_null(f);
    fprintf(f, "image_id,label\n");
    for (int i = 0; i < 3; i++) {
        char src[700], name[80];
        size_t n;
        snprintf(src, sizeof src, "%s/val/%s/%d.jpg", data_dir, classes[i], i);
        unsigned char *b = slurp(src, &n);
        snprintf(name, sizeof name, "kaggle/test_images/t%d.jpg", i);
        spit(in_dir(name), b, n);
        free(b);
        fprintf(f, "t%d.jpg,0\n", i);
    }
    fclose(f);
    assert_int_equal(predict(&out, ckpt, in_dir("kaggle/sample_submission.csv"), "--out", in_dir("sub.csv"), "--tta",
                             "--tta-n", "2", "--device", "cpu", NULL),
                     0);
    ASSERT_HAS(out, "kaggle/test_images");
    ASSERT_HAS(out, "TTA: n=2");
    free(out);
    f = fopen(in_dir("sub.csv"), "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "image_id,label\n");
    for (int i = 0; i < 3; i++) {
        char id[32], cls[64];
        assert_non_null(fgets(line, sizeof line, f));
        assert_int_equal(sscanf(line, "%31[^,],%63s", id, cls), 2);
        snprintf(line, sizeof line, "t%d.jpg", i);
        assert_string_equal(id, line);
        int known = 0;
        for (int c = 0; c < CLASSES; c++) known |= !strcmp(cls, classes[c]);
        assert_true(known);
    }
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
    /* the input itself is never the output */
    assert_int_equal(predict(&out, ckpt, in_dir("kaggle/sample_submission.csv"), "--out", in_dir("kaggle/sample_submission.csv"),
                             "--force", "--device", "cpu", NULL),
                     1);
    ASSERT_HAS(out, "is the input");
    free(out);
}

/* The label map reader: names by key, and bad JSON named by file, line and column. */
static void test_label_map_reader(void **state) {
    (void)state;
    LabelMap m;
    char err[512];
    const char *good = "{\"0\": \"Cassava Bacterial Blight (CBB)\", \"1\": \"caf\\u00e9 \\\"x\\\"\"}";
    assert_int_equal(label_map_parse(good, strlen(good), "map.json", &m, err, sizeof err), 0);
    assert_int_equal(m.n, 2);
    assert_string_equal(label_map_find(&m, "0"), "Cassava Bacterial Blight (CBB)");
    assert_string_equal(label_map_find(&m, "1"), "caf\xc3\xa9 \"x\"");
    assert_null(label_map_find(&m, "2"));
    label_map_free(&m);
    const char *bad = "{\"0\": \"a\",\n \"1\": 7}";
    assert_int_equal(label_map_parse(bad, strlen(bad), "map.json", &m, err, sizeof err), -1);
    ASSERT_STARTS(err, "map.json: line 2, column 7: the value must be a string");
    const char *twice = "{\"0\": \"a\", \"0\": \"b\"}";
    assert_int_equal(label_map_parse(twice, strlen(twice), "m.json", &m, err, sizeof err), -1);
    ASSERT_HAS(err, "appears twice");
    const char *open_end = "{\"0\": \"a\"";
    assert_int_equal(label_map_parse(open_end, strlen(open_end), "m.json", &m, err, sizeof err), -1);
    ASSERT_HAS(err, "expected ',' or '}'");
    /* the cassava copy's map, where the shared data is */
    const char *cassava = "../shared/data/cassava-mini/label_num_to_disease_map.json";
    if (!access(cassava, R_OK)) {
        if (label_map_read(cassava, &m, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(m.n, 5);
        assert_string_equal(label_map_find(&m, "4"), "Healthy");
        label_map_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_map_reader),
        cmocka_unit_test(test_folder_matches_eval),
        cmocka_unit_test(test_single_image),
        cmocka_unit_test(test_corrupt_image_skipped),
        cmocka_unit_test(test_other_file_not_overwritten),
        cmocka_unit_test(test_csv_submission),
    };
    return cmocka_run_group_tests(tests, setup, test_dir_teardown);
}
