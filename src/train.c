/* train.c: the stages of a schedule (fit_one_cycle, fine_tune, fit, eval, tta) over the loader,
 * the model and the optimizer, with fastai's epoch table, metrics.csv and checkpoints. */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "loader.h"
#include "model.h"
#include "optim.h"
#include "plot.h"
#include "progressive.h"
#include "schedule.h"
#include "scores.h"
#include "util.h"

typedef struct {
    const Config *cfg;
    Dataset data;
    Model *model;
    Backend *be;
    Rng root;
    int adam_step;          /* Adam's step count since the moments were last cleared */
    int epoch;              /* epochs run so far, over all stages: the loader's epoch number */
    char run_dir[1024];
    FILE *log, *metrics;
    int32_t *labels_b;      /* mixup partners */
    float *lam, *mix;       /* mixup weights, and a copy of the batch to mix from */
    float *small;           /* a progressive stage's batch at its current side */
    float *logits;          /* host copy, max_batch x classes */
} Trainer;

/* Print to stdout and to the run's log. */
static void say(Trainer *T, const char *fmt, ...) CNN_PRINTF(2, 3);
static void say(Trainer *T, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (T->log) {
        va_start(ap, fmt);
        vfprintf(T->log, fmt, ap);
        va_end(ap);
        fflush(T->log);
    }
}

static Loader *make_loader(Trainer *T, const TransformSpec *tf, int batch, int train) {
    LoaderSpec s = {0};
    s.samples = train ? T->data.train : T->data.valid;
    s.count = train ? T->data.ntrain : T->data.nvalid;
    s.tf = *tf;
    s.batch = batch;
    s.shuffle = train;
    s.drop_last = train;
    s.threads = T->cfg->threads;
    Rng stream = rng_split(&T->root, train ? 11 : 12);
    s.seed = rng_u64(&stream);
    s.format = BATCH_F32;
    s.strict = T->cfg->strict_images;
    char err[512];
    Loader *L = loader_create(&s, err, sizeof err);
    if (!L) die("%s", err);
    return L;
}

/* Which parameters decay: fastai leaves batch norm and biases out (wd_bn_bias = 0). */
static void set_decay(Model *m, int wd_bn_bias) {
    for (int i = 0; i < m->nparams; i++) {
        ParamKind k = m->params[i].kind;
        m->params[i].decay = wd_bn_bias || k == P_CONV_WEIGHT || k == P_LINEAR_WEIGHT;
    }
}

static void reset_optimizer(Trainer *T) {
    optim_reset(T->model);
    T->adam_step = 0;
}

/* Mixup: per sample lam ~ Beta(a, a), lam = max(lam, 1 - lam), partner from a random permutation;
 * x = lam*x_i + (1-lam)*x_partner, the loss mixes the labels the same way. */
static void mixup(Trainer *T, Rng *rng, float alpha, float *x, int n, size_t per_image, const int32_t *labels) {
    memcpy(T->mix, x, (size_t)n * per_image * sizeof(float));
    int *perm = xmalloc((size_t)n * sizeof *perm);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(rng, (uint32_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < n; i++) {
        float lam = rng_beta(rng, alpha, alpha);
        lam = lam > 1.0f - lam ? lam : 1.0f - lam;
        T->lam[i] = lam;
        T->labels_b[i] = labels[perm[i]];
        float *xi = x + (size_t)i * per_image;
        const float *xj = T->mix + (size_t)perm[i] * per_image;
        for (size_t k = 0; k < per_image; k++) xi[k] = lam * xi[k] + (1.0f - lam) * xj[k];
    }
    free(perm);
}

typedef struct {
    double loss;
    int correct, count;
} EvalResult;

/* Count argmax hits of host logits (n x classes). */
static int count_correct(const float *logits, const int32_t *labels, int n, int classes) {
    int correct = 0;
    for (int i = 0; i < n; i++) correct += argmax(logits + (size_t)i * classes, classes) == labels[i];
    return correct;
}

/* One pass over the validation set: mean loss (with the stage's label smoothing, as fastai's
 * valid_loss) and accuracy. probs and labels, when not NULL, receive each image's softmax
 * probabilities and label. */
static EvalResult evaluate(Trainer *T, Loader *L, int epoch, float smoothing, float *probs, int32_t *labels) {
    EvalResult r = {0, 0, 0};
    Model *m = T->model;
    loader_start_epoch(L, epoch, 0);
    for (const Batch *b; (b = loader_next(L));) {
        const Tensor *out = model_forward(m, b->x, b->n, b->size, b->size, 0);
        r.loss += (double)model_loss(m, b->labels, smoothing) * b->n;
        T->be->ops->tensor_download(T->be, T->logits, out);
        r.correct += count_correct(T->logits, b->labels, b->n, m->classes);
        if (labels) memcpy(labels + r.count, b->labels, (size_t)b->n * sizeof(int32_t));
        if (probs)
            for (int i = 0; i < b->n; i++)
                softmax_row(T->logits + (size_t)i * m->classes, probs + (size_t)(r.count + i) * m->classes, m->classes);
        r.count += b->n;
    }
    if (r.count) r.loss /= r.count;
    return r;
}

typedef enum { LR_ONE_CYCLE, LR_CONSTANT } LrShape;

/* One fit call: fastai's fit_one_cycle or a constant-lr fit, epochs x batches, then validation
 * after each epoch, printed as fastai's table. */
static void fit(Trainer *T, const StageConfig *st, const char *label, int epochs, LrShape shape, const OneCycle *cycle,
                const ProgressiveSchedule *prog) {
    Model *m = T->model;
    Loader *train = make_loader(T, &st->train_tf, st->batch, 1), *valid = make_loader(T, &st->valid_tf, st->batch, 0);
    int per_epoch = loader_batches(train);
    if (per_epoch < 1) die("stage %s: %d training images make no batch of %d", st->name, T->data.ntrain, st->batch);
    long total = (long)epochs * per_epoch, step = 0;
    set_decay(m, st->wd_bn_bias);
    say(T, "stage %s: %s, %d epochs of %d batches of %d at %dpx\n", st->name, label, epochs, per_epoch, st->batch, st->size);
    say(T, "%-6s %-11s %-11s %-9s %s\n", "epoch", "train_loss", "valid_loss", "accuracy", "time");
    Rng mix_rng = rng_split(&T->root, 100 + (uint64_t)T->epoch), crop_rng = rng_split(&T->root, 200 + (uint64_t)T->epoch);
    for (int e = 0; e < epochs; e++) {
        double t0 = now_seconds(), sum = 0;
        long seen = 0;
        int last_side = st->size; /* the side of the epoch's last batch: the schedule, for metrics.csv */
        loader_start_epoch(train, T->epoch, 0);
        for (const Batch *b; (b = loader_next(train)); step++) {
            float pos = (float)step / (float)total;
            AdamWArgs a = {st->lr, st->mom_max, st->beta2, st->eps, st->wd, ++T->adam_step};
            if (shape == LR_ONE_CYCLE) {
                a.lr = one_cycle_lr(cycle, pos);
                a.beta1 = one_cycle_mom(cycle, pos);
            }
            float *x = b->x; /* the loader's buffer is ours until the next batch: mixup writes into it */
            int side = prog ? progressive_side(prog, b->size, pos) : b->size;
            if (side < b->size) {
                if (st->resize_crop) batch_crop(b->x, b->n, b->size, T->small, side, &crop_rng);
                else batch_resize(b->x, b->n, b->size, T->small, side);
                x = T->small;
            }
            size_t per_image = 3 * (size_t)side * side;
            last_side = side;
            if (st->mixup_alpha > 0) mixup(T, &mix_rng, st->mixup_alpha, x, b->n, per_image, b->labels);
            model_forward(m, x, b->n, side, side, 1);
            float loss = st->mixup_alpha > 0 ? model_loss_mixup(m, b->labels, T->labels_b, T->lam, st->label_smoothing)
                                             : model_loss(m, b->labels, st->label_smoothing);
            if (!isfinite(loss))
                die("stage %s, epoch %d, step %ld: the loss is %g; stopping (lower the learning rate?)", st->name, e,
                    step, loss);
            model_backward(m);
            optim_adamw_step(m, &a);
            sum += (double)loss * b->n;
            seen += b->n;
            if (isatty(STDOUT_FILENO)) {
                double dt = now_seconds() - t0;
                int done = (int)(step % per_epoch) + 1;
                printf("\r  epoch %d: %d/%d batches, %.0f img/s, loss %.4f, eta %.0fs   ", e, done, per_epoch, seen / dt,
                       sum / seen, dt / done * (per_epoch - done));
                fflush(stdout);
            }
        }
        if (isatty(STDOUT_FILENO)) printf("\r%80s\r", "");
        EvalResult v = evaluate(T, valid, T->epoch, st->label_smoothing, NULL, NULL);
        double dt = now_seconds() - t0;
        float acc = v.count ? (float)v.correct / v.count : 0;
        say(T, "%-6d %-11.6f %-11.6f %-9.6f %02d:%02d\n", e, sum / (seen ? seen : 1), v.loss, acc, (int)dt / 60, (int)dt % 60);
        fprintf(T->metrics, "%s,%d,%d,%.6f,%.6f,%.6f,%.2f,%d\n", st->name, T->epoch, e, sum / (seen ? seen : 1), v.loss, acc,
                dt, last_side);
        fflush(T->metrics);
        T->epoch++;
    }
    loader_destroy(train);
    loader_destroy(valid);
}

/* Multi-resolution evaluation: the valid transform at each size. Writes eval-<stage>.csv. */
static void eval_sizes(Trainer *T, const StageConfig *st) {
    char path[1200];
    snprintf(path, sizeof path, "%s/eval-%s.csv", T->run_dir, st->name);
    FILE *csv = fopen(path, "w");
    if (!csv) die("cannot write %s: %s", path, strerror(errno));
    fprintf(csv, "size,loss,accuracy,images\n");
    say(T, "stage %s: evaluation at %d sizes\n%-6s %-11s %-9s\n", st->name, st->nsizes, "size", "loss", "accuracy");
    for (int i = 0; i < st->nsizes; i++) {
        TransformSpec tf = st->valid_tf;
        tf.size = st->sizes[i];
        Loader *L = make_loader(T, &tf, st->batch, 0);
        EvalResult r = evaluate(T, L, 0, 0.0f, NULL, NULL);
        loader_destroy(L);
        float acc = r.count ? (float)r.correct / r.count : 0;
        say(T, "%-6d %-11.6f %-9.6f\n", tf.size, r.loss, acc);
        fprintf(csv, "%d,%.6f,%.6f,%d\n", tf.size, r.loss, acc, r.count);
    }
    fclose(csv);
}

/* fastai's tta(n, beta): n passes with the training transforms, averaged, then
 * lerp(mean_aug, plain, beta) on the softmax probabilities. */
static void tta(Trainer *T, const StageConfig *st) {
    int classes = T->model->classes;
    size_t cells = (size_t)T->data.nvalid * classes;
    float *plain = xcalloc(cells, sizeof(float)), *aug = xcalloc(cells, sizeof(float)), *pass = xcalloc(cells, sizeof(float));
    int32_t *labels = xmalloc((size_t)T->data.nvalid * sizeof(int32_t));
    /* The plain pass first: it finds any bad image, so every later pass lists the same images. */
    Loader *L = make_loader(T, &st->valid_tf, st->batch, 0);
    EvalResult r = evaluate(T, L, 0, 0.0f, plain, labels);
    int n = r.count;
    loader_destroy(L);
    Loader *A = make_loader(T, &st->train_tf, st->batch, 0);
    for (int p = 0; p < st->tta_n; p++) {
        evaluate(T, A, 1000 + p, 0.0f, pass, NULL);
        for (size_t i = 0; i < (size_t)n * classes; i++) aug[i] += pass[i] / (float)st->tta_n;
    }
    loader_destroy(A);
    for (size_t i = 0; i < (size_t)n * classes; i++) aug[i] += st->tta_beta * (plain[i] - aug[i]);
    int correct = count_correct(aug, labels, n, classes);
    say(T, "stage %s: TTA (n=%d, beta=%.2f): accuracy %.6f (without TTA %.6f) on %d images\n", st->name, st->tta_n,
        st->tta_beta, n ? (float)correct / n : 0, r.count ? (float)r.correct / r.count : 0, n);
    fprintf(T->metrics, "%s,%d,tta,,,%.6f,,%d\n", st->name, T->epoch, n ? (float)correct / n : 0, st->size);
    fflush(T->metrics);
    free(plain);
    free(aug);
    free(pass);
    free(labels);
}

/* The class list as one metadata string: names joined by newlines (names never hold one). */
static char *class_list(const Dataset *d) {
    size_t len = 1;
    for (int i = 0; i < d->nclasses; i++) len += strlen(d->classes[i]) + 1;
    char *s = xmalloc(len), *p = s;
    for (int i = 0; i < d->nclasses; i++) p += sprintf(p, "%s%s", i ? "\n" : "", d->classes[i]);
    *p = 0;
    return s;
}

static void save_checkpoint(Trainer *T, const char *name, const char *stage) {
    Model *m = T->model;
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    float *am = xmalloc(m->param_floats * sizeof(float)), *av = xmalloc(m->param_floats * sizeof(float));
    model_get_weights(m, params, stats);
    m->be->ops->download(m->be, am, m->adam_m, m->param_floats * sizeof(float));
    m->be->ops->download(m->be, av, m->adam_v, m->param_floats * sizeof(float));
    char id[CKPT_ID_CHARS + 1], epoch[16], step[16], path[1200], train_path[1300], err[1024];
    ckpt_new_id(id);
    snprintf(epoch, sizeof epoch, "%d", T->epoch);
    snprintf(step, sizeof step, "%d", T->adam_step);
    char *classes = class_list(&T->data);
    const char *meta[] = {CKPT_ID_KEY, id, "class_names", classes, "stage", stage, "epochs_done", epoch, "adam_step", step, NULL};
    snprintf(path, sizeof path, "%s/%s.safetensors", T->run_dir, name);
    if (ckpt_train_path(path, train_path, sizeof train_path)) die("checkpoint path too long: %s", path);
    /* the training state first: a crash between the two leaves ids that do not match */
    if (ckpt_save_train(train_path, m, am, av, meta, err, sizeof err) || ckpt_save(path, m, params, stats, meta, err, sizeof err))
        die("%s", err);
    say(T, "checkpoint: %s\n", path);
    free(classes);
    free(params);
    free(stats);
    free(am);
    free(av);
}

/* FixRes fine-tuning at a new size: only the classifier (and, with train_final_bn, the last batch
 * norm before pooling) learns; every other batch norm runs on its running statistics, while the
 * last one stays in training mode so its statistics adapt to the new size. Constant lr, fresh moments. */
static void fixres(Trainer *T, const StageConfig *st) {
    Model *m = T->model;
    int last_bn = -1;
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].op == OP_BN) last_bn = i;
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].op == OP_BN) m->nodes[i].frozen_stats = i != last_bn;
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        m->params[i].trainable = p->kind == P_LINEAR_WEIGHT || p->kind == P_LINEAR_BIAS || (st->train_final_bn && p->node == last_bn);
    }
    reset_optimizer(T);
    fit(T, st, st->train_final_bn ? "fixres (head + final batch norm)" : "fixres (head; final batch norm adapts)", st->epochs,
        LR_CONSTANT, NULL, NULL);
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].frozen_stats = 0;
    for (int i = 0; i < m->nparams; i++) m->params[i].trainable = 1;
    reset_optimizer(T);
}

static void run_stage(Trainer *T, const StageConfig *st) {
    OneCycle c = {st->lr, st->pct_start, st->div, st->div_final, st->mom_max, st->mom_min};
    switch (st->type) {
    case STAGE_FIT_ONE_CYCLE: fit(T, st, "fit_one_cycle", st->epochs, LR_ONE_CYCLE, &c, NULL); break;
    case STAGE_FIT: fit(T, st, "fit (constant lr)", st->epochs, LR_CONSTANT, NULL, NULL); break;
    case STAGE_PROGRESSIVE: {
        ProgressiveSchedule p = {st->initial_scale, st->delay_fraction, st->finetune_fraction, st->size_increment};
        fit(T, st, "progressive resizing (one-cycle)", st->epochs, LR_ONE_CYCLE, &c, &p);
        break;
    }
    case STAGE_FIXRES: fixres(T, st); break;
    case STAGE_FINE_TUNE: {
        /* fastai: freeze, fit_one_cycle(freeze_epochs, lr, pct_start=0.99), unfreeze,
         * fit_one_cycle(epochs, lr/2, pct_start, div). A model trained from scratch is one
         * parameter group, so freezing leaves everything trainable; the moments are cleared twice. */
        reset_optimizer(T);
        OneCycle frozen = one_cycle_default(st->lr);
        frozen.pct_start = 0.99f;
        frozen.mom_max = st->mom_max;
        frozen.mom_min = st->mom_min;
        if (st->freeze_epochs > 0) fit(T, st, "fine_tune, frozen", st->freeze_epochs, LR_ONE_CYCLE, &frozen, NULL);
        reset_optimizer(T);
        c.lr_max = st->lr / 2;
        fit(T, st, "fine_tune, unfrozen", st->epochs, LR_ONE_CYCLE, &c, NULL);
        break;
    }
    case STAGE_EVAL: eval_sizes(T, st); return;
    case STAGE_TTA: tta(T, st); return;
    default: die("stage %s: unknown stage type %d", st->name, (int)st->type);
    }
    save_checkpoint(T, st->name, st->name);
}

/* The size and batch the model must be sized for: the largest of any stage. */
static void largest_shape(const Config *cfg, int *batch, int *side) {
    *batch = *side = 1;
    for (int i = 0; i < cfg->nstages; i++) {
        const StageConfig *st = &cfg->stages[i];
        if (st->batch > *batch) *batch = st->batch;
        if (st->size > *side) *side = st->size;
        for (int k = 0; k < st->nsizes; k++)
            if (st->sizes[k] > *side) *side = st->sizes[k];
    }
}

int train_run(const Config *cfg, char *run_dir, size_t run_dir_len) {
    Trainer T = {0};
    T.cfg = cfg;
    char err[1024];
    if (dataset_open(&cfg->data, cfg->strict_images, &T.data, err, sizeof err)) die("%s", err);
    int classes = cfg->classes ? cfg->classes : T.data.nclasses;
    if (classes < T.data.nclasses)
        die("%s: classes = %d but the data has %d classes", cfg->path, classes, T.data.nclasses);
    T.model = model_build(cfg->arch, classes, err, sizeof err);
    if (!T.model) die("%s: %s", cfg->path, err);
    T.be = backend_create(cfg->device, err, sizeof err);
    if (!T.be) die("%s: %s", cfg->path, err);
    if (cfg->precision != DT_F32 && T.be->compute == DT_F32)
        fprintf(stderr, "cnntrain: precision %s is not available on the %s backend; training in fp32\n",
                dtype_name(cfg->precision), T.be->ops->name);
    int max_batch, max_side;
    largest_shape(cfg, &max_batch, &max_side);
    if (model_attach(T.model, T.be, max_batch, max_side, max_side, err, sizeof err)) die("%s: %s", cfg->path, err);

    rng_seed(&T.root, cfg->seed);
    Rng init = rng_split(&T.root, 1);
    float *params = xmalloc(T.model->param_floats * sizeof(float)), *stats = xmalloc((T.model->stat_floats + 1) * sizeof(float));
    model_init_host(T.model, &init, params, stats);
    model_set_weights(T.model, params, stats);
    free(params);
    free(stats);

    /* runs/<config name>-<time>/ */
    const char *base = strrchr(cfg->path, '/');
    base = base ? base + 1 : cfg->path;
    char stem[512], stamp[32];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = 0;
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
    if (snprintf(T.run_dir, sizeof T.run_dir, "%s/%s-%s", cfg->out_dir, stem, stamp) >= (int)sizeof T.run_dir)
        die("%s: the run folder name under %s is too long", cfg->path, cfg->out_dir);
    if (make_dirs(T.run_dir)) die("cannot create the run folder %s: %s", T.run_dir, strerror(errno));
    snprintf(run_dir, run_dir_len, "%s", T.run_dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.ini", T.run_dir);
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write %s: %s", path, strerror(errno));
    config_write(cfg, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/log.txt", T.run_dir);
    T.log = fopen(path, "w");
    snprintf(path, sizeof path, "%s/metrics.csv", T.run_dir);
    T.metrics = fopen(path, "w");
    if (!T.log || !T.metrics) die("cannot write in %s: %s", T.run_dir, strerror(errno));
    fprintf(T.metrics, "stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size\n");

    size_t per_image = 3 * (size_t)max_side * max_side;
    T.mix = xmalloc((size_t)max_batch * per_image * sizeof(float));
    T.small = xmalloc((size_t)max_batch * per_image * sizeof(float));
    T.lam = xmalloc((size_t)max_batch * sizeof(float));
    T.labels_b = xmalloc((size_t)max_batch * sizeof(int32_t));
    T.logits = xmalloc((size_t)max_batch * classes * sizeof(float));
    say(&T, "cnntrain: %s, %s (%d classes) on %s; %d train / %d valid images; run folder %s\n", cfg->path, cfg->arch,
        classes, T.be->ops->name, T.data.ntrain, T.data.nvalid, T.run_dir);
    for (int i = 0; i < cfg->nstages; i++) run_stage(&T, &cfg->stages[i]);
    save_checkpoint(&T, "final", "final");

    fclose(T.log);
    fclose(T.metrics);
    plot_run(T.run_dir);
    free(T.mix);
    free(T.small);
    free(T.lam);
    free(T.labels_b);
    free(T.logits);
    model_free(T.model);
    backend_destroy(T.be);
    dataset_free(&T.data);
    return 0;
}
