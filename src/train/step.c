/* train/step.c: one training step (see step.h). A data-parallel step (a batch that is one rank's part
 * of the global batch: Batch.shards > 1) adds what makes the ranks one training process: mixup over
 * the global batch, the gradients averaged over it before the update (one all-reduce of the flat
 * gradient block), and its loss and gradient check reduced, so every rank decides alike. */
#include "train/step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "dist/dist.h"
#include "net/grad_buckets.h"

/* What comes back of a step: its loss, and how many gradient values are inf or NaN with the first
 * one's index (scan_nonfinite). */
typedef struct {
    float loss;
    uint64_t scan[2];
} StepRead;

struct Stepper {
    Model *model;
    Optimizer *opt;
    GradScaler *scaler;
    DeviceFeed *feed;
    StepReads reads;
    StepRead *slots;      /* alloc_host, 2: the read-backs of the last two steps */
    uint64_t *scan_d;     /* backend memory: scan_nonfinite's result for the step being queued */
    long queued;          /* steps queued: the slot of the next is queued & 1 */
    int pending;          /* READ_LATE: a step's read-back is on its way */
    StepReport pending_report; /* that step's names */
    int pending_slot;
    Tensor full;          /* backend memory: a progressive step's full-size batch, before shrink_batch */
    size_t full_bytes;
    int32_t *partner, *labels_b; /* mixup: each image's partner (index in the batch) and its label */
    float *lam;                  /* mixup weights */
    int mix_cap;
    /* data-parallel: whether the pending (READ_LATE) step was; host copies of the gradients (a
     * backend whose memory is not the host's), and of the global batch for mixup */
    int pending_dp, pending_n;
    float *host_grads;
    GradBuckets buckets;  /* a backend's own all-reduce (NCCL): the gradients in buckets, during backward */
    float grad_weight;    /* this rank's share of the global batch, n / G */
    uint8_t *gather_host;
    int32_t *gather_labels;
    size_t gather_bytes;
    int gather_cap;
    Tensor global;               /* backend memory: the global batch, mixed */
    size_t global_bytes;
};

Stepper *step_new(Model *m, Optimizer *o, GradScaler *s, DeviceFeed *feed, StepReads reads) {
    if (reads == STEP_READ_LATE && s->dynamic)
        die("step_new: dynamic loss scaling decides before the update: it needs STEP_READ_NOW");
    Stepper *st = xcalloc(1, sizeof *st);
    st->model = m;
    st->opt = o;
    st->scaler = s;
    st->feed = feed;
    st->reads = reads;
    st->slots = m->be->ops->alloc_host(m->be, 2 * sizeof(StepRead));
    st->scan_d = m->be->ops->alloc(m->be, 2 * sizeof(uint64_t));
    return st;
}

void step_free(Stepper *st) {
    if (!st) return;
    Backend *be = st->model->be;
    be->ops->release(be, st->full.data);
    be->ops->release(be, st->global.data);
    be->ops->release(be, st->scan_d);
    be->ops->free_host(be, st->slots);
    free(st->partner);
    free(st->labels_b);
    free(st->lam);
    free(st->host_grads);
    free(st->gather_host);
    free(st->gather_labels);
    free(st);
}

/* Room for n images' mixup partners, labels and weights. */
static void mix_arrays(Stepper *st, int n) {
    if (n > st->mix_cap) {
        st->partner = xrealloc(st->partner, (size_t)n * sizeof *st->partner);
        st->labels_b = xrealloc(st->labels_b, (size_t)n * sizeof *st->labels_b);
        st->lam = xrealloc(st->lam, (size_t)n * sizeof *st->lam);
        st->mix_cap = n;
    }
}

/* A random permutation of n (each image's partner) into partner, then n weights into lam. */
static void draw_mix(Stepper *st, Rng *rng, float alpha, int n) {
    int32_t *perm = st->partner;
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(rng, (uint32_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < n; i++) st->lam[i] = rng_mixup_lam(rng, alpha);
}

/* Mixup: per sample lam ~ Beta(a, a), lam = max(lam, 1 - lam), partner from a random permutation;
 * x = lam*x_i + (1-lam)*x_partner, the loss mixes the labels the same way. */
static void mixup(Stepper *st, Rng *rng, float alpha, Tensor *x, const int32_t *labels) {
    int n = x->n;
    mix_arrays(st, n);
    int32_t *perm = st->partner;
    draw_mix(st, rng, alpha, n);
    for (int i = 0; i < n; i++) st->labels_b[i] = labels[perm[i]];
    st->model->be->ops->mix_images(st->model->be, x, perm, st->lam); /* on the batch in backend memory */
}

/* Data-parallel mixup: the global batch's permutation and weights (what one process draws), the
 * global batch gathered from every rank and mixed, and this rank's part of it kept; labels_b and lam
 * then describe this part's images. Needs equal parts (training batches are full: drop_last). */
static void mixup_global(Stepper *st, Rng *rng, float alpha, Tensor *x, const int32_t *labels, const Batch *b) {
    Backend *be = st->model->be;
    int n = x->n, G = b->global_n, first = b->first;
    if (n * b->shards != G)
        die("mixup over %d ranks: this rank holds %d of the batch's %d images; it needs equal parts", b->shards, n, G);
    mix_arrays(st, G);
    draw_mix(st, rng, alpha, G);
    size_t img = tensor_numel(x) / (size_t)(n ? n : 1) * dtype_size(x->dtype), all = img * (size_t)G;
    if (all > st->gather_bytes || G > st->gather_cap) {
        st->gather_host = xrealloc(st->gather_host, all);
        st->gather_labels = xrealloc(st->gather_labels, (size_t)G * sizeof *st->gather_labels);
        st->gather_bytes = all;
        st->gather_cap = G;
    }
    if (all > st->global_bytes) {
        be->ops->release(be, st->global.data);
        st->global.data = be->ops->alloc(be, all);
        st->global_bytes = all;
    }
    uint8_t *mine = xmalloc(img * (size_t)n + 1);
    be->ops->download(be, mine, x->data, img * (size_t)n);
    dist_allgather(mine, st->gather_host, img * (size_t)n);
    int32_t *my_labels = xmalloc((size_t)n * sizeof *my_labels + 1);
    memcpy(my_labels, labels, (size_t)n * sizeof *my_labels);
    dist_allgather(my_labels, st->gather_labels, (size_t)n * sizeof *my_labels);
    free(mine);
    free(my_labels);
    be->ops->upload(be, st->global.data, st->gather_host, all);
    st->global = (Tensor){st->global.data, G, x->c, x->h, x->w, x->dtype};
    be->ops->mix_images(be, &st->global, st->partner, st->lam);
    be->ops->copy(be, x->data, (const uint8_t *)st->global.data + img * (size_t)first, img * (size_t)n);
    for (int i = 0; i < n; i++) { /* this part's images: positions first.. of the global batch */
        st->labels_b[i] = st->gather_labels[st->partner[first + i]];
        st->lam[i] = st->lam[first + i];
    }
}

/* PyTorch DDP's default bucket, 25 MB of fp32 gradients: large enough for NCCL's bandwidth, small
 * enough that the first buckets reduce while most of the backward pass is still to run. */
enum { GRAD_BUCKET_FLOATS = 25 * 1024 * 1024 / 4 };

/* A bucket of gradients to the backend's all-reduce (grad_buckets.h's launch). */
static void launch_bucket(void *ctx, size_t offset, size_t count) {
    Stepper *st = ctx;
    Model *m = st->model;
    m->be->ops->grad_allreduce(m->be, m->grads_d + offset, count, st->grad_weight);
}

/* The data-parallel step's gradients: the global batch's mean. Each rank's are the mean over its n
 * images; weighted by n / G and summed over the ranks: on a backend with its own all-reduce (NCCL)
 * in buckets launched while the backward pass runs (the caller set them up), else here, one
 * all-reduce of the flat block in host memory. */
static void average_gradients(Stepper *st, int n, int G) {
    Model *m = st->model;
    Backend *be = m->be;
    if (m->grad_ready) { /* the buckets: the last one, then the wait */
        grad_buckets_flush(m->grad_ready);
        m->grad_ready = NULL;
        be->ops->grad_allreduce_wait(be);
        return;
    }
    size_t count = m->param_floats;
    int host = !strcmp(be->ops->name, "cpu"); /* its memory is the host's: in place */
    float *g = m->grads_d;
    if (!host) {
        if (!st->host_grads) st->host_grads = xmalloc(count * sizeof(float));
        be->ops->download(be, st->host_grads, m->grads_d, count * sizeof(float));
        g = st->host_grads;
    }
    if (n != G) {
        const float w = (float)n / (float)G; /* 1/N for equal parts: a power of two is exact */
        for (size_t i = 0; i < count; i++) g[i] *= w;
    }
    dist_allreduce_sum_f32(g, count);
    if (!host) be->ops->upload(be, m->grads_d, g, count * sizeof(float));
}

/* The batch into the model's input at side x side: uploaded (or augmented on the device) at its own
 * size, then cut or resized by the backend when the side is smaller. */
static Tensor *input(Stepper *st, const StepArgs *a, int n, int size, int side) {
    Model *m = st->model;
    Backend *be = m->be;
    Tensor *in = model_input(m, n, side, side);
    if (!a->batch && !a->x) return in; /* on the device already */
    Tensor *dst = in;
    if (side < size) {
        size_t bytes = (size_t)n * 3 * size * size * dtype_size(be->compute);
        if (bytes > st->full_bytes) {
            be->ops->release(be, st->full.data);
            st->full.data = be->ops->alloc(be, bytes);
            st->full_bytes = bytes;
        }
        dst = &st->full;
    }
    *dst = (Tensor){dst->data, n, 3, size, size, be->compute};
    if (a->batch) device_feed_upload(st->feed, a->batch, dst);
    else be->ops->tensor_upload(be, dst, a->x);
    if (side < size) be->ops->shrink_batch(be, &st->full, side, a->crop, a->oy, a->ox, in);
    return in;
}

/* Fault injection: a NaN into the input batch (its first float's bytes: a NaN in fp32, and a zero
 * then a NaN in fp16 and bf16). */
static void poison_input(Backend *be, Tensor *x) {
    float nan = NAN;
    be->ops->upload(be, x->data, &nan, sizeof nan);
}

/* Fault injection: +inf into the first trainable parameter's gradient. */
static void poison_grad(Model *m) {
    for (int i = 0; i < m->nparams; i++)
        if (m->params[i].trainable) {
            float inf = INFINITY;
            m->be->ops->upload(m->be, m->grads_d + m->params[i].offset, &inf, sizeof inf);
            return;
        }
}

/* The loss and the gradient scan of the step just queued, copied back through slot. */
static void queue_read(Stepper *st, int slot) {
    Model *m = st->model;
    Backend *be = m->be;
    be->ops->scan_nonfinite(be, m->grads_d, m->param_floats, st->scan_d);
    be->ops->read_async(be, &st->slots[slot].loss, m->loss_d, sizeof(float), slot);
    be->ops->read_async(be, st->slots[slot].scan, st->scan_d, sizeof st->slots[slot].scan, slot);
}

/* A report from a step's names and its read-back in slot (waited for). A data-parallel step's (dp)
 * loss is the global batch's (the ranks' means weighted by their images) and its gradient check
 * the same on every rank (the gradients are all-reduced already: the largest count, the first
 * index), so every rank's scaler and stop decide alike. r.n is the global batch's images. */
static StepReport take_read(Stepper *st, StepReport r, int slot, int dp, int local_n) {
    st->model->be->ops->read_wait(st->model->be, slot);
    const StepRead *rd = &st->slots[slot];
    r.valid = 1;
    r.loss = rd->loss;
    r.bad = rd->scan[0];
    r.first_bad = rd->scan[1];
    if (dp) {
        double sum[2] = {(double)rd->loss * local_n, local_n};
        uint64_t bad = r.bad, first = r.first_bad;
        dist_allreduce_sum_f64(sum, 2);
        dist_allreduce_max_u64(&bad, 1);
        dist_allreduce_min_u64(&first, 1);
        r.loss = (float)(sum[0] / sum[1]);
        r.bad = bad;
        r.first_bad = first;
    }
    return r;
}

StepReport step_run(Stepper *st, const StepArgs *a) {
    Model *m = st->model;
    Backend *be = m->be;
    const Batch *b = a->batch;
    int n = b ? b->n : a->n, size = b ? b->size : a->size;
    const int32_t *labels = b ? b->labels : a->labels;
    int side = a->side > 0 && a->side < size ? a->side : size;
    int dp = b && b->shards > 1; /* one rank's part of a data-parallel batch */
    StepReport self = {.epoch = a->epoch, .n = dp ? b->global_n : n, .index = a->index, .tag = a->tag, .hyper = a->hyper, .loss = NAN,
                       .first_bad = UINT64_MAX, .scale = st->scaler->scale, .verdict = SCALER_APPLY};

    dist_progress(); /* the data-parallel watchdog: this rank is not stuck */
    Tensor *in = input(st, a, n, size, side);
    if (a->poison_input) poison_input(be, in);
    if (a->mixup_alpha > 0 && dp) mixup_global(st, a->mix_rng, a->mixup_alpha, in, labels, b);
    else if (a->mixup_alpha > 0) mixup(st, a->mix_rng, a->mixup_alpha, in, labels);
    m->dropout_seed = a->dropout_seed;
    be->image_offset = dp ? b->first : 0;
    /* queue the whole step before reading anything back: a device never waits for the host
     * (uploads wait for the device: the labels go before the forward pass) */
    if (labels) model_labels(m, n, labels, a->mixup_alpha > 0 ? st->labels_b : NULL, st->lam);
    model_run(m, 1);
    model_loss_queue(m, a->smoothing, st->scaler->scale);
    if (dp && be->ops->grad_allreduce) { /* reduce while the backward pass runs */
        st->grad_weight = (float)n / (float)b->global_n;
        grad_buckets_begin(&st->buckets, GRAD_BUCKET_FLOATS, launch_bucket, st);
        m->grad_ready = &st->buckets;
    }
    model_backward(m);
    if (dp) average_gradients(st, n, b->global_n);
    if (a->poison_grad) poison_grad(m); /* after the all-reduce, which may still be writing them before */
    int slot = (int)(st->queued++ & 1);
    const float unscale = 1.0f / st->scaler->scale; /* a power of two: exact */
    StepReport out = {0};
    switch (st->reads) {
    case STEP_READ_NONE:
        optim_step(st->opt, &a->hyper, unscale);
        break;
    case STEP_READ_LATE:
        /* this step's results come back while the next one runs; the previous step's are read now */
        queue_read(st, slot);
        optim_step(st->opt, &a->hyper, unscale);
        out = step_finish(st);
        st->pending = 1;
        st->pending_slot = slot;
        st->pending_report = self;
        st->pending_dp = dp;
        st->pending_n = n;
        break;
    case STEP_READ_NOW:
        queue_read(st, slot);
        out = take_read(st, self, slot, dp, n);
        /* a non-finite loss is not the scale's doing (the forward pass does not see it): stop */
        out.verdict = !isfinite(out.loss) ? SCALER_STOP : scaler_update(st->scaler, out.bad == 0);
        if (out.verdict == SCALER_APPLY) optim_step(st->opt, &a->hyper, unscale);
        break;
    }
    return out;
}

StepReport step_finish(Stepper *st) {
    if (!st->pending) return (StepReport){0};
    st->pending = 0;
    StepReport r = take_read(st, st->pending_report, st->pending_slot, st->pending_dp, st->pending_n);
    r.verdict = isfinite(r.loss) && !r.bad ? SCALER_APPLY : SCALER_STOP;
    return r;
}
