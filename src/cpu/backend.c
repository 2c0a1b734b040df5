/* cpu/backend.c: the CPU backend's table, memory and layout conversion. The ops themselves live in
 * one file per family, each named as its twin in cuda/: conv, batchnorm, pool, linear, elementwise,
 * loss, optim, head, augment, batch. */
#include "cpu/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Every block carries a 64-byte header (keeps the payload 64-byte aligned) with its size, so
 * release can keep bytes_in_use exact, and a tag that catches pointers not from alloc. */
#define HDR 64
#define TAG 0x63707562u /* "cpub" */

typedef struct {
    size_t bytes;
    uint32_t tag;
} BlockHeader;

static void *cpu_alloc(Backend *b, size_t bytes) {
    size_t total = HDR + ((bytes + 63) & ~(size_t)63);
    char *raw = aligned_alloc(64, total);
    if (!raw)
        die("cpu backend: out of memory allocating %zu bytes (%zu already in use)", bytes, b->bytes_in_use);
    memset(raw + HDR, 0, total - HDR);
    BlockHeader *h = (BlockHeader *)raw;
    h->bytes = bytes;
    h->tag = TAG;
    b->bytes_in_use += bytes;
    if (b->bytes_in_use > b->peak_bytes) b->peak_bytes = b->bytes_in_use;
    return raw + HDR;
}

static void cpu_release(Backend *b, void *p) {
    if (!p) return;
    BlockHeader *h = (BlockHeader *)((char *)p - HDR);
    if (h->tag != TAG) die("cpu backend: release of a pointer that did not come from alloc (or a double free)");
    h->tag = 0;
    b->bytes_in_use -= h->bytes;
    free(h);
}

void *cpu_scratch(Backend *b, int slot, size_t bytes) {
    CpuState *st = b->impl;
    if (bytes > st->scratch_bytes[slot]) {
        cpu_release(b, st->scratch[slot]);
        st->scratch[slot] = cpu_alloc(b, bytes);
        st->scratch_bytes[slot] = bytes;
    }
    return st->scratch[slot];
}

static void cpu_zero(Backend *b, void *p, size_t bytes) {
    (void)b;
    memset(p, 0, bytes);
}

static void cpu_memcpy(Backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (dst != src) memcpy(dst, src, bytes);
}

static void check_f32(const Tensor *t, const char *what) {
    if (t->dtype != DT_F32) die("cpu backend: %s has dtype %s; the cpu backend computes in fp32", what, dtype_name(t->dtype));
}

/* Per image: (c, hw) -> (hw, c), in tiles of 32 pixels so both sides stream through cache. */
static void cpu_tensor_upload(Backend *b, Tensor *dst, const float *host) {
    (void)b;
    check_f32(dst, "tensor_upload destination");
    int n = dst->n, c = dst->c;
    size_t hw = (size_t)dst->h * dst->w;
    float *d = dst->data;
#pragma omp parallel for collapse(2) schedule(static) if (tensor_numel(dst) >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++)
        for (size_t p0 = 0; p0 < hw; p0 += 32) {
            size_t p1 = p0 + 32 < hw ? p0 + 32 : hw;
            const float *s = host + (size_t)i * c * hw;
            float *o = d + (size_t)i * hw * c;
            for (int ch = 0; ch < c; ch++)
                for (size_t p = p0; p < p1; p++) o[p * c + ch] = s[(size_t)ch * hw + p];
        }
}

static void cpu_tensor_download(Backend *b, float *host, const Tensor *src) {
    (void)b;
    check_f32(src, "tensor_download source");
    int n = src->n, c = src->c;
    size_t hw = (size_t)src->h * src->w;
    const float *s = src->data;
#pragma omp parallel for collapse(2) schedule(static) if (tensor_numel(src) >= CPU_PAR_MIN)
    for (int i = 0; i < n; i++)
        for (size_t p0 = 0; p0 < hw; p0 += 32) {
            size_t p1 = p0 + 32 < hw ? p0 + 32 : hw;
            const float *si = s + (size_t)i * hw * c;
            float *o = host + (size_t)i * c * hw;
            for (int ch = 0; ch < c; ch++)
                for (size_t p = p0; p < p1; p++) o[(size_t)ch * hw + p] = si[p * c + ch];
        }
}

static void cpu_sync(Backend *b) { (void)b; }

static void cpu_weights_updated(Backend *b, const float *w, size_t count) {
    (void)b, (void)w, (void)count; /* computes in fp32 straight from the master weights */
}

static void cpu_destroy(Backend *b) {
    CpuState *st = b->impl;
    for (int i = 0; i < CPU_WS_COUNT; i++) cpu_release(b, st->scratch[i]);
    free(st);
    free(b);
}

static const BackendOps cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .zero = cpu_zero,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .tensor_upload = cpu_tensor_upload,
    .tensor_download = cpu_tensor_download,
    .sync = cpu_sync,
    .weights_updated = cpu_weights_updated,
    .conv_forward = cpu_conv_forward,
    .conv_backward_data = cpu_conv_backward_data,
    .conv_backward_filter = cpu_conv_backward_filter,
    .bn_forward_train = cpu_bn_forward_train,
    .bn_forward_infer = cpu_bn_forward_infer,
    .bn_backward = cpu_bn_backward,
    .bn_backward_infer = cpu_bn_backward_infer,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .maxpool_forward = cpu_maxpool_forward,
    .maxpool_backward = cpu_maxpool_backward,
    .avgpool_forward = cpu_avgpool_forward,
    .avgpool_backward = cpu_avgpool_backward,
    .global_avgpool_forward = cpu_global_avgpool_forward,
    .global_avgpool_backward = cpu_global_avgpool_backward,
    .concat_pool_forward = cpu_concat_pool_forward,
    .concat_pool_backward = cpu_concat_pool_backward,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .add = cpu_add,
    .accumulate = cpu_accumulate,
    .softmax_xent = cpu_softmax_xent,
    .adamw = cpu_adamw,
    .count_nonfinite = cpu_count_nonfinite,
    .scan_nonfinite = cpu_scan_nonfinite,
    .read_async = cpu_read_async,
    .read_wait = cpu_read_wait,
    .warp_batch = cpu_warp_batch,
    .alloc_host = cpu_alloc_host,
    .free_host = cpu_free_host,
    .upload_async = cpu_upload_async,
    .upload_wait = cpu_upload_wait,
    .mix_images = cpu_mix_images,
    .shrink_batch = cpu_shrink_batch,
};

Backend *cpu_backend_create(char *err, size_t errlen) {
    (void)err, (void)errlen; /* a CPU is always there */
    Backend *b = xcalloc(1, sizeof *b);
    b->ops = &cpu_ops;
    b->impl = xcalloc(1, sizeof(CpuState));
    b->compute = DT_F32;
    b->threads = 1;
#ifdef _OPENMP
    b->threads = omp_get_max_threads(); /* OMP_NUM_THREADS, else the online cores */
#endif
    return b;
}

void cpu_read_async(Backend *b, void *host_dst, const void *src, size_t bytes, int slot) {
    (void)b;
    if (slot != 0 && slot != 1) die("cpu backend: read_async slot %d (want 0 or 1)", slot);
    if (bytes) memcpy(host_dst, src, bytes);
}

void cpu_read_wait(Backend *b, int slot) {
    (void)b;
    if (slot != 0 && slot != 1) die("cpu backend: read_wait slot %d (want 0 or 1)", slot);
}
