/* train/lr_find.c: fastai's LR range test on a trainer (lr_find.h): the mock training with the
 * stage's loader, transforms, batch, weight decay, betas, label smoothing and mixup, one training
 * step (train/step.h, its loss read at once) per lr, and everything it changed put back: weights,
 * batch-norm statistics and counts, Adam's moments and step, the group lrs, the loss scaler. Used by
 * an lr_find stage (trainer_lr_find_stage) and by `./train lr_find` (lr_find_config). */
#include "train/lr_find.h"
#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/progress.h"
#include "base/util.h"
#include "ckpt/checkpoint.h"
#include "ckpt/pretrained.h"
#include "train/run_record.h"

/* All that a range test changes, to put back after it (fastai: learn.save before, learn.load with
 * the optimizer after). */
typedef struct {
    HostState h;
    int64_t *tracked;  /* each node's batches_tracked */
    int step;
    float group_lr[OPTIM_MAX_GROUPS];
    GradScaler scaler;
} Snapshot;

static Snapshot snapshot_take(Trainer *T) {
    Model *m = T->model;
    Snapshot s = {trainer_host_state_new(m), xmalloc((size_t)m->nnodes * sizeof(int64_t)), T->opt->step, {0}, T->scaler};
    model_get_weights(m, s.h.params, s.h.stats);
    optim_get_state(T->opt, s.h.adam_m, s.h.adam_v);
    for (int i = 0; i < m->nnodes; i++) s.tracked[i] = m->nodes[i].batches_tracked;
    memcpy(s.group_lr, T->opt->group_lr, sizeof s.group_lr);
    return s;
}

static void snapshot_restore(Trainer *T, Snapshot *s) {
    Model *m = T->model;
    model_set_weights(m, s->h.params, s->h.stats);
    optim_set_state(T->opt, s->h.adam_m, s->h.adam_v, s->step);
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].batches_tracked = s->tracked[i];
    optim_set_group_lrs(T->opt, s->group_lr);
    T->scaler = s->scaler;
    trainer_host_state_free(&s->h);
    free(s->tracked);
}

/* Adam's beta1 during the test: an lr_find stage's own (default 0.9), a constant-lr stage's, else
 * 0.9: the momentum of a fresh fastai Learner's Adam, which its lr_find runs with. */
static float test_beta1(const StageConfig *st) {
    return st->type == STAGE_LR_FIND || st->type == STAGE_FIT || st->type == STAGE_FIXRES ? st->mom_max : 0.9f;
}

/* The test itself: returns with the model and optimizer as they were, the curve in c. */
static void range_test(Trainer *T, const StageConfig *st, const LrFindOptions *o, LrFindCurve *c) {
    Model *m = T->model;
    memset(c, 0, sizeof *c);
    c->num_it = lr_find_iterations(o);
    Snapshot snap = snapshot_take(T);
    float ones[OPTIM_MAX_GROUPS];
    for (int g = 0; g < OPTIM_MAX_GROUPS; g++) ones[g] = 1.0f; /* fastai: one scalar lr, every group */
    optim_set_group_lrs(T->opt, ones);
    model_set_decay(m, st->wd_bn_bias);
    int on_device = trainer_augment_on_device(T);
    Loader *L = trainer_make_loader(T, &st->train_tf, st->batch, LOADER_TRAIN, on_device);
    if (T->bad_images && loader_mark_bad(L, T->bad_images)) die("lr_find: malformed bad_images list");
    /* the loss of each step is needed before the next: read at once */
    Stepper *step = step_new(m, T->opt, &T->scaler, &T->feed, STEP_READ_NOW);
    Rng mix_base = rng_split(&T->root, 300); /* streams of its own: the run's are left as they were */
    SmoothLoss smooth = {0};
    float best = INFINITY;
    int it = 0, done = 0;
    for (int e = 0; !done; e++) {
        if (!loader_start_epoch(L, T->epoch + e, 0))
            die("stage %s: the training images make no batch of %d for lr_find", st->name, st->batch);
        for (const Batch *b; !done && (b = loader_next(L));) {
            double lr = lr_find_lr(o, it);
            StepArgs a = {.batch = b, .smoothing = st->label_smoothing, .epoch = e, .index = it};
            a.hyper = (OptimHyper){(float)lr, test_beta1(st), st->beta2, st->eps, st->wd};
            uint64_t batch_id = (uint64_t)(T->epoch + e) << 32 | (uint64_t)b->index;
            Rng mix_rng = rng_split(&mix_base, batch_id);
            a.mixup_alpha = st->mixup_alpha;
            a.mix_rng = &mix_rng;
            a.dropout_seed = rng_hash(T->cfg->seed ^ 0x4c52464eULL, batch_id);
            StepReport r = step_run(step, &a);
            float s = smooth_loss_add(&smooth, r.loss);
            lr_find_curve_push(c, lr, r.loss, s);
            it++;
            progress_show("lr_find: %d/%d, lr %.2e, loss %.4f", it, c->num_it, lr, (double)s);
            /* fastai: best = min(smooth); stop when smooth > 4 * best (stop_div) or after num_it.
             * A loss or gradient that is not finite ends it too (fastai would go on training NaNs). */
            if (s < best) best = s;
            if (!isfinite(r.loss) || r.verdict == SCALER_STOP || (o->stop_div && s > 4 * best)) c->diverged = done = 1;
            if (it >= c->num_it) done = 1;
            if (trainer_dist_agree_stop(trainer_stop_signal)) c->interrupted = done = 1; /* every rank at the same step */
        }
    }
    progress_clear();
    step_free(step);
    loader_destroy(L);
    snapshot_restore(T, &snap);
}

/* The curve's summary, files and suggestions: into dir as name.csv and name.png. */
static void report(Trainer *T, const LrFindCurve *c, const char *dir, const char *name, const char *title) {
    LrSuggestion s[LR_SUGGEST_COUNT];
    lr_find_suggest(c, s);
    trainer_say(T, "lr_find: %d of %d batches, lr %.3g to %.3g%s\n", c->n, c->num_it, c->n ? c->lr[0] : 0,
                c->n ? c->lr[c->n - 1] : 0,
                c->diverged ? ": stopped, the loss diverged (smoothed loss over 4x its best, or not finite)" : "");
    for (int k = 0; k < LR_SUGGEST_COUNT; k++)
        if (!s[k].ok) trainer_say(T, "lr_find: %s: too few points for a suggestion (it needs %d batches run)\n", s[k].name, c->num_it / 10 + 5 + (k == LR_SUGGEST_STEEP ? 2 : 1));
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);
    if (!f) die("out of memory");
    lr_find_print_suggestions(f, s, LR_SUGGEST_COUNT);
    fclose(f);
    trainer_say(T, "%s", line);
    free(line);
    char path[1400], err[1600];
    snprintf(path, sizeof path, "%s/%s.csv", dir, name);
    if (lr_find_write_csv(path, c, err, sizeof err)) die("%s", err);
    trainer_say(T, "lr_find: %s\n", path);
    snprintf(path, sizeof path, "%s/%s.png", dir, name);
    lr_find_plot(path, c, s, title);
}

static LrFindOptions stage_options(const StageConfig *st) {
    LrFindOptions o;
    lr_find_options_default(&o);
    if (st->type == STAGE_LR_FIND) o = (LrFindOptions){st->lrf_start, st->lrf_end, st->lrf_num_it, st->lrf_stop_div};
    return o;
}

int trainer_lr_find_stage(Trainer *T, const StageConfig *st) {
    LrFindOptions o = stage_options(st);
    trainer_say(T, "stage %s: lr_find, lr %g to %g over %d batches of %d at %dpx (the model is put back after)\n", st->name,
                o.start_lr, o.end_lr, lr_find_iterations(&o), st->batch, st->size);
    LrFindCurve c;
    range_test(T, st, &o, &c);
    int interrupted = c.interrupted;
    if (!interrupted) {
        char name[128], title[300];
        snprintf(name, sizeof name, "lr_find-%s", st->name);
        snprintf(title, sizeof title, "lr_find (stage %s): smoothed training loss vs learning rate", st->name);
        report(T, &c, T->run_dir, name, title);
    } else {
        trainer_save_resume(T); /* the model is as it was: the stage runs again on resume */
    }
    lr_find_curve_free(&c);
    return interrupted;
}

/* ------------------------------------------------------------------------- ./train lr_find */

static const StageConfig *pick_stage(const Config *cfg, const char *name) {
    for (int i = 0; i < cfg->nstages; i++) {
        const StageConfig *st = &cfg->stages[i];
        if (name ? !strcmp(st->name, name) : st->type != STAGE_EVAL && st->type != STAGE_TTA) {
            if (st->type == STAGE_EVAL || st->type == STAGE_TTA)
                die("%s: [stage %s] is an %s stage: lr_find needs a stage that trains or an lr_find stage", cfg->path, name,
                    st->type == STAGE_EVAL ? "eval" : "tta");
            return st;
        }
    }
    if (name) {
        char list[1024] = "";
        for (int i = 0; i < cfg->nstages; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", cfg->stages[i].name);
        die("%s: no stage named '%s' (the stages: %s)", cfg->path, name, list);
    }
    die("%s: no stage that trains: lr_find takes its loader, batch and optimizer settings from one", cfg->path);
}

/* A non-negative integer of the file's metadata, or fallback when absent or out of range. */
static int meta_count(const StFile *meta, const char *key, int fallback) {
    const char *v = st_meta(meta, key);
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : -1;
    return v && end != v && !*end && n >= 0 && n < INT32_MAX ? (int)n : fallback;
}

/* --from a run's resume.safetensors: weights, statistics, Adam's moments and step, frozen or not,
 * the loss scale and the bad images found, as the run stood (what an lr_find stage there starts
 * from). Returns the epochs it had done. */
static int from_resume(Trainer *T, const char *path, HostState *h) {
    Model *m = T->model;
    StFile meta;
    char err[2048];
    if (ckpt_load_resume(path, m, h->params, h->stats, h->adam_m, h->adam_v, &meta, err, sizeof err)) die("%s", err);
    int step = meta_count(&meta, "adam_step", 0);
    optim_set_state(T->opt, h->adam_m, h->adam_v, step);
    T->frozen = meta_count(&meta, "frozen", 0) != 0;
    const char *scale = st_meta(&meta, "loss_scale"), *bad = st_meta(&meta, "bad_images");
    double s = scale ? strtod(scale, NULL) : 0;
    if (T->scaler.dynamic && s >= 1 && s <= 0x1p100) {
        T->scaler.scale = (float)s;
        T->scaler.good_steps = meta_count(&meta, "good_steps", 0) % SCALE_GROWTH_INTERVAL;
    }
    if (bad && bad[0]) T->bad_images = xstrdup(bad);
    int epochs = meta_count(&meta, "epochs_done", 0);
    st_close(&meta);
    printf("lr_find: weights, statistics and Adam moments (step %d) from %s\n", step, path);
    return epochs;
}

/* --from a model file: its weights and statistics, and Adam's moments from the .train.safetensors
 * beside it when an older run wrote one (of the same save); fresh moments otherwise. Returns the
 * epochs done that its metadata gives. */
static int from_model(Trainer *T, const char *path, HostState *h) {
    Model *m = T->model;
    char err[2048], train_path[1200];
    if (ckpt_load(path, m, h->params, h->stats, err, sizeof err)) die("%s", err);
    if (!ckpt_train_path(path, train_path, sizeof train_path) && !access(train_path, F_OK)) {
        StFile meta;
        if (ckpt_check_pair(path, train_path, err, sizeof err) ||
            ckpt_load_train(train_path, m, h->adam_m, h->adam_v, &meta, err, sizeof err))
            die("%s (move it away to start from fresh Adam moments)", err);
        optim_set_state(T->opt, h->adam_m, h->adam_v, meta_count(&meta, "adam_step", 0)); /* as ./train wrote it */
        st_close(&meta);
        printf("lr_find: weights from %s, Adam moments from %s\n", path, train_path);
    } else {
        printf("lr_find: weights and statistics from %s, fresh Adam moments (a model file holds none; a run's "
               "resume.safetensors does)\n", path);
    }
    StFile hdr;
    if (st_read_header(path, &hdr, err, sizeof err)) die("%s", err);
    int epochs = meta_count(&hdr, "epochs_done", 0);
    st_close(&hdr);
    return epochs;
}

/* The weights lr_find starts from: a fresh model as `./train CONFIG` starts it (init from the
 * seed, [model] pretrained, frozen when pretrained), or a checkpoint: a run's resume.safetensors
 * or a model file (see from_resume, from_model). From a checkpoint, the test runs the batches of
 * the epoch after those the run had done, as an lr_find stage at that point of the run would. */
static void starting_weights(Trainer *T, const char *from_ckpt) {
    const Config *cfg = T->cfg;
    Model *m = T->model;
    HostState h = trainer_host_state_new(m);
    char err[2048];
    if (from_ckpt) {
        StFile hdr;
        if (st_read_header(from_ckpt, &hdr, err, sizeof err)) die("%s", err);
        const char *format = st_meta(&hdr, "format");
        int kind = !format ? 0 : !strcmp(format, CKPT_RESUME_FORMAT) ? 1 : !strcmp(format, CKPT_TRAIN_FORMAT) ? 2 : 0;
        st_close(&hdr);
        if (kind == 2)
            die("%s: this is the training state (Adam's moments) of a checkpoint: give the model file beside it, or the "
                "run's resume.safetensors", from_ckpt);
        T->epoch = kind == 1 ? from_resume(T, from_ckpt, &h) : from_model(T, from_ckpt, &h);
    } else {
        Rng init = rng_split(&T->root, 1);
        model_init_host(m, &init, h.params, h.stats);
        if (cfg->pretrained[0]) {
            PretrainedReport rep;
            char *names = trainer_class_list(&T->data);
            if (pretrained_load_file_head(cfg->pretrained, m, h.params, h.stats, cfg->pretrained_head, names, &rep, err,
                                          sizeof err))
                die("%s: [model] pretrained: %s", cfg->path, err);
            free(names);
            pretrained_report_print(stdout, &rep, "", 0);
            pretrained_report_free(&rep);
            T->frozen = m->ngroups > 1; /* fastai's cnn_learner starts frozen */
        }
    }
    trainer_set_trainable(T);
    model_set_weights(m, h.params, h.stats);
    trainer_host_state_free(&h);
}

int lr_find_config(const Config *cfg, const char *stage, const LrFindOptions *given, const char *from_ckpt,
                   const char *out_dir) {
    const StageConfig *st = pick_stage(cfg, stage);
    LrFindOptions o = stage_options(st);
    if (given->start_lr > 0) o.start_lr = given->start_lr;
    if (given->end_lr > 0) o.end_lr = given->end_lr;
    if (given->num_it > 0) o.num_it = given->num_it;
    if (given->stop_div >= 0) o.stop_div = given->stop_div;
    if (!(o.end_lr > o.start_lr))
        die("lr_find: --end %g must be larger than --start %g (the lr grows from start to end)", o.end_lr, o.start_lr);
    Trainer T = {0};
    T.cfg = cfg;
    trainer_stop_signal = 0;
    char err[2048];
    if (dataset_open(&cfg->data, cfg->strict_images, &T.data, err, sizeof err)) die("%s", err);
    int classes = cfg->classes ? cfg->classes : T.data.nclasses;
    if (classes < T.data.nclasses) die("%s: classes = %d but the data has %d classes", cfg->path, classes, T.data.nclasses);
    if (st->batch > T.data.ntrain)
        die("%s: [stage %s] batch = %d, but the data has %d training images: no full batch", cfg->path, st->name, st->batch,
            T.data.ntrain);
    T.model = model_build(cfg->arch, classes, err, sizeof err);
    if (!T.model) die("%s: %s", cfg->path, err);
    T.be = backend_create(cfg->device, err, sizeof err);
    if (!T.be) die("%s: %s", cfg->path, err);
    backend_set_precision(T.be, cfg->precision);
    int dynamic = cfg->loss_scale == LOSS_SCALE_DYNAMIC || (cfg->loss_scale == LOSS_SCALE_AUTO && T.be->compute == DT_F16);
    T.scaler = scaler_make(dynamic, dynamic ? SCALE_INIT : 1.0f);
    if (model_attach(T.model, T.be, st->batch, st->size, st->size, err, sizeof err)) die("%s: %s", cfg->path, err);
    T.opt = optim_new(T.model);
    rng_seed(&T.root, cfg->seed);
    device_feed_init(&T.feed, T.be);
    starting_weights(&T, from_ckpt);
    /* a training stage's freeze = yes / no, as the stage would start */
    if (st->type != STAGE_LR_FIND && st->freeze != FREEZE_KEEP) trainer_set_frozen(&T, st->freeze == FREEZE_YES);
    if (snprintf(T.run_dir, sizeof T.run_dir, "%s", out_dir) >= (int)sizeof T.run_dir) die("%s: the folder name is too long", out_dir);
    if (make_dirs(out_dir)) die("cannot make the folder %s: %s", out_dir, strerror(errno));
    printf("lr_find: %s, %s (%d classes%s) on %s; stage %s: batch %d at %dpx, lr %g to %g over %d batches%s\n", cfg->path,
           cfg->arch, classes, T.frozen ? ", frozen: the head and batch norms train" : "", T.be->ops->name, st->name,
           st->batch, st->size, o.start_lr, o.end_lr, lr_find_iterations(&o), o.stop_div ? "" : " (no stop at divergence)");
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = trainer_on_stop_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    LrFindCurve c;
    range_test(&T, st, &o, &c);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    int rc = 0;
    if (c.interrupted) {
        printf("lr_find: interrupted after %d batches; nothing written\n", c.n);
        rc = 128 + (int)trainer_stop_signal;
    } else {
        report(&T, &c, out_dir, "lr_find", "lr_find: smoothed training loss vs learning rate");
    }
    lr_find_curve_free(&c);
    device_feed_free(&T.feed);
    optim_free(T.opt);
    model_free(T.model);
    backend_destroy(T.be);
    dataset_free(&T.data);
    free(T.bad_images);
    return rc;
}
