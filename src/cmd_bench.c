/* cmd_bench.c: `train bench MODEL`: training images/s (forward + backward + AdamW) and peak memory. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "cli.h"
#include "commands.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "util.h"

int cmd_bench(int argc, char **argv) {
    int size = 64, batch = 32, steps = 5, warmup = 1, classes = 1000;
    const char *device = "cpu";
    const Flag flags[] = {
        {"--size", FLAG_INT, &size, "image side (default 64)"},
        {"--batch", FLAG_INT, &batch, "batch size (default 32)"},
        {"--steps", FLAG_INT, &steps, "timed training steps (default 5)"},
        {"--warmup", FLAG_INT, &warmup, "untimed steps first (default 1)"},
        {"--classes", FLAG_INT, &classes, "classes (default 1000)"},
        {"--device", FLAG_STR, &device, "cpu, cuda or auto (default cpu)"},
        {0},
    };
    const char *pos[1];
    int npos;
    cli_parse("bench", "MODEL [--size S] [--batch B] [--steps N] [--device D]", argc, argv, 2, flags, pos, 1, &npos);
    if (npos != 1 || size < 1 || batch < 1 || steps < 1 || warmup < 0) {
        fprintf(stderr, "train bench: give one model name and positive sizes\n");
        return 2;
    }
    char err[512];
    Model *m = model_build(pos[0], classes, err, sizeof err);
    if (!m) die("bench: %s", err);
    Backend *be = backend_create(device, err, sizeof err);
    if (!be) die("bench: %s", err);
    if (model_attach(m, be, batch, size, size, err, sizeof err)) die("bench: %s", err);

    Rng rng;
    rng_seed(&rng, 1);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    model_init_host(m, &rng, params, stats);
    model_set_weights(m, params, stats);
    size_t in_floats = (size_t)batch * 3 * size * size;
    float *x = xmalloc(in_floats * sizeof(float));
    int32_t *labels = xmalloc((size_t)batch * sizeof(int32_t));
    for (size_t i = 0; i < in_floats; i++) x[i] = rng_normal(&rng);
    for (int i = 0; i < batch; i++) labels[i] = (int32_t)rng_below(&rng, (uint32_t)classes);

    AdamWArgs adam = {1e-3f, 0.9f, 0.99f, 1e-5f, 0.01f, 0};
    double t0 = 0;
    float loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) {
            be->ops->sync(be);
            t0 = now_seconds();
        }
        model_forward(m, x, batch, size, size, 1);
        loss = model_loss(m, labels, 0.0f);
        model_backward(m);
        adam.step = s + 1;
        optim_adamw_step(m, &adam);
    }
    be->ops->sync(be);
    double dt = now_seconds() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("bench model=%s device=%s size=%d batch=%d steps=%d img_per_s=%.1f step_ms=%.1f "
           "peak_backend_mib=%.0f peak_rss_mib=%.0f loss=%.4f threads=%d\n",
           m->arch, be->ops->name, size, batch, steps, steps * batch / dt, 1e3 * dt / steps,
           (double)be->peak_bytes / 1048576.0, (double)ru.ru_maxrss / 1024.0, loss, be->threads);
    free(x);
    free(labels);
    free(params);
    free(stats);
    model_free(m);
    backend_destroy(be);
    return 0;
}
