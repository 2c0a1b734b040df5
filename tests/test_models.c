/* test_models.c: model builders and the graph executor on the CPU backend: parameter counts,
 * shapes, FLOPs, freezing, training. Whole-model gradients are checked against PyTorch in
 * test_parity.c (a finite-difference check of a whole ReLU net in fp32 is too noisy to be strict). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ckpt/checkpoint.h"
#include "models.h"
#include "net/optim.h"
#include "base/rng.h"
#include "ckpt/safetensors.h"
#include "train/schedule.h"
#include "train/step.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

static Model *build(const char *name, int classes) {
    char err[256];
    Model *m = model_build(name, classes, err, sizeof err);
    if (!m) fail_msg("%s", err);
    return m;
}

static void test_torchvision_param_counts(void **state) {
    (void)state;
    /* sum(p.numel() for p in torchvision.models.<name>().parameters()) */
    const struct { const char *name; size_t count; } known[] = {
        {"resnet18", 11689512}, {"resnet34", 21797672}, {"resnet50", 25557032}, {"resnet101", 44549160}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        Model *m = build(known[i].name, 1000);
        assert_int_equal(model_param_count(m), known[i].count);
        model_free(m);
    }
}

static void test_unknown_model_lists_choices(void **state) {
    (void)state;
    char err[512];
    assert_null(model_build("resnet51", 10, err, sizeof err));
    assert_non_null(strstr(err, "resnet51"));
    assert_non_null(strstr(err, "xresnet50"));
    assert_null(model_build("resnet50", 0, err, sizeof err));
    assert_non_null(strstr(err, "classes"));
}

static void test_shapes_and_flops(void **state) {
    (void)state;
    char err[256];
    Model *m = build("resnet50", 1000);
    Shape *s = xmalloc((size_t)m->nvalues * sizeof *s);
    assert_int_equal(model_shapes(m, 224, 224, s, err, sizeof err), 0);
    /* the value entering global pooling is 2048x7x7; the logits 1000x1x1 */
    const Node *gap = NULL;
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].op == OP_GAP) gap = &m->nodes[i];
    assert_non_null(gap);
    assert_int_equal(s[gap->in0].c, 2048);
    assert_int_equal(s[gap->in0].h, 7);
    assert_int_equal(s[m->nvalues - 1].c, 1000);
    /* torchvision resnet50 at 224: 4.09 G multiply-adds (conv + fc) */
    double macs = model_flops(m, 224, 224) / 2;
    assert_true(fabs(macs - 4.0895e9) < 0.01e9);
    free(s);
    model_free(m);

    /* Every input side from 17 to 130 must give residual joins of equal size (ceil-mode
     * average pool on the xresnet shortcut, 1x1 stride-2 conv on torchvision's). */
    const char *names[] = {"xresnet18", "xresnet50", "resnet18", "resnet50"};
    for (int k = 0; k < 4; k++) {
        m = build(names[k], 10);
        s = xmalloc((size_t)m->nvalues * sizeof *s);
        for (int side = 17; side <= 130; side++) {
            if (model_shapes(m, side, side + 3, s, err, sizeof err)) fail_msg("%s at %d: %s", names[k], side, err);
        }
        free(s);
        model_free(m);
    }
}

/* A small bottleneck xresnet with every kind of node, gammas randomised (the zero-init ones
 * would hide the gradient of everything before them). */
static Model *tiny_model(Backend *be, int batch, int side, float **params_out) {
    ArchSpec spec = {4, {1, 1, 1, 1}, {4, 4, 8}, {2, 4, 4, 6}};
    Model *m = xresnet_build("tiny", 3, &spec);
    char err[256];
    if (model_attach(m, be, batch, side, side, err, sizeof err)) fail_msg("%s", err);
    Rng rng;
    rng_seed(&rng, 7);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    model_init_host(m, &rng, params, stats);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        if (p->kind == P_BN_WEIGHT || p->kind == P_BN_BIAS)
            for (size_t j = 0; j < p->count; j++)
                params[p->offset + j] = (p->kind == P_BN_WEIGHT ? 1.0f : 0.0f) + 0.3f * rng_normal(&rng);
    }
    model_set_weights(m, params, stats);
    free(stats);
    *params_out = params;
    return m;
}

static double loss_at(Model *m, const float *x, const int32_t *y, int n, int side) {
    model_forward(m, x, n, side, side, 1);
    return model_loss(m, y, 0.1f);
}

static void test_frozen_body_gets_no_gradient(void **state) {
    (void)state;
    char err[256];
    Backend *be = backend_create("cpu", err, sizeof err);
    const int n = 2, side = 16;
    float *params;
    Model *m = tiny_model(be, n, side, &params);
    Rng rng;
    rng_seed(&rng, 5);
    float *x = xmalloc((size_t)n * 3 * side * side * sizeof(float));
    for (int i = 0; i < n * 3 * side * side; i++) x[i] = rng_normal(&rng);
    int32_t y[2] = {1, 2};
    size_t bytes = m->param_floats * sizeof(float);
    float *full = xmalloc(bytes), *head_only = xmalloc(bytes);

    loss_at(m, x, y, n, side);
    model_backward(m);
    be->ops->download(be, full, m->grads_d, bytes);

    /* Freeze all but the linear head; poison the gradients to see which are written. */
    for (int i = 0; i < m->nparams; i++) m->params[i].trainable = m->params[i].kind == P_LINEAR_WEIGHT || m->params[i].kind == P_LINEAR_BIAS;
    for (size_t i = 0; i < m->param_floats; i++) head_only[i] = 1234.5f;
    be->ops->upload(be, m->grads_d, head_only, bytes);
    model_set_weights(m, params, NULL);
    loss_at(m, x, y, n, side);
    model_backward(m);
    be->ops->download(be, head_only, m->grads_d, bytes);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        for (size_t j = 0; j < p->count; j++) {
            float g = head_only[p->offset + j];
            if (p->kind == P_CONV_WEIGHT) assert_true(g == 1234.5f); /* untouched: its backward was skipped */
            if (p->trainable) assert_true(fabsf(g - full[p->offset + j]) <= 1e-5f * (1 + fabsf(full[p->offset + j])));
        }
    }
    free(x);
    free(full);
    free(head_only);
    free(params);
    model_free(m);
    backend_destroy(be);
}

static const Param *param_named(const Model *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    fail_msg("%s has no parameter %s", m->arch, name);
    return NULL;
}

/* fastai's cnn_learner model: parameter groups as fastai's splitters, create_head's init. */
static void test_cnn_learner_groups_and_init(void **state) {
    (void)state;
    const struct { const char *arch, *name; int group; } groups[] = {
        {"resnet18_fastai_head", "0.0.weight", 0},          {"resnet18_fastai_head", "0.5.1.conv2.weight", 0},
        {"resnet18_fastai_head", "0.6.0.conv1.weight", 1},  {"resnet18_fastai_head", "0.7.1.bn2.bias", 1},
        {"resnet18_fastai_head", "1.2.weight", 2},          {"resnet18_fastai_head", "1.8.weight", 2},
        {"xresnet18_fastai_head", "0.2.1.weight", 0},       {"xresnet18_fastai_head", "0.4.0.convpath.0.0.weight", 1},
        {"xresnet18_fastai_head", "1.4.weight", 2},         {"resnet18", "fc.weight", 0},
    };
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        Model *m = build(groups[i].arch, 10);
        assert_int_equal(m->ngroups, strstr(groups[i].arch, "_fastai_head") ? 3 : 1);
        if (param_named(m, groups[i].name)->group != groups[i].group)
            fail_msg("%s %s: group %d, fastai's split says %d", groups[i].arch, groups[i].name,
                     param_named(m, groups[i].name)->group, groups[i].group);
        model_free(m);
    }

    Model *m = build("resnet18_fastai_head", 10);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    Rng rng;
    rng_seed(&rng, 9);
    model_init_host(m, &rng, params, stats);
    const Param *bn = param_named(m, "1.2.weight"), *bias = param_named(m, "1.2.bias"), *lin = param_named(m, "1.4.weight");
    for (size_t j = 0; j < bn->count; j++) assert_true(params[bn->offset + j] == 1.0f && params[bias->offset + j] == 1e-3f);
    double ss = 0;
    for (size_t j = 0; j < lin->count; j++) ss += (double)params[lin->offset + j] * params[lin->offset + j];
    double std = sqrt(ss / lin->count), want = sqrt(2.0 / 1024); /* Kaiming normal, fan_in 2*512 */
    if (fabs(std / want - 1) > 0.01) fail_msg("1.4.weight std %g, Kaiming fan_in wants %g", std, want);
    const Param *conv = param_named(m, "0.7.1.conv2.weight"); /* the body keeps torchvision's fan_out init */
    ss = 0;
    for (size_t j = 0; j < conv->count; j++) ss += (double)params[conv->offset + j] * params[conv->offset + j];
    assert_true(fabs(sqrt(ss / conv->count) / sqrt(2.0 / (512 * 9)) - 1) < 0.01);
    free(params);
    free(stats);
    model_free(m);
}

/* Dropout through the executor: a seed gives one mask (kept for the backward even if the trainer
 * moves the seed on), another seed another; eval mode ignores the seed; dropout and the head's
 * ReLU run in place; with the body frozen (fastai's freeze, batch norms aside) no body
 * convolution's backward runs. */
static void test_cnn_learner_dropout_and_freeze(void **state) {
    (void)state;
    char err[256];
    Backend *be = backend_create("cpu", err, sizeof err);
    Model *m = build("xresnet_tiny_fastai_head", 3);
    const int n = 4, side = 32, nl = n * 3;
    assert_int_equal(model_attach(m, be, n, side, side, err, sizeof err), 0);
    for (int i = 0; i < m->nnodes; i++) {
        const Node *nd = &m->nodes[i];
        if (nd->op == OP_DROPOUT || (nd->op == OP_RELU && nd->in0 > 0 && m->nodes[nd->in0 - 1].op == OP_LINEAR))
            assert_ptr_equal(m->act[nd->out].data, m->act[nd->in0].data);
    }
    Rng rng;
    rng_seed(&rng, 11);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    model_init_host(m, &rng, params, stats);
    size_t bytes = m->param_floats * sizeof(float);
    float *x = xmalloc((size_t)n * 3 * side * side * sizeof(float)), a[12], b[12], c[12];
    float *g1 = xmalloc(bytes), *g2 = xmalloc(bytes);
    for (int i = 0; i < n * 3 * side * side; i++) x[i] = rng_normal(&rng);
    int32_t y[4] = {0, 1, 2, 1};

    /* same seed: same logits and gradients, whatever dropout_seed says by the time of backward */
    const int train = 1;
    for (int k = 0; k < 2; k++) {
        model_set_weights(m, params, stats);
        m->dropout_seed = 7;
        be->ops->tensor_download(be, k ? b : a, model_forward(m, x, n, side, side, train));
        model_loss(m, y, 0.0f);
        m->dropout_seed = 8 + (uint64_t)k; /* the next step's seed, set early */
        model_backward(m);
        be->ops->download(be, k ? g2 : g1, m->grads_d, bytes);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(g1, g2, bytes);
    model_set_weights(m, params, stats);
    m->dropout_seed = 8;
    be->ops->tensor_download(be, c, model_forward(m, x, n, side, side, train));
    assert_true(memcmp(a, c, sizeof a) != 0);
    /* eval: the seed does not matter */
    be->ops->tensor_download(be, a, model_forward(m, x, n, side, side, 0));
    m->dropout_seed = 99;
    be->ops->tensor_download(be, b, model_forward(m, x, n, side, side, 0));
    assert_memory_equal(a, b, nl * sizeof(float));

    /* fastai's freeze: the last group and every batch norm train */
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        p->trainable = p->group == m->ngroups - 1 || p->kind == P_BN_WEIGHT || p->kind == P_BN_BIAS;
    }
    for (size_t i = 0; i < m->param_floats; i++) g2[i] = 1234.5f;
    be->ops->upload(be, m->grads_d, g2, bytes);
    model_set_weights(m, params, stats);
    m->dropout_seed = 7;
    model_forward(m, x, n, side, side, train);
    model_loss(m, y, 0.0f);
    model_backward(m);
    be->ops->download(be, g2, m->grads_d, bytes);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        for (size_t j = 0; j < p->count; j++) {
            float g = g2[p->offset + j], full = g1[p->offset + j];
            if (!p->trainable) assert_true(g == 1234.5f); /* a frozen conv's backward never ran */
            else assert_true(fabsf(g - full) <= 1e-5f * (1 + fabsf(full)));
        }
    }
    free(x);
    free(g1);
    free(g2);
    free(params);
    free(stats);
    model_free(m);
    backend_destroy(be);
}

static void test_training_learns_generated_shapes(void **state) {
    (void)state;
    char err[256];
    Backend *be = backend_create("cpu", err, sizeof err);
    ArchSpec spec = {1, {1, 1, 1, 1}, {8, 8, 16}, {16, 32, 64, 128}};
    Model *m = xresnet_build("xresnet-small", SYNTH_CLASSES, &spec);
    const int batch = 32, side = 32, steps = 160;
    assert_int_equal(model_attach(m, be, batch, side, side, err, sizeof err), 0);
    Rng rng;
    rng_seed(&rng, 3);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    model_init_host(m, &rng, params, stats);
    model_set_weights(m, params, stats);
    float *x = xmalloc((size_t)batch * 3 * side * side * sizeof(float)), logits[32 * SYNTH_CLASSES];
    int32_t y[32];
    OneCycle sched = one_cycle_default(5e-3f);
    Optimizer *opt = optim_new(m);
    GradScaler scale = scaler_make(0, 1.0f);
    Stepper *stepper = step_new(m, opt, &scale, NULL, STEP_READ_NOW);
    float first = 0, last = 0;
    for (int s = 0; s < steps; s++) {
        float pos = (float)s / steps;
        synth_batch(&rng, batch, side, x, y);
        StepArgs a = {.x = x, .labels = y, .n = batch, .size = side, .index = s};
        a.hyper = (OptimHyper){one_cycle_lr(&sched, pos), one_cycle_mom(&sched, pos), 0.99f, 1e-5f, 0.01f};
        StepReport r = step_run(stepper, &a);
        assert_int_equal(r.verdict, SCALER_APPLY);
        if (s < 10) first += r.loss / 10;
        if (s >= steps - 10) last += r.loss / 10;
    }
    step_free(stepper);
    optim_free(opt);
    int correct = 0, total = 0;
    for (int b = 0; b < 8; b++) {
        synth_batch(&rng, batch, side, x, y);
        be->ops->tensor_download(be, logits, model_forward(m, x, batch, side, side, 0));
        for (int i = 0; i < batch; i++, total++) {
            int best = 0;
            for (int c = 1; c < SYNTH_CLASSES; c++)
                if (logits[i * SYNTH_CLASSES + c] > logits[i * SYNTH_CLASSES + best]) best = c;
            correct += best == y[i];
        }
    }
    float acc = (float)correct / total;
    printf("generated shapes: loss %.3f -> %.3f, held-out accuracy %.1f%%\n", first, last, 100 * acc);
    assert_true(last < 0.5f * first);
    assert_true(acc > 0.6f);
    free(x);
    free(params);
    free(stats);
    model_free(m);
    backend_destroy(be);
}

/* ---------------------------------------------------------------- against fastai itself */
/* tests/ref/fastai_models.txt and fastai_init.safetensors come from fastai's own classes
 * (scripts/fastai_reference_models.py, run with the reference venv). */

#define REF_DIR "tests/ref/"

/* Our model as ckpt_save writes it (the file a PyTorch user loads with load_state_dict), read back
 * header and data. */
static void export_state_dict(const Model *m, const float *params, const float *stats, StFile *out) {
    char path[] = "/tmp/cnn_test_models_XXXXXX", err[512];
    int fd = mkstemp(path);
    if (fd < 0) fail_msg("mkstemp failed");
    close(fd);
    if (ckpt_save(path, m, params, stats, NULL, err, sizeof err)) fail_msg("%s", err);
    if (st_read(path, out, err, sizeof err)) fail_msg("%s", err);
    unlink(path);
}

/* "resnet50 1000 25557032" in param_counts.txt, or -1 */
static long long param_counts_line(const char *name, int classes) {
    FILE *fp = fopen(REF_DIR "param_counts.txt", "r");
    if (!fp) fail_msg(REF_DIR "param_counts.txt is missing");
    char line[256], n[64];
    int c;
    long long v, found = -1;
    while (fgets(line, sizeof line, fp))
        if (line[0] != '#' && sscanf(line, "%63s %d %lld", n, &c, &v) == 3 && !strcmp(n, name) && c == classes) found = v;
    fclose(fp);
    return found;
}

/* Every state_dict name and shape, in order, and the parameter count of fastai's xresnet18/34/50,
 * torchvision's resnet18/50 and vision_learner's xresnet50 / resnet50 models = ours, as saved. */
static void test_fastai_state_dict_names(void **state) {
    (void)state;
    FILE *fp = fopen(REF_DIR "fastai_models.txt", "r");
    if (!fp) fail_msg(REF_DIR "fastai_models.txt is missing (scripts/fastai_reference_models.py)");
    char line[512];
    int nmodels = 0, bad = 0;
    while (fgets(line, sizeof line, fp)) {
        char name[64];
        int classes, ntensors;
        long long want;
        if (line[0] == '#') continue;
        if (sscanf(line, "model %63s %d %lld %d", name, &classes, &want, &ntensors) != 4)
            fail_msg("fastai_models.txt: expected a model line, got %s", line);
        Model *m = build(name, classes);
        float *params = calloc(m->param_floats + 1, sizeof *params), *stats = calloc(m->stat_floats + 1, sizeof *stats);
        StFile f;
        export_state_dict(m, params, stats, &f);
        if ((long long)model_param_count(m) != want) {
            print_error("%s: %zu parameters, fastai %lld\n", name, model_param_count(m), want);
            bad++;
        }
        /* and param_counts.txt says the same */
        assert_true(param_counts_line(name, classes) == want);
        if (f.count != ntensors) {
            print_error("%s: %d tensors in our state dict, fastai's has %d\n", name, f.count, ntensors);
            bad++;
        }
        for (int i = 0; i < ntensors; i++) {
            if (!fgets(line, sizeof line, fp)) fail_msg("fastai_models.txt ends inside %s", name);
            char tname[160], *s = line;
            int len;
            if (sscanf(s, "%159s%n", tname, &len) != 1) fail_msg("fastai_models.txt: bad line %s", line);
            s += len;
            int64_t shape[8];
            int ndim = 0;
            for (char *end; ndim < 8; s = end) {
                long d = strtol(s, &end, 10);
                if (end == s) break;
                shape[ndim++] = d;
            }
            if (i >= f.count) continue;
            const StTensor *t = &f.tensors[i];
            int same = !strcmp(t->name, tname) && t->ndim == ndim;
            for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
            if (!same) {
                if (bad++ < 10) print_error("%s: tensor %d is %s (%d dims), fastai's %s (%d dims)\n", name, i, t->name,
                                            t->ndim, tname, ndim);
            }
        }
        printf("%-24s %5d classes: %4d tensors, %11zu parameters as fastai's\n", name, classes, f.count,
               model_param_count(m));
        st_close(&f);
        free(params);
        free(stats);
        model_free(m);
        nmodels++;
    }
    fclose(fp);
    assert_int_equal(nmodels, 7);
    assert_int_equal(bad, 0);
}

/* A fresh model from model_init_host against a fresh vision_learner model from fastai: the
 * constants exactly (batch norm weights 1, or 0 for the last of each block, biases 0 in the body
 * and 1e-3 in the head, running statistics 0 and 1, no Linear bias in the head), the random
 * weights by their spread: both fastai's sample and ours must have Kaiming normal's std
 * sqrt(2 / fan_in). A sample std has a relative error of about 1/sqrt(2n); 4 of those (n >= 216
 * here, so at most 19%) still tells fan_in from fan_out (a factor 1.63 on the 3->8 stem conv) and
 * torchvision's Linear init, uniform with bound 1/sqrt(fan_in) (a factor 2.45). */
static void fastai_init_case(const char *file) {
    char err[512], path[256];
    StFile ref;
    snprintf(path, sizeof path, REF_DIR "%s", file);
    if (st_read(path, &ref, err, sizeof err)) fail_msg("%s", err);
    ArchSpec spec = {0};
    spec.expansion = atoi(st_meta(&ref, "expansion"));
    sscanf(st_meta(&ref, "layers"), "%d,%d,%d,%d", &spec.layers[0], &spec.layers[1], &spec.layers[2], &spec.layers[3]);
    sscanf(st_meta(&ref, "stem"), "%d,%d,%d", &spec.stem[0], &spec.stem[1], &spec.stem[2]);
    sscanf(st_meta(&ref, "widths"), "%d,%d,%d,%d", &spec.widths[0], &spec.widths[1], &spec.widths[2], &spec.widths[3]);
    int classes = atoi(st_meta(&ref, "classes"));
    Model *m = !strcmp(st_meta(&ref, "arch"), "xresnet")
                   ? xresnet_build(file, classes, &spec)
                   : cnn_learner_build(file, classes, &spec, 0, atoi(st_meta(&ref, "hidden")));
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    Rng rng;
    rng_seed(&rng, 21);
    model_init_host(m, &rng, params, stats);
    StFile ours;
    export_state_dict(m, params, stats, &ours);
    assert_int_equal(ours.count, ref.count);
    int bad = 0, nstd = 0, nexact = 0;
    double worst = 0;
    for (int i = 0; i < ref.count; i++) {
        const StTensor *r = &ref.tensors[i], *o = st_find(&ours, r->name);
        if (!o) fail_msg("fastai's %s is not in our model", r->name);
        assert_int_equal(o->dtype, r->dtype);
        assert_int_equal(o->bytes, r->bytes);
        if (r->dtype != ST_F32 || r->ndim < 2) { /* constants: exactly fastai's */
            nexact++;
            if (memcmp(o->data, r->data, r->bytes)) {
                print_error("%s: initial values differ from fastai's (first: %g, fastai %g)\n", r->name,
                            r->dtype == ST_F32 ? ((const float *)o->data)[0] : 0.0,
                            r->dtype == ST_F32 ? ((const float *)r->data)[0] : 0.0);
                bad++;
            }
            continue;
        }
        size_t n = r->bytes / 4;
        double so = 0, sr = 0;
        for (size_t j = 0; j < n; j++) {
            float a, b;
            memcpy(&a, (const char *)o->data + 4 * j, 4);
            memcpy(&b, (const char *)r->data + 4 * j, 4);
            so += (double)a * a;
            sr += (double)b * b;
        }
        /* Kaiming normal with fan_in: PyTorch's [out, in(, k, k)] layout, fan_in = n / out */
        double want = sqrt(2.0 / ((double)n / (double)r->shape[0])), tol = 4 / sqrt(2.0 * (double)n);
        double ro = sqrt(so / n) / want, rr = sqrt(sr / n) / want;
        nstd++;
        if (fabs(ro - 1) > worst) worst = fabs(ro - 1);
        if (fabs(rr - 1) > tol) fail_msg("%s: fastai's std is %.3f x sqrt(2/fan_in): not Kaiming fan_in", r->name, rr);
        if (fabs(ro - 1) > tol) {
            print_error("%s: std %.3f x sqrt(2/fan_in), fastai's %.3f x (allowed 1 +- %.3f)\n", r->name, ro, rr, tol);
            bad++;
        }
    }
    printf("%s: %d tensors exactly as fastai's, %d with fastai's spread (ours worst %.1f%% off)\n", file, nexact,
           nstd, 100 * worst);
    assert_int_equal(bad, 0);
    st_close(&ours);
    st_close(&ref);
    free(params);
    free(stats);
    model_free(m);
}

static void test_fastai_init(void **state) {
    (void)state;
    fastai_init_case("fastai_init.safetensors");         /* vision_learner's model: body and head */
    fastai_init_case("fastai_init_xresnet.safetensors"); /* XResNet with its own classifier */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torchvision_param_counts),
        cmocka_unit_test(test_unknown_model_lists_choices),
        cmocka_unit_test(test_shapes_and_flops),
        cmocka_unit_test(test_frozen_body_gets_no_gradient),
        cmocka_unit_test(test_cnn_learner_groups_and_init),
        cmocka_unit_test(test_fastai_state_dict_names),
        cmocka_unit_test(test_fastai_init),
        cmocka_unit_test(test_cnn_learner_dropout_and_freeze),
        cmocka_unit_test(test_training_learns_generated_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
