/* test_loader.c: the threaded loader: same batches whatever the thread count, epochs, drop_last,
 * resuming mid-epoch, and bad images skipped and counted (or fatal when strict); BATCH_RAW batches
 * through device_feed (upload_async + warp_batch on the cpu backend) equal BATCH_F32's bit for bit;
 * data-parallel shards of each batch put side by side are the whole batch. */
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

#include "backend/backend.h"
#include "pipeline/dataset.h"
#include "pipeline/device_feed.h"
#include "pipeline/image.h"
#include "pipeline/loader.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

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
    DatasetSpec ds = {DATA_FOLDER, root, "train", "val", NULL, NULL, 0, 0, 1, NULL};
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

/* Data-parallel shards (LoaderSpec.shards): in one process (the all-reduce of a batch's images is then
 * this part's own, so without drop_last every part comes back), parts 0..N-1 of each batch, laid
 * side by side, are the unsharded batch bit for bit, with the positions the loader says; the last
 * batch of 21 % 8 = 5 images is cut too, 1 + 2 + 2 for N = 3 (a part may be empty: 1 image, 3 ranks). */
static void test_shards_make_the_whole_batch(void **state) {
    (void)state;
    Dataset d = open_tree();
    char err[256];
    const size_t img = 3 * 24 * 24;
    float *whole = xmalloc(21 * img * sizeof(float)), *parts = xmalloc(21 * img * sizeof(float));
    int32_t lw[21], lp[21];
    int nb;
    LoaderSpec s = spec_for(&d, 2, 8);
    Loader *W = loader_create(&s, err, sizeof err);
    assert_int_equal(run_epoch(W, 5, 0, whole, lw, &nb), 21);
    for (int shards = 2; shards <= 3; shards++) {
        memset(parts, 0, 21 * img * sizeof(float));
        memset(lp, -1, sizeof lp);
        for (int r = 0; r < shards; r++) {
            LoaderSpec sr = spec_for(&d, 1 + r, 8);
            sr.shards = shards;
            sr.shard = r;
            Loader *P = loader_create(&sr, err, sizeof err);
            assert_non_null(P);
            assert_int_equal(loader_batches(P), 3);
            loader_start_epoch(P, 5, 0);
            int batches = 0;
            for (const Batch *b; (b = loader_next(P));) {
                int m = b->index < 2 ? 8 : 5;
                assert_int_equal(b->shards, shards);
                assert_int_equal(b->first, r * m / shards);
                assert_int_equal(b->n, (r + 1) * m / shards - r * m / shards);
                size_t at = (size_t)b->index * 8 + (size_t)b->first;
                memcpy(parts + at * img, b->x, (size_t)b->n * img * sizeof(float));
                memcpy(lp + at, b->labels, (size_t)b->n * sizeof(int32_t));
                batches++;
            }
            assert_int_equal(batches, 3);
            loader_destroy(P);
        }
        assert_memory_equal(lp, lw, sizeof lw);
        assert_memory_equal(parts, whole, 21 * img * sizeof(float));
    }
    LoaderSpec bad = spec_for(&d, 1, 8);
    bad.shards = 2;
    bad.shard = 2;
    assert_null(loader_create(&bad, err, sizeof err));
    assert_non_null(strstr(err, "shard 2 of 2"));
    loader_destroy(W);
    free(whole);
    free(parts);
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

    /* drop_last (training batches): every batch is full; one that bad images left short is left out
     * whole, never handed over short (batch norm must not see a batch of 1) */
    s.drop_last = 1;
    L = loader_create(&s, err, sizeof err);
    for (int epoch = 0; epoch < 2; epoch++) {
        int full = 0, batches = loader_start_epoch(L, epoch, 0);
        for (const Batch *b; (b = loader_next(L)); full++) assert_int_equal(b->n, 4);
        assert_int_equal(full + loader_dropped(L), batches);
        assert_int_equal(loader_dropped(L), epoch ? 0 : 2); /* both bad images in epoch 0's batches */
        assert_int_equal(batches, 5); /* 23 images, then 21 good ones */
    }
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

/* ---- BATCH_RAW: the decoded images + their Warps, augmented by the backend ---- */

#define RAW_COUNT 14

/* Images of assorted sizes (odd, tiny, larger than the outputs), some grey (R = G = B), one bad. */
static int make_raw_samples(Sample *samples) {
    static const int sizes[RAW_COUNT][2] = {{40, 32}, {97, 61}, {1, 1},  {7, 300}, {250, 180}, {64, 64}, {33, 129},
                                            {301, 97}, {24, 24}, {120, 90}, {5, 9},  {200, 200}, {63, 65}, {0, 0}};
    char path[600], err[256];
    snprintf(path, sizeof path, "%s/raw", root);
    if (make_dirs(path)) fail_msg("cannot make %s", path);
    Rng rng;
    rng_seed(&rng, 77);
    int grey = 0;
    for (int i = 0; i < RAW_COUNT; i++) {
        snprintf(path, sizeof path, "%s/raw/%d.jpg", root, i);
        samples[i].path = xstrdup(path);
        samples[i].label = i % 3;
        int w = sizes[i][0], h = sizes[i][1];
        if (w == 0) { /* not a JPEG: skipped by both formats */
            write_file(path, "not a jpeg", 10);
            continue;
        }
        int side = w > h ? w : h;
        uint8_t *sq = xmalloc((size_t)side * side * 3);
        synth_image(&rng, i % 3, side, sq);
        Image img = {w, h, xmalloc((size_t)w * h * 3)};
        for (int y = 0; y < h; y++) memcpy(img.rgb + (size_t)y * w * 3, sq + (size_t)y * side * 3, (size_t)w * 3);
        if (i % 4 == 1) { /* grey */
            for (size_t p = 0; p < (size_t)w * h; p++) {
                uint8_t *q = img.rgb + 3 * p;
                q[0] = q[1] = q[2] = (uint8_t)((q[0] + 2 * q[1] + q[2]) / 4);
            }
            grey++;
        }
        if (jpeg_write_file(path, &img, 92, err, sizeof err)) fail_msg("%s", err);
        free(img.rgb);
        free(sq);
    }
    return grey;
}

static void test_raw_batches_equal_f32(void **state) {
    (void)state;
    Sample samples[RAW_COUNT];
    make_raw_samples(samples);
    char err[256];
    Backend *be = backend_create("cpu", err, sizeof err);
    assert_non_null(be);
    TransformSpec specs[9];
    specs[0] = transform_defaults(TF_FASTAI, 24, 1); /* item shrink: the general antialiased path */
    specs[0].presize = 32;
    specs[0].min_scale = 0.75f;
    specs[1] = transform_defaults(TF_FASTAI, 31, 1); /* no item resize: plain bilinear, perspective */
    specs[2] = transform_defaults(TF_RANDOM_RESIZED_CROP, 17, 1); /* separable antialiasing, flips */
    specs[3] = transform_defaults(TF_RESIZE_CENTER_CROP, 45, 0);
    specs[3].resize_ratio = 1.25f;
    specs[4] = transform_defaults(TF_CENTER_CROP, 50, 0); /* zero padding */
    specs[5] = transform_defaults(TF_FASTAI, 20, 0);
    specs[5].presize = 40;
    specs[6] = transform_defaults(TF_FASTAI, 64, 1); /* upscaling item resize, lighting */
    specs[6].presize = 80;
    specs[7] = transform_defaults(TF_FASTAI, 20, 1); /* fastai's area pre-pooling (crop > 2 x size) */
    specs[7].presize = 64;
    specs[7].min_scale = 0.35f;
    specs[8] = transform_defaults(TF_FASTAI, 12, 0); /* the same on the validation set */
    specs[8].presize = 64;
    specs[8].min_scale = 0.35f;
    int grey_seen = 0, batches = 0;
    for (int k = 0; k < 9; k++)
        for (int with_backend = 0; with_backend < 2; with_backend++) {
            LoaderSpec fs = {0};
            fs.samples = samples;
            fs.count = RAW_COUNT;
            fs.tf = specs[k];
            fs.batch = 4;
            fs.shuffle = 1;
            fs.threads = 3;
            fs.seed = 99 + (uint64_t)k;
            fs.format = BATCH_F32;
            LoaderSpec rs = fs;
            rs.format = BATCH_RAW;
            rs.backend = with_backend ? be : NULL;
            rs.threads = 2;
            Loader *lf = loader_create(&fs, err, sizeof err), *lr = loader_create(&rs, err, sizeof err);
            assert_non_null(lf);
            assert_non_null(lr);
            int S = specs[k].size;
            size_t per = (size_t)3 * S * S;
            Tensor x = {be->ops->alloc(be, 4 * per * sizeof(float)), 0, 0, 0, 0, DT_F32};
            float *host = xmalloc(4 * per * sizeof(float));
            DeviceFeed feed;
            device_feed_init(&feed, be);
            for (int epoch = 1; epoch < 3; epoch++) {
                loader_start_epoch(lf, epoch, 0);
                loader_start_epoch(lr, epoch, 0);
                int images = 0;
                for (;;) {
                    const Batch *bf = loader_next(lf), *br = loader_next(lr);
                    assert_true((bf == NULL) == (br == NULL));
                    if (!bf) break;
                    assert_int_equal(bf->n, br->n);
                    assert_int_equal(br->size, S);
                    assert_memory_equal(bf->labels, br->labels, (size_t)bf->n * sizeof(int32_t));
                    for (int i = 0; i < br->n; i++) {
                        grey_seen += br->images[i].channels == 1;
                        /* the loader pools (augment_pool.c): a backend never gets a Warp that
                         * still asks for it; at 12 px from a 64-px item, fastai's F.interpolate
                         * pools to floor(64 / (64 / 12 / 2)) = 24 px */
                        assert_int_equal(br->warps[i].pool_w, 0);
                        if (k == 8 && (br->images[i].w != 24 || br->images[i].h != 24))
                            fail_msg("validation image %d of batch %d is %dx%d, not the 24x24 pooled item", i,
                                     br->index, br->images[i].w, br->images[i].h);
                    }
                    device_feed_batch(&feed, br, imagenet_mean, imagenet_std, &x);
                    if (!with_backend) device_feed_wait(&feed);
                    assert_int_equal(x.n, br->n);
                    assert_int_equal(x.c, 3);
                    assert_int_equal(x.h, S);
                    assert_int_equal(x.w, S);
                    be->ops->tensor_download(be, host, &x);
                    if (memcmp(host, bf->x, (size_t)bf->n * per * sizeof(float))) {
                        size_t i = 0;
                        while (host[i] == bf->x[i]) i++;
                        fail_msg("transform %d (%s), epoch %d, batch %d: element %zu is %.9g, BATCH_F32 has %.9g", k,
                                 transform_kind_name(specs[k].kind), epoch, bf->index, i, host[i], bf->x[i]);
                    }
                    images += bf->n;
                    batches++;
                }
                assert_int_equal(images, RAW_COUNT - 1); /* the bad one left out */
            }
            device_feed_free(&feed);
            be->ops->release(be, x.data);
            free(host);
            loader_destroy(lf);
            loader_destroy(lr);
        }
    print_message("%d batches equal; %d grey images packed with one channel\n", batches, grey_seen);
    assert_true(grey_seen > 0);
    assert_int_equal(be->bytes_in_use, 0);
    backend_destroy(be);
    for (int i = 0; i < RAW_COUNT; i++) {
        unlink(samples[i].path);
        free(samples[i].path);
    }
}

/* The RAW buffers grow while workers copy into them (a first batch of large images after small
 * ones), and resuming mid-epoch gives the same batches. */
static void test_raw_resume_and_growth(void **state) {
    (void)state;
    Sample samples[RAW_COUNT];
    make_raw_samples(samples);
    char err[256];
    LoaderSpec rs = {0};
    rs.samples = samples;
    rs.count = RAW_COUNT;
    rs.tf = transform_defaults(TF_RANDOM_RESIZED_CROP, 16, 1);
    rs.batch = 5;
    rs.shuffle = 1;
    rs.threads = 4;
    rs.seed = 5;
    rs.format = BATCH_RAW;
    Loader *L = loader_create(&rs, err, sizeof err);
    assert_non_null(L);
    int n = 0;
    loader_start_epoch(L, 2, 0);
    for (const Batch *b; (b = loader_next(L));) {
        for (int i = 0; i < b->n; i++) {
            const ImageSlot *s = &b->images[i];
            assert_true(s->offset + (size_t)s->w * s->h * s->channels <= b->pixel_bytes);
        }
        n += b->n;
    }
    assert_int_equal(n, RAW_COUNT - 1);
    /* resume at batch 1: the bad image is known now, so batch 1 starts at position 5 of the
     * order that leaves it out; compare with a fresh loader that knows it too */
    char *bad = loader_bad_list(L, 0);
    Loader *M = loader_create(&rs, err, sizeof err);
    assert_int_equal(loader_mark_bad(M, bad), 0);
    Warp first[RAW_COUNT];
    int m = 0;
    loader_start_epoch(M, 2, 0);
    for (const Batch *b; (b = loader_next(M));) {
        memcpy(first + m, b->warps, (size_t)b->n * sizeof(Warp));
        m += b->n;
    }
    loader_start_epoch(M, 2, 1);
    int r = 5;
    for (const Batch *b; (b = loader_next(M));) {
        assert_memory_equal(b->warps, first + r, (size_t)b->n * sizeof(Warp));
        r += b->n;
    }
    assert_int_equal(r, m);
    free(bad);
    loader_destroy(L);
    loader_destroy(M);
    for (int i = 0; i < RAW_COUNT; i++) {
        unlink(samples[i].path);
        free(samples[i].path);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_batches_whatever_the_threads),
        cmocka_unit_test(test_drop_last_and_resume),
        cmocka_unit_test(test_shards_make_the_whole_batch),
        cmocka_unit_test(test_bad_images_skipped_and_counted),
        cmocka_unit_test(test_raw_batches_equal_f32),
        cmocka_unit_test(test_raw_resume_and_growth),
    };
    return cmocka_run_group_tests(tests, make_tree, remove_tree);
}
