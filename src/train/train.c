/* train/train.c: the stages of a schedule (fit_one_cycle, fine_tune, fit, eval, tta) over the loader,
 * the model and the optimizer, with fastai's epoch table, metrics.csv and checkpoints. */
#include "train/train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/checkpoint.h"
#include "pipeline/device_feed.h"
#include "pipeline/loader.h"
#include "net/model.h"
#include "net/optim.h"
#include "report/plot.h"
#include "ckpt/pretrained.h"
#include "train/progressive.h"
#include "train/run_record.h"
#include "train/schedule.h"
#include "train/scores.h"
#include "base/util.h"

#define MAX_GROUPS 8

/* Where a run stands; a resume checkpoint records it. */
typedef struct {
    int stage;              /* index of the stage being run (nstages once the run is done) */
    int phase;              /* fit call within the stage: fine_tune's frozen (0) and unfrozen (1) parts */
    int epoch;              /* epochs of that fit done */
    int batch;              /* batches of the current epoch done */
    double loss_sum;        /* the current epoch's training loss so far, summed over images */
    long seen;              /* images in loss_sum */
} Position;

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
    float *lam;             /* mixup weights */
    int32_t *partner;       /* mixup partners (indices into the batch) */
    Tensor full;            /* backend memory: a progressive stage's full-size batch, before shrink_batch */
    float *logits;          /* host copy, max_batch x classes */
    Position at;            /* where the run stands, for the next resume checkpoint */
    Position from;          /* a resumed run: where the checkpoint stopped */
    int resuming;           /* the fit that `from` stopped inside has not been reached yet */
    char *from_bad[2];      /* its loader's bad images: at that epoch's start, and all */
    char *bad_images;       /* training images found bad by the fits so far (a loader_bad_list): every
                             * later fit leaves them out from its start, so a resumed run knows what
                             * the run that never stopped knew */
    Loader *train_loader;   /* the running fit's, for its bad-image lists */
    int resume_written;     /* RUN/resume.safetensors exists (written or resumed from) */
    long steps;             /* training steps of this process (run.stop_after) */
    long nan_step;          /* fault injection for tests: CNNTRAIN_INJECT_NAN=N poisons step N's batch, */
    long inf_grad_step;     /* CNNTRAIN_INJECT_NAN=grad:N one gradient of step N (finite loss, inf gradient) */
    int dynamic_scale;      /* [run] loss_scale: skip overflowing steps and adapt the scale */
    float loss_scale;       /* a power of two; 1 without dynamic scaling */
    int good_steps;         /* finite steps since the scale last changed */
    long skipped_steps;     /* of this process, for the summary */
    DeviceFeed feed;        /* BATCH_RAW batches to the model's input (augmentation on the device) */
    int frozen;             /* fastai's freeze(): only the last parameter group and the batch norms train */
    float group_scale[MAX_GROUPS]; /* the running fit's lr per parameter group, as a fraction of its lr */
    int stopped;            /* why the run stopped early: a signal number, or -1 for stop_after */
    char data_fp[DATA_FP_CHARS]; /* the data set's fingerprint (run_record.h), in every checkpoint */
    struct StepRead *reads; /* alloc_host, 2 slots: a step's loss and gradient scan, read one step late */
    uint64_t *scan_d;       /* backend memory: scan_nonfinite's result for the step being queued */
} Trainer;

/* What the host learns of a training step, copied back while the next step runs (read_async):
 * its loss, and how many gradient values are inf or NaN with the first one's index. */
typedef struct StepRead {
    float loss;
    uint64_t scan[2];
} StepRead;

/* A step queued but not yet read back: where it was, for the message if it went wrong. */
typedef struct {
    int live, slot, epoch, n;
    long step;
} PendingStep;

static volatile sig_atomic_t stop_signal;


static void on_stop_signal(int sig) { stop_signal = sig; }

/* Ctrl-C, SIGTERM or run.stop_after: finish the step, write a resume checkpoint, exit cleanly. */
static int stop_requested(Trainer *T) {
    if (stop_signal) T->stopped = stop_signal;
    else if (T->cfg->stop_after && T->steps >= T->cfg->stop_after) T->stopped = -1;
    return T->stopped != 0;
}

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

/* For a message that stops the run: where it can go on from. */
static const char *last_checkpoint(const Trainer *T, char *buf, size_t len) {
    if (T->resume_written)
        snprintf(buf, len, "The last good checkpoint is %s/resume.safetensors (stage %d, epoch %d, batch %d)", T->run_dir,
                 T->at.stage, T->at.epoch, T->at.batch);
    else
        snprintf(buf, len, "No checkpoint was written yet (the run stopped before its first epoch ended)");
    return buf;
}

/* PyTorch's GradScaler defaults */
#define SCALE_INIT 65536.0f
#define SCALE_GROWTH_INTERVAL 2000

/* The parameter that holds flat gradient index i. */
static const char *param_at(const Model *m, uint64_t i) {
    for (int k = 0; k < m->nparams; k++)
        if (i >= m->params[k].offset && i < m->params[k].offset + m->params[k].count) return m->params[k].name;
    return "?";
}

/* Without dynamic loss scaling a bad step stops the run, so nothing needs deciding before the next
 * step is queued: the step's loss and a scan of its gradients are copied back while the next step
 * runs (queue_step_read), and checked then (take_step_read), with the step's own epoch and number
 * in the message. The device never waits for the host between steps. */
static void queue_step_read(Trainer *T, int slot) {
    Backend *be = T->be;
    Model *m = T->model;
    be->ops->scan_nonfinite(be, m->grads_d, m->param_floats, T->scan_d);
    be->ops->read_async(be, &T->reads[slot].loss, m->loss_d, sizeof(float), slot);
    be->ops->read_async(be, T->reads[slot].scan, T->scan_d, sizeof T->reads[slot].scan, slot);
}

/* The pending step, if any: waits for its read-back, stops the run if it went wrong, else adds its
 * loss to the epoch's sum and count. */
static void take_step_read(Trainer *T, const StageConfig *st, PendingStep *p, double *sum, long *seen) {
    if (!p->live) return;
    T->be->ops->read_wait(T->be, p->slot);
    const StepRead *r = &T->reads[p->slot];
    char where[1400];
    if (!isfinite(r->loss))
        die("stage %s, epoch %d, step %ld: the loss is %g; stopping (lower the learning rate?). %s", st->name, p->epoch,
            p->step, r->loss, last_checkpoint(T, where, sizeof where));
    if (r->scan[0])
        die("stage %s, epoch %d, step %ld: %llu gradient values are inf or NaN (the first in %s) while the loss is "
            "finite; stopping (lower the learning rate? [run] loss_scale = dynamic skips such steps). %s",
            st->name, p->epoch, p->step, (unsigned long long)r->scan[0], param_at(T->model, r->scan[1]),
            last_checkpoint(T, where, sizeof where));
    *sum += (double)r->loss * p->n;
    *seen += p->n;
    p->live = 0;
}

/* With dynamic loss scaling, after backward: are the gradients finite? A finite loss can still give
 * inf/NaN gradients (an overflow inside the backward pass): the step is skipped and the scale
 * halved (PyTorch's GradScaler: 0 returned, Adam does not step). Finite steps grow the scale every
 * 2000. (Without dynamic scaling the check is take_step_read's, one step late.) */
static int gradients_finite(Trainer *T, const StageConfig *st, int epoch, long step) {
    Model *m = T->model;
    char where[1400];
    /* the same scan as take_step_read's, waited for at once (slot 0: the one-step-late reads are off) */
    Backend *be = m->be;
    uint64_t *scan = T->reads[0].scan;
    be->ops->scan_nonfinite(be, m->grads_d, m->param_floats, T->scan_d);
    be->ops->read_async(be, scan, T->scan_d, 2 * sizeof(uint64_t), 0);
    be->ops->read_wait(be, 0);
    uint64_t bad = scan[0];
    if (!bad) {
        if (T->dynamic_scale && ++T->good_steps == SCALE_GROWTH_INTERVAL && T->loss_scale < 0x1p100f) {
            T->loss_scale *= 2;
            T->good_steps = 0;
        }
        m->be->loss_scale = T->loss_scale;
        return 1;
    }
    if (T->loss_scale <= 1.0f)
        die("stage %s, epoch %d, step %ld: the gradients overflow even at loss scale 1 (the first in %s); stopping. %s",
            st->name, epoch, step, param_at(m, scan[1]), last_checkpoint(T, where, sizeof where));
    say(T, "  step %ld: %llu gradient values inf or NaN at loss scale %g: step skipped, scale %g\n", step,
        (unsigned long long)bad,
        (double)T->loss_scale, (double)T->loss_scale / 2);
    T->loss_scale /= 2;
    T->good_steps = 0;
    T->skipped_steps++;
    m->be->loss_scale = T->loss_scale;
    return 0;
}

/* Fault injection: a NaN into the input batch (its first float's bytes: a NaN in fp32, and a zero
 * then a NaN in fp16 and bf16). */
static void inject_nan_input(Backend *be, Tensor *x) {
    float nan = NAN;
    be->ops->upload(be, x->data, &nan, sizeof nan);
}

/* Fault injection: +inf into the first trainable parameter's gradient. */
static void inject_inf_gradient(Model *m) {
    for (int i = 0; i < m->nparams; i++)
        if (m->params[i].trainable) {
            float inf = INFINITY;
            m->be->ops->upload(m->be, m->grads_d + m->params[i].offset, &inf, sizeof inf);
            return;
        }
}

static Loader *make_loader(Trainer *T, const TransformSpec *tf, int batch, int train, int on_device) {
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
    s.format = on_device ? BATCH_RAW : BATCH_F32;
    s.backend = on_device ? T->be : NULL;
    s.strict = T->cfg->strict_images;
    s.max_pixels = (long)T->cfg->max_megapixels * 1000000L;
    s.max_file_bytes = (long long)T->cfg->max_file_mb * 1000000LL;
    char err[512];
    Loader *L = loader_create(&s, err, sizeof err);
    if (!L) die("%s", err);
    return L;
}

static void reset_optimizer(Trainer *T) {
    optim_reset(T->model);
    T->adam_step = 0;
}

/* fastai's freeze() / unfreeze() (model_set_frozen); a model of one group is never frozen. */
static void set_trainable(Trainer *T) { model_set_frozen(T->model, T->frozen); }

/* freeze() / unfreeze() as fastai does them: the optimizer state is cleared either way. */
static void set_frozen(Trainer *T, int frozen) {
    T->frozen = frozen && T->model->ngroups > 1;
    set_trainable(T);
    reset_optimizer(T);
}

/* Learning rates over the parameter groups, as fractions of the top one (group_lr_scales). */
static void set_group_lrs(Trainer *T, float lo, float hi, int spread) {
    group_lr_scales(T->model->ngroups, lo, hi, spread, T->group_scale);
}

/* Mixup: per sample lam ~ Beta(a, a), lam = max(lam, 1 - lam), partner from a random permutation;
 * x = lam*x_i + (1-lam)*x_partner, the loss mixes the labels the same way. */
static void mixup(Trainer *T, Rng *rng, float alpha, Tensor *x, const int32_t *labels) {
    int n = x->n;
    int32_t *perm = T->partner;
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(rng, (uint32_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < n; i++) {
        T->lam[i] = rng_mixup_lam(rng, alpha);
        T->labels_b[i] = labels[perm[i]];
    }
    T->be->ops->mix_images(T->be, x, perm, T->lam); /* on the batch in backend memory */
}

typedef struct {
    double loss;
    int correct, count;
    int interrupted;        /* a stop signal came: the pass is incomplete */
} EvalResult;

/* Count argmax hits of host logits (n x classes). */
static int count_correct(const float *logits, const int32_t *labels, int n, int classes) {
    int correct = 0;
    for (int i = 0; i < n; i++) correct += argmax(logits + (size_t)i * classes, classes) == labels[i];
    return correct;
}

/* The batch into x (backend memory, b->size square): the loader's floats uploaded, or (a BATCH_RAW
 * batch) its decoded images uploaded and augmented on the device, with the same draws. */
static void upload_batch(Trainer *T, const Batch *b, Tensor *x) {
    if (b->pixels) device_feed_batch(&T->feed, b, imagenet_mean, imagenet_std, x);
    else T->be->ops->tensor_upload(T->be, x, b->x);
}

/* Augment on the device ([data] augment_on)? */
static int augment_on_device(const Trainer *T) {
    return T->cfg->augment_on == AUGMENT_DEVICE || (T->cfg->augment_on == AUGMENT_AUTO && strcmp(T->be->ops->name, "cpu"));
}

/* One pass over the validation set: mean loss (with the stage's label smoothing, as fastai's
 * valid_loss) and accuracy. probs and labels, when not NULL, receive each image's softmax
 * probabilities and label. */
static EvalResult evaluate(Trainer *T, Loader *L, int epoch, float smoothing, float *probs, int32_t *labels) {
    EvalResult r = {0, 0, 0, 0};
    Model *m = T->model;
    loader_start_epoch(L, epoch, 0);
    for (const Batch *b; (b = loader_next(L));) {
        if (stop_signal) {
            r.interrupted = 1;
            break;
        }
        upload_batch(T, b, model_input(m, b->n, b->size, b->size));
        const Tensor *out = model_run(m, 0);
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

/* The class list as one metadata string: names joined by newlines (names never hold one). */
static char *class_list(const Dataset *d) {
    size_t len = 1;
    for (int i = 0; i < d->nclasses; i++) len += strlen(d->classes[i]) + 1;
    char *s = xmalloc(len), *p = s;
    for (int i = 0; i < d->nclasses; i++) p += sprintf(p, "%s%s", i ? "\n" : "", d->classes[i]);
    *p = 0;
    return s;
}

/* The model's weights, statistics and Adam moments on the host, for a checkpoint. */
typedef struct {
    float *params, *stats, *adam_m, *adam_v;
} HostState;

/* Host arrays for a model's weights, statistics and moments, uninitialised. */
static HostState host_state_new(const Model *m) {
    HostState h = {xmalloc(m->param_floats * sizeof(float)), xmalloc((m->stat_floats + 1) * sizeof(float)),
                   xmalloc(m->param_floats * sizeof(float)), xmalloc(m->param_floats * sizeof(float))};
    return h;
}

static HostState host_state(Model *m) {
    HostState h = host_state_new(m);
    model_get_weights(m, h.params, h.stats);
    m->be->ops->download(m->be, h.adam_m, m->adam_m, m->param_floats * sizeof(float));
    m->be->ops->download(m->be, h.adam_v, m->adam_v, m->param_floats * sizeof(float));
    return h;
}

static void host_state_free(HostState *h) {
    free(h->params);
    free(h->stats);
    free(h->adam_m);
    free(h->adam_v);
}

/* A stage's (or the final) checkpoint: a plain PyTorch state dict plus its training state. */
static void save_checkpoint(Trainer *T, const char *name, const char *stage) {
    Model *m = T->model;
    HostState h = host_state(m);
    char id[CKPT_ID_CHARS + 1], epoch[16], step[16], path[1200], train_path[1300], err[1024];
    ckpt_new_id(id);
    snprintf(epoch, sizeof epoch, "%d", T->epoch);
    snprintf(step, sizeof step, "%d", T->adam_step);
    char *classes = class_list(&T->data);
    /* the split, so that `eval` can tell the run's validation images from its training images */
    const DatasetSpec *ds = &T->cfg->data;
    char pct[32], seed[32];
    snprintf(pct, sizeof pct, "%.9g", (double)ds->valid_pct);
    snprintf(seed, sizeof seed, "%" PRIu64, ds->seed);
    int csv = ds->format == DATA_CSV;
    const char *meta[] = {CKPT_ID_KEY, id, "class_names", classes, "stage", stage, "epochs_done", epoch, "adam_step", step,
                          "data", T->data_fp, csv ? "valid_pct" : NULL, pct, "split_seed", seed, NULL}; /* folder: no split keys */
    snprintf(path, sizeof path, "%s/%s.safetensors", T->run_dir, name);
    if (ckpt_train_path(path, train_path, sizeof train_path)) die("checkpoint path too long: %s", path);
    /* the training state first: a crash between the two leaves ids that do not match */
    if (ckpt_save_train(train_path, m, h.adam_m, h.adam_v, meta, err, sizeof err) ||
        ckpt_save(path, m, h.params, h.stats, meta, err, sizeof err))
        die("%s", err);
    say(T, "checkpoint: %s\n", path);
    free(classes);
    host_state_free(&h);
}

/* The hash of run_dir/metrics.csv's first len bytes (the resume checkpoint's record of it), or 0
 * when it holds fewer. */
static uint64_t metrics_hash(const char *run_dir, long len) {
    char path[1200], err[1400];
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    uint8_t *data;
    size_t n;
    if (read_whole_file(path, &data, &n, err, sizeof err)) die("%s", err);
    uint64_t h = len >= 0 && (size_t)len <= n ? fnv1a(FNV_START, data, (size_t)len) : 0;
    free(data);
    return h;
}

/* RUN/resume.safetensors: everything `./train --resume RUN` needs to go on from T->at as if the
 * run had never stopped. Rewritten whole (one atomic rename) after every epoch and stage. */
static void save_resume(Trainer *T) {
    Model *m = T->model;
    HostState h = host_state(m);
    const Position *p = &T->at;
    char path[1200], err[1024], stage[16], phase[16], epoch[16], batch[16], done[16], step[16], sum[64], seen[32],
        bytes[32], frozen[8], scale[32], good[16];
    snprintf(stage, sizeof stage, "%d", p->stage);
    snprintf(phase, sizeof phase, "%d", p->phase);
    snprintf(epoch, sizeof epoch, "%d", p->epoch);
    snprintf(batch, sizeof batch, "%d", p->batch);
    snprintf(done, sizeof done, "%d", T->epoch);
    snprintf(step, sizeof step, "%d", T->adam_step);
    snprintf(sum, sizeof sum, "%a", p->loss_sum); /* hexadecimal: exact */
    snprintf(seen, sizeof seen, "%ld", p->seen);
    snprintf(frozen, sizeof frozen, "%d", T->frozen);
    snprintf(scale, sizeof scale, "%a", (double)T->loss_scale);
    snprintf(good, sizeof good, "%d", T->good_steps);
    fflush(T->metrics);
    long metrics_len = ftell(T->metrics);
    snprintf(bytes, sizeof bytes, "%ld", metrics_len);
    char mhash[24];
    snprintf(mhash, sizeof mhash, "%016" PRIx64, metrics_hash(T->run_dir, metrics_len));
    /* Mid-epoch, the epoch's order was drawn without the bad images known when it began. */
    char *bad = T->train_loader ? loader_bad_list(T->train_loader, 0) : xstrdup(T->bad_images ? T->bad_images : "");
    char *bad_start = T->train_loader && p->batch ? loader_bad_list(T->train_loader, 1) : xstrdup(bad);
    char *classes = class_list(&T->data);
    const char *name = p->stage < T->cfg->nstages ? T->cfg->stages[p->stage].name : "(done)";
    const char *meta[] = {"class_names", classes, "stage", name, "stage_index", stage, "phase", phase, "stage_epoch", epoch,
                          "batch", batch, "epochs_done", done, "adam_step", step, "loss_sum", sum, "seen", seen,
                          "metrics_bytes", bytes, "bad_images", bad, "bad_images_at_epoch_start", bad_start,
                          "frozen", frozen, "loss_scale", scale, "good_steps", good, "data", T->data_fp,
                          "metrics_hash", mhash, NULL};
    snprintf(path, sizeof path, "%s/resume.safetensors", T->run_dir);
    if (ckpt_save_resume(path, m, h.params, h.stats, h.adam_m, h.adam_v, meta, err, sizeof err)) die("%s", err);
    T->resume_written = 1;
    free(classes);
    free(bad);
    free(bad_start);
    host_state_free(&h);
}

typedef enum { LR_ONE_CYCLE, LR_CONSTANT } LrShape;

/* One fit call (phase `phase` of its stage): fastai's fit_one_cycle or a constant-lr fit, epochs x
 * batches, then validation after each epoch, printed as fastai's table. A resume checkpoint follows
 * every epoch. Returns 1 when the run was asked to stop (the checkpoint is written), else 0. */
static int fit(Trainer *T, const StageConfig *st, int phase, const char *label, int epochs, LrShape shape,
               const OneCycle *cycle, const ProgressiveSchedule *prog) {
    Model *m = T->model;
    int on_device = augment_on_device(T);
    Loader *train = make_loader(T, &st->train_tf, st->batch, 1, on_device),
           *valid = make_loader(T, &st->valid_tf, st->batch, 0, on_device);
    int per_epoch = loader_batches(train);
    if (per_epoch < 1) die("stage %s: %d training images make no batch of %d", st->name, T->data.ntrain, st->batch);
    long total = (long)epochs * per_epoch;
    model_set_decay(m, st->wd_bn_bias);
    T->train_loader = train;
    Position start = {T->at.stage, phase, 0, 0, 0, 0};
    int resumed = T->resuming;
    if (resumed) { /* this is the fit the checkpoint stopped in */
        start = T->from;
        if (loader_mark_bad(train, T->from_bad[0])) die("%s/resume.safetensors: malformed bad_images list", T->run_dir);
        T->resuming = 0;
        say(T, "stage %s: resuming at epoch %d, batch %d\n", st->name, start.epoch, start.batch);
    } else {
        if (T->bad_images && loader_mark_bad(train, T->bad_images)) die("%s/resume.safetensors: malformed bad_images list", T->run_dir);
        say(T, "stage %s: %s, %d epochs of %d batches of %d at %dpx%s\n", st->name, label, epochs, per_epoch, st->batch,
            st->size, on_device ? ", augmented on the device" : "");
    }
    say(T, "%-6s %-11s %-11s %-9s %s\n", "epoch", "train_loss", "valid_loss", "accuracy", "time");
    /* mixup and progressive crops draw from a stream per batch, so a resumed run draws the same */
    Rng mix_base = rng_split(&T->root, 100), crop_base = rng_split(&T->root, 200);
    int stopped = 0;
    PendingStep pending = {0};
    for (int e = start.epoch; e < epochs && !stopped; e++) {
        int first = e == start.epoch;
        double t0 = now_seconds(), sum = first ? start.loss_sum : 0;
        long seen = first ? start.seen : 0;
        int last_side = st->size; /* the side of the epoch's last batch: the schedule, for metrics.csv */
        if (!loader_start_epoch(train, T->epoch, first ? start.batch : 0))
            die("stage %s, epoch %d: %d of the %d training images are bad (listed above); the %d left make no batch of %d",
                st->name, e, loader_bad_images(train), T->data.ntrain, T->data.ntrain - loader_bad_images(train), st->batch);
        /* the images the stopped run had found bad in this epoch after its order was drawn */
        if (first && resumed && loader_mark_bad(train, T->from_bad[1]))
            die("%s/resume.safetensors: malformed bad_images list", T->run_dir);
        for (const Batch *b; (b = loader_next(train));) {
            long step = (long)e * per_epoch + b->index;
            float pos = one_cycle_pos(step, total);
            AdamWArgs a = {st->lr, st->mom_max, st->beta2, st->eps, st->wd, ++T->adam_step};
            if (shape == LR_ONE_CYCLE) {
                a.lr = one_cycle_lr(cycle, pos);
                a.beta1 = one_cycle_mom(cycle, pos);
            }
            uint64_t batch_id = (uint64_t)T->epoch << 32 | (uint64_t)b->index;
            int side = prog ? progressive_side(prog, b->size, pos) : b->size;
            last_side = side;
            Tensor *in = model_input(m, b->n, side, side);
            /* a progressive stage's smaller side is cut from the full batch by the backend */
            Tensor *full = side < b->size ? &T->full : in;
            *full = (Tensor){full->data, b->n, 3, b->size, b->size, full->dtype};
            upload_batch(T, b, full);
            if (side < b->size) {
                int oy = 0, ox = 0;
                if (st->resize_crop) {
                    Rng crop_rng = rng_split(&crop_base, batch_id);
                    crop_offsets(&crop_rng, b->size, side, &oy, &ox);
                }
                T->be->ops->shrink_batch(T->be, &T->full, side, st->resize_crop, oy, ox, in);
            }
            if (T->steps + 1 == T->nan_step) inject_nan_input(T->be, in);
            if (st->mixup_alpha > 0) {
                Rng mix_rng = rng_split(&mix_base, batch_id);
                mixup(T, &mix_rng, st->mixup_alpha, in, b->labels);
            }
            m->dropout_seed = rng_hash(T->cfg->seed ^ 0x44524f50ULL, batch_id);
            /* queue the whole step before reading anything back: a device never waits for the host */
            model_labels(m, b->n, b->labels, st->mixup_alpha > 0 ? T->labels_b : NULL, T->lam);
            model_run(m, 1);
            model_loss_queue(m, st->label_smoothing);
            model_backward(m);
            if (T->steps + 1 == T->inf_grad_step) inject_inf_gradient(m);
            if (!T->dynamic_scale) {
                /* this step's results come back while the next one runs; the previous step's are read now */
                int slot = (int)(T->steps & 1);
                queue_step_read(T, slot);
                optim_adamw_step_groups(m, &a, T->group_scale);
                take_step_read(T, st, &pending, &sum, &seen);
                pending = (PendingStep){1, slot, e, b->n, step};
            } else {
                /* dynamic loss scaling decides before the optimizer step: read now */
                float loss = model_loss_read(m);
                if (!isfinite(loss)) {
                    char where[1400];
                    die("stage %s, epoch %d, step %ld: the loss is %g; stopping (lower the learning rate?). %s", st->name,
                        e, step, loss, last_checkpoint(T, where, sizeof where));
                }
                if (gradients_finite(T, st, e, step)) optim_adamw_step_groups(m, &a, T->group_scale);
                else T->adam_step--; /* a skipped step leaves Adam as it was */
                sum += (double)loss * b->n;
                seen += b->n;
            }
            T->steps++;
            if (isatty(STDOUT_FILENO)) {
                double dt = now_seconds() - t0;
                int done = b->index + 1;
                printf("\r  epoch %d: %d/%d batches, %.0f img/s, loss %.4f, eta %.0fs   ", e, done, per_epoch, seen / dt,
                       seen ? sum / seen : 0.0, dt / done * (per_epoch - done));
                fflush(stdout);
            }
            if (stop_requested(T)) {
                take_step_read(T, st, &pending, &sum, &seen);
                T->at = (Position){T->at.stage, phase, e, b->index + 1, sum, seen};
                stopped = 1;
                break;
            }
        }
        take_step_read(T, st, &pending, &sum, &seen); /* the epoch's last step, before its validation and checkpoint */
        if (isatty(STDOUT_FILENO)) printf("\r%80s\r", "");
        if (stopped) break;
        EvalResult v = evaluate(T, valid, T->epoch, st->label_smoothing, NULL, NULL);
        if (v.interrupted) { /* the epoch's training is done; its validation runs again on resume */
            stop_requested(T);
            T->at = (Position){T->at.stage, phase, e, per_epoch, sum, seen};
            stopped = 1;
            break;
        }
        double dt = now_seconds() - t0;
        float acc = v.count ? (float)v.correct / v.count : 0;
        if (loader_dropped(train))
            say(T, "  epoch %d: %d batch%s left out: bad images left %s short of %d (the next epochs leave those images out)\n",
                e, loader_dropped(train), loader_dropped(train) == 1 ? "" : "es", loader_dropped(train) == 1 ? "it" : "them",
                st->batch);
        /* an epoch that trained nothing has no training loss (fastai's #na#; empty in metrics.csv) */
        char loss[32];
        snprintf(loss, sizeof loss, "%.6f", seen ? sum / seen : 0);
        if (!seen) say(T, "  epoch %d trained nothing: bad images left every batch short\n", e);
        say(T, "%-6d %-11s %-11.6f %-9.6f %02d:%02d\n", e, seen ? loss : "#na#", v.loss, acc, (int)dt / 60, (int)dt % 60);
        fprintf(T->metrics, "%s,%d,%d,%s,%.6f,%.6f,%.2f,%d\n", st->name, T->epoch, e, seen ? loss : "", v.loss, acc, dt,
                last_side);
        T->epoch++;
        T->at = (Position){T->at.stage, phase, e + 1, 0, 0, 0};
        save_resume(T);
    }
    if (stopped) save_resume(T);
    free(T->bad_images);
    T->bad_images = loader_bad_list(train, 0);
    T->train_loader = NULL;
    loader_destroy(train);
    loader_destroy(valid);
    return stopped;
}

/* Multi-resolution evaluation: the valid transform at each size. Writes eval-<stage>.csv.
 * Returns 1 when a stop signal interrupted it (the stage runs again on resume). */
static int eval_sizes(Trainer *T, const StageConfig *st) {
    char path[1200];
    snprintf(path, sizeof path, "%s/eval-%s.csv", T->run_dir, st->name);
    char *text = NULL, err[1400];
    size_t len = 0;
    FILE *csv = open_memstream(&text, &len); /* written whole at the end (util.h's atomic write) */
    if (!csv) die("cannot write %s: %s", path, strerror(errno));
    fprintf(csv, "size,loss,accuracy,images\n");
    say(T, "stage %s: evaluation at %d sizes\n%-6s %-11s %-9s\n", st->name, st->nsizes, "size", "loss", "accuracy");
    int interrupted = 0;
    for (int i = 0; i < st->nsizes && !interrupted; i++) {
        TransformSpec tf = st->valid_tf;
        tf.size = st->sizes[i];
        Loader *L = make_loader(T, &tf, st->batch, 0, augment_on_device(T));
        EvalResult r = evaluate(T, L, 0, 0.0f, NULL, NULL);
        loader_destroy(L);
        interrupted = r.interrupted;
        if (interrupted) break;
        float acc = r.count ? (float)r.correct / r.count : 0;
        say(T, "%-6d %-11.6f %-9.6f\n", tf.size, r.loss, acc);
        fprintf(csv, "%d,%.6f,%.6f,%d\n", tf.size, r.loss, acc, r.count);
    }
    if (fclose(csv) || write_file_atomic(path, text, len, err, sizeof err)) die("%s", err);
    free(text);
    return interrupted;
}

/* fastai's tta(n, beta): n passes with the training transforms, averaged, then
 * lerp(mean_aug, plain, beta) on the softmax probabilities. Returns 1 when interrupted. */
static int tta(Trainer *T, const StageConfig *st) {
    int classes = T->model->classes;
    size_t cells = (size_t)T->data.nvalid * classes;
    float *plain = xcalloc(cells, sizeof(float)), *aug = xcalloc(cells, sizeof(float)), *pass = xcalloc(cells, sizeof(float));
    int32_t *labels = xmalloc((size_t)T->data.nvalid * sizeof(int32_t));
    /* The plain pass first: it finds any bad image, so every later pass lists the same images. */
    Loader *L = make_loader(T, &st->valid_tf, st->batch, 0, augment_on_device(T));
    EvalResult r = evaluate(T, L, 0, 0.0f, plain, labels);
    int n = r.count, interrupted = r.interrupted;
    loader_destroy(L);
    Loader *A = make_loader(T, &st->train_tf, st->batch, 0, augment_on_device(T));
    for (int p = 0; p < st->tta_n && !interrupted; p++) {
        interrupted = evaluate(T, A, 1000 + p, 0.0f, pass, NULL).interrupted;
        tta_accumulate(aug, pass, (size_t)n * classes, st->tta_n);
    }
    loader_destroy(A);
    if (!interrupted) {
        double loss;
        int correct = tta_combine(aug, plain, labels, n, classes, st->tta_beta, &loss);
        say(T, "stage %s: TTA (n=%d, beta=%.2f): accuracy %.6f (without TTA %.6f) on %d images\n", st->name, st->tta_n,
            st->tta_beta, n ? (float)correct / n : 0, r.count ? (float)r.correct / r.count : 0, n);
        fprintf(T->metrics, "%s,%d,tta,,%.6f,%.6f,,%d\n", st->name, T->epoch, loss, n ? (float)correct / n : 0, st->size);
        fflush(T->metrics);
    }
    free(plain);
    free(aug);
    free(pass);
    free(labels);
    return interrupted;
}

/* Resuming inside a stage: its parts before the checkpoint's phase are done already, and the
 * optimizer state to go on with is the checkpoint's, not a cleared one. */
static int phase_done(const Trainer *T, int phase) { return T->resuming && phase < T->from.phase; }

static void reset_optimizer_unless_resuming(Trainer *T) {
    if (!T->resuming) reset_optimizer(T);
}

/* FixRes fine-tuning at a new size: only the head (what follows the pooling: the classifier, or a
 * cnn_learner head) learns, with, when train_final_bn, the last batch norm before the pooling. Every
 * other batch norm of the body runs on its running statistics, while that last one stays in
 * training mode so its statistics adapt to the new size. Constant lr, fresh moments. */
static int fixres(Trainer *T, const StageConfig *st) {
    Model *m = T->model;
    int pool = m->nnodes, last_bn = -1;
    for (int i = 0; i < m->nnodes && pool == m->nnodes; i++)
        if (m->nodes[i].op == OP_GAP || m->nodes[i].op == OP_CONCATPOOL) pool = i;
    for (int i = 0; i < pool; i++)
        if (m->nodes[i].op == OP_BN) last_bn = i;
    for (int i = 0; i < pool; i++)
        if (m->nodes[i].op == OP_BN) m->nodes[i].frozen_stats = i != last_bn;
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        m->params[i].trainable = p->node > pool || (st->train_final_bn && p->node == last_bn);
    }
    reset_optimizer_unless_resuming(T);
    set_group_lrs(T, 0, st->lr, 0);
    int stopped = fit(T, st, 0, st->train_final_bn ? "fixres (head + final batch norm)" : "fixres (head; final batch norm adapts)",
                      st->epochs, LR_CONSTANT, NULL, NULL);
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].frozen_stats = 0;
    set_trainable(T);
    if (!stopped) reset_optimizer(T);
    return stopped;
}

/* Runs one stage; returns 1 when the run was asked to stop inside it (a resume checkpoint says
 * where), else 0 once its checkpoint (training stages) is written. */
static int run_stage(Trainer *T, const StageConfig *st) {
    FitPhase ph[2];
    int nph = stage_fit_phases(st, ph);
    int stopped = 0;
    /* freeze = yes / no before a fit stage (a resumed stage already is as it was) */
    if (st->freeze != FREEZE_KEEP && !T->resuming) set_frozen(T, st->freeze == FREEZE_YES);
    set_group_lrs(T, ph[0].lo, ph[0].hi, ph[0].spread); /* fine_tune sets its own per phase */
    switch (st->type) {
    case STAGE_FIT_ONE_CYCLE: stopped = fit(T, st, 0, "fit_one_cycle", st->epochs, LR_ONE_CYCLE, &ph[0].cycle, NULL); break;
    case STAGE_FIT: stopped = fit(T, st, 0, "fit (constant lr)", st->epochs, LR_CONSTANT, NULL, NULL); break;
    case STAGE_PROGRESSIVE: {
        ProgressiveSchedule p = {st->initial_scale, st->delay_fraction, st->finetune_fraction, st->size_increment};
        stopped = fit(T, st, 0, "progressive resizing (one-cycle)", st->epochs, LR_ONE_CYCLE, &ph[0].cycle, &p);
        break;
    }
    case STAGE_FIXRES: stopped = fixres(T, st); break;
    case STAGE_FINE_TUNE: {
        /* fastai: freeze, fit_one_cycle(freeze_epochs, slice(lr), pct_start=0.99), unfreeze,
         * fit_one_cycle(epochs, slice(lr/2/100, lr/2), pct_start, div) (fine_tune_phases); freeze
         * and unfreeze clear the moments. A model trained from scratch is one parameter group:
         * freezing leaves everything trainable and every slice is the plain lr. The frozen fit is
         * phase 0 and the unfrozen one phase 1, whether or not there is a frozen one. */
        for (int k = 0; k < nph && !stopped; k++) {
            int phase = ph[k].frozen ? 0 : 1;
            if (phase_done(T, phase)) continue;
            if (!T->resuming) set_frozen(T, ph[k].frozen);
            set_group_lrs(T, ph[k].lo, ph[k].hi, ph[k].spread);
            stopped = fit(T, st, phase, ph[k].frozen ? "fine_tune, frozen" : "fine_tune, unfrozen", ph[k].epochs,
                          LR_ONE_CYCLE, &ph[k].cycle, NULL);
        }
        break;
    }
    case STAGE_EVAL: stopped = eval_sizes(T, st); break;
    case STAGE_TTA: stopped = tta(T, st); break;
    default: die("stage %s: unknown stage type %d", st->name, (int)st->type);
    }
    if (stopped) return 1;
    if (st->type != STAGE_EVAL && st->type != STAGE_TTA) save_checkpoint(T, st->name, st->name);
    return 0;
}

/* A training batch is always full (drop_last), so a stage's batch must fit the training images.
 * Checked before anything is allocated or any folder made. */
static void check_batches(const Config *cfg, const Dataset *d) {
    for (int i = 0; i < cfg->nstages; i++) {
        const StageConfig *st = &cfg->stages[i];
        if (st->type != STAGE_EVAL && st->type != STAGE_TTA && st->batch > d->ntrain)
            die("%s: [stage %s] batch = %d, but the data has %d training images: no full batch (training leaves out a "
                "partial one)", cfg->path, st->name, st->batch, d->ntrain);
    }
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

/* A resumed run: the checkpoint's weights, moments, counters and position, after checking that it
 * belongs to this config and data. Truncates metrics.csv to what the checkpoint had seen. */
static void load_resume(Trainer *T) {
    Model *m = T->model;
    char path[1200], err[2048];
    snprintf(path, sizeof path, "%s/resume.safetensors", T->run_dir);
    HostState h = host_state_new(m);
    StFile meta;
    if (ckpt_load_resume(path, m, h.params, h.stats, h.adam_m, h.adam_v, &meta, err, sizeof err)) die("%s", err);
    char *classes = class_list(&T->data);
    const char *names = st_meta(&meta, "class_names");
    if (!names || strcmp(names, classes)) die("%s: the checkpoint's class list differs from the data's (%s)", path, T->cfg->data.root);
    free(classes);
    const char *keys[] = {"stage_index", "phase", "stage_epoch", "batch", "epochs_done", "adam_step", "seen", "metrics_bytes",
                          "frozen"};
    long v[9];
    for (int i = 0; i < 9; i++) {
        const char *s = st_meta(&meta, keys[i]);
        char *end = NULL;
        v[i] = s ? strtol(s, &end, 10) : -1;
        if (!s || *end || v[i] < 0 || v[i] > INT32_MAX) die("%s: metadata \"%s\" is missing or bad", path, keys[i]);
    }
    const char *sum = st_meta(&meta, "loss_sum"), *stage = st_meta(&meta, "stage");
    char *end = NULL;
    double loss_sum = sum ? strtod(sum, &end) : 0;
    if (!sum || *end || !stage) die("%s: metadata \"loss_sum\" or \"stage\" is missing or bad", path);
    T->from = (Position){(int)v[0], (int)v[1], (int)v[2], (int)v[3], loss_sum, v[6]};
    if (T->from.stage < T->cfg->nstages ? strcmp(stage, T->cfg->stages[T->from.stage].name) : strcmp(stage, "(done)"))
        die("%s: it stopped in stage \"%s\", which is not stage %d of %s", path, stage, T->from.stage + 1, T->cfg->path);
    T->epoch = (int)v[4];
    T->adam_step = (int)v[5];
    /* loss scaling state (absent from checkpoints of runs without it: they had scale 1) */
    const char *scale = st_meta(&meta, "loss_scale"), *good = st_meta(&meta, "good_steps");
    if (scale && good) {
        char *e1 = NULL, *e2 = NULL;
        double s = strtod(scale, &e1);
        long g = strtol(good, &e2, 10);
        if (*e1 || *e2 || !(s >= 1 && s <= 0x1p100) || g < 0 || g >= SCALE_GROWTH_INTERVAL)
            die("%s: metadata \"loss_scale\" or \"good_steps\" is bad", path);
        if (T->dynamic_scale) {
            T->loss_scale = (float)s;
            T->good_steps = (int)g;
        }
    }
    T->frozen = v[8] != 0;
    set_trainable(T);
    T->from_bad[0] = xstrdup(st_meta(&meta, "bad_images_at_epoch_start") ? st_meta(&meta, "bad_images_at_epoch_start") : "");
    T->from_bad[1] = xstrdup(st_meta(&meta, "bad_images") ? st_meta(&meta, "bad_images") : "");
    T->bad_images = xstrdup(T->from_bad[1]);
    /* A fresh stage (phase, epoch, batch all 0) starts as it would have: cleared moments and all. */
    T->resuming = T->from.phase || T->from.epoch || T->from.batch;
    T->at = T->from;
    model_set_weights(m, h.params, h.stats);
    m->be->ops->upload(m->be, m->adam_m, h.adam_m, m->param_floats * sizeof(float));
    m->be->ops->upload(m->be, m->adam_v, h.adam_v, m->param_floats * sizeof(float));
    host_state_free(&h);
    st_close(&meta);
    /* metrics.csv rows written after the checkpoint (a crash) come again */
    snprintf(path, sizeof path, "%s/metrics.csv", T->run_dir);
    if (truncate(path, (off_t)v[7])) die("cannot truncate %s for the resumed run: %s", path, strerror(errno));
}

/* --resume, before anything is read or written in the folder: it must be a run folder, and the
 * config (config.ini with any --set) must be the one the run started with, but RESUME_FREE_KEYS. */
static void check_resume_config(const Config *cfg, const char *run_dir) {
    RunMark mark;
    char what[600], diff[1400];
    if (!run_mark_read(run_dir, &mark)) {
        folder_summary(run_dir, what, sizeof what);
        die("--resume %s: not a run folder (every folder ./train makes holds a %s file; this one holds %s): nothing "
            "resumed, nothing written", run_dir, RUN_MARK, what);
    }
    char *now = run_config_text(cfg);
    if (config_text_diff(mark.config, now, diff, sizeof diff))
        die("--resume %s: the config differs from the one the run started with: %s (config.ini edited, or a --set). A "
            "resume goes on with the same experiment: only %s may change; start a new run to change anything else",
            run_dir, diff, RESUME_FREE_KEYS);
    free(now);
    run_mark_free(&mark);
}

/* --resume from a checkpoint, before any work: the data set is the one the checkpoint was trained
 * on (counts and files), and metrics.csv holds the rows the checkpoint recorded, unchanged. */
static void check_resume_record(const Config *cfg, const char *run_dir, const char *data_fp) {
    char path[1200], err[1400];
    snprintf(path, sizeof path, "%s/resume.safetensors", run_dir);
    if (access(path, F_OK)) return; /* no checkpoint yet: the run starts over */
    StFile h;
    if (st_read_header(path, &h, err, sizeof err)) die("%s", err);
    const char *data = st_meta(&h, "data"), *bytes = st_meta(&h, "metrics_bytes"), *hash = st_meta(&h, "metrics_hash");
    long count[2][2];
    uint64_t fp[2][2];
    if (!data || !bytes || !hash || data_fingerprint_parse(data, count[0], fp[0]))
        die("%s: it records no data set or metrics.csv (written by an older ./train?), so resuming cannot be checked to "
            "continue the same run", path);
    data_fingerprint_parse(data_fp, count[1], fp[1]);
    if (count[0][0] != count[1][0] || count[0][1] != count[1][1])
        die("%s: the data set at %s changed since this checkpoint: %ld training / %ld validation images then, %ld / %ld "
            "now; resuming would not continue the same run", path, cfg->data.root, count[0][0], count[0][1],
            count[1][0], count[1][1]);
    if (fp[0][0] != fp[1][0] || fp[0][1] != fp[1][1])
        die("%s: the data set at %s changed since this checkpoint: the same counts, but other %s files or labels; resuming "
            "would not continue the same run", path, cfg->data.root, fp[0][0] != fp[1][0] ? "training" : "validation");
    char *end = NULL;
    long len = strtol(bytes, &end, 10);
    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    uint64_t size = 0;
    int fd = open_regular(path, &size, err, sizeof err);
    if (fd < 0) die("%s (the run's record of its epochs, which the checkpoint continues): not resumed", err);
    close(fd);
    if (*end || len < 0 || size < (uint64_t)len)
        die("%s: %llu bytes, shorter than the %s bytes the checkpoint recorded: damaged; not resumed", path,
            (unsigned long long)size, bytes);
    char now[24];
    snprintf(now, sizeof now, "%016" PRIx64, metrics_hash(run_dir, len));
    if (strcmp(now, hash))
        die("%s: its first %ld bytes differ from what the checkpoint recorded: damaged or edited; not resumed", path, len);
    st_close(&h);
}

/* One trainer per run folder: a second --resume of a running run would interleave checkpoints.
 * The lock goes with the process, however it ends. */
static int lock_run_folder(const char *run_dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/lock", run_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB))
        die("%s: %s", path, fd < 0 ? strerror(errno) : "another train process is running in this run folder");
    return fd;
}

/* Temporary files of checkpoint writes that a killed run left behind ("NAME.tmp.PID"). */
static void remove_temp_files(const char *run_dir) {
    DIR *d = opendir(run_dir);
    if (!d) die("cannot open the run folder %s: %s", run_dir, strerror(errno));
    char path[1400];
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) {
            snprintf(path, sizeof path, "%s/%s", run_dir, e->d_name);
            if (!unlink(path)) printf("cnntrain: removed %s, left by a run that was killed while writing it\n", path);
        }
    closedir(d);
}

/* The run folder's mark (run_record.h) first, then the resolved config. config.ini records the
 * experiment: stop_after (how long this process runs) is left out, so a resume never inherits it. */
static void write_run_config(const Trainer *T) {
    char path[1200], err[1400];
    if (run_mark_write(T->run_dir, T->cfg, err, sizeof err)) die("%s", err);
    snprintf(path, sizeof path, "%s/config.ini", T->run_dir);
    Config c = *T->cfg;
    c.stop_after = 0;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) die("cannot write %s: %s", path, strerror(errno));
    config_write(&c, f);
    if (fclose(f) || write_file_atomic(path, text, len, err, sizeof err)) die("%s", err);
    free(text);
}

/* [run] name: the run folder is out_dir/name. Checked before any work: a name that leaves out_dir
 * ("/", "..") is refused unless --force (Config.force); an existing folder must be empty, or a run
 * folder (it holds run_record.h's mark) with --force. A folder that is not a run's is never written
 * into, --force or not: whatever it holds is not ours to replace. */
static void check_run_name(const Config *cfg) {
    const char *name = cfg->run_name;
    if (!name[0]) return;
    int plain = !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
    if (!plain && !cfg->force)
        die("%s: [run] name = %s would put the run outside %s (a name is one folder name, without '/' or '..'); "
            "pass --force to write there anyway", cfg->path, name, cfg->out_dir);
    char dir[1200], what[600];
    snprintf(dir, sizeof dir, "%s/%s", cfg->out_dir, name);
    struct stat sb;
    if (lstat(dir, &sb)) return;
    if (!S_ISDIR(sb.st_mode)) die("%s: [run] name: %s exists and is not a folder", cfg->path, dir);
    if (run_mark_read(dir, NULL)) {
        if (cfg->force) return;
        die("%s: [run] name: %s holds a run already; go on with it (./train --resume %s), choose another name, or pass "
            "--force to replace it", cfg->path, dir, dir);
    }
    folder_summary(dir, what, sizeof what);
    if (strcmp(what, "nothing"))
        die("%s: [run] name: %s is not empty (it holds %s) and is not a run folder (every folder ./train makes holds a "
            "%s file); ./train writes only into a new or empty folder, or with --force over one of its own runs: choose "
            "another name", cfg->path, dir, what, RUN_MARK);
}

/* --force over an existing run: the files its mark lists go (and their temporary files), so that
 * nothing of the old run is mistaken for the new one's; anything else stays. Runs with the folder
 * locked. */
static void clear_old_run(const char *run_dir) {
    RunMark mark;
    if (!run_mark_read(run_dir, &mark)) return; /* an empty folder: nothing of a run */
    DIR *d = opendir(run_dir);
    if (!d) die("cannot open the run folder %s: %s", run_dir, strerror(errno));
    char path[1400];
    int removed = 0, kept = 0;
    for (struct dirent *e; (e = readdir(d));) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", run_dir, e->d_name);
        if (!strcmp(e->d_name, "lock") || !strcmp(e->d_name, RUN_MARK) || lstat(path, &sb) || S_ISDIR(sb.st_mode)) continue;
        int ours = 0;
        for (int i = 0; i < mark.files.n && !ours; i++) {
            size_t n = strlen(mark.files.items[i]);
            ours = !strncmp(e->d_name, mark.files.items[i], n) && (!e->d_name[n] || !strncmp(e->d_name + n, ".tmp.", 5));
        }
        if (!ours) {
            kept++;
            continue;
        }
        if (unlink(path)) die("--force: cannot remove %s: %s", path, strerror(errno));
        removed++;
    }
    closedir(d);
    run_mark_free(&mark);
    printf("cnntrain: --force: removed %d files of the previous run in %s", removed, run_dir);
    if (kept) printf("; kept %d files it did not write", kept);
    printf("\n");
}

/* A new run folder, locked (returns the lock): out_dir/<config name>-<time>/, or out_dir/<name>/
 * with [run] name, with the resolved config. */
static int new_run_folder(Trainer *T) {
    const Config *cfg = T->cfg;
    if (cfg->run_name[0]) {
        if (snprintf(T->run_dir, sizeof T->run_dir, "%s/%s", cfg->out_dir, cfg->run_name) >= (int)sizeof T->run_dir)
            die("%s: [run] name: the run folder name is too long", cfg->path);
        check_run_name(cfg); /* again: another process may have started a run there since */
        if (make_dirs(T->run_dir)) die("cannot create the run folder %s: %s", T->run_dir, strerror(errno));
        int lock = lock_run_folder(T->run_dir);
        if (cfg->force) clear_old_run(T->run_dir);
        write_run_config(T);
        return lock;
    }
    const char *base = strrchr(cfg->path, '/');
    base = base ? base + 1 : cfg->path;
    char stem[512], stamp[32];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot) *dot = 0;
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
    if (make_dirs(cfg->out_dir)) die("cannot create %s: %s", cfg->out_dir, strerror(errno));
    /* never into an existing run: two runs started in the same second get -2, -3, ... */
    for (int k = 1;; k++) {
        char suffix[16] = "";
        if (k > 1) snprintf(suffix, sizeof suffix, "-%d", k);
        if (snprintf(T->run_dir, sizeof T->run_dir, "%s/%s-%s%s", cfg->out_dir, stem, stamp, suffix) >= (int)sizeof T->run_dir)
            die("%s: the run folder name under %s is too long", cfg->path, cfg->out_dir);
        if (!mkdir(T->run_dir, 0777)) break;
        if (errno != EEXIST || k == 1000) die("cannot create the run folder %s: %s", T->run_dir, strerror(errno));
    }
    int lock = lock_run_folder(T->run_dir);
    write_run_config(T);
    return lock;
}

int train_run(const Config *cfg, const char *resume_dir, char *run_dir, size_t run_dir_len) {
    Trainer T = {0};
    T.cfg = cfg;
    stop_signal = 0;
    const char *inject = getenv("CNNTRAIN_INJECT_NAN");
    if (inject) {
        int grad = !strncmp(inject, "grad:", 5);
        char *end = NULL;
        long step = strtol(inject + 5 * grad, &end, 10);
        if (end == inject + 5 * grad || *end || step < 0)
            die("CNNTRAIN_INJECT_NAN=%s: give a step number N (a NaN input) or grad:N (an inf gradient)", inject);
        *(grad ? &T.inf_grad_step : &T.nan_step) = step;
    }
    char err[1024];
    if (!resume_dir) check_run_name(cfg);
    else check_resume_config(cfg, resume_dir);
    if (dataset_open(&cfg->data, cfg->strict_images, &T.data, err, sizeof err)) die("%s", err);
    data_fingerprint(&T.data, cfg->data.root, T.data_fp);
    if (resume_dir) check_resume_record(cfg, resume_dir, T.data_fp);
    int classes = cfg->classes ? cfg->classes : T.data.nclasses;
    if (classes < T.data.nclasses)
        die("%s: classes = %d but the data has %d classes", cfg->path, classes, T.data.nclasses);
    check_batches(cfg, &T.data);
    T.model = model_build(cfg->arch, classes, err, sizeof err);
    if (!T.model) die("%s: %s", cfg->path, err);
    T.be = backend_create(cfg->device, err, sizeof err);
    if (!T.be) die("%s: %s", cfg->path, err);
    if (backend_set_precision(T.be, cfg->precision) != cfg->precision)
        fprintf(stderr, "cnntrain: precision %s is not available on the %s backend; training in %s\n",
                dtype_name(cfg->precision), T.be->ops->name, dtype_name(T.be->compute));
    T.dynamic_scale = cfg->loss_scale == LOSS_SCALE_DYNAMIC || (cfg->loss_scale == LOSS_SCALE_AUTO && T.be->compute == DT_F16);
    T.loss_scale = T.dynamic_scale ? SCALE_INIT : 1.0f;
    int max_batch, max_side;
    largest_shape(cfg, &max_batch, &max_side);
    /* no batch holds more than the larger split (an eval stage's batch 65536 over 100 images) */
    int images = T.data.ntrain > T.data.nvalid ? T.data.ntrain : T.data.nvalid;
    if (max_batch > images) max_batch = images;
    if (model_attach(T.model, T.be, max_batch, max_side, max_side, err, sizeof err)) die("%s: %s", cfg->path, err);

    rng_seed(&T.root, cfg->seed);
    char path[1200];
    int from_checkpoint = 0, lock = -1;
    if (resume_dir) {
        if (snprintf(T.run_dir, sizeof T.run_dir, "%s", resume_dir) >= (int)sizeof T.run_dir)
            die("%s: the run folder name is too long", resume_dir);
        lock = lock_run_folder(T.run_dir);
        remove_temp_files(T.run_dir);
        snprintf(path, sizeof path, "%s/resume.safetensors", T.run_dir);
        from_checkpoint = !access(path, F_OK);
        if (from_checkpoint) load_resume(&T);
        else printf("cnntrain: %s: no checkpoint yet (the run stopped before its first epoch ended): starting over\n", path);
        T.resume_written = from_checkpoint;
    }
    T.be->loss_scale = T.loss_scale;
    device_feed_init(&T.feed, T.be);
    if (!from_checkpoint) {
        Rng init = rng_split(&T.root, 1);
        HostState h = host_state_new(T.model);
        model_init_host(T.model, &init, h.params, h.stats);
        if (cfg->pretrained[0]) {
            PretrainedReport rep;
            char *names = class_list(&T.data);
            if (pretrained_load_file_head(cfg->pretrained, T.model, h.params, h.stats, cfg->pretrained_head, names, &rep, err,
                                          sizeof err))
                die("%s: [model] pretrained: %s", cfg->path, err);
            free(names);
            pretrained_report_print(stdout, &rep, "", 0);
            pretrained_report_free(&rep);
            /* fastai's cnn_learner starts frozen when its body is pretrained */
            T.frozen = T.model->ngroups > 1;
            set_trainable(&T);
        }
        model_set_weights(T.model, h.params, h.stats);
        host_state_free(&h);
        if (!resume_dir) lock = new_run_folder(&T);
    }
    snprintf(run_dir, run_dir_len, "%s", T.run_dir);
    snprintf(path, sizeof path, "%s/log.txt", T.run_dir);
    T.log = fopen(path, resume_dir ? "a" : "w");
    snprintf(path, sizeof path, "%s/metrics.csv", T.run_dir);
    T.metrics = fopen(path, from_checkpoint ? "a" : "w");
    if (!T.log || !T.metrics) die("cannot write in %s: %s", T.run_dir, strerror(errno));
    fseek(T.metrics, 0, SEEK_END); /* ftell of an append stream is the end only after a write */
    if (!from_checkpoint) fprintf(T.metrics, "stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size\n");

    size_t per_image = 3 * (size_t)max_side * max_side;
    T.partner = xmalloc((size_t)max_batch * sizeof(int32_t));
    int progressive = 0;
    for (int i = 0; i < cfg->nstages; i++) progressive |= cfg->stages[i].type == STAGE_PROGRESSIVE;
    T.full.dtype = T.be->compute;
    if (progressive) T.full.data = T.be->ops->alloc(T.be, (size_t)max_batch * per_image * dtype_size(T.be->compute));
    T.lam = xmalloc((size_t)max_batch * sizeof(float));
    T.labels_b = xmalloc((size_t)max_batch * sizeof(int32_t));
    T.logits = xmalloc((size_t)max_batch * classes * sizeof(float));
    T.reads = T.be->ops->alloc_host(T.be, 2 * sizeof(StepRead));
    T.scan_d = T.be->ops->alloc(T.be, 2 * sizeof(uint64_t));
    say(&T, "cnntrain: %s%s, %s (%d classes) on %s in %s; %d train / %d valid images; run folder %s\n",
        from_checkpoint ? "resuming " : "", cfg->path, cfg->arch, classes, T.be->ops->name, dtype_name(T.be->compute),
        T.data.ntrain, T.data.nvalid, T.run_dir);

    /* Ctrl-C and SIGTERM stop at the next step with a checkpoint; a second one kills at once
     * (SA_RESETHAND), still safely: every checkpoint is replaced by an atomic rename. A full disk
     * quota must be an error we report (EFBIG), not SIGXFSZ's silent death. */
    struct sigaction sa = {0}, old_int, old_term, old_xfsz;
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    sigaction(SIGXFSZ, &sa, &old_xfsz);

    int start = from_checkpoint ? T.from.stage : 0;
    /* A run killed after its last resume checkpoint but before final.safetensors was written has
     * finished training: the resumed process writes that file from the checkpoint's weights. */
    snprintf(path, sizeof path, "%s/final.safetensors", T.run_dir);
    int write_final = start < cfg->nstages || access(path, F_OK);
    if (start >= cfg->nstages) say(&T, "the run had finished: %s\n", write_final ? "writing its final checkpoint" : "nothing to resume");
    for (int i = start; i < cfg->nstages && !T.stopped; i++) {
        const StageConfig *st = &cfg->stages[i];
        if (!T.resuming) T.at = (Position){i, 0, 0, 0, 0, 0};
        if (run_stage(&T, st)) {
            stop_requested(&T);
            if (st->type == STAGE_EVAL || st->type == STAGE_TTA) save_resume(&T); /* it runs again */
            break;
        }
        T.resuming = 0;
        T.at = (Position){i + 1, 0, 0, 0, 0, 0};
        save_resume(&T);
    }
    if (T.dynamic_scale)
        say(&T, "loss scaling: %ld steps skipped (inf/NaN gradients) in this process; scale now %g\n", T.skipped_steps,
            (double)T.loss_scale);
    int rc = 0;
    if (T.stopped) {
        const Position *p = &T.at;
        char why[64];
        if (T.stopped > 0) snprintf(why, sizeof why, "%s", T.stopped == SIGINT ? "Ctrl-C" : "SIGTERM");
        else snprintf(why, sizeof why, "run.stop_after = %d steps", cfg->stop_after);
        say(&T, "stopped (%s) in stage %s, epoch %d, after batch %d; go on with: ./train --resume %s\n", why,
            cfg->stages[p->stage].name, p->epoch, p->batch, T.run_dir);
        rc = T.stopped > 0 ? 128 + T.stopped : TRAIN_STOPPED;
    } else if (write_final) {
        save_checkpoint(&T, "final", "final");
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGXFSZ, &old_xfsz, NULL);

    fclose(T.log);
    fclose(T.metrics);
    close(lock);
    if (!T.stopped && write_final) plot_run(T.run_dir);
    free(T.partner);
    if (T.full.data) T.be->ops->release(T.be, T.full.data);
    T.be->ops->release(T.be, T.scan_d);
    T.be->ops->free_host(T.be, T.reads);
    free(T.lam);
    free(T.labels_b);
    free(T.logits);
    free(T.from_bad[0]);
    free(T.from_bad[1]);
    free(T.bad_images);
    device_feed_free(&T.feed);
    model_free(T.model);
    backend_destroy(T.be);
    dataset_free(&T.data);
    return rc;
}
