/* cmd/smoke.c: `train smoke`: a short one-cycle training run on generated images that needs no
 * download: the quickest proof that build, backend, model, optimizer and checkpoints work. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/checkpoint.h"
#include "ckpt/safetensors.h"
#include "cmd/cli.h"
#include "cmd/commands.h"
#include "net/model.h"
#include "base/rng.h"
#include "train/schedule.h"
#include "train/scores.h"
#include "train/step.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

/* Accuracy on n generated images drawn from their own stream (never seen in training). */
static float evaluate(Model *m, Rng *rng, int n, int batch, int size, float *x, int32_t *labels, float *logits) {
    int correct = 0;
    for (int done = 0; done < n; done += batch) {
        int b = n - done < batch ? n - done : batch;
        synth_batch(rng, b, size, x, labels);
        const Tensor *out = model_forward(m, x, b, size, size, 0);
        m->be->ops->tensor_download(m->be, logits, out);
        for (int i = 0; i < b; i++) correct += argmax(logits + (size_t)i * m->classes, m->classes) == labels[i];
    }
    return (float)correct / (float)n;
}

int cmd_smoke(int argc, char **argv) {
    const char *arch = "xresnet18", *device = "auto", *out = "runs/smoke";
    int steps = 300, batch = 32, size = 32, seed = 42, valid = 512;
    float lr = 3e-3f;
    const Flag flags[] = {
        {"--model", FLAG_STR, &arch, "architecture (default xresnet18)"},
        {"--steps", FLAG_INT, &steps, "training steps (default 300)"},
        {"--batch", FLAG_INT, &batch, "batch size (default 32)"},
        {"--size", FLAG_INT, &size, "image side (default 32)"},
        {"--lr", FLAG_FLOAT, &lr, "one-cycle peak learning rate (default 3e-3)"},
        {"--seed", FLAG_INT, &seed, "random seed (default 42)"},
        {"--valid", FLAG_INT, &valid, "held-out images for the accuracy (default 512)"},
        {"--device", FLAG_STR, &device, "auto, cpu or cuda (default auto)"},
        {"--out", FLAG_STR, &out, "folder for the checkpoint (default runs/smoke)"},
        {0},
    };
    const char *pos[1];
    int npos;
    cli_parse("smoke", "[options]", argc, argv, 2, flags, pos, 0, &npos);
    if (steps < 1 || batch < 1 || size < 8 || valid < 1) die("smoke: steps, batch, valid must be positive and size >= 8");

    char err[512], path[1024];
    /* The checkpoint's place is checked before any work: a file there is replaced only when an
     * earlier `train smoke` wrote it (nothing of the user's is lost), and the user is told. */
    if (snprintf(path, sizeof path, "%s/final.safetensors", out) >= (int)sizeof path) die("smoke: --out %s: too long", out);
    int replacing = !access(path, F_OK);
    if (replacing) {
        StFile prev;
        const char *task = NULL;
        if (!st_read_header(path, &prev, err, sizeof err)) {
            task = st_meta(&prev, "task");
            replacing = task && !strncmp(task, "smoke", 5);
            st_close(&prev);
        } else {
            replacing = 0;
        }
        if (!replacing)
            die("smoke: %s exists and was not written by train smoke: not replaced (give --out another folder)", path);
    }
    Model *m = model_build(arch, SYNTH_CLASSES, err, sizeof err);
    if (!m) die("smoke: %s", err);
    Backend *be = backend_create(device, err, sizeof err);
    if (!be) die("smoke: %s", err);
    if (model_attach(m, be, batch, size, size, err, sizeof err)) die("smoke: %s", err);

    Rng root, init, train_rng, valid_rng;
    rng_seed(&root, (uint64_t)seed);
    init = rng_split(&root, 1);
    train_rng = rng_split(&root, 2);
    valid_rng = rng_split(&root, 3);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    model_init_host(m, &init, params, stats);
    model_set_weights(m, params, stats);

    float *x = xmalloc((size_t)batch * 3 * size * size * sizeof(float));
    int32_t *labels = xmalloc((size_t)batch * sizeof(int32_t));
    float *logits = xmalloc((size_t)batch * m->classes * sizeof(float));
    printf("smoke: %s on %s, %d step%s of %d generated %dx%d images (%d classes), one-cycle lr %g\n", m->arch,
           be->ops->name, steps, steps == 1 ? "" : "s", batch, size, size, SYNTH_CLASSES, lr);
    printf("%8s %10s %10s %8s\n", "step", "loss", "lr", "time");
    OneCycle sched = one_cycle_default(lr);
    Optimizer *opt = optim_new(m);
    GradScaler scale = scaler_make(0, 1.0f);
    Stepper *stepper = step_new(m, opt, &scale, NULL, STEP_READ_NOW);
    double t0 = now_seconds();
    float smooth = 0;
    for (int s = 0; s < steps; s++) {
        float pos_in_cycle = (float)s / (float)steps;
        synth_batch(&train_rng, batch, size, x, labels);
        StepArgs a = {.x = x, .labels = labels, .n = batch, .size = size, .index = s};
        a.hyper = (OptimHyper){one_cycle_lr(&sched, pos_in_cycle), one_cycle_mom(&sched, pos_in_cycle), 0.99f, 1e-5f, 0.01f};
        StepReport r = step_run(stepper, &a);
        if (r.verdict != SCALER_APPLY)
            die("smoke: step %d: the loss is %g and %llu gradient values are inf or NaN; stopping (lower --lr?)", s + 1,
                (double)r.loss, (unsigned long long)r.bad);
        /* fastai's smoothed loss: exponential average with debiasing */
        smooth = 0.98f * smooth + 0.02f * r.loss;
        if ((s + 1) % 50 == 0 || s + 1 == steps)
            printf("%8d %10.4f %10.2e %7.1fs\n", s + 1, smooth / (1.0f - powf(0.98f, (float)(s + 1))), a.hyper.lr,
                   now_seconds() - t0);
    }
    step_free(stepper);
    optim_free(opt);
    float acc = evaluate(m, &valid_rng, valid, batch, size, x, labels, logits);
    printf("accuracy on %d held-out images: %.1f%% (chance %.0f%%)\n", valid, 100.0f * acc, 100.0f / SYNTH_CLASSES);

    if (make_dirs(out)) die("smoke: cannot create the folder %s: %s", out, strerror(errno));
    model_get_weights(m, params, stats);
    char acc_text[32];
    snprintf(acc_text, sizeof acc_text, "%.4f", acc);
    const char *meta[] = {"task", "smoke (generated shapes)", "accuracy", acc_text, NULL};
    if (ckpt_save(path, m, params, stats, meta, err, sizeof err)) die("smoke: %s", err);
    printf("checkpoint: %s%s\n", path, replacing ? " (replacing the previous smoke run's)" : "");

    free(x);
    free(labels);
    free(logits);
    free(params);
    free(stats);
    model_free(m);
    backend_destroy(be);
    return 0;
}
