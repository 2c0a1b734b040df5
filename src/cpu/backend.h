/* cpu/backend.h: private to the CPU backend (src/cpu/): its state, scratch memory, and the ops
 * each file provides to the table in cpu/backend.c. Activations are NHWC float32, so a tensor
 * (n, c, h, w) is an (n*h*w, c) row-major matrix.
 *
 * Shapes: forward ops set their output's shape from the input. Backward ops set dx to x's shape
 * where they are given x; where they are not (conv backward-data, avgpool, global avgpool) dx must
 * already carry the input's shape, and it is checked against dy. linear_forward takes the output
 * width from y->c (the weights do not say it). Optional outputs may be NULL: dgamma/dbeta, the
 * linear layer's dw/db/dx, the running statistics, dlogits. */
#ifndef CNN_CPU_BACKEND_H
#define CNN_CPU_BACKEND_H

#include "backend/backend.h"

/* Scratch buffers owned by the backend, grown on demand, never shrunk (counted in bytes_in_use). */
enum { CPU_WS_COL, CPU_WS_STATS, CPU_WS_CHAN, CPU_WS_ROWS, CPU_WS_WFLIP, CPU_WS_MIX, CPU_WS_COUNT };

typedef struct {
    void *scratch[CPU_WS_COUNT];
    size_t scratch_bytes[CPU_WS_COUNT];
} CpuState;

void *cpu_scratch(Backend *, int slot, size_t bytes);

/* Loops shorter than this run on one thread: a fork/join costs more than it saves. */
#define CPU_PAR_MIN 32768

static inline void cpu_set_shape(Tensor *t, int n, int c, int h, int w) {
    t->n = n;
    t->c = c;
    t->h = h;
    t->w = w;
}

/* cpu/backend.c: the one-step-late reads of the gradient check (on a CPU, a memcpy) */
void cpu_read_async(Backend *, void *host_dst, const void *src, size_t bytes, int slot);
void cpu_read_wait(Backend *, int slot);

/* cpu/conv.c */
void cpu_conv_forward(Backend *, const ConvGeom *, const Tensor *x, const float *w, Tensor *y);
void cpu_conv_backward_data(Backend *, const ConvGeom *, const Tensor *dy, const float *w, Tensor *dx,
                            int accumulate);
void cpu_conv_backward_filter(Backend *, const ConvGeom *, const Tensor *x, const Tensor *dy, float *dw);

/* cpu/batchnorm.c */
void cpu_bn_forward_train(Backend *, const Tensor *x, const float *gamma, const float *beta, float *running_mean,
                          float *running_var, float momentum, float eps, float *save_mean, float *save_invstd,
                          Tensor *y);
void cpu_bn_forward_infer(Backend *, const Tensor *x, const float *gamma, const float *beta,
                          const float *running_mean, const float *running_var, float eps, Tensor *y);
void cpu_bn_backward(Backend *, const Tensor *x, const Tensor *dy, const float *gamma, const float *save_mean,
                     const float *save_invstd, float *dgamma, float *dbeta, Tensor *dx, int accumulate);
void cpu_bn_backward_infer(Backend *, const Tensor *x, const Tensor *dy, const float *gamma,
                           const float *running_mean, const float *running_var, float eps, float *dgamma,
                           float *dbeta, Tensor *dx, int accumulate);

/* cpu/elementwise.c */
void cpu_relu_forward(Backend *, const Tensor *x, Tensor *y);
void cpu_relu_backward(Backend *, const Tensor *y, const Tensor *dy, Tensor *dx, int accumulate);
void cpu_add(Backend *, const Tensor *x, const Tensor *z, Tensor *y);
void cpu_accumulate(Backend *, const Tensor *src, Tensor *dst, int accumulate);

/* cpu/pool.c */
void cpu_maxpool_forward(Backend *, const PoolGeom *, const Tensor *x, Tensor *y);
void cpu_maxpool_backward(Backend *, const PoolGeom *, const Tensor *x, const Tensor *y, const Tensor *dy,
                          Tensor *dx, int accumulate);
void cpu_avgpool_forward(Backend *, const PoolGeom *, const Tensor *x, Tensor *y);
void cpu_avgpool_backward(Backend *, const PoolGeom *, const Tensor *dy, Tensor *dx, int accumulate);
void cpu_global_avgpool_forward(Backend *, const Tensor *x, Tensor *y);
void cpu_global_avgpool_backward(Backend *, const Tensor *dy, Tensor *dx, int accumulate);

/* cpu/linear.c */
void cpu_linear_forward(Backend *, const Tensor *x, const float *w, const float *bias, Tensor *y);
void cpu_linear_backward(Backend *, const Tensor *x, const Tensor *dy, const float *w, float *dw, float *db,
                         Tensor *dx, int accumulate);

/* cpu/loss.c */
void cpu_softmax_xent(Backend *, const Tensor *logits, const int32_t *labels_a, const int32_t *labels_b,
                      const float *lam, float smoothing, float scale, float *loss, Tensor *dlogits);

/* cpu/optim.c */
size_t cpu_count_nonfinite(Backend *, const float *x, size_t count);
void cpu_scan_nonfinite(Backend *, const float *x, size_t count, uint64_t *out);
void cpu_adamw(Backend *, float *p, const float *g, float *m, float *v, const AdamWRun *runs, int nruns,
               const AdamWArgs *a, float grad_scale);

/* cpu/head.c */
void cpu_concat_pool_forward(Backend *, const Tensor *x, Tensor *y);
void cpu_concat_pool_backward(Backend *, const Tensor *x, const Tensor *y, const Tensor *dy, Tensor *dx,
                              int accumulate);
void cpu_dropout_forward(Backend *, const Tensor *x, float p, uint64_t seed, Tensor *y);
void cpu_dropout_backward(Backend *, const Tensor *dy, float p, uint64_t seed, Tensor *dx, int accumulate);

/* cpu/augment.c */
void cpu_warp_batch(Backend *, const uint8_t *images, const ImageSlot *slots, const struct Warp *params, int n,
                    int out_side, const float mean[3], const float std[3], Tensor *y);
void *cpu_alloc_host(Backend *, size_t bytes);
void cpu_free_host(Backend *, void *p);
void cpu_upload_async(Backend *, void *dst, const void *host_src, size_t bytes, int slot);
void cpu_upload_wait(Backend *, int slot);

/* cpu/batch.c */
void cpu_mix_images(Backend *, Tensor *x, const int32_t *partner, const float *lam);
void cpu_shrink_batch(Backend *, const Tensor *x, int d, int crop, int oy, int ox, Tensor *y);

#endif
