/* cmd/bench.c: `train bench MODEL`: training images/s (forward + backward + AdamW) and peak memory,
 * at a chosen precision, on random data.
 *
 * What one timed step is: forward, loss, backward, AdamW over every parameter, on a batch that
 * is already on the device (--data device, the default), as training has it: the trainer uploads
 * uint8 images through pinned, double-buffered memory on a copy stream while the previous step
 * runs, and augments them on the device, so no step waits for an upload. The PyTorch side
 * (scripts/bench_gpu_torch.py --data device) does the same. The loss stays on the device and is
 * read after the last step. fp16 adds what dynamic loss scaling costs: the loss and an overflow
 * count of the gradients read back before each update, halving the scale and skipping the update
 * on overflow. Every step is train/step.c's, as the trainer runs it.
 * --data host charges every step an upload of a host NCHW float32 batch (pageable, reordered to
 * NHWC on the device, waited for) and a read of the loss: the worst case, for comparison.
 * --reads step waits for the device once a step (the loss and the gradients' finiteness count read
 * back), as the trainer does with dynamic loss scaling (fp16); without it the trainer reads them
 * one step late: what the wait costs is the difference to --reads end.
 *
 * Output: a human line, then `bench ...` (the keys scripts/bench_cpu.sh reads: img_per_s,
 * peak_rss_mib) and, last, one `RESULT key=value ...` line for scripts (scripts/bench_gpu.sh):
 *   RESULT model= device= size= batch= steps= warmup= precision=<requested> compute=<used>
 *          img_s= step_ms= peak_mib= peak_kind=backend_alloc rss_mib= loss= threads=
 * peak_mib is Backend.peak_bytes: the blocks the backend handed out through ops->alloc (weights,
 * gradients, Adam moments, batch-norm statistics, activations). On cuda it leaves out what the
 * backend keeps privately (the cuDNN workspace, staging and scratch buffers) and the CUDA context:
 * the backend does not expose them, so the process's whole device memory has to be read from
 * outside (scripts/bench_gpu.sh samples nvidia-smi). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cmd/cli.h"
#include "cmd/commands.h"
#include "net/model.h"
#include "net/optim.h"
#include "train/step.h"
#include "base/rng.h"
#include "base/util.h"

static int parse_precision(const char *s, DType *out) {
    static const struct {
        const char *name;
        DType dt;
    } names[] = {{"fp32", DT_F32}, {"fp16", DT_F16}, {"bf16", DT_BF16}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].dt;
            return 0;
        }
    return -1;
}

int cmd_bench(int argc, char **argv) {
    int size = 64, batch = 32, steps = 5, warmup = 1, classes = 1000;
    const char *device = "cpu", *precision = "fp32", *data = "device", *reads = "end";
    const Flag flags[] = {
        {"--size", FLAG_INT, &size, "image side (default 64)"},
        {"--batch", FLAG_INT, &batch, "batch size (default 32)"},
        {"--steps", FLAG_INT, &steps, "timed training steps (default 5)"},
        {"--warmup", FLAG_INT, &warmup, "untimed steps first (default 1; cuDNN picks its algorithms in the first)"},
        {"--classes", FLAG_INT, &classes, "classes (default 1000)"},
        {"--device", FLAG_STR, &device, "cpu, cuda or auto (default cpu)"},
        {"--precision", FLAG_STR, &precision, "fp32, fp16 or bf16 compute (default fp32; fp32 master weights; "
                                              "a backend without the dtype computes in fp32 and says so)"},
        {"--data", FLAG_STR, &data, "device (default: the batch is on the device, as training's feed has it) or "
                                    "host (upload a host float32 batch and read the loss every step)"},
        {"--reads", FLAG_STR, &reads, "end (default: the loss is read after the last step) or step (the loss and a "
                                      "finiteness count of the gradients waited for every step)"},
        {0},
    };
    const char *usage = "MODEL [--size S] [--batch B] [--steps N] [--warmup W] [--device D] [--precision P] "
                        "[--data device|host] [--reads end|step]";
    const char *pos[1];
    int npos;
    cli_parse("bench", usage, argc, argv, 2, flags, pos, 1, &npos);
    DType want;
    if (parse_precision(precision, &want)) {
        fprintf(stderr, "train bench: --precision %s: choose fp32, fp16 or bf16\n", precision);
        return 2;
    }
    int per_step_upload = !strcmp(data, "host"), per_step_reads = !strcmp(reads, "step");
    if (!per_step_upload && strcmp(data, "device")) {
        fprintf(stderr, "train bench: --data %s: choose device or host\n", data);
        return 2;
    }
    if (!per_step_reads && strcmp(reads, "end")) {
        fprintf(stderr, "train bench: --reads %s: choose end or step\n", reads);
        return 2;
    }
    if (npos != 1 || size < 1 || batch < 1 || steps < 1 || warmup < 0 || classes < 1) {
        fprintf(stderr, "train bench: give one model name and positive sizes\n");
        cli_usage("bench", usage, flags);
        return 2;
    }
    char err[512];
    Model *m = model_build(pos[0], classes, err, sizeof err);
    if (!m) die("bench: %s", err);
    Backend *be = backend_create(device, err, sizeof err);
    if (!be) die("bench: %s", err);
    DType used = backend_set_precision(be, want);
    if (used != want)
        fprintf(stderr, "train bench: %s is not available on the %s backend; computing in %s\n", dtype_name(want),
                be->ops->name, dtype_name(used));
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

    /* fp16: dynamic loss scaling as the trainer does it (scaler.h) */
    GradScaler scaler = scaler_make(used == DT_F16, used == DT_F16 ? SCALE_INIT : 1.0f);
    Optimizer *opt = optim_new(m);
    int read_now = used == DT_F16 || per_step_reads || per_step_upload;
    Stepper *stepper = step_new(m, opt, &scaler, NULL, read_now ? STEP_READ_NOW : STEP_READ_NONE);
    int skipped = 0;
    double t0 = 0;
    float loss = 0;
    StepArgs a = {.n = batch, .size = size, .hyper = {1e-3f, 0.9f, 0.99f, 1e-5f, 0.01f}};
    if (per_step_upload) {
        a.x = x;
        a.labels = labels;
    } else { /* once: the batch and its labels stay on the device */
        be->ops->tensor_upload(be, model_input(m, batch, size, size), x);
        model_labels(m, batch, labels, NULL, NULL);
    }
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) {
            be->ops->sync(be);
            t0 = now_seconds();
        }
        a.index = s;
        StepReport r = step_run(stepper, &a);
        if (r.valid) loss = r.loss;
        skipped += r.valid && r.verdict != SCALER_APPLY;
    }
    if (!read_now) loss = model_loss_read(m);
    be->ops->sync(be);
    double dt = now_seconds() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double img_s = steps * batch / dt, step_ms = 1e3 * dt / steps;
    double peak_mib = (double)be->peak_bytes / 1048576.0, rss_mib = (double)ru.ru_maxrss / 1024.0;
    if (!isfinite(loss)) fprintf(stderr, "train bench: warning: the last loss is %g\n", loss);
    printf("%s on %s, %s compute%s, batch %d at %dx%d: %.1f images/s (%.1f ms a step, %d steps after %d warm-up), "
           "peak %.0f MiB through the backend's allocator%s, peak RSS %.0f MiB\n",
           m->arch, be->ops->name, dtype_name(used), used != want ? " (fp32 fallback)" : "", batch, size, size, img_s,
           step_ms, steps, warmup, peak_mib,
           strcmp(be->ops->name, "cpu") ? " (not counting the backend's private cuDNN workspace and scratch buffers, "
                                          "nor the CUDA context: not exposed)"
                                        : "",
           rss_mib);
    if (skipped) printf("%d steps skipped (inf/NaN loss or gradients); loss scale now %g\n", skipped, (double)scaler.scale);
    printf("bench model=%s device=%s size=%d batch=%d steps=%d img_per_s=%.1f step_ms=%.1f "
           "peak_backend_mib=%.0f peak_rss_mib=%.0f loss=%.4f threads=%d\n",
           m->arch, be->ops->name, size, batch, steps, img_s, step_ms, peak_mib, rss_mib, loss, be->threads);
    printf("RESULT model=%s device=%s size=%d batch=%d steps=%d warmup=%d precision=%s compute=%s data=%s reads=%s "
           "img_s=%.1f step_ms=%.2f peak_mib=%.0f peak_kind=backend_alloc rss_mib=%.0f loss=%.4f skipped=%d "
           "threads=%d\n",
           m->arch, be->ops->name, size, batch, steps, warmup, dtype_name(want), dtype_name(used), data, reads, img_s,
           step_ms, peak_mib, rss_mib, loss, skipped, be->threads);
    step_free(stepper);
    optim_free(opt);
    free(x);
    free(labels);
    free(params);
    free(stats);
    model_free(m);
    backend_destroy(be);
    return 0;
}
