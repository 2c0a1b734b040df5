/* gpu_nccl.c: the data-parallel gradient all-reduce of the cuda backend (cuda/nccl.cu), with one
 * rank (NCCL's communicator of one GPU; NCCL refuses two ranks on one GPU): the trainer's buckets
 * (net/grad_buckets.h) launched during the backward pass of xresnet_tiny, each reduced with the
 * rank's weight inside NCCL's pre-multiplied sum. With one rank the result is weight x the
 * gradient, so: every trainable gradient equals 0.5 x the same backward pass without buckets
 * (tolerance for cuDNN's choice of algorithms: 1e-4 relative to the tensor's largest value), a
 * frozen parameter's gradient memory is left alone (a sentinel stays), and more than one bucket
 * was launched before the backward pass ended (the overlap). Plain C like gpu_parity; exits 0 with
 * a "skipped" line without a GPU or without NCCL. Multi-rank runs: tests/test_dist.sh's programs
 * under mpirun on a machine with 2 GPUs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/rng.h"
#include "base/util.h"
#include "net/grad_buckets.h"
#include "net/model.h"
#include "pipeline/synthetic.h"
#include "suite.h"

enum { BATCH = 8, SIDE = 32, CAP = 4096 };

typedef struct {
    Model *m;
    int before_end; /* buckets launched from inside the backward pass */
    int in_backward;
} Launches;

static void launch(void *ctx, size_t offset, size_t count) {
    Launches *l = ctx;
    l->before_end += l->in_backward;
    l->m->be->ops->grad_allreduce(l->m->be, l->m->grads_d + offset, count, 0.5f);
}

/* Forward and backward of one batch; with buckets, each final gradient to the all-reduce. */
static void pass(Model *m, const float *x, const int32_t *labels, Launches *l) {
    Backend *be = m->be;
    be->ops->tensor_upload(be, model_input(m, BATCH, SIDE, SIDE), x);
    model_labels(m, BATCH, labels, NULL, NULL);
    model_run(m, 1);
    model_loss_queue(m, 0.0f, 1.0f);
    GradBuckets b;
    if (l) {
        grad_buckets_begin(&b, CAP, launch, l);
        m->grad_ready = &b;
        l->in_backward = 1;
    }
    model_backward(m);
    if (l) {
        l->in_backward = 0;
        grad_buckets_flush(&b);
        m->grad_ready = NULL;
        be->ops->grad_allreduce_wait(be);
    }
    be->ops->sync(be);
}

int main(int argc, char **argv) {
    static const char *const parts[] = {"one_rank"};
    suite_args("gpu_nccl", argc, argv, parts, 1);
    char err[512];
    if (!strstr(backend_list(), "cuda")) {
        printf("gpu_nccl: FAIL: built without the CUDA backend (backends: %s)\n", backend_list());
        return 1;
    }
    Backend *be = backend_create("cuda", err, sizeof err);
    if (!be) {
        printf("gpu_nccl: no usable GPU (%s); skipped\n", err);
        return 0;
    }
    if (!be->ops->grad_allreduce) {
        printf("gpu_nccl: built without NCCL (NCCL=0, or nccl.h not found); skipped\n");
        backend_destroy(be);
        return 0;
    }
    int failed = 0;
    if (suite_part("one_rank")) {
        Model *m = model_build("xresnet_tiny", SYNTH_CLASSES, err, sizeof err);
        if (!m || model_attach(m, be, BATCH, SIDE, SIDE, err, sizeof err)) die("gpu_nccl: %s", err);
        float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
        Rng r;
        rng_seed(&r, 7);
        model_init_host(m, &r, params, stats);
        model_set_weights(m, params, stats);
        float *x = xmalloc((size_t)BATCH * 3 * SIDE * SIDE * sizeof(float));
        int32_t labels[BATCH];
        synth_batch(&r, BATCH, SIDE, x, labels);
        /* the first conv frozen: its gradient memory must not be touched */
        Param *frozen = &m->params[0];
        frozen->trainable = 0;
        size_t n = m->param_floats;
        float *plain = xmalloc(n * sizeof(float)), *reduced = xmalloc(n * sizeof(float));
        pass(m, x, labels, NULL);
        be->ops->download(be, plain, m->grads_d, n * sizeof(float));
        for (size_t i = 0; i < frozen->count; i++) plain[frozen->offset + i] = 3.0f; /* the sentinel */
        be->ops->upload(be, m->grads_d + frozen->offset, plain + frozen->offset, frozen->count * sizeof(float));
        model_set_weights(m, params, stats); /* the same running statistics for the second pass */
        Launches l = {m, 0, 0};
        pass(m, x, labels, &l);
        be->ops->download(be, reduced, m->grads_d, n * sizeof(float));
        double worst = 0;
        int bad_tensor = -1;
        for (int p = 0; p < m->nparams; p++) {
            const Param *q = &m->params[p];
            float big = 0;
            for (size_t i = 0; i < q->count; i++) big = fmaxf(big, fabsf(plain[q->offset + i]));
            for (size_t i = 0; i < q->count; i++) {
                float want = q->trainable ? 0.5f * plain[q->offset + i] : plain[q->offset + i];
                double e = fabs((double)reduced[q->offset + i] - want) / (q->trainable ? (double)big + 1e-30 : 1.0);
                if (e > worst) worst = e, bad_tensor = p;
            }
        }
        int ok = worst <= 1e-4;
        printf("%s one_rank: gradients after the bucketed all-reduce = 0.5 x the plain pass's, frozen memory kept: worst "
               "relative error %.3g (tensor %s) <= 1e-4\n",
               ok ? "PASS" : "FAIL", worst, bad_tensor >= 0 ? m->params[bad_tensor].name : "-");
        failed += !ok;
        ok = l.before_end > 1;
        printf("%s one_rank: %d buckets of at most %d floats launched during the backward pass (more than 1)\n",
               ok ? "PASS" : "FAIL", l.before_end, CAP);
        failed += !ok;
        free(plain), free(reduced), free(x), free(params), free(stats);
        model_free(m);
    }
    backend_destroy(be);
    printf("gpu_nccl: %s\n", failed ? "FAILED" : "all passed");
    return failed != 0;
}
