/* test_pretrained.c: starting weights from another network's state dict (src/ckpt/pretrained.c).
 *
 * - PyTorch's own files: tests/ref's reduced torchvision ResNet and fastai XResNet state dicts load
 *   into fastai's cnn_learner model (names translated, old classifier skipped, head new); with the
 *   reference head on top, the eval logits are those of the model fastai's vision_learner builds.
 * - Full-size names both ways: resnet18 <-> resnet18_fastai_head, xresnet_tiny <-> its head model.
 * - A classifier of another class count is skipped; other shape mismatches, a missing part of the
 *   body and a training-state file are errors that leave the model untouched.
 * Runs from the repository root.
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
#include <sys/wait.h>
#include <unistd.h>

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_pretrained_XXXXXX"
#include "testutil.h"

#include "backend/backend.h"
#include "ckpt/checkpoint.h"
#include "train/config.h"
#include "net/model.h"
#include "models.h"
#include "ckpt/pretrained.h"
#include "base/rng.h"
#include "ckpt/safetensors.h"

#define REF "tests/ref/"
#ifndef PYTHON
#define PYTHON "/usr/bin/python3" /* Debian's, where python3-torch installs */
#endif

typedef struct {
    Model *m;
    float *params, *stats;
} Net;

static Net net_new(Model *m, uint64_t seed) {
    Net n = {m, xmalloc(m->param_floats * sizeof(float)), xmalloc((m->stat_floats + 1) * sizeof(float))};
    Rng rng;
    rng_seed(&rng, seed);
    model_init_host(m, &rng, n.params, n.stats);
    return n;
}

/* A registry model with distinct values everywhere (no forward pass runs on these, so a cheap
 * hash beats model_init_host's normals on 26M parameters). */
static Net net_build(const char *arch, int classes, uint64_t seed) {
    char err[512];
    Model *m = model_build(arch, classes, err, sizeof err);
    if (!m) fail_msg("%s", err);
    Net n = {m, xmalloc(m->param_floats * sizeof(float)), xmalloc((m->stat_floats + 1) * sizeof(float))};
    for (size_t i = 0; i < m->param_floats; i++) n.params[i] = (float)(rng_hash(seed, i) >> 40) / 16777216.0f - 0.5f;
    for (size_t i = 0; i < m->stat_floats; i++) n.stats[i] = (float)(rng_hash(~seed, i) >> 40) / 16777216.0f;
    return n;
}

static void net_free(Net *n) {
    model_free(n->m);
    free(n->params);
    free(n->stats);
}

static const Param *param_named(const Model *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}

/* Tensors in the model's state dict. */
static int state_count(const Model *m) {
    int n = m->nparams;
    for (int i = 0; i < m->nnodes; i++) n += m->nodes[i].op == OP_BN ? 3 : 0;
    return n;
}

static int has_item(char **items, int n, const char *text) {
    for (int i = 0; i < n; i++)
        if (strstr(items[i], text)) return 1;
    return 0;
}

static void load_ok(const char *path, Net *n, PretrainedReport *rep) {
    char err[1024];
    if (pretrained_load_file(path, n->m, n->params, n->stats, rep, err, sizeof err)) fail_msg("%s", err);
}

static void save(const char *path, const Net *n) {
    char err[512];
    if (ckpt_save(path, n->m, n->params, n->stats, NULL, err, sizeof err)) fail_msg("%s", err);
}

/* ---------------------------------------------------------------- against PyTorch */

static void meta_ints(const StFile *f, const char *key, int *out, int n) {
    const char *s = st_meta(f, key);
    if (!s) fail_msg("reference has no metadata %s", key);
    for (int i = 0; i < n; i++) {
        out[i] = (int)strtol(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
}

/* The reference's cnn_learner model: its body comes from the body case's weights file (a
 * torchvision or fastai state dict), its head from the full Sequential's state dict. */
static void learner_case(const char *name, const char *old_classifier) {
    char path[256], err[1024];
    StFile io;
    snprintf(path, sizeof path, REF "%s.io.safetensors", name);
    if (st_read(path, &io, err, sizeof err)) fail_msg("%s (run scripts/fastai_reference_models.py)", err);
    ArchSpec spec = {0};
    meta_ints(&io, "expansion", &spec.expansion, 1);
    meta_ints(&io, "layers", spec.layers, 4);
    meta_ints(&io, "stem", spec.stem, 3);
    meta_ints(&io, "widths", spec.widths, 4);
    int classes, hidden;
    meta_ints(&io, "classes", &classes, 1);
    meta_ints(&io, "hidden", &hidden, 1);
    int tv = !strcmp(st_meta(&io, "body"), "resnet");

    /* B: fresh init, then the body from the plain network's file */
    Net b = net_new(cnn_learner_build(name, classes, &spec, tv, hidden), 5);
    PretrainedReport rep;
    snprintf(path, sizeof path, REF "%s.weights.safetensors", st_meta(&io, "body_weights"));
    load_ok(path, &b, &rep);
    /* head: 1.2 and 1.6 (weight, bias, 3 buffers), 1.4 and 1.8 weights */
    assert_int_equal(rep.nnew, 12);
    assert_int_equal(rep.nskipped, 2);
    assert_true(has_item(rep.skipped, rep.nskipped, old_classifier));
    for (int i = 0; i < rep.nnew; i++) assert_true(rep.fresh[i][0] == '1' && rep.fresh[i][1] == '.');
    for (int i = 0; i < rep.nloaded; i++) assert_true(!strncmp(rep.loaded[i], "0.", 2));
    if (tv) assert_true(has_item(rep.loaded, rep.nloaded, "0.4.0.conv1.weight <- layer1.0.conv1.weight"));
    else assert_true(has_item(rep.loaded, rep.nloaded, "0.4.0.convpath.0.0.weight <- 4.0.convpath.0.0.weight"));
    pretrained_report_free(&rep);

    /* A: the full Sequential, strictly; B's body must equal it bit for bit */
    Net a = net_new(cnn_learner_build(name, classes, &spec, tv, hidden), 6);
    snprintf(path, sizeof path, REF "%s.weights.safetensors", name);
    if (ckpt_load(path, a.m, a.params, a.stats, err, sizeof err)) fail_msg("%s", err);
    for (int i = 0; i < a.m->nparams; i++) {
        const Param *p = &a.m->params[i];
        if (p->name[0] != '0') continue;
        if (memcmp(a.params + p->offset, b.params + p->offset, p->count * sizeof(float)))
            fail_msg("%s: %s differs from the reference's body", name, p->name);
    }
    for (int i = 0; i < a.m->nnodes; i++) {
        const Node *nd = &a.m->nodes[i];
        if (nd->op != OP_BN) continue;
        if (nd->name[0] == '0') {
            assert_memory_equal(a.stats + nd->stat, b.stats + nd->stat, 2 * (size_t)nd->features * sizeof(float));
            assert_int_equal(nd->batches_tracked, b.m->nodes[i].batches_tracked);
        }
        /* The reference's eval logits follow its one training step: every batch norm's statistics
         * as they were after it. */
        char key[160];
        snprintf(key, sizeof key, "after.%s.running_mean", nd->name);
        const StTensor *rm = st_find(&io, key);
        snprintf(key, sizeof key, "after.%s.running_var", nd->name);
        const StTensor *rv = st_find(&io, key);
        assert_non_null(rm), assert_non_null(rv);
        memcpy(b.stats + nd->stat, rm->data, (size_t)nd->features * sizeof(float));
        memcpy(b.stats + nd->stat + nd->features, rv->data, (size_t)nd->features * sizeof(float));
    }
    for (int i = 0; i < a.m->nparams; i++) {
        const Param *p = &a.m->params[i];
        if (p->name[0] == '1') memcpy(b.params + p->offset, a.params + p->offset, p->count * sizeof(float));
    }

    /* eval logits of B = PyTorch's */
    const StTensor *in = st_find(&io, "input"), *want = st_find(&io, "eval_logits");
    int n = (int)in->shape[0], h = (int)in->shape[2], w = (int)in->shape[3];
    Backend *be = backend_create("cpu", err, sizeof err);
    if (model_attach(b.m, be, n, h, w, err, sizeof err)) fail_msg("%s", err);
    model_set_weights(b.m, b.params, b.stats);
    const Tensor *out = model_forward(b.m, in->data, n, h, w, 0);
    float *logits = xmalloc((size_t)n * classes * sizeof *logits);
    be->ops->tensor_download(be, logits, out);
    double d = 0, r = 0;
    for (int i = 0; i < n * classes; i++) {
        float ref;
        memcpy(&ref, (const char *)want->data + 4 * (size_t)i, 4);
        d += ((double)logits[i] - ref) * ((double)logits[i] - ref);
        r += (double)ref * ref;
    }
    printf("%s: body from %s, eval logits vs PyTorch: relative error %.2e\n", name, st_meta(&io, "body_weights"),
           sqrt(d / r));
    assert_true(sqrt(d / r) <= 1e-4);
    free(logits);
    model_detach(b.m);
    backend_destroy(be);
    net_free(&a);
    net_free(&b);
    st_close(&io);
}

static void test_torchvision_body_into_cnn_learner(void **state) {
    (void)state;
    learner_case("cnn_learner_resnet", "fc.weight: not in the model");
}

static void test_xresnet_body_into_cnn_learner(void **state) {
    (void)state;
    learner_case("cnn_learner_xresnet", "11.weight: not in the model");
}

/* ---------------------------------------------------------------- full-size names */

/* Every tensor of `from` except its classifier lands in `to` under the translated name, and back. */
static void round_trip(const char *plain, const char *head, const char *fc, const char *pairs[][2], int npairs) {
    Net p = net_build(plain, 1000, 1), h = net_build(head, 10, 2);
    const char *file = in_dir("plain.safetensors");
    save(file, &p);
    PretrainedReport rep;
    load_ok(file, &h, &rep);
    assert_int_equal(rep.nnew, 12);
    assert_int_equal(rep.nskipped, 2);
    assert_int_equal(rep.nloaded, state_count(p.m) - 2);
    char fcw[64];
    snprintf(fcw, sizeof fcw, "%s.weight: not in the model", fc);
    assert_true(has_item(rep.skipped, 2, fcw));
    for (int k = 0; k < npairs; k++) {
        const Param *a = param_named(p.m, pairs[k][0]), *b = param_named(h.m, pairs[k][1]);
        assert_non_null(a), assert_non_null(b);
        assert_memory_equal(p.params + a->offset, h.params + b->offset, a->count * sizeof(float));
    }
    pretrained_report_free(&rep);

    /* and back: the cnn_learner checkpoint's body into the plain network; its head has no place */
    Net back = net_build(plain, 1000, 3);
    file = in_dir("head.safetensors");
    save(file, &h);
    load_ok(file, &back, &rep);
    assert_int_equal(rep.nnew, 2); /* the classifier */
    assert_int_equal(rep.nskipped, 12);
    assert_int_equal(rep.nloaded, state_count(p.m) - 2);
    for (int i = 0; i < p.m->nparams; i++) {
        const Param *a = &p.m->params[i];
        if (a->node == p.m->nnodes - 1) continue;
        assert_memory_equal(p.params + a->offset, back.params + a->offset, a->count * sizeof(float));
    }
    pretrained_report_free(&rep);
    net_free(&p);
    net_free(&h);
    net_free(&back);
}

static void test_resnet18_names(void **state) {
    (void)state;
    const char *pairs[][2] = {{"conv1.weight", "0.0.weight"},
                              {"bn1.bias", "0.1.bias"},
                              {"layer1.0.conv1.weight", "0.4.0.conv1.weight"},
                              {"layer2.0.downsample.0.weight", "0.5.0.downsample.0.weight"},
                              {"layer4.1.bn2.weight", "0.7.1.bn2.weight"}};
    round_trip("resnet18", "resnet18_fastai_head", "fc", pairs, 5);
}

static void test_xresnet_names(void **state) {
    (void)state;
    const char *pairs[][2] = {{"0.0.weight", "0.0.0.weight"},
                              {"2.1.bias", "0.2.1.bias"},
                              {"4.0.convpath.0.0.weight", "0.4.0.convpath.0.0.weight"},
                              {"7.0.idpath.1.0.weight", "0.7.0.idpath.1.0.weight"}};
    round_trip("xresnet_tiny", "xresnet_tiny_fastai_head", "11", pairs, 4);
}

/* ---------------------------------------------------------------- what is skipped, what is an error */

static void test_other_class_count(void **state) {
    (void)state;
    Net a = net_build("xresnet_tiny", 10, 1), b = net_build("xresnet_tiny", 5, 2);
    const char *file = in_dir("ten.safetensors");
    save(file, &a);
    PretrainedReport rep;
    load_ok(file, &b, &rep);
    assert_int_equal(rep.nskipped, 2);
    assert_true(has_item(rep.skipped, 2, "11.weight: the classifier, [10, 128] in the file, [5, 128] in the model"));
    assert_int_equal(rep.nnew, 2);
    assert_int_equal(rep.nloaded, state_count(b.m) - 2); /* everything else, unrenamed */
    for (int i = 0; i < rep.nloaded; i++) assert_null(strstr(rep.loaded[i], " <- "));

    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    pretrained_report_print(mem, &rep, "# ", 0);
    fclose(mem);
    ASSERT_HAS(text, "# pretrained: ");
    ASSERT_HAS(text, "tensors loaded (0 renamed), 2 new, 2 skipped\n");
    ASSERT_HAS(text, "#   new     11.weight\n");
    free(text);
    pretrained_report_free(&rep);
    net_free(&a);
    net_free(&b);
}


/* Issue 13.9: a classifier with the data's class count but other class names is not loaded
 * silently. [model] pretrained_head: auto refuses (naming the first difference) and loads it when
 * the names agree or the file names none; keep loads it and says so; new never loads it. */
static void test_classifier_of_other_classes(void **state) {
    (void)state;
    Net a = net_build("xresnet_tiny", 3, 1), b = net_build("xresnet_tiny", 3, 2);
    const char *file = in_dir("abc.safetensors"), *bare = in_dir("bare.safetensors");
    const char *meta[] = {"class_names", "ant\nbee\ncat", NULL};
    char err[1024];
    if (ckpt_save(file, a.m, a.params, a.stats, meta, err, sizeof err)) fail_msg("%s", err);
    save(bare, &a);
    const Param *w = param_named(b.m, "11.weight");
    assert_non_null(w);
    float *fresh = xmalloc(w->count * sizeof(float));
    memcpy(fresh, b.params + w->offset, w->count * sizeof(float));
    PretrainedReport rep = {0};

    /* auto, other names: refused, nothing changed */
    assert_int_equal(pretrained_load_file_head(file, b.m, b.params, b.stats, PRETRAINED_HEAD_AUTO, "ant\nbee\ndog", &rep, err,
                                               sizeof err), -1);
    ASSERT_HAS(err, "its classifier has the data's 3 classes, but other ones (class 2 is 'cat' in the file, 'dog' in the data)");
    ASSERT_HAS(err, "pretrained_head = new");
    assert_memory_equal(fresh, b.params + w->offset, w->count * sizeof(float));
    /* new: a fresh classifier, the body loaded */
    if (pretrained_load_file_head(file, b.m, b.params, b.stats, PRETRAINED_HEAD_NEW, "ant\nbee\ndog", &rep, err, sizeof err))
        fail_msg("%s", err);
    assert_memory_equal(fresh, b.params + w->offset, w->count * sizeof(float));
    assert_true(has_item(rep.skipped, rep.nskipped, "11.weight: the classifier (pretrained_head = new)"));
    assert_int_equal(rep.nnew, 2);
    pretrained_report_free(&rep);
    /* keep: loaded, and said */
    if (pretrained_load_file_head(file, b.m, b.params, b.stats, PRETRAINED_HEAD_KEEP, "ant\nbee\ndog", &rep, err, sizeof err))
        fail_msg("%s", err);
    assert_memory_equal(a.params + w->offset, b.params + w->offset, w->count * sizeof(float));
    assert_non_null(rep.head_note);
    ASSERT_HAS(rep.head_note, "classes differ (class 2 is 'cat' in the file, 'dog' in the data): pretrained_head = keep");
    pretrained_report_free(&rep);
    /* auto: the same names load; a file without names loads, saying there was nothing to compare */
    if (pretrained_load_file_head(file, b.m, b.params, b.stats, PRETRAINED_HEAD_AUTO, "ant\nbee\ncat", &rep, err, sizeof err))
        fail_msg("%s", err);
    assert_null(rep.head_note);
    assert_int_equal(rep.nnew, 0);
    pretrained_report_free(&rep);
    if (pretrained_load_file_head(bare, b.m, b.params, b.stats, PRETRAINED_HEAD_AUTO, "ant\nbee\ndog", &rep, err, sizeof err))
        fail_msg("%s", err);
    assert_non_null(rep.head_note);
    ASSERT_HAS(rep.head_note, "the file names none to compare");
    pretrained_report_free(&rep);
    free(fresh);
    net_free(&a);
    net_free(&b);
}

/* The file is refused and params, stats and the report are left as they were. */
static void expect_error(const char *file, Net *n, const char *text) {
    float *p0 = xmalloc(n->m->param_floats * sizeof(float));
    memcpy(p0, n->params, n->m->param_floats * sizeof(float));
    PretrainedReport rep = {.nloaded = -7};
    char err[1024];
    assert_int_equal(pretrained_load_file(file, n->m, n->params, n->stats, &rep, err, sizeof err), -1);
    ASSERT_HAS(err, text);
    assert_int_equal(rep.nloaded, -7);
    assert_memory_equal(p0, n->params, n->m->param_floats * sizeof(float));
    free(p0);
}

static void test_errors(void **state) {
    (void)state;
    Net r18 = net_build("resnet18", 10, 1);
    const char *f18 = in_dir("r18.safetensors");
    save(f18, &r18);

    /* bottlenecks vs basic blocks: same names, other shapes */
    Net r50 = net_build("resnet50_fastai_head", 10, 2);
    expect_error(f18, &r50, "a different architecture?");
    expect_error(f18, &r50, "\"layer1.0.conv1.weight\" is [64, 64, 3, 3] in the file, \"0.4.0.conv1.weight\" [64, 64, 1, 1]");
    /* resnet18 is a part of resnet34 */
    Net r34 = net_build("resnet34", 10, 3);
    expect_error(f18, &r34, "holds 20 of the 36 convolutions of resnet34 (\"layer1.2.conv1.weight\" is not in the file)");
    /* an xresnet has nothing in common with a torchvision body */
    Net x = net_build("xresnet_tiny_fastai_head", 10, 4);
    expect_error(f18, &x, "shares no convolution weight with xresnet_tiny_fastai_head");

    /* a training-state file */
    char id[CKPT_ID_CHARS + 1], err[512];
    ckpt_new_id(id);
    const char *meta[] = {CKPT_ID_KEY, id, NULL};
    float *zeros = xcalloc(r18.m->param_floats, sizeof(float));
    const char *tfile = in_dir("r18.train.safetensors");
    if (ckpt_save_train(tfile, r18.m, zeros, zeros, meta, err, sizeof err)) fail_msg("%s", err);
    expect_error(tfile, &r18, "training-state file");
    free(zeros);
    net_free(&r18);
    net_free(&r50);
    net_free(&r34);
    net_free(&x);
}

/* scripts/pth_to_safetensors.py on a torchvision resnet18 .pth as training scripts save them
 * (wrapped under "state_dict", nn.DataParallel's "module." prefix, fp16): the result loads strictly
 * into our resnet18 and as starting weights into resnet18_fastai_head. Skips without PyTorch. */
static void test_pth_converter(void **state) {
    (void)state;
    if (access(PYTHON, X_OK) != 0) {
        printf("skipped: %s is not installed\n", PYTHON);
        skip();
    }
    const char *pth = in_dir("r18.pth"), *out = in_dir("r18.safetensors");
    const char *maker = write_text("make_pth.py",
                                   "import sys\n"
                                   "try:\n"
                                   "    import torch, torchvision\n"
                                   "except ImportError:\n"
                                   "    sys.exit(77)\n"
                                   "torch.manual_seed(0)\n"
                                   "sd = torchvision.models.resnet18().state_dict()\n"
                                   "sd = {'module.' + k: v.half() if v.is_floating_point() else v for k, v in sd.items()}\n"
                                   "torch.save({'epoch': 3, 'state_dict': sd}, sys.argv[1])\n"
                                   "import runpy\n" /* the converter's command line, without a second torch import */
                                   "sys.argv = ['pth_to_safetensors.py'] + sys.argv[1:]\n"
                                   "runpy.run_path('scripts/pth_to_safetensors.py', run_name='__main__')\n");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s %s %s >/dev/null", PYTHON, maker, pth, out);
    int status = system(cmd);
    int rc = status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc == 77) {
        printf("skipped: python3-torch is not installed\n");
        skip();
    }
    assert_int_equal(rc, 0);
    Net plain = net_build("resnet18", 1000, 1), head = net_build("resnet18_fastai_head", 5, 2);
    char err[1024];
    if (ckpt_load(out, plain.m, plain.params, plain.stats, err, sizeof err)) fail_msg("%s", err);
    PretrainedReport rep;
    load_ok(out, &head, &rep);
    assert_int_equal(rep.nloaded, state_count(plain.m) - 2);
    const Param *a = param_named(plain.m, "layer3.1.conv2.weight"), *b = param_named(head.m, "0.6.1.conv2.weight");
    assert_memory_equal(plain.params + a->offset, head.params + b->offset, a->count * sizeof(float));
    pretrained_report_free(&rep);
    net_free(&plain);
    net_free(&head);
}

/* A state dict without batch-norm counters: one line for all of them, the other new tensors each
 * named; verbose lists every one. */
static void test_report_groups_counters(void **state) {
    (void)state;
    char *fresh[] = {"bn1.num_batches_tracked", "layer1.0.bn1.num_batches_tracked", "fc.weight",
                     "layer1.0.bn2.num_batches_tracked"};
    PretrainedReport r = {0};
    r.fresh = fresh;
    r.nnew = 4;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    pretrained_report_print(f, &r, "", 0);
    fclose(f);
    ASSERT_HAS(text, "  new     fc.weight\n");
    ASSERT_HAS(text, "  new     3 batch-norm num_batches_tracked counters");
    assert_null(strstr(text, "bn1.num_batches_tracked"));
    free(text);
    f = open_memstream(&text, &len);
    pretrained_report_print(f, &r, "", 1);
    fclose(f);
    ASSERT_HAS(text, "  new     layer1.0.bn2.num_batches_tracked\n");
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torchvision_body_into_cnn_learner),
        cmocka_unit_test(test_xresnet_body_into_cnn_learner),
        cmocka_unit_test(test_resnet18_names),
        cmocka_unit_test(test_xresnet_names),
        cmocka_unit_test(test_other_class_count),
        cmocka_unit_test(test_classifier_of_other_classes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_pth_converter),
        cmocka_unit_test(test_report_groups_counters),
    };
    return cmocka_run_group_tests_name("pretrained weights", tests, test_dir_setup, test_dir_teardown);
}
