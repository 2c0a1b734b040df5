/* test_parity.c: our models and backend ops against PyTorch's numbers in tests/ref/.
 *
 * The references come from scripts/torch_reference.py (op_* and resnet_* cases: torchvision;
 * `/usr/bin/python3 scripts/torch_reference.py`) and scripts/fastai_reference_models.py (xresnet_*,
 * cnn_learner_* and param_counts.txt, from fastai's own XResNet and vision_learner model;
 * `/work/main/reference-env/bin/python scripts/fastai_reference_models.py`, after the first one):
 * computed in float64 from float32 weights and inputs, so each comparison measures our own fp32
 * error only. Every tensor must satisfy ||ours - torch|| / ||torch|| <= 1e-4; the worst error of
 * each case is printed so a drift shows before it fails. Paths are relative to the repository root, where the tests run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "ckpt/checkpoint.h"
#include "net/model.h"
#include "models.h"
#include "ckpt/safetensors.h"

#define REF_DIR "tests/ref/"
#define TOL 1e-4

/* ---------------------------------------------------------------- comparison bookkeeping */

typedef struct {
    const char *label;
    double worst;
    char worst_name[128];
    int compared, failed;
} Report;

static double rel_err(const float *ours, const float *ref, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)ours[i] - (double)ref[i];
        d += e * e;
        r += (double)ref[i] * ref[i];
    }
    /* An all-zero reference (possible for a gradient) is compared in absolute terms. */
    if (r == 0) return sqrt(d);
    if (isnan(d)) return INFINITY;
    return sqrt(d / r);
}

static void check(Report *rep, const char *name, const float *ours, const float *ref, size_t n) {
    double e = rel_err(ours, ref, n);
    rep->compared++;
    if (!(e <= rep->worst) || rep->compared == 1) {
        rep->worst = e;
        snprintf(rep->worst_name, sizeof rep->worst_name, "%s", name);
    }
    if (!(e <= TOL)) {
        rep->failed++;
        print_error("%s: %s: relative error %.3g > %g\n", rep->label, name, e, TOL);
    }
}

static void report_done(const Report *rep) {
    printf("%-20s %3d tensors, worst relative error %.2e (%s)%s\n", rep->label, rep->compared, rep->worst,
           rep->worst_name, rep->failed ? "  FAILED" : "");
    if (rep->failed) fail_msg("%s: %d of %d tensors differ from PyTorch by more than %g", rep->label, rep->failed,
                              rep->compared, TOL);
}

/* ---------------------------------------------------------------- reference files */

static void open_ref(const char *file, StFile *f) {
    char path[256], err[512];
    snprintf(path, sizeof path, REF_DIR "%s", file);
    if (st_read(path, f, err, sizeof err)) fail_msg("%s (regenerate: scripts/torch_reference.py, scripts/fastai_reference_models.py)", err);
}

static const StTensor *need(const StFile *f, const char *name, StDType dt) {
    const StTensor *t = st_find(f, name);
    if (!t) fail_msg("reference has no tensor '%s'", name);
    if (t->dtype != dt) fail_msg("reference tensor '%s' is %s, expected %s", name, st_dtype_name(t->dtype), st_dtype_name(dt));
    return t;
}

static size_t st_numel(const StTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

static const float *need_f32(const StFile *f, const char *name, size_t numel) {
    const StTensor *t = need(f, name, ST_F32);
    if (st_numel(t) != numel) fail_msg("reference tensor '%s' has %zu elements, expected %zu", name, st_numel(t), numel);
    return t->data;
}

static const char *need_meta(const StFile *f, const char *key) {
    const char *v = st_meta(f, key);
    if (!v) fail_msg("reference has no metadata '%s'", key);
    return v;
}

static int meta_int(const StFile *f, const char *key) { return atoi(need_meta(f, key)); }

/* "1,2,1,1" -> n ints */
static void meta_ints(const StFile *f, const char *key, int *out, int n) {
    const char *s = need_meta(f, key);
    for (int i = 0; i < n; i++) {
        char *end;
        out[i] = (int)strtol(s, &end, 10);
        if (end == s) fail_msg("metadata %s='%s': expected %d integers", key, need_meta(f, key), n);
        s = *end == ',' ? end + 1 : end;
    }
}

/* Conv weights: PyTorch K,C,R,S <-> our K,R,S,C. */
static void kcrs_to_krsc(const float *src, float *dst, int k, int c, int r, int s) {
    for (int a = 0; a < k; a++)
        for (int b = 0; b < c; b++)
            for (int y = 0; y < r; y++)
                for (int x = 0; x < s; x++)
                    dst[(((size_t)a * r + y) * s + x) * c + b] = src[(((size_t)a * c + b) * r + y) * s + x];
}

static void krsc_to_kcrs(const float *src, float *dst, int k, int c, int r, int s) {
    for (int a = 0; a < k; a++)
        for (int b = 0; b < c; b++)
            for (int y = 0; y < r; y++)
                for (int x = 0; x < s; x++)
                    dst[(((size_t)a * c + b) * r + y) * s + x] = src[(((size_t)a * r + y) * s + x) * c + b];
}

/* The cpu backend; PARITY_BACKEND=cuda runs the same references against another backend. */
static Backend *test_backend(void) {
    char err[256];
    const char *name = getenv("PARITY_BACKEND");
    if (!name || !*name) name = "cpu";
    Backend *be = backend_create(name, err, sizeof err);
    if (!be) fail_msg("%s backend: %s", name, err);
    return be;
}

/* ---------------------------------------------------------------- model cases */

static void model_case(const char *name) {
    char file[128], err[512];
    StFile io;
    snprintf(file, sizeof file, "%s.io.safetensors", name);
    open_ref(file, &io);

    ArchSpec spec;
    memset(&spec, 0, sizeof spec);
    spec.expansion = meta_int(&io, "expansion");
    meta_ints(&io, "layers", spec.layers, 4);
    meta_ints(&io, "stem", spec.stem, 3);
    meta_ints(&io, "widths", spec.widths, 4);
    int classes = meta_int(&io, "classes");
    float smoothing = strtof(need_meta(&io, "smoothing"), NULL);
    const char *arch = need_meta(&io, "arch");
    Model *m;
    if (!strcmp(arch, "cnn_learner")) {
        /* fastai's body + create_head, dropout masks from the reference's seed */
        m = cnn_learner_build(name, classes, &spec, !strcmp(need_meta(&io, "body"), "resnet"), meta_int(&io, "hidden"));
        m->dropout_seed = strtoull(need_meta(&io, "dropout_seed"), NULL, 10);
    } else {
        m = !strcmp(arch, "xresnet") ? xresnet_build(name, classes, &spec) : resnet_build(name, classes, &spec);
    }

    float *params = calloc(m->param_floats, sizeof *params), *stats = calloc(m->stat_floats + 1, sizeof *stats);
    char wpath[256];
    snprintf(wpath, sizeof wpath, REF_DIR "%s.weights.safetensors", name);
    if (ckpt_load(wpath, m, params, stats, err, sizeof err)) fail_msg("ckpt_load: %s", err);

    const StTensor *in = need(&io, "input", ST_F32);
    assert_int_equal(in->ndim, 4);
    int n = (int)in->shape[0], h = (int)in->shape[2], w = (int)in->shape[3];
    assert_int_equal(in->shape[1], 3);
    assert_true(n <= 64);
    const StTensor *lab = need(&io, "labels", ST_I64);
    assert_int_equal(st_numel(lab), n);
    int32_t labels[64];
    for (int i = 0; i < n; i++) labels[i] = (int32_t)((const int64_t *)lab->data)[i];

    Backend *be = test_backend();
    if (model_attach(m, be, n, h, w, err, sizeof err)) fail_msg("model_attach: %s", err);
    model_set_weights(m, params, stats);

    Report rep = {.label = name};
    size_t nlog = (size_t)n * classes;
    float *logits = malloc(nlog * sizeof *logits);

    const Tensor *out = model_forward(m, in->data, n, h, w, 1);
    assert_int_equal(out->n, n);
    assert_int_equal(out->c, classes);
    be->ops->tensor_download(be, logits, out);
    check(&rep, "logits", logits, need_f32(&io, "logits", nlog), nlog);

    float loss = model_loss(m, labels, smoothing);
    check(&rep, "loss", &loss, need_f32(&io, "loss", 1), 1);

    model_backward(m);
    float *grads = malloc(m->param_floats * sizeof *grads), *tmp = malloc(m->param_floats * sizeof *tmp);
    be->ops->download(be, grads, m->grads_d, m->param_floats * sizeof *grads);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        char key[160];
        snprintf(key, sizeof key, "grad.%s", p->name);
        const float *ref = need_f32(&io, key, p->count);
        const float *ours = grads + p->offset;
        if (p->kind == P_CONV_WEIGHT) {
            krsc_to_kcrs(ours, tmp, p->shape[0], p->shape[1], p->shape[2], p->shape[3]);
            ours = tmp;
        }
        check(&rep, key, ours, ref, p->count);
    }
    /* Every parameter PyTorch has, we have: the grad.* count must match ours. */
    int ngrad = 0;
    for (int i = 0; i < io.count; i++) ngrad += !strncmp(io.tensors[i].name, "grad.", 5);
    assert_int_equal(ngrad, m->nparams);

    float *after = calloc(m->stat_floats + 1, sizeof *after);
    model_get_weights(m, NULL, after);
    for (int i = 0; i < m->nnodes; i++) {
        const Node *nd = &m->nodes[i];
        if (nd->op != OP_BN) continue;
        char key[160];
        snprintf(key, sizeof key, "after.%s.running_mean", nd->name);
        check(&rep, key, after + nd->stat, need_f32(&io, key, (size_t)nd->features), (size_t)nd->features);
        snprintf(key, sizeof key, "after.%s.running_var", nd->name);
        check(&rep, key, after + nd->stat + nd->features, need_f32(&io, key, (size_t)nd->features),
              (size_t)nd->features);
        snprintf(key, sizeof key, "after.%s.num_batches_tracked", nd->name);
        const StTensor *nb = need(&io, key, ST_I64);
        if (nd->batches_tracked != *(const int64_t *)nb->data) {
            rep.failed++;
            print_error("%s: %s: %lld, PyTorch %lld\n", name, key, (long long)nd->batches_tracked,
                        (long long)*(const int64_t *)nb->data);
        }
    }

    out = model_forward(m, in->data, n, h, w, 0);
    be->ops->tensor_download(be, logits, out);
    check(&rep, "eval_logits", logits, need_f32(&io, "eval_logits", nlog), nlog);

    model_free(m);
    backend_destroy(be);
    free(params);
    free(stats);
    free(after);
    free(grads);
    free(tmp);
    free(logits);
    st_close(&io);
    report_done(&rep);
}

static void test_xresnet_basic(void **state) { (void)state; model_case("xresnet_basic"); }
static void test_xresnet_bottleneck(void **state) { (void)state; model_case("xresnet_bottleneck"); }
static void test_xresnet18_small(void **state) { (void)state; model_case("xresnet18_small"); }
static void test_resnet_bottleneck(void **state) { (void)state; model_case("resnet_bottleneck"); }
static void test_resnet_basic(void **state) { (void)state; model_case("resnet_basic"); }
static void test_cnn_learner_resnet(void **state) { (void)state; model_case("cnn_learner_resnet"); }
static void test_cnn_learner_xresnet(void **state) { (void)state; model_case("cnn_learner_xresnet"); }

/* ---------------------------------------------------------------- op cases */

typedef struct {
    Backend *be;
    void *bufs[32];
    int nbufs;
} Ops;

static void *dev(Ops *o, size_t bytes) {
    assert_true(o->nbufs < 32);
    return o->bufs[o->nbufs++] = o->be->ops->alloc(o->be, bytes);
}

static void *dev_copy(Ops *o, const void *host, size_t bytes) {
    void *p = dev(o, bytes);
    o->be->ops->upload(o->be, p, host, bytes);
    return p;
}

/* An activation of the reference's NCHW shape (a 2-D reference (n, f) is (n, f, 1, 1)). */
static Tensor dev_tensor(Ops *o, const StTensor *ref, int upload) {
    Tensor t = {.n = (int)ref->shape[0], .c = (int)ref->shape[1], .h = 1, .w = 1, .dtype = DT_F32};
    if (ref->ndim == 4) {
        t.h = (int)ref->shape[2];
        t.w = (int)ref->shape[3];
    }
    t.data = dev(o, tensor_numel(&t) * sizeof(float));
    if (upload) o->be->ops->tensor_upload(o->be, &t, ref->data);
    return t;
}

static Tensor dev_like(Ops *o, const StTensor *ref) { return dev_tensor(o, ref, 0); }

static float *host_of(Ops *o, const Tensor *t) {
    float *h = malloc(tensor_numel(t) * sizeof *h);
    o->be->ops->tensor_download(o->be, h, t);
    return h;
}

static void check_tensor(Report *rep, Ops *o, const char *name, const Tensor *t, const StFile *f) {
    const StTensor *ref = need(f, name, ST_F32);
    assert_int_equal(tensor_numel(t), st_numel(ref));
    float *h = host_of(o, t);
    check(rep, name, h, ref->data, st_numel(ref));
    free(h);
}

static void check_dev(Report *rep, Ops *o, const char *name, const float *d, const StFile *f) {
    const StTensor *ref = need(f, name, ST_F32);
    size_t n = st_numel(ref);
    float *h = malloc(n * sizeof *h);
    o->be->ops->download(o->be, h, d, n * sizeof *h);
    check(rep, name, h, ref->data, n);
    free(h);
}

static void ops_done(Ops *o) {
    for (int i = 0; i < o->nbufs; i++) o->be->ops->release(o->be, o->bufs[i]);
    backend_destroy(o->be);
}

static void conv_case(const char *name) {
    StFile f;
    char file[128];
    snprintf(file, sizeof file, "%s.safetensors", name);
    open_ref(file, &f);
    Ops o = {.be = test_backend()};
    const BackendOps *b = o.be->ops;
    ConvGeom g = {meta_int(&f, "cin"), meta_int(&f, "cout"), meta_int(&f, "k"), meta_int(&f, "stride"),
                  meta_int(&f, "pad")};
    const StTensor *xr = need(&f, "x", ST_F32), *yr = need(&f, "y", ST_F32), *wr = need(&f, "w", ST_F32);
    size_t nw = st_numel(wr);
    assert_int_equal(nw, (size_t)g.cout * g.cin * g.k * g.k);
    float *hw = malloc(nw * sizeof *hw);
    kcrs_to_krsc(wr->data, hw, g.cout, g.cin, g.k, g.k);
    float *w = dev_copy(&o, hw, nw * sizeof *hw), *dw = dev(&o, nw * sizeof *dw);

    Tensor x = dev_tensor(&o, xr, 1), y = dev_like(&o, yr), dy = dev_tensor(&o, need(&f, "dy", ST_F32), 1);
    Tensor dx = dev_like(&o, xr);
    Report rep = {.label = name};
    b->conv_forward(o.be, &g, &x, w, &y);
    assert_int_equal(y.h, (int)yr->shape[2]);
    check_tensor(&rep, &o, "y", &y, &f);
    b->conv_backward_data(o.be, &g, &dy, w, &dx, 0);
    check_tensor(&rep, &o, "dx", &dx, &f);
    b->conv_backward_filter(o.be, &g, &x, &dy, dw);
    float *hdw = malloc(nw * sizeof *hdw);
    b->download(o.be, hdw, dw, nw * sizeof *hdw);
    krsc_to_kcrs(hdw, hw, g.cout, g.cin, g.k, g.k);
    check(&rep, "dw", hw, need_f32(&f, "dw", nw), nw);
    /* accumulate=1 must add to what dx holds: run it again on top, expect twice the reference. */
    b->conv_backward_data(o.be, &g, &dy, w, &dx, 1);
    float *h2 = host_of(&o, &dx);
    const float *dxr = need_f32(&f, "dx", tensor_numel(&dx));
    for (size_t i = 0; i < tensor_numel(&dx); i++) h2[i] *= 0.5f;
    check(&rep, "dx (accumulated twice, halved)", h2, dxr, tensor_numel(&dx));
    free(h2);
    free(hw);
    free(hdw);
    ops_done(&o);
    st_close(&f);
    report_done(&rep);
}

static void test_op_conv3x3(void **state) { (void)state; conv_case("op_conv3x3"); }
static void test_op_conv7x7_stem(void **state) { (void)state; conv_case("op_conv7x7_stem"); }
static void test_op_conv1x1_s2(void **state) { (void)state; conv_case("op_conv1x1_s2"); }

/* Training-mode batch norm; a 2-D reference (n, c) is BatchNorm1d, run as (n, c, 1, 1). */
static void bn_case(const char *name) {
    StFile f;
    char file[128];
    snprintf(file, sizeof file, "%s.safetensors", name);
    open_ref(file, &f);
    Ops o = {.be = test_backend()};
    const BackendOps *b = o.be->ops;
    const StTensor *xr = need(&f, "x", ST_F32);
    int c = (int)xr->shape[1];
    size_t cb = (size_t)c * sizeof(float);
    float momentum = strtof(need_meta(&f, "momentum"), NULL), eps = strtof(need_meta(&f, "eps"), NULL);
    float *gamma = dev_copy(&o, need_f32(&f, "gamma", (size_t)c), cb);
    float *beta = dev_copy(&o, need_f32(&f, "beta", (size_t)c), cb);
    float *rm = dev_copy(&o, need_f32(&f, "running_mean", (size_t)c), cb);
    float *rv = dev_copy(&o, need_f32(&f, "running_var", (size_t)c), cb);
    float *smean = dev(&o, cb), *sinv = dev(&o, cb), *dg = dev(&o, cb), *db = dev(&o, cb);
    Tensor x = dev_tensor(&o, xr, 1), y = dev_like(&o, xr), dx = dev_like(&o, xr);
    Tensor dy = dev_tensor(&o, need(&f, "dy", ST_F32), 1);
    Report rep = {.label = name};
    b->bn_forward_train(o.be, &x, gamma, beta, rm, rv, momentum, eps, smean, sinv, &y);
    check_tensor(&rep, &o, "y", &y, &f);
    check_dev(&rep, &o, "running_mean_after", rm, &f);
    check_dev(&rep, &o, "running_var_after", rv, &f);
    b->bn_backward(o.be, &x, &dy, gamma, smean, sinv, dg, db, &dx, 0);
    check_tensor(&rep, &o, "dx", &dx, &f);
    check_dev(&rep, &o, "dgamma", dg, &f);
    check_dev(&rep, &o, "dbeta", db, &f);
    ops_done(&o);
    st_close(&f);
    report_done(&rep);
}

static void test_op_bn_train(void **state) { (void)state; bn_case("op_bn_train"); }
static void test_op_bn1d_train(void **state) { (void)state; bn_case("op_bn1d_train"); }

static void pool_case(const char *name, int max) {
    StFile f;
    char file[128];
    snprintf(file, sizeof file, "%s.safetensors", name);
    open_ref(file, &f);
    Ops o = {.be = test_backend()};
    const BackendOps *b = o.be->ops;
    PoolGeom g = {meta_int(&f, "k"), meta_int(&f, "stride"), meta_int(&f, "pad"), meta_int(&f, "ceil_mode")};
    const StTensor *xr = need(&f, "x", ST_F32), *yr = need(&f, "y", ST_F32);
    Tensor x = dev_tensor(&o, xr, 1), y = dev_like(&o, yr), dx = dev_like(&o, xr);
    Tensor dy = dev_tensor(&o, need(&f, "dy", ST_F32), 1);
    Report rep = {.label = name};
    if (max)
        b->maxpool_forward(o.be, &g, &x, &y);
    else
        b->avgpool_forward(o.be, &g, &x, &y);
    assert_int_equal(y.h, (int)yr->shape[2]);
    assert_int_equal(y.w, (int)yr->shape[3]);
    check_tensor(&rep, &o, "y", &y, &f);
    if (max)
        b->maxpool_backward(o.be, &g, &x, &y, &dy, &dx, 0);
    else
        b->avgpool_backward(o.be, &g, &dy, &dx, 0);
    check_tensor(&rep, &o, "dx", &dx, &f);
    ops_done(&o);
    st_close(&f);
    report_done(&rep);
}

static void test_op_avgpool_ceil(void **state) { (void)state; pool_case("op_avgpool_ceil", 0); }
static void test_op_maxpool(void **state) { (void)state; pool_case("op_maxpool", 1); }

/* fastai's AdaptiveConcatPool2d + Flatten: (n, c, h, w) -> (n, 2c) = [max | mean]. */
static void test_op_concat_pool(void **state) {
    (void)state;
    StFile f;
    open_ref("op_concat_pool.safetensors", &f);
    Ops o = {.be = test_backend()};
    const BackendOps *b = o.be->ops;
    const StTensor *xr = need(&f, "x", ST_F32), *yr = need(&f, "y", ST_F32);
    Tensor x = dev_tensor(&o, xr, 1), y = dev_like(&o, yr), dx = dev_like(&o, xr);
    Tensor dy = dev_tensor(&o, need(&f, "dy", ST_F32), 1);
    Report rep = {.label = "op_concat_pool"};
    b->concat_pool_forward(o.be, &x, &y);
    assert_int_equal(y.c, 2 * x.c);
    check_tensor(&rep, &o, "y", &y, &f);
    b->concat_pool_backward(o.be, &x, &y, &dy, &dx, 0);
    check_tensor(&rep, &o, "dx", &dx, &f);
    ops_done(&o);
    st_close(&f);
    report_done(&rep);
}

/* Dropout with the reference's copy of our mask (a 4-D x, so the NCHW mask index is checked). */
static void test_op_dropout(void **state) {
    (void)state;
    StFile f;
    open_ref("op_dropout.safetensors", &f);
    Ops o = {.be = test_backend()};
    const BackendOps *b = o.be->ops;
    float p = strtof(need_meta(&f, "p"), NULL);
    uint64_t seed = strtoull(need_meta(&f, "seed"), NULL, 10);
    const StTensor *xr = need(&f, "x", ST_F32);
    Tensor x = dev_tensor(&o, xr, 1), y = dev_like(&o, xr), dx = dev_like(&o, xr);
    Tensor dy = dev_tensor(&o, need(&f, "dy", ST_F32), 1);
    Report rep = {.label = "op_dropout"};
    b->dropout_forward(o.be, &x, p, seed, &y);
    check_tensor(&rep, &o, "y", &y, &f);
    b->dropout_backward(o.be, &dy, p, seed, &dx, 0);
    check_tensor(&rep, &o, "dx", &dx, &f);
    ops_done(&o);
    st_close(&f);
    report_done(&rep);
}

static void test_op_linear(void **state) {
    (void)state;
    StFile f;
    open_ref("op_linear.safetensors", &f);
    Ops o = {.be = test_backend()};
    const BackendOps *b = o.be->ops;
    const StTensor *xr = need(&f, "x", ST_F32), *yr = need(&f, "y", ST_F32), *wr = need(&f, "w", ST_F32);
    size_t nw = st_numel(wr), nb = (size_t)wr->shape[0];
    float *w = dev_copy(&o, wr->data, nw * sizeof(float)), *bias = dev_copy(&o, need_f32(&f, "b", nb), nb * sizeof(float));
    float *dw = dev(&o, nw * sizeof(float)), *db = dev(&o, nb * sizeof(float));
    Tensor x = dev_tensor(&o, xr, 1), y = dev_like(&o, yr), dx = dev_like(&o, xr);
    Tensor dy = dev_tensor(&o, need(&f, "dy", ST_F32), 1);
    Report rep = {.label = "op_linear"};
    b->linear_forward(o.be, &x, w, bias, &y);
    check_tensor(&rep, &o, "y", &y, &f);
    b->linear_backward(o.be, &x, &dy, w, dw, db, &dx, 0);
    check_tensor(&rep, &o, "dx", &dx, &f);
    check_dev(&rep, &o, "dw", dw, &f);
    check_dev(&rep, &o, "db", db, &f);
    ops_done(&o);
    st_close(&f);
    report_done(&rep);
}

/* Softmax cross-entropy with label smoothing, plain and with per-sample mixup. */
static void test_op_xent_mixup(void **state) {
    (void)state;
    StFile f;
    open_ref("op_xent_mixup.safetensors", &f);
    Ops o = {.be = test_backend()};
    const BackendOps *b = o.be->ops;
    const StTensor *lr = need(&f, "logits", ST_F32);
    int n = (int)lr->shape[0];
    float smoothing = strtof(need_meta(&f, "smoothing"), NULL);
    const StTensor *la = need(&f, "labels_a", ST_I32), *lb = need(&f, "labels_b", ST_I32);
    assert_int_equal(st_numel(la), n);
    int32_t *da = dev_copy(&o, la->data, (size_t)n * 4), *dbl = dev_copy(&o, lb->data, (size_t)n * 4);
    float *lam = dev_copy(&o, need_f32(&f, "lam", (size_t)n), (size_t)n * 4), *loss = dev(&o, 4);
    Tensor logits = dev_tensor(&o, lr, 1), dlogits = dev_like(&o, lr);
    Report rep = {.label = "op_xent_mixup"};
    b->softmax_xent(o.be, &logits, da, dbl, lam, smoothing, 1.0f, loss, &dlogits);
    check_dev(&rep, &o, "loss", loss, &f);
    check_tensor(&rep, &o, "dlogits", &dlogits, &f);
    b->softmax_xent(o.be, &logits, da, NULL, NULL, smoothing, 1.0f, loss, &dlogits);
    check_dev(&rep, &o, "loss_plain", loss, &f);
    check_tensor(&rep, &o, "dlogits_plain", &dlogits, &f);
    ops_done(&o);
    st_close(&f);
    report_done(&rep);
}

/* ---------------------------------------------------------------- parameter counts */

static void test_param_counts(void **state) {
    (void)state;
    FILE *fp = fopen(REF_DIR "param_counts.txt", "r");
    if (!fp) fail_msg(REF_DIR "param_counts.txt is missing (run scripts/fastai_reference_models.py)");
    int nreg;
    const ModelEntry *reg = model_registry(&nreg);
    int seen[64][2] = {{0}};
    assert_true(nreg <= 64);
    char line[256];
    int bad = 0, lines = 0;
    while (fgets(line, sizeof line, fp)) {
        char name[64];
        int classes;
        unsigned long long want;
        if (line[0] == '#' || sscanf(line, "%63s %d %llu", name, &classes, &want) != 3) continue;
        lines++;
        char err[512];
        Model *m = model_build(name, classes, err, sizeof err);
        if (!m) fail_msg("param_counts.txt names %s: %s", name, err);
        size_t got = model_param_count(m);
        printf("%-24s %5d classes: %11zu parameters%s\n", name, classes, got, got == want ? "" : "  MISMATCH");
        if (got != want) {
            print_error("%s at %d classes: %zu parameters, PyTorch %llu\n", name, classes, got, want);
            bad++;
        }
        for (int i = 0; i < nreg; i++)
            if (!strcmp(reg[i].name, name) && (classes == 1000 || classes == 10)) seen[i][classes == 10] = 1;
        model_free(m);
    }
    fclose(fp);
    assert_true(lines > 0);
    for (int i = 0; i < nreg; i++)
        for (int k = 0; k < 2; k++)
            if (!seen[i][k]) {
                print_error("registry model %s has no PyTorch count at %d classes\n", reg[i].name, k ? 10 : 1000);
                bad++;
            }
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_conv3x3),
        cmocka_unit_test(test_op_conv7x7_stem),
        cmocka_unit_test(test_op_conv1x1_s2),
        cmocka_unit_test(test_op_bn_train),
        cmocka_unit_test(test_op_bn1d_train),
        cmocka_unit_test(test_op_concat_pool),
        cmocka_unit_test(test_op_dropout),
        cmocka_unit_test(test_op_avgpool_ceil),
        cmocka_unit_test(test_op_maxpool),
        cmocka_unit_test(test_op_linear),
        cmocka_unit_test(test_op_xent_mixup),
        cmocka_unit_test(test_xresnet_basic),
        cmocka_unit_test(test_xresnet_bottleneck),
        cmocka_unit_test(test_xresnet18_small),
        cmocka_unit_test(test_resnet_bottleneck),
        cmocka_unit_test(test_resnet_basic),
        cmocka_unit_test(test_cnn_learner_resnet),
        cmocka_unit_test(test_cnn_learner_xresnet),
        cmocka_unit_test(test_param_counts),
    };
    return cmocka_run_group_tests_name("parity with PyTorch", tests, NULL, NULL);
}
