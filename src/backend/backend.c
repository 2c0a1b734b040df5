/* backend/backend.c: choosing a backend by name. The only place that knows which backends are built in. */
#include "backend/backend.h"

#include <stdio.h>
#include <string.h>

Backend *cpu_backend_create(char *err, size_t errlen);
#ifdef HAVE_CUDA
Backend *cuda_backend_create(char *err, size_t errlen); /* NULL when no GPU is usable */
#endif

size_t dtype_size(DType dt) { return dt == DT_F32 ? 4 : 2; }

const char *dtype_name(DType dt) {
    static const char *names[] = {"fp32", "fp16", "bf16"};
    return (unsigned)dt < 3 ? names[dt] : "?";
}

int conv_out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

int pool_out_size(int in, const PoolGeom *g) {
    /* PyTorch's pooling_output_shape: floor division rounding towards minus infinity, and a
     * ceil-mode window must start inside the input or its left padding. */
    int num = in + 2 * g->pad - g->k + (g->ceil_mode ? g->stride - 1 : 0);
    int out = (num >= 0 ? num / g->stride : -((-num + g->stride - 1) / g->stride)) + 1;
    if (g->ceil_mode && out > 0 && (out - 1) * g->stride >= in + g->pad) out--;
    return out;
}

const char *backend_list(void) {
#ifdef HAVE_CUDA
    return "cpu cuda";
#else
    return "cpu";
#endif
}

Backend *backend_create(const char *name, char *err, size_t errlen) {
    if (!strcmp(name, "cpu")) return cpu_backend_create(err, errlen);
#ifdef HAVE_CUDA
    if (!strcmp(name, "cuda")) return cuda_backend_create(err, errlen);
    if (!strcmp(name, "auto")) {
        Backend *b = cuda_backend_create(err, errlen);
        return b ? b : cpu_backend_create(err, errlen);
    }
#else
    if (!strcmp(name, "cuda")) {
        snprintf(err, errlen, "this binary was built without the CUDA backend (backends: %s)", backend_list());
        return NULL;
    }
    if (!strcmp(name, "auto")) return cpu_backend_create(err, errlen);
#endif
    snprintf(err, errlen, "unknown backend '%s' (choose auto, cpu or cuda; built in: %s)", name, backend_list());
    return NULL;
}

DType backend_set_precision(Backend *b, DType dt) {
    if (b->ops->set_compute) b->ops->set_compute(b, dt); /* on failure it keeps what it had */
    return b->compute;
}

void backend_destroy(Backend *b) {
    if (b) b->ops->destroy(b);
}
