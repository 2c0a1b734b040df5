/* test_loader.c: the threaded loader: same batches whatever the thread count, epochs, drop_last,
 * resuming mid-epoch, and bad images skipped and counted (or fatal when strict). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dataset.h"
#include "image.h"
#include "loader.h"
#include "synthetic.h"
#include "util.h"

static char root[256];

/* 3 classes x 7 images of 40x32 generated shapes, in the folder layout. */
static int make_tree(void **state) {
    (void)state;
    snprintf(root, sizeof root, "/tmp/cnn_loader_XXXXXX");
    if (!mkdtemp(root)) return -1;
    Rng rng;
    rng_seed(&rng, 9);
    Image img = {40, 32, xmalloc(40 * 32 * 3)};
    uint8_t *sq = xmalloc(40 * 40 * 3);
    char path[512], err[256];
    for (int split = 0; split < 2; split++)
        for (int c = 0; c < 3; c++) {
            snprintf(path, sizeof path, "%s/%s/%s", root, split ? "val" : "train", synth_class_names[c]);
            if (make_dirs(path)) return -1;
            for (int i = 0; i < 7; i++) {
                synth_image(&rng, c, 40, sq);
                memcpy(img.rgb, sq, 40 * 32 * 3); /* the top 32 rows: a non-square image */
                snprintf(path, sizeof path, "%s/%s/%s/%d.jpg", root, split ? "val" : "train", synth_class_names[c], i);
                if (jpeg_write_file(path, &img, 90, err, sizeof err)) fail_msg("%s", err);
            }
        }
    free(img.rgb);
    free(sq);
    return 0;
}

static int remove_tree(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static Dataset open_tree(void) {
    DatasetSpec ds = {DATA_FOLDER, root, "train", "val", NULL, NULL, 0, 0, 1};
    Dataset d;
    char err[512];
    if (dataset_open(&ds, 0, &d, err, sizeof err)) fail_msg("%s", err);
    return d;
}

static LoaderSpec spec_for(const Dataset *d, int threads, int batch) {
    LoaderSpec s = {0};
    s.samples = d->train;
    s.count = d->ntrain;
    s.tf = transform_defaults(TF_FASTAI, 24, 1);
    s.tf.presize = 32;
    s.batch = batch;
    s.shuffle = 1;
    s.threads = threads;
    s.seed = 1234;
    s.format = BATCH_F32;
    return s;
}

/* All batches of one epoch, concatenated: labels then pixels. */
static size_t run_epoch(Loader *L, int epoch, int first, float *pixels, int32_t *labels, int *nbatches) {
    size_t n = 0;
    *nbatches = 0;
    loader_start_epoch(L, epoch, first);
    for (const Batch *b; (b = loader_next(L));) {
        memcpy(pixels + n * 3 * 24 * 24, b->x, (size_t)b->n * 3 * 24 * 24 * sizeof(float));
        memcpy(labels + n, b->labels, (size_t)b->n * sizeof(int32_t));
        n += (size_t)b->n;
        (*nbatches)++;
    }
    return n;
}

static void test_same_batches_whatever_the_threads(void **state) {
    (void)state;
    Dataset d = open_tree();
    assert_int_equal(d.ntrain, 21);
    char err[256];
    float *p1 = xmalloc(21 * 3 * 24 * 24 * sizeof(float)), *p3 = xmalloc(21 * 3 * 24 * 24 * sizeof(float));
    int32_t l1[21], l3[21], l_next[21];
    int nb;
    for (int epoch = 0; epoch < 2; epoch++) {
        LoaderSpec s1 = spec_for(&d, 1, 4), s3 = spec_for(&d, 3, 4);
        Loader *a = loader_create(&s1, err, sizeof err), *b = loader_create(&s3, err, sizeof err);
        assert_int_equal(run_epoch(a, epoch, 0, p1, l1, &nb), 21);
        assert_int_equal(nb, 6);
        assert_int_equal(run_epoch(b, epoch, 0, p3, l3, &nb), 21);
        assert_memory_equal(l1, l3, sizeof l1);
        assert_memory_equal(p1, p3, 21 * 3 * 24 * 24 * sizeof(float));
        /* the next epoch is shuffled differently */
        run_epoch(a, epoch + 1, 0, p3, l_next, &nb);
        assert_true(memcmp(l1, l_next, sizeof l1) != 0 || memcmp(p1, p3, 21 * 3 * 24 * 24 * sizeof(float)) != 0);
        loader_destroy(a);
        loader_destroy(b);
    }
    /* every image once per epoch: 7 of each class */
    int per_class[3] = {0};
    for (int i = 0; i < 21; i++) per_class[l1[i]]++;
    for (int c = 0; c < 3; c++) assert_int_equal(per_class[c], 7);
    free(p1);
    free(p3);
    dataset_free(&d);
}

static void test_drop_last_and_resume(void **state) {
    (void)state;
    Dataset d = open_tree();
    char err[256];
    float *all = xmalloc(21 * 3 * 24 * 24 * sizeof(float)), *tail = xmalloc(21 * 3 * 24 * 24 * sizeof(float));
    int32_t la[21], lt[21];
    int nb;
    LoaderSpec s = spec_for(&d, 2, 5);
    s.drop_last = 1;
    Loader *L = loader_create(&s, err, sizeof err);
    assert_int_equal(loader_batches(L), 4);
    assert_int_equal(run_epoch(L, 3, 0, all, la, &nb), 20);
    assert_int_equal(nb, 4);
    /* resuming at batch 2 gives exactly batches 2 and 3 of the same epoch */
    assert_int_equal(run_epoch(L, 3, 2, tail, lt, &nb), 10);
    assert_int_equal(nb, 2);
    assert_memory_equal(lt, la + 10, 10 * sizeof(int32_t));
    assert_memory_equal(tail, all + 10 * 3 * 24 * 24, 10 * 3 * 24 * 24 * sizeof(float));
    loader_destroy(L);
    free(all);
    free(tail);
    dataset_free(&d);
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void test_bad_images_skipped_and_counted(void **state) {
    (void)state;
    char path[512], err[256];
    /* an empty file and a truncated JPEG in class 0 */
    snprintf(path, sizeof path, "%s/train/%s/bad_empty.jpg", root, synth_class_names[0]);
    write_file(path, "", 0);
    snprintf(path, sizeof path, "%s/train/%s/0.jpg", root, synth_class_names[1]);
    FILE *f = fopen(path, "rb");
    uint8_t buf[400];
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/train/%s/bad_truncated.jpg", root, synth_class_names[0]);
    write_file(path, buf, got);

    Dataset d = open_tree();
    assert_int_equal(d.ntrain, 23);
    float *p = xmalloc(23 * 3 * 24 * 24 * sizeof(float));
    int32_t l[23];
    int nb;
    LoaderSpec s = spec_for(&d, 2, 4);
    Loader *L = loader_create(&s, err, sizeof err);
    assert_int_equal(run_epoch(L, 0, 0, p, l, &nb), 21);
    assert_int_equal(loader_bad_images(L), 2);
    /* the next epoch leaves them out up front: full batches */
    assert_int_equal(run_epoch(L, 1, 0, p, l, &nb), 21);
    assert_int_equal(nb, 6);
    assert_int_equal(loader_bad_images(L), 2);
    loader_destroy(L);

    /* strict: the run stops with a message naming the file */
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        LoaderSpec st = spec_for(&d, 2, 4);
        st.strict = 1;
        Loader *S = loader_create(&st, err, sizeof err);
        run_epoch(S, 0, 0, p, l, &nb);
        _exit(0); /* not reached when the strict stop works */
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    free(p);
    dataset_free(&d);
    unlink(path);
    snprintf(path, sizeof path, "%s/train/%s/bad_empty.jpg", root, synth_class_names[0]);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_batches_whatever_the_threads),
        cmocka_unit_test(test_drop_last_and_resume),
        cmocka_unit_test(test_bad_images_skipped_and_counted),
    };
    return cmocka_run_group_tests(tests, make_tree, remove_tree);
}
