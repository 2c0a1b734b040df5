/* gpu_train.c: the whole training step on the GPU against the cpu backend: xresnet18 trained with
 * AdamW for 50 steps on both backends, from the same initial weights, on the same generated batches
 * (synth_batch, fixed seed), in fp32, then bf16, then fp16 with dynamic loss scaling on the GPU.
 * The cpu backend (fp32) gives the reference loss curve. Plain C like gpu_parity; exits 0 with a
 * "skipped" line when no GPU is usable. CNNTRAIN_GPU_QUICK=1 (the compute-sanitizer pass) runs 5
 * steps of a smaller batch and checks only what 5 steps can show.
 *
 * What is checked, and why these bounds:
 * - fp32, step by step. The first loss comes from identical weights and inputs, so it differs only
 *   by summation order: relative difference <= 1e-4. Later steps follow weights that drift apart
 *   by rounding, amplified a little by Adam's normalisation: relative difference <= 2e-2 at every
 *   step.
 * - bf16 and fp16: looser, since every activation carries 8 (bf16) or 11 (fp16) significant bits.
 *   First loss within 3e-2 (bf16) / 1e-2 (fp16) relative; over the whole run the mean absolute
 *   difference <= 10% of the mean reference loss; and the GPU's own loss must fall: the mean of the
 *   last 5 steps below 85% of the mean of the first 5 (the reference falls well below that; the
 *   test prints both curves).
 * - fp16 loss scaling as the trainer does it (train/step.c, train/scaler.c), from 2^10: skip the
 *   step and halve the scale when a gradient is not finite (it grows only after 2000 good steps). At most 3 skipped
 *   steps; in fp32 and bf16 (scale 1) every gradient must be finite.
 * - every parameter finite at the end. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "net/model.h"
#include "net/optim.h"
#include "train/step.h"
#include "base/rng.h"
#include "suite.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

static int ncases, nfailed;

/* One line per check: the verdict, what was checked, and the measured value against its bound. */
static void check(const char *name, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(const char *name, int ok, const char *fmt, ...) {
    ncases++;
    if (!ok) nfailed++;
    printf("%s %-64s ", ok ? "PASS" : "FAIL", name);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

typedef struct {
    int steps, batch, size;
    const float *params, *stats; /* initial weights (host) */
} Setup;

typedef struct {
    float *loss;        /* per step; NAN for a skipped step */
    int skipped;        /* steps skipped for non-finite gradients */
    int nonfinite_params;
    double seconds;
} Curve;

/* Trains a fresh xresnet18 on be (already in its precision) and records the loss of every step. */
static int train(Backend *be, const Setup *su, Curve *out, char *err, size_t errlen) {
    Model *m = model_build("xresnet18", SYNTH_CLASSES, err, errlen);
    if (!m) return -1;
    if (model_attach(m, be, su->batch, su->size, su->size, err, errlen)) {
        model_free(m);
        return -1;
    }
    model_set_weights(m, su->params, su->stats);
    Rng data;
    rng_seed(&data, 1234); /* the same batches on every backend */
    float *x = xmalloc((size_t)su->batch * 3 * su->size * su->size * sizeof(float));
    int32_t *labels = xmalloc((size_t)su->batch * sizeof(int32_t));
    int fp16 = be->compute == DT_F16;
    /* the trainer's step and scaler (a skipped step is not applied; it still counts here) */
    GradScaler scaler = scaler_make(fp16, fp16 ? 1024.0f : 1.0f);
    Optimizer *opt = optim_new(m);
    Stepper *stepper = step_new(m, opt, &scaler, NULL, STEP_READ_NOW);
    out->skipped = 0;
    double t0 = now_seconds();
    for (int s = 0; s < su->steps; s++) {
        synth_batch(&data, su->batch, su->size, x, labels);
        /* fastai's Adam defaults, constant lr */
        StepArgs a = {.x = x, .labels = labels, .n = su->batch, .size = su->size, .index = s,
                      .hyper = {1e-3f, 0.9f, 0.99f, 1e-5f, 0.01f}};
        StepReport r = step_run(stepper, &a);
        out->loss[s] = r.loss;
        out->skipped += r.verdict != SCALER_APPLY;
    }
    be->ops->sync(be);
    step_free(stepper);
    optim_free(opt);
    out->seconds = now_seconds() - t0;
    float *p = xmalloc(m->param_floats * sizeof(float));
    model_get_weights(m, p, NULL);
    out->nonfinite_params = 0;
    for (size_t i = 0; i < m->param_floats; i++) out->nonfinite_params += !isfinite(p[i]);
    free(p);
    free(x);
    free(labels);
    model_detach(m);
    model_free(m);
    return 0;
}

static double mean(const float *v, int from, int to) {
    double s = 0;
    for (int i = from; i < to; i++) s += v[i];
    return s / (to - from);
}

/* tf32: fp32 convolutions the backend could only run on TF32 tensor cores (Backend.tf32_ops): the
 * first fp32 loss then carries TF32's rounding (10 significand bits, as fp16), so it gets fp16's bound. */
static void compare(const char *label, DType dt, const Setup *su, const Curve *ref, const Curve *got, int quick,
                    int tf32) {
    char name[160];
    int n = su->steps;
    double first = fabs((double)got->loss[0] - ref->loss[0]) / ref->loss[0];
    double first_tol = dt == DT_F32 ? (tf32 ? 1e-2 : 1e-4) : dt == DT_F16 ? 1e-2 : 3e-2;
    snprintf(name, sizeof name, "%s: first loss (same weights, same batch)%s", label,
             dt == DT_F32 && tf32 ? " [TF32 convs]" : "");
    check(name, first <= first_tol, "rel diff %.2e (tol %.0e)", first, first_tol);

    int finite = 1;
    for (int s = 0; s < n; s++) finite &= isfinite(got->loss[s]);
    snprintf(name, sizeof name, "%s: every loss finite", label);
    check(name, finite, "%s", finite ? "" : "a loss is inf or NaN");
    snprintf(name, sizeof name, "%s: every parameter finite at the end", label);
    check(name, got->nonfinite_params == 0, "%d not finite", got->nonfinite_params);
    int max_skip = dt == DT_F16 ? 3 : 0;
    snprintf(name, sizeof name, "%s: steps skipped for non-finite gradients", label);
    check(name, got->skipped <= max_skip, "%d (at most %d)", got->skipped, max_skip);

    if (dt == DT_F32) {
        double worst = 0;
        for (int s = 0; s < n; s++) {
            double r = fabs((double)got->loss[s] - ref->loss[s]) / ref->loss[s];
            if (!(r <= worst)) worst = r;
        }
        snprintf(name, sizeof name, "%s: loss at every step", label);
        check(name, worst <= 2e-2, "max rel diff %.2e (tol %.0e)", worst, 2e-2);
    } else {
        double d = 0;
        for (int s = 0; s < n; s++) d += fabs((double)got->loss[s] - ref->loss[s]);
        d /= n;
        double rel = d / mean(ref->loss, 0, n);
        snprintf(name, sizeof name, "%s: mean |loss - fp32 cpu loss| / mean loss", label);
        check(name, rel <= 0.10, "%.3f (tol %.2f)", rel, 0.10);
    }
    if (!quick) {
        double a = mean(got->loss, 0, 5), b = mean(got->loss, n - 5, n);
        snprintf(name, sizeof name, "%s: loss falls (mean of last 5 steps / first 5)", label);
        check(name, b < 0.85 * a, "%.3f (must be < %.2f)", b / a, 0.85);
    }
}

int main(int argc, char **argv) {
    static const char *const parts[] = {"fp32", "bf16", "fp16"};
    suite_args("gpu_train", argc, argv, parts, (int)(sizeof parts / sizeof parts[0]));
    char err[512];
    if (!strstr(backend_list(), "cuda")) {
        printf("gpu_train: FAIL: built without the CUDA backend (backends: %s); rebuild with make clean && make "
               "test-gpu\n",
               backend_list());
        return 1;
    }
    Backend *probe = backend_create("cuda", err, sizeof err);
    if (!probe) {
        printf("gpu_train: no usable GPU (%s); skipped\n", err);
        return 0;
    }
    backend_destroy(probe);
    const char *q = getenv("CNNTRAIN_GPU_QUICK");
    int quick = q && q[0] && strcmp(q, "0") != 0;

    Setup su = {quick ? 5 : 50, quick ? 8 : 32, 32, NULL, NULL};
    Model *shape = model_build("xresnet18", SYNTH_CLASSES, err, sizeof err);
    if (!shape) die("gpu_train: %s", err);
    float *params = xmalloc(shape->param_floats * sizeof(float));
    float *stats = xmalloc((shape->stat_floats + 1) * sizeof(float));
    Rng init;
    rng_seed(&init, 42);
    model_init_host(shape, &init, params, stats);
    su.params = params;
    su.stats = stats;

    Backend *cpu = backend_create("cpu", err, sizeof err);
    if (!cpu) die("gpu_train: %s", err);
    Curve ref = {xcalloc((size_t)su.steps, sizeof(float)), 0, 0, 0};
    if (train(cpu, &su, &ref, err, sizeof err)) die("gpu_train: cpu: %s", err);
    backend_destroy(cpu);

    static const struct {
        DType dt;
        const char *label;
    } runs[] = {{DT_F32, "fp32"}, {DT_BF16, "bf16"}, {DT_F16, "fp16 (loss scaling)"}};
    float *curves[3];
    for (int r = 0; r < 3; r++) {
        curves[r] = xcalloc((size_t)su.steps, sizeof(float));
        for (int s = 0; s < su.steps; s++) curves[r][s] = NAN;
        if (!suite_part(parts[r])) continue;
        free(curves[r]);
        Backend *gpu = backend_create("cuda", err, sizeof err);
        if (!gpu) die("gpu_train: %s", err);
        char name[96];
        DType got = backend_set_precision(gpu, runs[r].dt);
        snprintf(name, sizeof name, "%s: backend_set_precision", runs[r].label);
        check(name, got == runs[r].dt, "computes in %s", dtype_name(got));
        Curve c = {xcalloc((size_t)su.steps, sizeof(float)), 0, 0, 0};
        curves[r] = c.loss;
        if (got != runs[r].dt || train(gpu, &su, &c, err, sizeof err)) {
            if (got == runs[r].dt) printf("FAIL %s: %s\n", runs[r].label, err);
            nfailed++;
            backend_destroy(gpu);
            continue;
        }
        printf("     %s: %d steps in %.2fs on the GPU\n", runs[r].label, su.steps, c.seconds);
        compare(runs[r].label, runs[r].dt, &su, &ref, &c, quick, gpu->tf32_ops);
        backend_destroy(gpu);
    }

    printf("     loss curves (xresnet18, batch %d, %dx%d generated images, AdamW lr 1e-3; cpu %.1fs):\n", su.batch,
           su.size, su.size, ref.seconds);
    printf("     %5s %9s %9s %9s %9s\n", "step", "cpu fp32", "cuda fp32", "bf16", "fp16");
    for (int s = 0; s < su.steps; s++)
        if (quick || s < 5 || (s + 1) % 5 == 0)
            printf("     %5d %9.4f %9.4f %9.4f %9.4f\n", s + 1, ref.loss[s], curves[0][s], curves[1][s], curves[2][s]);

    printf("gpu_train: %d checks, %d failed\n", ncases, nfailed);
    for (int r = 0; r < 3; r++) free(curves[r]);
    free(ref.loss);
    free(params);
    free(stats);
    model_free(shape);
    return nfailed ? 1 : 0;
}
