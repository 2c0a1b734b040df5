/* test_grad_buckets.c: the gradient buckets of data-parallel training on a backend with its own
 * all-reduce (net/grad_buckets.h; NCCL, cuda/nccl.cu). What the GPU path relies on, checked where
 * it runs here: every trainable region of the gradient block is launched exactly once per
 * backward pass, never a frozen one; buckets gather neighbouring regions up to their cap; and
 * buckets launch while the backward pass runs (the overlap), not all at its end. On xresnet_tiny
 * and its cnn_learner form on the cpu backend, with parts of the body frozen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/rng.h"
#include "base/util.h"
#include "net/grad_buckets.h"
#include "net/model.h"
#include "pipeline/synthetic.h"

/* What the launches did: a count per float of the block, the buckets, and how many came before
 * the end of the backward pass. */
typedef struct {
    unsigned char *hits;
    size_t n, largest;
    size_t last_lo;      /* the previous bucket's start: buckets come in falling offsets */
    int buckets, falling, during;
    int in_backward;
} Record;

static void record(void *ctx, size_t offset, size_t count) {
    Record *r = ctx;
    assert_true(offset + count <= r->n);
    for (size_t i = 0; i < count; i++) r->hits[offset + i]++;
    if (r->buckets && offset + count > r->last_lo) r->falling = 0;
    r->last_lo = offset;
    if (count > r->largest) r->largest = count;
    r->buckets++;
    r->during += r->in_backward;
}

/* Regions handed over by hand: falling neighbours gather, a weight then its bias extends upwards, a
 * gap (a frozen parameter) launches what was gathered, the cap launches at once. */
static void test_gathering(void **state) {
    (void)state;
    unsigned char hits[100] = {0};
    Record r = {hits, 100, 0, 0, 0, 1, 0, 0};
    GradBuckets b;
    grad_buckets_begin(&b, 30, record, &r);
    grad_buckets_ready(&b, 90, 10);
    grad_buckets_ready(&b, 80, 10); /* [80, 100): 20 floats, under the cap */
    assert_int_equal(r.buckets, 0);
    grad_buckets_ready(&b, 70, 10); /* 30: launched */
    assert_int_equal(r.buckets, 1);
    grad_buckets_ready(&b, 50, 5);  /* a weight ... */
    grad_buckets_ready(&b, 55, 5);  /* ... and its bias after it */
    grad_buckets_ready(&b, 20, 10); /* [30, 50) frozen: [50, 60) goes first */
    assert_int_equal(r.buckets, 2);
    grad_buckets_ready(&b, 0, 20);
    grad_buckets_flush(&b);
    assert_int_equal(r.buckets, 3);
    assert_int_equal(b.launched, 3);
    for (int i = 0; i < 100; i++) assert_int_equal(hits[i], (i >= 30 && i < 50) || (i >= 60 && i < 70) ? 0 : 1);
    grad_buckets_flush(&b); /* nothing gathered: nothing launched */
    assert_int_equal(r.buckets, 3);
}

/* A backward pass of `arch` with every third parameter frozen: the launched floats are exactly the
 * trainable parameters', once each, in buckets of at most cap floats unless one parameter is
 * larger, in falling offsets, most of them before the pass ends. */
static void check_model(const char *arch, size_t cap) {
    char err[512];
    Backend *be = backend_create("cpu", err, sizeof err);
    assert_non_null(be);
    Model *m = model_build(arch, SYNTH_CLASSES, err, sizeof err);
    if (!m || model_attach(m, be, 4, 32, 32, err, sizeof err)) fail_msg("%s", err);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    Rng rng;
    rng_seed(&rng, 3);
    model_init_host(m, &rng, params, stats);
    model_set_weights(m, params, stats);
    size_t biggest = 0;
    for (int i = 0; i < m->nparams; i++) {
        if (i % 3 == 1) m->params[i].trainable = 0;
        if (m->params[i].count > biggest) biggest = m->params[i].count;
    }
    float *x = xmalloc(4 * 3 * 32 * 32 * sizeof(float));
    int32_t labels[4];
    synth_batch(&rng, 4, 32, x, labels);
    be->ops->tensor_upload(be, model_input(m, 4, 32, 32), x);
    model_labels(m, 4, labels, NULL, NULL);
    model_run(m, 1);
    model_loss_queue(m, 0.0f, 1.0f);
    Record r = {xcalloc(m->param_floats, 1), m->param_floats, 0, 0, 0, 1, 0, 1};
    GradBuckets b;
    grad_buckets_begin(&b, cap, record, &r);
    m->grad_ready = &b;
    model_backward(m);
    r.in_backward = 0;
    grad_buckets_flush(&b);
    m->grad_ready = NULL;
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        for (size_t k = 0; k < p->count; k++)
            if (r.hits[p->offset + k] != (p->trainable ? 1 : 0))
                fail_msg("%s: %s[%zu] launched %d times (trainable %d)", arch, p->name, k, r.hits[p->offset + k], p->trainable);
    }
    assert_true(r.falling);
    assert_true(r.largest <= 2 * (cap > biggest ? cap : biggest)); /* at most one region past the cap */
    assert_true(r.buckets >= 3);
    assert_true(r.during >= r.buckets - 1); /* all but the last while the backward pass ran */
    printf("%s, cap %zu floats: %d buckets (%d during the backward pass), largest %zu floats\n", arch, cap, r.buckets,
           r.during, r.largest);
    free(r.hits), free(x), free(params), free(stats);
    model_free(m);
    backend_destroy(be);
}

static void test_xresnet_tiny(void **state) {
    (void)state;
    check_model("xresnet_tiny", 2048);
}

static void test_cnn_learner_head(void **state) {
    (void)state;
    check_model("xresnet_tiny_fastai_head", 20000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gathering),
        cmocka_unit_test(test_xresnet_tiny),
        cmocka_unit_test(test_cnn_learner_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
