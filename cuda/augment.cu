/* augment.cu: the input pipeline on the GPU: warp_batch (warp_apply.c's per-image warp, lighting and
 * normalisation in one kernel reading the decoded uint8 images) and the host staging ops
 * (pinned memory, uploads on a copy stream of their own; backend.h has the protocol).
 *
 * Parity with the CPU: the host turns every Warp into warp_apply.c's WarpPlan (warp_plan), so both
 * take the same path with the same constants, and the kernel repeats warp_apply.c's arithmetic
 * operation by operation in the same order and precision. Every float/double multiply and add
 * that the CPU does separately is written with a _rn intrinsic here, so nvcc cannot fuse it into
 * an FMA (the CPU build is ISO C: no contraction either). Division, truncf, floorf, fmodf and
 * fabs are exact or correctly rounded on both. What remains different: the lighting table's
 * exp() (CUDA's double exp is within 1 ulp, glibc's within about 0.5), so a table entry can, rarely,
 * differ in its last float bit; the output stays within 1e-5 (tests/gpu/gpu_augment.c).
 * The device math between the "start/end of the device math" markers uses nothing but those
 * intrinsics and libm functions: compiled for the host with each _rn intrinsic as the plain
 * operation, it gives warp_apply.c's warp_apply_nhwc bit for bit (checked over 3,000 random warps:
 * all paths, lighting, grey images).
 *
 * Function names follow warp_apply.c's: block_coords (item coordinates per output pixel), the plain
 * bilinear sample (sample_block), the general antialiased sample (aa_block) and the separable
 * one (aa_init + aa_row + aa_sep_block), where the CPU's per-row buffer becomes a per-pixel loop
 * over the same products in the same order. */
#include "cuda_backend.h"

extern "C" {
#include "pipeline/augment.h"
}

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum {
    LUT_STRIDE = WARP_LIGHT_N + 3, /* floats per image's lighting table */
    AA_CACHE = 32,                 /* inner-axis weights kept in registers/local memory; more are recomputed */
    PARAM_RING = 4,                /* pinned host buffers for warp_batch's per-image parameters */
    WARP_THREADS = 256,
};

/* One image of a warp_batch, as the kernel reads it. */
typedef struct {
    WarpPlan p;
    size_t offset;          /* first byte in the packed images */
    int w, h, channels;
    double light_shift, light_c; /* warp_light_shift(brightness), contrast: the lighting table */
} GpuWarp;

/* Per-channel normalisation constants, computed on the host exactly as augment.c computes them. */
typedef struct {
    float k_plain[3];   /* 1 / (255 std) */
    float k_light[3];   /* 1 / std */
    float bias[3];      /* -mean / std */
    float light_scale;  /* WARP_LIGHT_N / 255 */
} Norm;

/* GpuWarp of image i: warp_apply.c's plan for its Warp and size, where it is, its lighting. */
static void gpu_warp_fill(GpuWarp *g, const Warp *w, const ImageSlot *s) {
    memset(g, 0, sizeof *g);
    warp_plan(w, s->w, s->h, &g->p);
    g->offset = s->offset;
    g->w = s->w;
    g->h = s->h;
    g->channels = s->channels;
    g->light_shift = warp_light_shift(w->brightness);
    g->light_c = w->contrast;
}

/* warp_apply.c's apply_norm constants. */
static Norm norm_make(const float *mean, const float *std) {
    Norm n;
    for (int c = 0; c < 3; c++) {
        n.bias[c] = -mean[c] / std[c];
        n.k_light[c] = 1.0f / std[c];
        n.k_plain[c] = 1.0f / (255.0f * std[c]);
    }
    n.light_scale = WARP_LIGHT_N / 255.0f;
    return n;
}

/* ---------------------------------------------------------------- device math (warp_apply.c's) */
/* ---- start of the device math ---- */

/* reflect_coord: grid_sample's reflection about lo and hi, then its clip; NaN goes to lo. */
__device__ static float reflect_coord(float u, float lo, float hi) {
    float span = __fsub_rn(hi, lo);
    if (!(span > 0)) return lo;
    float d = fabsf(__fsub_rn(u, lo));
    float flips = floorf(__fdiv_rn(d, span)), extra = fmodf(d, span);
    float r = fmodf(flips, 2.0f) == 0.0f ? __fadd_rn(lo, extra) : __fsub_rn(hi, extra);
    return r > lo ? (r < hi ? r : hi) : lo;
}

/* block_coords for one pixel: item coordinates of output pixel (x, y), reflected into the item,
 * or *zero set (zero padding) when outside it. The first pixel of x's run of WARP_BLK in double,
 * then float steps, as the CPU's vectorised loop. */
__device__ static void block_coords(const WarpPlan &p, int x, int y, float *u_out, float *v_out, bool *zero) {
    const float *h = p.h;
    int x0 = x - x % WARP_BLK;
    float fi = (float)(x - x0);
    double yc = y + 0.5, xc = x0 + 0.5;
    float u0 = __double2float_rn(__dadd_rn(__dadd_rn(__dmul_rn(h[0], xc), __dmul_rn(h[1], yc)), (double)h[2]));
    float v0 = __double2float_rn(__dadd_rn(__dadd_rn(__dmul_rn(h[3], xc), __dmul_rn(h[4], yc)), (double)h[5]));
    float u, v;
    if (p.affine) {
        u = __fadd_rn(u0, __fmul_rn(fi, h[0]));
        v = __fadd_rn(v0, __fmul_rn(fi, h[3]));
    } else {
        float w0 = __double2float_rn(__dadd_rn(__dadd_rn(__dmul_rn(h[6], xc), __dmul_rn(h[7], yc)), (double)h[8]));
        float r = __fdiv_rn(1.0f, __fadd_rn(w0, __fmul_rn(fi, h[6])));
        u = __fmul_rn(__fadd_rn(u0, __fmul_rn(fi, h[0])), r);
        v = __fmul_rn(__fadd_rn(v0, __fmul_rn(fi, h[3])), r);
    }
    *zero = false;
    if (u < p.u_lo || u > p.u_hi || v < p.v_lo || v > p.v_hi) { /* NaN is not caught, as on the CPU */
        if (p.pad == WARP_PAD_ZEROS) {
            *zero = true;
        } else {
            u = reflect_coord(u, p.u_lo, p.u_hi);
            v = reflect_coord(v, p.v_lo, p.v_hi);
        }
    }
    *u_out = u;
    *v_out = v;
}

/* The pixel bytes: channel c of source pixel (x, y); grey images have one channel. */
__device__ static __forceinline__ float px(const uint8_t *img, int w, int ch, int x, int y, int c) {
    return (float)__ldg(img + ((size_t)y * w + x) * ch + c);
}

/* sample_block for one pixel: plain bilinear, taps clamped into the clip box. */
__device__ static void sample_plain(const GpuWarp &g, const uint8_t *img, int x, int y, float *val) {
    const WarpPlan &p = g.p;
    float u, v;
    bool zero;
    block_coords(p, x, y, &u, &v, &zero);
    float sx = __fadd_rn(__fadd_rn(__fmul_rn(p.a[0], u), __fmul_rn(p.a[1], v)), p.a[2]);
    float sy = __fadd_rn(__fadd_rn(__fmul_rn(p.a[3], u), __fmul_rn(p.a[4], v)), p.a[5]);
    sx = sx > p.sx_lo ? sx : p.sx_lo;
    sx = sx < p.sx_hi ? sx : p.sx_hi;
    sy = sy > p.sy_lo ? sy : p.sy_lo;
    sy = sy < p.sy_hi ? sy : p.sy_hi;
    float fx0 = truncf(sx), fy0 = truncf(sy);
    float fx = __fsub_rn(sx, fx0), fy = __fsub_rn(sy, fy0);
    int ix = (int)fx0, iy = (int)fy0;
    int ix1 = fx0 < p.x_last ? ix + 1 : ix, iy1 = fy0 < p.y_last ? iy + 1 : iy;
    int nc = g.channels == 1 ? 1 : 3;
    for (int c = 0; c < nc; c++) {
        float p00 = px(img, g.w, g.channels, ix, iy, c), p01 = px(img, g.w, g.channels, ix1, iy, c);
        float p10 = px(img, g.w, g.channels, ix, iy1, c), p11 = px(img, g.w, g.channels, ix1, iy1, c);
        float t = __fadd_rn(p00, __fmul_rn(fx, __fsub_rn(p01, p00)));
        float d = __fadd_rn(p10, __fmul_rn(fx, __fsub_rn(p11, p10)));
        val[c] = __fadd_rn(t, __fmul_rn(fy, __fsub_rn(d, t)));
    }
    if (nc == 1) val[1] = val[2] = val[0];
    if (zero) val[0] = val[1] = val[2] = 0.0f;
}

/* tent_taps along one axis, with the weights computed on demand (weight(k) is the CPU's w[k]). */
struct Taps {
    int first, count;
    double c, inv, sum;
};

__device__ static __forceinline__ double tent(int i, double c, double inv) {
    double t = fabs(__dmul_rn(__dsub_rn(__dadd_rn((double)i, 0.5), c), inv));
    return t < 1 ? __dsub_rn(1.0, t) : 0.0;
}

__device__ static Taps tent_taps(double c, double f, int lo, int hi) {
    c = c > lo ? c : lo;
    c = c < hi ? c : hi;
    int a = (int)floor(__dadd_rn(__dsub_rn(c, f), 0.5)), b = (int)floor(__dadd_rn(__dadd_rn(c, f), 0.5));
    a = a > lo ? a : lo;
    b = b < hi ? b : hi;
    double sum = 0, inv = __ddiv_rn(1.0, f);
    for (int i = a; i < b; i++) sum = __dadd_rn(sum, tent(i, c, inv));
    Taps t = {a, b - a, c, inv, sum};
    return t;
}

__device__ static __forceinline__ float tap_weight(const Taps &t, int k) {
    return __double2float_rn(__ddiv_rn(tent(t.first + k, t.c, t.inv), t.sum));
}

/* Sum over the taps, the outer axis's weight times the inner axis's sum, as the CPU nests them:
 * aa_block: outer = rows (y), inner = columns (x); separable (aa_row, then aa_sep_block): outer =
 * columns, inner = rows. First products are plain products (the CPU starts its sums at 0 or at
 * the first product: 0 + p = p exactly). */
__device__ static void aa_sum(const GpuWarp &g, const uint8_t *img, const Taps &outer, const Taps &inner,
                              bool outer_is_y, float *val) {
    float wi[AA_CACHE];
    int cached = inner.count < AA_CACHE ? inner.count : AA_CACHE;
    for (int k = 0; k < cached; k++) wi[k] = tap_weight(inner, k);
    int nc = g.channels == 1 ? 1 : 3;
    float acc[3] = {0.0f, 0.0f, 0.0f};
    for (int ko = 0; ko < outer.count; ko++) {
        float wo = tap_weight(outer, ko);
        int o = outer.first + ko;
        float r[3] = {0.0f, 0.0f, 0.0f};
        for (int ki = 0; ki < inner.count; ki++) {
            float w = ki < AA_CACHE ? wi[ki] : tap_weight(inner, ki);
            int i = inner.first + ki;
            int x = outer_is_y ? i : o, y = outer_is_y ? o : i;
            for (int c = 0; c < nc; c++) {
                float prod = __fmul_rn(w, px(img, g.w, g.channels, x, y, c));
                r[c] = ki == 0 ? prod : __fadd_rn(r[c], prod);
            }
        }
        for (int c = 0; c < nc; c++) acc[c] = __fadd_rn(acc[c], __fmul_rn(wo, r[c]));
    }
    for (int c = 0; c < nc; c++) val[c] = acc[c] < 255.0f ? acc[c] : 255.0f;
    if (nc == 1) val[1] = val[2] = val[0];
}

/* aa_block for one pixel: the separable filter at the pixel's source point (general maps). */
__device__ static void sample_aa_general(const GpuWarp &g, const uint8_t *img, int x, int y, float *val) {
    const WarpPlan &p = g.p;
    float u, v;
    bool zero;
    block_coords(p, x, y, &u, &v, &zero);
    if (zero) {
        val[0] = val[1] = val[2] = 0.0f;
        return;
    }
    double du = u, dv = v;
    double cx = __dadd_rn(__dadd_rn(__dmul_rn((double)p.wa[0], du), __dmul_rn((double)p.wa[1], dv)), (double)p.wa[2]);
    double cy = __dadd_rn(__dadd_rn(__dmul_rn((double)p.wa[3], du), __dmul_rn((double)p.wa[4], dv)), (double)p.wa[5]);
    Taps tx = tent_taps(cx, p.f[0], p.box[0], p.box[2]);
    Taps ty = tent_taps(cy, p.f[1], p.box[1], p.box[3]);
    aa_sum(g, img, ty, tx, true, val);
}

/* aa_init's per-column / per-row taps (u from x alone, v from y alone, in double), then the
 * vertical pass inside the horizontal one. */
__device__ static void sample_aa_separable(const GpuWarp &g, const uint8_t *img, int x, int y, float *val) {
    const WarpPlan &p = g.p;
    bool zeros = p.pad == WARP_PAD_ZEROS, zx = false, zy = false;
    double u = __dadd_rn(__dmul_rn((double)p.h[0], x + 0.5), (double)p.h[2]);
    double v = __dadd_rn(__dmul_rn((double)p.h[4], y + 0.5), (double)p.h[5]);
    if (u < p.u_lo || u > p.u_hi) {
        if (zeros) zx = true;
        else u = reflect_coord(__double2float_rn(u), p.u_lo, p.u_hi);
    }
    if (v < p.v_lo || v > p.v_hi) {
        if (zeros) zy = true;
        else v = reflect_coord(__double2float_rn(v), p.v_lo, p.v_hi);
    }
    if (zx || zy) {
        val[0] = val[1] = val[2] = 0.0f;
        return;
    }
    Taps tx = tent_taps(__dadd_rn(__dmul_rn((double)p.wa[0], u), (double)p.wa[2]), p.f[0], p.box[0], p.box[2]);
    Taps ty = tent_taps(__dadd_rn(__dmul_rn((double)p.wa[4], v), (double)p.wa[5]), p.f[1], p.box[1], p.box[3]);
    aa_sum(g, img, tx, ty, false, val);
}

/* One output pixel's three normalised values (warp_apply.c's apply_norm after fill_block). lut: the
 * image's lighting table when g.p.light. */
__device__ static void warp_pixel(const GpuWarp &g, const uint8_t *src, int x, int y, const float *lut,
                                  const Norm &norm, float *out) {
    float val[3];
    if (g.p.aa == WARP_AA_SEPARABLE) sample_aa_separable(g, src, x, y, val);
    else if (g.p.aa == WARP_AA_GENERAL) sample_aa_general(g, src, x, y, val);
    else sample_plain(g, src, x, y, val);
    for (int c = 0; c < 3; c++) {
        if (g.p.light) {
            float t = __fmul_rn(val[c], norm.light_scale);
            int j = (int)t;
            j = j < 0 ? 0 : (j > WARP_LIGHT_N + 1 ? WARP_LIGHT_N + 1 : j); /* never, for 0..255 */
            float f = __fadd_rn(lut[j], __fmul_rn(__fsub_rn(t, (float)j), __fsub_rn(lut[j + 1], lut[j])));
            out[c] = __fadd_rn(__fmul_rn(f, norm.k_light[c]), norm.bias[c]);
        } else {
            out[c] = __fadd_rn(__fmul_rn(val[c], norm.k_plain[c]), norm.bias[c]);
        }
    }
}

/* Entry i (0 .. WARP_LIGHT_N) of an image's lighting table: lighting_table's formula, with the
 * image-independent logit(x_i) from the host (glibc's log, as the CPU's). */
__device__ static float light_entry(const GpuWarp &g, const double *logits, int i) {
    double z = __dmul_rn(g.light_c, __dadd_rn(logits[i], g.light_shift));
    return __double2float_rn(__ddiv_rn(1.0, __dadd_rn(1.0, exp(-z))));
}
/* ---- end of the device math ---- */

/* ---------------------------------------------------------------- state */

struct CudaFeed {
    cudaStream_t copy;                /* upload_async's stream */
    cudaEvent_t copied[2];            /* per slot: its last copy (host buffer free again) */
    cudaEvent_t issued[2];            /* compute-stream marks at the last two upload_async calls */
    long long uploads;                /* upload_async calls so far */
    GpuWarp *host[PARAM_RING];        /* pinned parameter staging, reused round robin */
    size_t host_cap[PARAM_RING];      /* in GpuWarps */
    cudaEvent_t host_done[PARAM_RING]; /* its last copy to the device */
    int next_host;
    CudaBuf params;                   /* device GpuWarp[n] */
    CudaBuf luts;                     /* device float[n][LUT_STRIDE] */
    double *logits;                   /* device warp_light_logit(0 .. WARP_LIGHT_N) */
};

/* alloc_host / free_host may come from loader threads, so the lazy creation is locked. */
static pthread_mutex_t feed_mu = PTHREAD_MUTEX_INITIALIZER;

static CudaFeed *feed_get(CudaCtx *ctx, int create) {
    pthread_mutex_lock(&feed_mu);
    CudaFeed *f = ctx->feed;
    if (!f && create) {
        f = (CudaFeed *)xcalloc(1, sizeof *f);
        CUDA_CHECK(cudaStreamCreateWithFlags(&f->copy, cudaStreamNonBlocking));
        for (int i = 0; i < 2; i++) {
            CUDA_CHECK(cudaEventCreateWithFlags(&f->copied[i], cudaEventDisableTiming));
            CUDA_CHECK(cudaEventCreateWithFlags(&f->issued[i], cudaEventDisableTiming));
        }
        for (int i = 0; i < PARAM_RING; i++) CUDA_CHECK(cudaEventCreateWithFlags(&f->host_done[i], cudaEventDisableTiming));
        double table[WARP_LIGHT_N + 1];
        for (int i = 0; i <= WARP_LIGHT_N; i++) table[i] = warp_light_logit(i); /* glibc's log, as the CPU */
        CUDA_CHECK(cudaMalloc(&f->logits, sizeof table));
        /* on the compute stream: a pageable cudaMemcpy may return before its DMA lands, and the
         * non-blocking compute stream would not wait for the legacy stream (staged, so table may go) */
        CUDA_CHECK(cudaMemcpyAsync(f->logits, table, sizeof table, cudaMemcpyHostToDevice, ctx->stream));
        ctx->feed = f;
    }
    pthread_mutex_unlock(&feed_mu);
    return f;
}

void cuda_feed_free(CudaCtx *ctx) {
    CudaFeed *f = ctx->feed;
    if (!f) return;
    CUDA_CHECK(cudaStreamSynchronize(f->copy));
    for (int i = 0; i < 2; i++) {
        CUDA_CHECK(cudaEventDestroy(f->copied[i]));
        CUDA_CHECK(cudaEventDestroy(f->issued[i]));
    }
    for (int i = 0; i < PARAM_RING; i++) {
        CUDA_CHECK(cudaEventSynchronize(f->host_done[i]));
        CUDA_CHECK(cudaEventDestroy(f->host_done[i]));
        if (f->host[i]) CUDA_CHECK(cudaFreeHost(f->host[i]));
    }
    cuda_buf_free(&f->params);
    cuda_buf_free(&f->luts);
    CUDA_CHECK(cudaFree(f->logits));
    CUDA_CHECK(cudaStreamDestroy(f->copy));
    free(f);
    ctx->feed = NULL;
}

/* ---------------------------------------------------------------- host staging and uploads */

void *cuda_alloc_host(Backend *b, size_t bytes) {
    (void)b;
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        die("cuda: out of page-locked host memory allocating %zu bytes", bytes);
    }
    CUDA_CHECK(e);
    return p;
}

void cuda_free_host(Backend *b, void *p) {
    if (!p) return;
    CudaFeed *f = feed_get(cuda_ctx(b), 0);
    if (f) CUDA_CHECK(cudaStreamSynchronize(f->copy)); /* no copy may still read it */
    CUDA_CHECK(cudaFreeHost(p));
}

static void check_slot(int slot, const char *op) {
    if (slot != 0 && slot != 1) die("cuda %s: slot %d (want 0 or 1)", op, slot);
}

void cuda_upload_async(Backend *b, void *dst, const void *host_src, size_t bytes, int slot) {
    check_slot(slot, "upload_async");
    CudaCtx *ctx = cuda_ctx(b);
    CudaFeed *f = feed_get(ctx, 1);
    /* The copy waits for the ops issued before the previous call (write-after-read on a
     * double-buffered destination); this call's mark is what the next copy waits for. A wait on an
     * event recorded later does not change: cudaStreamWaitEvent takes the event's state now. */
    if (f->uploads > 0) CUDA_CHECK(cudaStreamWaitEvent(f->copy, f->issued[(f->uploads - 1) & 1], 0));
    CUDA_CHECK(cudaEventRecord(f->issued[f->uploads & 1], ctx->stream));
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, f->copy));
    CUDA_CHECK(cudaEventRecord(f->copied[slot], f->copy));
    /* ops issued from now on see the bytes */
    CUDA_CHECK(cudaStreamWaitEvent(ctx->stream, f->copied[slot], 0));
    f->uploads++;
}

void cuda_upload_wait(Backend *b, int slot) {
    check_slot(slot, "upload_wait");
    CudaFeed *f = feed_get(cuda_ctx(b), 0);
    if (f) CUDA_CHECK(cudaEventSynchronize(f->copied[slot]));
}

/* ---------------------------------------------------------------- kernels */

__device__ static __forceinline__ void store(float *y, size_t i, float v) { y[i] = v; }
__device__ static __forceinline__ void store(__half *y, size_t i, float v) { y[i] = __float2half_rn(v); }
__device__ static __forceinline__ void store(__nv_bfloat16 *y, size_t i, float v) { y[i] = __float2bfloat16_rn(v); }

/* blockIdx.y: images (looping past 65535); x: output pixels of one image, one per thread, all
 * three channels, NHWC. */
template <typename T>
__global__ void __launch_bounds__(WARP_THREADS)
    warp_kernel(const uint8_t *__restrict__ images, const GpuWarp *__restrict__ params,
                const float *__restrict__ luts, int n, int side, Norm norm, T *__restrict__ y) {
    __shared__ float lut[LUT_STRIDE];
    int npx = side * side;
    for (int img = blockIdx.y; img < n; img += gridDim.y) {
        const GpuWarp &g = params[img];
        if (g.p.light) { /* uniform over the block */
            __syncthreads(); /* the previous image's readers are done */
            for (int i = threadIdx.x; i < LUT_STRIDE; i += blockDim.x) lut[i] = luts[(size_t)img * LUT_STRIDE + i];
            __syncthreads();
        }
        const uint8_t *src = images + g.offset;
        for (int pix = blockIdx.x * blockDim.x + threadIdx.x; pix < npx; pix += gridDim.x * blockDim.x) {
            float out[3];
            warp_pixel(g, src, pix % side, pix / side, lut, norm, out);
            size_t o = ((size_t)img * npx + pix) * 3;
            store(y, o, out[0]);
            store(y, o + 1, out[1]);
            store(y, o + 2, out[2]);
        }
    }
}

/* lighting_table per image with lighting (blockIdx.x: images). */
__global__ void light_table_kernel(const GpuWarp *__restrict__ params, const double *__restrict__ logits,
                                   float *__restrict__ luts, int n) {
    for (int img = blockIdx.x; img < n; img += gridDim.x) {
        const GpuWarp &g = params[img];
        if (!g.p.light) continue;
        float *lut = luts + (size_t)img * LUT_STRIDE;
        for (int i = threadIdx.x; i <= WARP_LIGHT_N; i += blockDim.x) {
            float v = light_entry(g, logits, i);
            lut[i] = v;
            if (i == WARP_LIGHT_N) lut[i + 1] = lut[i + 2] = v;
        }
    }
}

/* ---------------------------------------------------------------- the op */

void cuda_warp_batch(Backend *b, const uint8_t *images, const ImageSlot *slots, const Warp *params, int n,
                     int out_side, const float mean[3], const float std[3], Tensor *y) {
    CudaCtx *ctx = cuda_ctx(b);
    DType dt = y->dtype;
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16) die("cuda warp_batch: unknown output dtype %d", (int)dt);
    if (n < 0 || out_side < 1) die("cuda warp_batch: %d images at side %d", n, out_side);
    if ((size_t)out_side * out_side > (size_t)1 << 30) die("cuda warp_batch: output side %d is too large", out_side);
    for (int i = 0; i < n; i++)
        if (slots[i].w < 1 || slots[i].h < 1 || (slots[i].channels != 1 && slots[i].channels != 3))
            die("cuda warp_batch: image %d is %dx%d with %d channels (want 1 or 3)", i, slots[i].w, slots[i].h,
                slots[i].channels);
    y->n = n, y->c = 3, y->h = out_side, y->w = out_side; /* the dtype is the caller's */
    if (n == 0) return;
    CudaFeed *f = feed_get(ctx, 1);

    /* The parameters, through a pinned buffer whose previous copy (PARAM_RING calls ago) is done. */
    int r = f->next_host;
    f->next_host = (r + 1) % PARAM_RING;
    CUDA_CHECK(cudaEventSynchronize(f->host_done[r]));
    if ((size_t)n > f->host_cap[r]) {
        if (f->host[r]) CUDA_CHECK(cudaFreeHost(f->host[r]));
        size_t cap = (size_t)n + n / 2;
        f->host[r] = (GpuWarp *)cuda_alloc_host(b, cap * sizeof(GpuWarp));
        f->host_cap[r] = cap;
    }
    GpuWarp *hp = f->host[r];
    int any_light = 0;
    for (int i = 0; i < n; i++) {
        gpu_warp_fill(&hp[i], &params[i], &slots[i]);
        any_light |= hp[i].p.light;
    }
    size_t pbytes = (size_t)n * sizeof(GpuWarp);
    GpuWarp *dp = (GpuWarp *)cuda_buf_reserve(ctx->stream, &f->params, pbytes);
    CUDA_CHECK(cudaMemcpyAsync(dp, hp, pbytes, cudaMemcpyHostToDevice, ctx->stream));
    CUDA_CHECK(cudaEventRecord(f->host_done[r], ctx->stream));

    float *luts = NULL;
    unsigned gy = (unsigned)(n < 65535 ? n : 65535);
    if (any_light) {
        luts = (float *)cuda_buf_reserve(ctx->stream, &f->luts, (size_t)n * LUT_STRIDE * sizeof(float));
        light_table_kernel<<<gy, 256, 0, ctx->stream>>>(dp, f->logits, luts, n);
        KERNEL_CHECK();
    }
    Norm norm = norm_make(mean, std);
    size_t npx = (size_t)out_side * out_side;
    size_t gx = (npx + WARP_THREADS - 1) / WARP_THREADS;
    dim3 grid((unsigned)(gx < 65535 ? gx : 65535), gy);
    switch (dt) {
    case DT_F32:
        warp_kernel<float><<<grid, WARP_THREADS, 0, ctx->stream>>>(images, dp, luts, n, out_side, norm,
                                                                   (float *)y->data);
        break;
    case DT_F16:
        warp_kernel<__half><<<grid, WARP_THREADS, 0, ctx->stream>>>(images, dp, luts, n, out_side, norm,
                                                                    (__half *)y->data);
        break;
    case DT_BF16:
        warp_kernel<__nv_bfloat16><<<grid, WARP_THREADS, 0, ctx->stream>>>(images, dp, luts, n, out_side, norm,
                                                                           (__nv_bfloat16 *)y->data);
        break;
    }
    KERNEL_CHECK();
}
