/* test_config.c: the INI configuration reader.
 * Every config in configs/ loads and survives config_write -> config_load unchanged; each kind of
 * error names its file and line (or its --set) with the expected text; the defaults of each stage
 * type are fastai's / PyTorch's; values carry over between stages as documented; --set overrides
 * are validated like the file's values. Small INI files are written in a temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/config.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/test_config.XXXXXX"
#include "testutil.h"

/* Lines 1-4 of most test files; stages start on line 5. */
#define HEAD "[data]\npath = data/x\n[model]\narch = xresnet18\n"

static void load_ok(const char *text, const char *const *sets, int nsets, Config *c) {
    char err[4096];
    const char *path = write_text("ok.ini", text);
    if (config_load(path, sets, nsets, c, err, sizeof err)) fail_msg("config_load failed: %s\n--- file:\n%s", err, text);
}

/* Load text (with overrides) expecting an error whose message starts with want; "%s" in want
 * stands for the file's path. exact: the whole message must match. */
static void expect_err_sets(const char *text, const char *const *sets, int nsets, const char *want, int exact) {
    char err[4096], expected[2048];
    Config c;
    const char *path = write_text("bad.ini", text);
    snprintf(expected, sizeof expected, want, path);
    if (!config_load(path, sets, nsets, &c, err, sizeof err)) {
        config_free(&c);
        fail_msg("config_load accepted:\n%s\nexpected the error: %s", text, expected);
    }
    if (exact ? strcmp(err, expected) : strncmp(err, expected, strlen(expected)))
        fail_msg("error message\n  got:  %s\n  want: %s%s", err, expected, exact ? "" : "...");
}
static void expect_err(const char *text, const char *want) { expect_err_sets(text, NULL, 0, want, 0); }
static void expect_exact(const char *text, const char *want) { expect_err_sets(text, NULL, 0, want, 1); }

static const StageConfig *stage(const Config *c, const char *name) {
    for (int i = 0; i < c->nstages; i++)
        if (!strcmp(c->stages[i].name, name)) return &c->stages[i];
    fail_msg("no stage '%s'", name);
    return NULL;
}

/* Two configs equal in every field but the file path and the data-spec pointers (which point
 * into each Config's own storage). */
static void assert_same_config(const Config *a, const Config *b, const char *what) {
    for (int i = 0; i < 8; i++)
        if (strcmp(a->storage[i], b->storage[i])) fail_msg("%s: data string %d: '%s' vs '%s'", what, i, a->storage[i], b->storage[i]);
    if (a->data.format != b->data.format || a->data.valid_pct != b->data.valid_pct || a->data.seed != b->data.seed)
        fail_msg("%s: [data] differs", what);
    if (a->strict_images != b->strict_images || strcmp(a->arch, b->arch) || a->classes != b->classes ||
        strcmp(a->device, b->device) || a->precision != b->precision || a->seed != b->seed || strcmp(a->out_dir, b->out_dir) ||
        a->threads != b->threads)
        fail_msg("%s: [model] or [run] differs", what);
    assert_int_equal(a->nstages, b->nstages);
    for (int i = 0; i < a->nstages; i++) {
        StageConfig x = a->stages[i], y = b->stages[i];
        x.line = y.line = 0; /* lines differ between the original and the written file */
        if (memcmp(&x, &y, sizeof x)) fail_msg("%s: stage %s differs after the round trip", what, x.name);
    }
}

/* config_write, then config_load of what it wrote: the same Config, and the same text again. */
static void round_trip(const Config *c, const char *what) {
    char *text1 = NULL, *text2 = NULL, err[4096];
    size_t len1 = 0, len2 = 0;
    FILE *m = open_memstream(&text1, &len1);
    config_write(c, m);
    fclose(m);
    const char *path = write_text("written.ini", text1);
    Config back;
    if (config_load(path, NULL, 0, &back, err, sizeof err)) fail_msg("%s: the written config does not load: %s\n%s", what, err, text1);
    assert_same_config(c, &back, what);
    m = open_memstream(&text2, &len2);
    config_write(&back, m);
    fclose(m);
    /* the first line names the source file; the rest must be identical */
    assert_string_equal(strchr(text1, '\n'), strchr(text2, '\n'));
    config_free(&back);
    free(text1);
    free(text2);
}

/* ------------------------------------------------------------------------------ configs/ */

static void test_configs_load_and_round_trip(void **state) {
    (void)state;
    glob_t g;
    assert_int_equal(glob("configs/*.ini", 0, NULL, &g), 0); /* run from the repository root */
    assert_true(g.gl_pathc >= 9);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        Config c;
        char err[4096];
        if (config_load(g.gl_pathv[i], NULL, 0, &c, err, sizeof err)) fail_msg("%s", err);
        assert_true(c.nstages >= 1);
        round_trip(&c, g.gl_pathv[i]);
        config_free(&c);
    }
    globfree(&g);
}

/* Into the caller's Config: a Config must not be copied, its data strings point into itself. */
static void load_file(const char *path, Config *c) {
    char err[4096];
    if (config_load(path, NULL, 0, c, err, sizeof err)) fail_msg("%s", err);
}

static void test_seed_configs(void **state) {
    (void)state;
    Config c;
    load_file("configs/smoke.ini", &c);
    assert_string_equal(c.arch, "xresnet18");
    assert_string_equal(c.data.root, "data/demo");
    assert_int_equal(c.nstages, 1);
    assert_int_equal(c.stages[0].type, STAGE_FIT_ONE_CYCLE);
    assert_int_equal(c.stages[0].epochs, 2);
    assert_int_equal(c.stages[0].size, 64);
    assert_int_equal(c.stages[0].batch, 32);
    config_free(&c);

    load_file("configs/imagenette_baseline.ini", &c);
    assert_string_equal(c.arch, "xresnet50");
    assert_int_equal(c.precision, DT_F16);
    assert_int_equal(c.data.format, DATA_FOLDER);
    assert_string_equal(c.data.root, "data/imagenette2");
    assert_string_equal(c.data.valid_dir, "val");
    const StageConfig *s = &c.stages[0];
    assert_int_equal(s->epochs, 5);
    assert_float_equal(s->lr, 3e-3f, 0);
    assert_int_equal(s->size, 224);
    assert_int_equal(s->batch, 64);
    assert_int_equal(s->train_tf.kind, TF_FASTAI);
    assert_int_equal(s->train_tf.presize, 460);
    assert_float_equal(s->train_tf.min_scale, 0.75f, 0);
    assert_int_equal(s->train_tf.size, 224);
    assert_int_equal(s->train_tf.train, 1);
    assert_int_equal(s->valid_tf.kind, TF_FASTAI); /* fastai's valid: centre crop of Resize(460), resized */
    assert_int_equal(s->valid_tf.presize, 460);
    assert_int_equal(s->valid_tf.train, 0);
    config_free(&c);

    load_file("configs/imagenette_progressive.ini", &c);
    assert_int_equal(c.nstages, 3);
    s = stage(&c, "full");
    assert_int_equal(s->type, STAGE_FINE_TUNE);
    assert_int_equal(s->epochs, 5);
    assert_float_equal(s->lr, 1e-3f, 0);
    assert_int_equal(s->size, 224);
    assert_int_equal(s->batch, 64);
    assert_int_equal(s->train_tf.presize, 460); /* carried from [stage small] */
    assert_float_equal(s->train_tf.min_scale, 0.75f, 0);
    s = stage(&c, "tta");
    assert_int_equal(s->type, STAGE_TTA);
    assert_int_equal(s->tta_n, 4);
    assert_float_equal(s->tta_beta, 0.25f, 0);
    assert_int_equal(s->size, 224); /* fastai's tta uses the learner's current dls */
    assert_int_equal(s->batch, 64);
    assert_int_equal(s->train_tf.presize, 460);
    config_free(&c);

    load_file("configs/imagenette_label_smoothing.ini", &c);
    assert_int_equal(c.classes, 1000);
    assert_float_equal(c.stages[0].label_smoothing, 0.1f, 0);
    assert_int_equal(c.stages[0].epochs, 15);
    assert_int_equal(c.stages[0].size, 128);
    config_free(&c);

    load_file("configs/imagenette_mixup.ini", &c);
    assert_float_equal(c.stages[0].mixup_alpha, 0.4f, 0);
    assert_float_equal(c.stages[0].label_smoothing, 0, 0);
    config_free(&c);

    load_file("configs/imagenette_ls_mixup_progressive.ini", &c);
    s = stage(&c, "full");
    assert_int_equal(s->epochs, 10);
    assert_float_equal(s->label_smoothing, 0.1f, 0); /* the loss stays on the learner */
    assert_float_equal(s->mixup_alpha, 0.4f, 0);
    config_free(&c);

    load_file("configs/cassava_resnet50_fixres.ini", &c);
    assert_string_equal(c.arch, "resnet50");
    assert_int_equal(c.data.format, DATA_CSV);
    assert_string_equal(c.data.csv, "train.csv");
    assert_string_equal(c.data.images_dir, "train_images");
    s = stage(&c, "train");
    assert_int_equal(s->type, STAGE_FIT);
    assert_float_equal(s->wd, 0.1f, 0);
    assert_int_equal(s->wd_bn_bias, 1);
    assert_float_equal(s->mom_max, 0.9f, 0);
    assert_int_equal(s->train_tf.kind, TF_RANDOM_RESIZED_CROP);
    assert_int_equal(s->valid_tf.kind, TF_CENTER_CROP);
    s = stage(&c, "sizes");
    assert_int_equal(s->type, STAGE_EVAL);
    assert_int_equal(s->nsizes, 4);
    assert_int_equal(s->sizes[0], 224);
    assert_int_equal(s->sizes[3], 448);
    assert_int_equal(s->size, 448);
    assert_int_equal(s->valid_tf.kind, TF_RESIZE_CENTER_CROP);
    assert_float_equal(s->valid_tf.resize_ratio, 1.25f, 0);
    s = stage(&c, "fixres");
    assert_int_equal(s->type, STAGE_FIXRES);
    assert_int_equal(s->size, 384);
    assert_int_equal(s->train_final_bn, 0);
    assert_int_equal(s->valid_tf.kind, TF_RESIZE_CENTER_CROP);
    assert_float_equal(s->valid_tf.resize_ratio, 1.25f, 0);
    config_free(&c);

    load_file("configs/composer_progressive.ini", &c);
    s = &c.stages[0];
    assert_int_equal(s->type, STAGE_PROGRESSIVE);
    assert_float_equal(s->initial_scale, 0.5f, 0);
    assert_float_equal(s->delay_fraction, 0.5f, 0);
    assert_float_equal(s->finetune_fraction, 0.2f, 0);
    assert_int_equal(s->size_increment, 4);
    assert_int_equal(s->resize_crop, 0);
    config_free(&c);
}

/* ------------------------------------------------------------------------------ defaults */

static void test_defaults_per_stage_type(void **state) {
    (void)state;
    Config c;
    load_ok(HEAD "[stage a]\ntype = fit_one_cycle\nepochs = 1\n"
                 "[stage b]\ntype = fit\nepochs = 1\n"
                 "[stage c]\ntype = fine_tune\nepochs = 1\n"
                 "[stage d]\ntype = progressive\nepochs = 1\n"
                 "[stage e]\ntype = fixres\nepochs = 1\n"
                 "[stage f]\ntype = tta\n"
                 "[stage g]\ntype = eval\nsizes = 128, 64\n",
            NULL, 0, &c);
    /* the globals */
    assert_int_equal(c.data.format, DATA_FOLDER);
    assert_string_equal(c.data.train_dir, "train");
    assert_string_equal(c.data.valid_dir, "val");
    assert_int_equal(c.strict_images, 0);
    assert_int_equal(c.classes, 0);
    assert_string_equal(c.device, "auto");
    assert_int_equal(c.precision, DT_F32);
    assert_string_equal(c.out_dir, "runs");
    assert_int_equal(c.threads, 0);

    /* fastai: fit_one_cycle(pct_start=0.25, div=25, div_final=1e5, moms=(0.95,0.85,0.95)), Adam
     * with beta2 0.99, eps 1e-5, wd 0.01 and no decay on batch norm and biases; lr 1e-3 */
    const StageConfig *s = stage(&c, "a");
    assert_float_equal(s->lr, 1e-3f, 0);
    assert_float_equal(s->pct_start, 0.25f, 0);
    assert_float_equal(s->div, 25, 0);
    assert_float_equal(s->div_final, 1e5f, 0);
    assert_float_equal(s->mom_max, 0.95f, 0);
    assert_float_equal(s->mom_min, 0.85f, 0);
    assert_float_equal(s->beta2, 0.99f, 0);
    assert_float_equal(s->eps, 1e-5f, 0);
    assert_float_equal(s->wd, 0.01f, 0);
    assert_int_equal(s->wd_bn_bias, 0);
    assert_float_equal(s->label_smoothing, 0, 0);
    assert_float_equal(s->mixup_alpha, 0, 0);
    assert_int_equal(s->size, 224);
    assert_int_equal(s->batch, 64);
    /* fastai's library transform defaults: no presize, min_scale 1 */
    TransformSpec fa = transform_defaults(TF_FASTAI, 224, 1);
    assert_memory_equal(&s->train_tf, &fa, sizeof fa);
    TransformSpec fv = transform_defaults(TF_FASTAI, 224, 0);
    assert_memory_equal(&s->valid_tf, &fv, sizeof fv);

    /* PyTorch's AdamW: lr 1e-3 (constant), betas (0.9, 0.999), eps 1e-8, wd 0.01 on everything */
    s = stage(&c, "b");
    assert_float_equal(s->lr, 1e-3f, 0);
    assert_float_equal(s->mom_max, 0.9f, 0);
    assert_float_equal(s->beta2, 0.999f, 0);
    assert_float_equal(s->eps, 1e-8f, 0);
    assert_float_equal(s->wd, 0.01f, 0);
    assert_int_equal(s->wd_bn_bias, 1);

    /* fastai's fine_tune(epochs, base_lr=2e-3, freeze_epochs=1, pct_start=0.3, div=5) */
    s = stage(&c, "c");
    assert_int_equal(s->freeze_epochs, 1);
    assert_float_equal(s->lr, 2e-3f, 0);
    assert_float_equal(s->pct_start, 0.3f, 0);
    assert_float_equal(s->div, 5, 0);
    assert_float_equal(s->div_final, 1e5f, 0);
    assert_float_equal(s->mom_max, 0.95f, 0);
    assert_float_equal(s->beta2, 0.99f, 0);
    assert_float_equal(s->eps, 1e-5f, 0);
    assert_int_equal(s->wd_bn_bias, 0);

    /* Composer's suggested ResNet-50 values; one-cycle with fastai's defaults */
    s = stage(&c, "d");
    assert_float_equal(s->initial_scale, 0.5f, 0);
    assert_float_equal(s->delay_fraction, 0.5f, 0);
    assert_float_equal(s->finetune_fraction, 0.2f, 0);
    assert_int_equal(s->size_increment, 4);
    assert_int_equal(s->resize_crop, 0);
    assert_float_equal(s->pct_start, 0.25f, 0);

    s = stage(&c, "e");
    assert_int_equal(s->train_final_bn, 1);
    assert_float_equal(s->beta2, 0.999f, 0);
    assert_float_equal(s->eps, 1e-8f, 0);

    s = stage(&c, "f");
    assert_int_equal(s->tta_n, 4);
    assert_float_equal(s->tta_beta, 0.25f, 0);

    s = stage(&c, "g");
    assert_int_equal(s->nsizes, 2);
    assert_int_equal(s->sizes[0], 128);
    assert_int_equal(s->sizes[1], 64);
    assert_int_equal(s->size, 128); /* the largest test size */
    assert_int_equal(s->valid_tf.size, 128);
    round_trip(&c, "defaults");
    config_free(&c);
}

/* ------------------------------------------------------------------------------ carry-over */

static void test_carry_over(void **state) {
    (void)state;
    Config c;
    load_ok(HEAD "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 128\nbatch = 96\nlr = 3e-3\nwd = 0.05\n"
                 "label_smoothing = 0.1\nmixup = 0.4\npresize = 300\nmin_scale = 0.5\nmax_rotate = 5\n"
                 "[stage t]\ntype = tta\nn = 2\n"
                 "[stage b]\ntype = fine_tune\nepochs = 1\nsize = 160\n"
                 "[stage c]\ntype = fit\nepochs = 1\ntransform = rrc\nscale_min = 0.35\n"
                 "[stage d]\ntype = fit\nepochs = 1\nvalid_transform = center\n"
                 "[stage e]\ntype = fixres\nepochs = 1\nsize = 320\n"
                 "[stage f]\ntype = fit_one_cycle\nepochs = 1\ntransform = fastai\n",
            NULL, 0, &c);
    const StageConfig *a = stage(&c, "a"), *t = stage(&c, "t"), *b = stage(&c, "b"), *cc = stage(&c, "c");
    const StageConfig *d = stage(&c, "d"), *e = stage(&c, "e"), *f = stage(&c, "f");
    /* tta: the previous stage's data pipeline */
    assert_int_equal(t->size, 128);
    assert_int_equal(t->batch, 96);
    assert_int_equal(t->train_tf.presize, 300);
    assert_float_equal(t->train_tf.max_rotate, 5, 0);
    assert_memory_equal(&t->valid_tf, &a->valid_tf, sizeof a->valid_tf);
    /* across the tta stage: batch, loss options and transform parameters carry; lr and wd do not */
    assert_int_equal(b->size, 160);
    assert_int_equal(b->batch, 96);
    assert_float_equal(b->label_smoothing, 0.1f, 0);
    assert_float_equal(b->mixup_alpha, 0.4f, 0);
    assert_float_equal(b->lr, 2e-3f, 0);
    assert_float_equal(b->wd, 0.01f, 0);
    assert_int_equal(b->train_tf.presize, 300);
    assert_float_equal(b->train_tf.min_scale, 0.5f, 0);
    assert_int_equal(b->train_tf.size, 160);
    assert_int_equal(b->valid_tf.presize, 300);
    assert_int_equal(b->valid_tf.size, 160);
    /* a new transform kind starts from its library defaults; its validation pair is Resize+CenterCrop */
    assert_int_equal(cc->train_tf.kind, TF_RANDOM_RESIZED_CROP);
    assert_float_equal(cc->train_tf.scale_min, 0.35f, 0);
    assert_float_equal(cc->train_tf.ratio_min, 0.75f, 0);
    assert_int_equal(cc->train_tf.presize, 0);
    assert_int_equal(cc->valid_tf.kind, TF_RESIZE_CENTER_CROP);
    assert_float_equal(cc->valid_tf.resize_ratio, 1, 0);
    assert_int_equal(cc->size, 160);
    /* the same kind: its parameters carry; an explicit validation transform */
    assert_int_equal(d->train_tf.kind, TF_RANDOM_RESIZED_CROP);
    assert_float_equal(d->train_tf.scale_min, 0.35f, 0);
    assert_int_equal(d->valid_tf.kind, TF_CENTER_CROP);
    /* a stage that touches no transform key keeps the previous validation transform */
    assert_int_equal(e->valid_tf.kind, TF_CENTER_CROP);
    assert_int_equal(e->valid_tf.size, 320);
    /* back to fastai: its defaults again (not stage a's presize), and its deterministic valid */
    assert_int_equal(f->train_tf.presize, 0);
    assert_float_equal(f->train_tf.min_scale, 1, 0);
    assert_int_equal(f->valid_tf.kind, TF_FASTAI);
    assert_int_equal(f->size, 320);
    round_trip(&c, "carry-over");
    config_free(&c);

    /* a stage's explicit value wins over the carried one; resize's ratio follows to its valid */
    load_ok(HEAD "[stage a]\ntype = fit\nepochs = 1\ntransform = resize\nresize_ratio = 1.5\nbatch = 8\n"
                 "[stage b]\ntype = fit\nepochs = 1\nbatch = 4\n",
            NULL, 0, &c);
    assert_int_equal(c.stages[0].valid_tf.kind, TF_RESIZE_CENTER_CROP);
    assert_float_equal(c.stages[0].valid_tf.resize_ratio, 1.5f, 0);
    assert_int_equal(c.stages[1].batch, 4);
    assert_float_equal(c.stages[1].train_tf.resize_ratio, 1.5f, 0);
    config_free(&c);
}

/* ------------------------------------------------------------------------------ syntax */

static void test_ini_syntax(void **state) {
    (void)state;
    Config c;
    load_ok("\xEF\xBB\xBF# a comment\r\n; another\r\n\r\n  [ data ]  \r\n"
            "path = \"data/with # hash\"   # trailing comment\r\n"
            "[model]\n\tarch=xresnet34 ; inline\n"
            "[run]\nout_dir = out;dir\nseed = 18446744073709551615\n"
            "[stage   my-stage_1]\ntype = fit\nepochs = 3\nflip = no\ntransform = rrc\n",
            NULL, 0, &c);
    assert_string_equal(c.data.root, "data/with # hash");
    assert_string_equal(c.arch, "xresnet34");
    assert_string_equal(c.out_dir, "out;dir"); /* ; starts a comment only after whitespace */
    assert_true(c.seed == UINT64_MAX);
    assert_string_equal(c.stages[0].name, "my-stage_1");
    assert_int_equal(c.stages[0].line, 11);
    assert_int_equal(c.stages[0].train_tf.flip, 0);
    round_trip(&c, "syntax"); /* the quoted path is written quoted */
    config_free(&c);
}

/* ------------------------------------------------------------------------------ errors */

static void test_errors_structure(void **state) {
    (void)state;
    expect_exact(HEAD "[modle]\n",
                 "%s:5: unknown section [modle]; did you mean [model]? sections: [data], [model], [run], [stage NAME]");
    expect_exact("[data]\npath = x\n[data]\npath = y\n", "%s:3: duplicate section [data] (first at line 1)");
    expect_exact(HEAD "[stage a]\ntype = tta\n[stage b]\ntype = tta\n[stage a]\ntype = tta\n",
                 "%s:9: duplicate stage name 'a' (first at line 5)");
    expect_exact(HEAD "[stage a]\ntype = fit\nepochs = 1\nlr = 1e-3\nlr = 2e-3\n",
                 "%s:9: duplicate key 'lr' in [stage a] (first set at line 8)");
    expect_err("path = x\n[data]\n", "%s:1: 'path = x' comes before any [section]");
    expect_err(HEAD "[stage a]\ntype fit\n", "%s:6: expected 'key = value', a [section] or a comment");
    expect_err(HEAD "[stage]\n", "%s:5: [stage] needs a name");
    expect_err(HEAD "[stage a.b]\n", "%s:5: stage name 'a.b': use up to 63 letters");
    expect_err(HEAD "[stage a]\ntype =\n", "%s:6: [stage a] type has no value");
    expect_err(HEAD "[stage a]\ntype = \"fit\n", "%s:6: [stage a] type: unbalanced quotes");
    expect_exact(HEAD, "%s: no [stage NAME] section: nothing to run");
    expect_exact("[model]\narch = xresnet18\n[stage a]\ntype = tta\n", "%s: no [data] section (it needs at least 'path')");

    char err[512];
    Config c;
    assert_int_equal(config_load(in_dir("missing.ini"), NULL, 0, &c, err, sizeof err), -1);
    ASSERT_HAS(err, "missing.ini: cannot read: No such file or directory");
}

static void test_errors_keys(void **state) {
    (void)state;
    /* an unknown key names the closest one and lists the keys this stage type takes */
    expect_err(HEAD "[stage small]\ntype = tta\nepoch = 3\n",
               "%s:7: unknown key 'epoch' in [stage small]; did you mean 'epochs'? keys: type, size, batch,");
    char err[4096];
    Config c;
    const char *p = write_text("k.ini", HEAD "[stage small]\ntype = tta\nbogus = 3\n");
    assert_int_equal(config_load(p, NULL, 0, &c, err, sizeof err), -1);
    ASSERT_HAS(err, "unknown key 'bogus' in [stage small]; keys: type, size, batch, transform, presize");
    ASSERT_HAS(err, ", n, beta");
    if (strstr(err, "epochs") || strstr(err, "sizes")) fail_msg("a tta stage's key list shows keys it cannot take: %s", err);
    expect_err("[data]\npaht = x\n", "%s:2: unknown key 'paht' in [data]; did you mean 'path'? keys: format, path, train_dir");
    /* required keys: the message names the section's line */
    expect_exact("[data]\nformat = folder\n[model]\narch = xresnet18\n[stage a]\ntype = tta\n",
                 "%s:1: [data] has no 'path' (required)");
    expect_exact("[data]\npath = x\n\n[model]\nclasses = 3\n[stage a]\ntype = tta\n", "%s:4: [model] has no 'arch' (required)");
    expect_exact(HEAD "[stage a]\nepochs = 3\n",
                 "%s:5: [stage a] has no 'type' (required: fit_one_cycle, fine_tune, fit, progressive, fixres, tta, eval, lr_find, interpret)");
    expect_exact(HEAD "[stage full]\ntype = fine_tune\nlr = 1e-3\n", "%s:5: [stage full] has no 'epochs', which a fine_tune stage requires");
    expect_exact(HEAD "[stage e]\ntype = eval\n", "%s:5: [stage e] has no 'sizes', which an eval stage requires");
}

static void test_errors_values(void **state) {
    (void)state;
    const char *stage = HEAD "[stage full]\ntype = fit_one_cycle\nepochs = 5\n";
    char text[1024];
#define WITH(line) (snprintf(text, sizeof text, "%s%s\n", stage, line), text)
    expect_exact(WITH("batch = -3"), "%s:8: [stage full] batch = -3: must be between 1 and 65536");
    expect_exact(WITH("batch = 3.5"), "%s:8: [stage full] batch = 3.5: not an integer");
    expect_exact(WITH("batch = 99999999999999999999"), "%s:8: [stage full] batch = 99999999999999999999: not an integer");
    expect_exact(WITH("lr = fast"), "%s:8: [stage full] lr = fast: not a number or a range lo..hi");
    expect_exact(WITH("lr = nan"), "%s:8: [stage full] lr = nan: not a number or a range lo..hi");
    expect_exact(WITH("lr = 1e-3..1e-5"), "%s:8: [stage full] lr = 1e-3..1e-5: a range lo..hi needs 0 < lo <= hi");
    expect_exact(WITH("lr = 1e-5..20"), "%s:8: [stage full] lr = 1e-5..20: must be > 0 and <= 10");
    expect_exact(WITH("lr = 1e-5..x"), "%s:8: [stage full] lr = 1e-5..x: not a number or a range lo..hi");
    expect_exact(WITH("freeze = maybe"), "%s:8: [stage full] freeze = maybe: must be one of keep, yes, no");
    expect_exact(WITH("lr = 0"), "%s:8: [stage full] lr = 0: must be > 0 and <= 10");
    /* checked as stored (a float): an lr that underflows to 0 is refused, not written back as 0 (fuzz_config) */
    expect_exact(WITH("lr = 3e-64"), "%s:8: [stage full] lr = 3e-64: must be > 0 and <= 10");
    expect_exact(WITH("lr = 1e-60..1e-3"), "%s:8: [stage full] lr = 1e-60..1e-3: a range lo..hi needs 0 < lo <= hi");
    expect_exact(WITH("mom_max = 1"), "%s:8: [stage full] mom_max = 1: must be >= 0 and < 1");
    expect_exact(WITH("pct_start = 1.5"), "%s:8: [stage full] pct_start = 1.5: must be between 0 and 1");
    expect_exact(WITH("transform = rcc"),
                 "%s:8: [stage full] transform = rcc: must be one of fastai, rrc, center, resize; did you mean 'rrc'?");
    expect_exact(WITH("valid_transform = rrc"), "%s:8: [stage full] valid_transform = rrc: must be one of fastai, center, resize, squash");
    expect_exact(WITH("flip = maybe"), "%s:8: [stage full] flip = maybe: must be true or false (or yes/no, on/off, 1/0)");
    expect_exact(HEAD "[stage e]\ntype = eval\nsizes = 224,abc\n", "%s:7: [stage e] sizes = 224,abc: 'abc' is not an integer");
    expect_exact(HEAD "[stage e]\ntype = eval\nsizes = 224,4\n", "%s:7: [stage e] sizes = 224,4: 4: each size must be between 8 and 4096");
    expect_exact(HEAD "[stage e]\ntype = finetune\n",
                 "%s:6: [stage e] type = finetune: must be one of fit_one_cycle, fine_tune, fit, progressive, fixres, tta, "
                 "eval, lr_find, interpret; did you mean 'fine_tune'?");
    expect_err("[data]\npath = x\n[model]\narch = xresnet5\n",
               "%s:4: [model] arch = xresnet5: unknown model; did you mean 'xresnet50'? models: xresnet18, xresnet34");
    expect_exact(HEAD "[run]\nseed = -1\n", "%s:6: [run] seed = -1: not a non-negative integer below 2^64");
    expect_exact(HEAD "[run]\nprecision = fp8\n", "%s:6: [run] precision = fp8: must be one of fp32, fp16, bf16");
    expect_exact(HEAD "[run]\ndevice = gpu\n", "%s:6: [run] device = gpu: must be one of auto, cpu, cuda; did you mean 'cpu'?");
#undef WITH
}

/* Keys that do not apply to the stage type, the transform or the data format. */
static void test_errors_rules(void **state) {
    (void)state;
    expect_exact(HEAD "[stage tta]\ntype = tta\nepochs = 3\n",
                 "%s:7: [stage tta] epochs = 3: a stage of type tta takes no 'epochs' (only: fit_one_cycle, fine_tune, "
                 "fit, progressive, fixres)");
    expect_exact(HEAD "[stage a]\ntype = fit\nepochs = 1\npct_start = 0.3\n",
                 "%s:8: [stage a] pct_start = 0.3: a stage of type fit takes no 'pct_start' (only: fit_one_cycle, "
                 "fine_tune, progressive)");
    expect_exact(HEAD "[stage a]\ntype = fit\nepochs = 1\ntransform = rrc\nmax_rotate = 5\n",
                 "%s:9: [stage a] max_rotate = 5: 'max_rotate' does not apply when transform = rrc (only with transform = "
                 "fastai)");
    expect_exact(HEAD "[stage a]\ntype = eval\nsizes = 64\npresize = 100\n",
                 "%s:8: [stage a] presize = 100: a stage of type eval takes no 'presize' (only: fit_one_cycle, fine_tune, "
                 "fit, progressive, fixres, tta, lr_find)");
    expect_exact(HEAD "[stage a]\ntype = fit\nepochs = 1\nvalid_transform = center\nvalid_presize = 10\n",
                 "%s:9: [stage a] valid_presize = 10: 'valid_presize' does not apply when valid_transform = center (only "
                 "with valid_transform = fastai)");
    expect_exact("[data]\npath = x\ncsv = labels.csv\n",
                 "%s:3: [data] csv = labels.csv: 'csv' does not apply when format = folder (only with format = csv)");
    expect_exact(HEAD "[stage p]\ntype = progressive\nepochs = 1\ndelay_fraction = 0.7\nfinetune_fraction = 0.4\n",
                 "%s:5: [stage p] delay_fraction + finetune_fraction = 1.1: must be at most 1");
    expect_exact(HEAD "[stage a]\ntype = fit\nepochs = 1\ntransform = rrc\nscale_min = 0.9\nscale_max = 0.5\n",
                 "%s:5: [stage a] scale_min = 0.9 is larger than scale_max = 0.5");
    expect_exact(HEAD "[stage a]\ntype = fit\nepochs = 1\nbatch = 1\n",
                 "%s:5: [stage a] batch = 1: batch norm needs at least 2 images per training batch (PyTorch refuses 1 too)");
    expect_exact(HEAD "[run]\nloss_scale = sometimes\n",
                 "%s:6: [run] loss_scale = sometimes: must be one of auto, dynamic, off");
}

static void test_overrides(void **state) {
    (void)state;
    const char *text = HEAD "[stage small]\ntype = fit_one_cycle\nepochs = 4\n[stage full]\ntype = fine_tune\nepochs = 5\n";
    const char *sets[] = {"stage full.lr=5e-4", "small.epochs = 2", "run.seed=7", "data.on_bad_image=fail", "small.size=96",
                          "small.size=112"};
    Config c;
    load_ok(text, sets, 6, &c);
    assert_float_equal(stage(&c, "full")->lr, 5e-4f, 0);
    assert_int_equal(stage(&c, "small")->epochs, 2);
    assert_int_equal(stage(&c, "small")->size, 112); /* the last --set wins */
    assert_int_equal(stage(&c, "full")->size, 112);  /* and carries over like a value from the file */
    assert_true(c.seed == 7);                        /* [run] was not in the file */
    assert_int_equal(c.strict_images, 1);
    round_trip(&c, "overrides");
    config_free(&c);

    const char *bad1[] = {"stage full.lr=abc"};
    expect_err_sets(text, bad1, 1, "--set stage full.lr=abc: not a number or a range lo..hi", 1);
    const char *bad2[] = {"full.batch=-3"};
    expect_err_sets(text, bad2, 1, "--set full.batch=-3: must be between 1 and 65536", 1);
    const char *bad3[] = {"nope.lr=1"};
    expect_err_sets(text, bad3, 1, "--set nope.lr=1: no section [data], [model], [run] or stage named 'nope' in %s (stages: small, full)", 1);
    const char *bad4[] = {"lr=1"};
    expect_err_sets(text, bad4, 1, "--set lr=1: expected section.key=value", 0);
    const char *bad5[] = {"full.epoch=1"};
    expect_err_sets(text, bad5, 1, "--set full.epoch=1: unknown key 'epoch' in [stage full]; did you mean 'epochs'?", 0);
    const char *bad6[] = {"small.n=3"};
    expect_err_sets(text, bad6, 1, "--set small.n=3: a stage of type fit_one_cycle takes no 'n' (only: tta)", 1);
    const char *bad7[] = {"model.arch="};
    expect_err_sets(text, bad7, 1, "--set model.arch=: expected section.key=value with a key and a value", 1);
}

static void test_help(void **state) {
    (void)state;
    char *text = NULL, *written = NULL;
    size_t len = 0, wlen = 0;
    FILE *m = open_memstream(&text, &len);
    config_help(m);
    fclose(m);
    ASSERT_HAS(text, "[data]");
    ASSERT_HAS(text, "[stage NAME]");
    ASSERT_HAS(text, "fine_tune 2e-3");
    /* every key config_write can produce is documented */
    Config c;
    load_ok(HEAD "[stage a]\ntype = progressive\nepochs = 1\n[stage b]\ntype = fixres\nepochs = 1\ntransform = rrc\n"
                 "[stage c]\ntype = fine_tune\nepochs = 1\ntransform = resize\n[stage d]\ntype = tta\n"
                 "[stage e]\ntype = eval\nsizes = 64\n[stage f]\ntype = fit\nepochs = 1\ntransform = fastai\n",
            NULL, 0, &c);
    m = open_memstream(&written, &wlen);
    config_write(&c, m);
    fclose(m);
    char *save = NULL;
    for (char *line = strtok_r(written, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char key[64], pat[80];
        if (sscanf(line, "%63[a-z_0-9] =", key) != 1) continue;
        snprintf(pat, sizeof pat, "\n  %s ", key);
        if (!strstr(text, pat)) fail_msg("config_help does not document '%s'", key);
    }
    config_free(&c);
    free(text);
    free(written);
}

/* Transfer learning keys: an lr range, freeze, pretrained; they survive the written config. */
static void test_transfer_keys(void **state) {
    (void)state;
    Config c;
    load_ok("[data]\npath = d\n[model]\narch = resnet18\npretrained = w.safetensors\n"
            "[stage a]\ntype = fit\nepochs = 1\nlr = 1e-5..1e-3\nfreeze = yes\n"
            "[stage b]\ntype = fit_one_cycle\nepochs = 1\nlr = 2e-3\n",
            NULL, 0, &c);
    assert_string_equal(c.pretrained, "w.safetensors");
    assert_int_equal(c.max_megapixels, 64); /* the default JPEG limit */
    assert_int_equal(c.max_file_mb, 64);    /* the default file size limit */
    assert_true(c.stages[0].lr == 1e-3f && c.stages[0].lr_lo == 1e-5f);
    assert_int_equal(c.stages[0].freeze, FREEZE_YES);
    assert_true(c.stages[1].lr == 2e-3f && c.stages[1].lr_lo == 0);
    assert_int_equal(c.stages[1].freeze, FREEZE_KEEP);
    config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configs_load_and_round_trip),
        cmocka_unit_test(test_seed_configs),
        cmocka_unit_test(test_defaults_per_stage_type),
        cmocka_unit_test(test_carry_over),
        cmocka_unit_test(test_ini_syntax),
        cmocka_unit_test(test_errors_structure),
        cmocka_unit_test(test_errors_keys),
        cmocka_unit_test(test_errors_values),
        cmocka_unit_test(test_errors_rules),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_transfer_keys),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
