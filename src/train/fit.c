/* train/fit.c: one fit call over the loader (the training step, gradient checks and loss scaling, mixup,
 * the epoch table) and the evaluation pass, with the signals and fault injection they answer to. */
#include "train/trainer.h"

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
#include "dist/dist.h"
#include "pipeline/device_feed.h"
#include "pipeline/loader.h"
#include "net/model.h"
#include "net/optim.h"
#include "report/plot.h"
#include "ckpt/pretrained.h"
#include "train/progressive.h"
#include "train/run_record.h"
#include "train/schedule.h"
#include "base/progress.h"
#include "base/util.h"

volatile sig_atomic_t trainer_stop_signal;

/* What stops an evaluation pass midway: a signal, in one process. Data-parallel ranks always finish
 * the pass (a signal could reach them at different batches) and stop after the next training step. */
const volatile sig_atomic_t *trainer_eval_stop_flag(void) { return dist_active() ? NULL : &trainer_stop_signal; }

void trainer_on_stop_signal(int sig) { trainer_stop_signal = sig; }

/* Ctrl-C, SIGTERM or run.stop_after: finish the step, write a resume checkpoint, exit cleanly. */
int trainer_stop_requested(Trainer *T) {
    if (trainer_stop_signal) T->stopped = trainer_stop_signal;
    else if (T->cfg->stop_after && T->steps >= T->cfg->stop_after) T->stopped = -1;
    /* data-parallel: a signal may reach the ranks between different steps; all stop at the same one */
    if (trainer_dist_agree_stop(T->stopped) && !T->stopped) T->stopped = SIGTERM;
    return T->stopped != 0;
}

/* Print to stdout and to the run's log. */
void trainer_say(Trainer *T, const char *fmt, ...) {
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

/* The parameter that holds flat gradient index i. */
static const char *param_at(const Model *m, uint64_t i) {
    for (int k = 0; k < m->nparams; k++)
        if (i >= m->params[k].offset && i < m->params[k].offset + m->params[k].count) return m->params[k].name;
    return "?";
}

/* A step's report (step.h): a bad step stops the run, naming the step (without dynamic loss scaling
 * it is read back one step late: the device never waits for the host between steps), an
 * overflow the scaler skipped is said; a good or skipped step's loss adds to the epoch's sum and
 * its row to steps.csv (the report names the step: its epoch and index in this fit, its number in
 * the run as the tag, its lr and momentum; the fit's epoch count T->epoch has not moved since). */
static void take_report(Trainer *T, const StageConfig *st, const StepReport *r, int epoch_base, int per_epoch,
                        double *sum, long *seen) {
    if (!r->valid) return;
    char where[1400];
    if (!isfinite(r->loss))
        die("stage %s, epoch %d, step %ld: the loss is %g; stopping (lower the learning rate?). %s", st->name, r->epoch,
            r->index, r->loss, last_checkpoint(T, where, sizeof where));
    if (r->verdict == SCALER_STOP && T->scaler.dynamic)
        die("stage %s, epoch %d, step %ld: the gradients overflow even at loss scale 1 (the first in %s); stopping. %s",
            st->name, r->epoch, r->index, param_at(T->model, r->first_bad), last_checkpoint(T, where, sizeof where));
    if (r->verdict == SCALER_STOP)
        die("stage %s, epoch %d, step %ld: %llu gradient values are inf or NaN (the first in %s) while the loss is "
            "finite; stopping (lower the learning rate? [run] loss_scale = dynamic skips such steps). %s",
            st->name, r->epoch, r->index, (unsigned long long)r->bad, param_at(T->model, r->first_bad),
            last_checkpoint(T, where, sizeof where));
    if (r->verdict == SCALER_SKIP)
        trainer_say(T, "  step %ld: %llu gradient values inf or NaN at loss scale %g: step skipped, scale %g\n", r->index,
            (unsigned long long)r->bad, (double)r->scale, (double)T->scaler.scale);
    *sum += (double)r->loss * r->n;
    *seen += r->n;
    if (T->steps_csv)
        fprintf(T->steps_csv, "%ld,%s,%d,%d,%ld,%.9g,%.9g,%.6f\n", r->tag, st->name, T->epoch, epoch_base + r->epoch,
                r->index - (long)r->epoch * per_epoch, (double)r->hyper.lr, (double)r->hyper.beta1, (double)r->loss);
}

Loader *trainer_make_loader(Trainer *T, const TransformSpec *tf, int batch, int kind, int on_device) {
    int train = kind == LOADER_TRAIN;
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
    /* data-parallel: each rank trains on its part of every global batch, and validates on its part
     * where nothing needs every image's row */
    s.shards = kind != LOADER_VALID ? dist_size() : 1;
    s.shard = kind != LOADER_VALID ? dist_rank() : 0;
    char err[512];
    Loader *L = loader_create(&s, err, sizeof err);
    if (!L) die("%s", err);
    return L;
}

void trainer_reset_optimizer(Trainer *T) { optim_reset(T->opt); }

/* fastai's freeze() / unfreeze() (model_set_frozen); a model of one group is never frozen. */
void trainer_set_trainable(Trainer *T) { model_set_frozen(T->model, T->frozen); }

/* freeze() / unfreeze() as fastai does them: the optimizer state is cleared either way. */
void trainer_set_frozen(Trainer *T, int frozen) {
    T->frozen = frozen && T->model->ngroups > 1;
    trainer_set_trainable(T);
    trainer_reset_optimizer(T);
}

/* Learning rates over the parameter groups, as fractions of the top one (group_lr_scales). */
void trainer_set_group_lrs(Trainer *T, float lo, float hi, int spread) {
    float scale[OPTIM_MAX_GROUPS];
    group_lr_scales(T->model->ngroups, lo, hi, spread, scale);
    optim_set_group_lrs(T->opt, scale);
}

/* Augment on the device ([data] augment_on)? */
int trainer_augment_on_device(const Trainer *T) {
    return T->cfg->augment_on == AUGMENT_DEVICE || (T->cfg->augment_on == AUGMENT_AUTO && strcmp(T->be->ops->name, "cpu"));
}

/* One pass over the validation set (evaluate.h's eval_pass): mean loss (with the stage's label
 * smoothing, as fastai's valid_loss) and accuracy. */
EvalResult trainer_evaluate(Trainer *T, Loader *L, int epoch, float smoothing) {
    trainer_dist_average_stats(T); /* per-rank batch-norm statistics: their mean (timm's --dist-bn reduce) */
    Evaluator ev = {T->model, &T->feed, trainer_eval_stop_flag(), "valid"};
    return eval_pass(&ev, L, epoch, smoothing, NULL);
}

/* One fit call (phase `phase` of its stage): fastai's fit_one_cycle or a constant-lr fit, epochs x
 * batches, then validation after each epoch, printed as fastai's table. A resume checkpoint follows
 * every epoch. Returns 1 when the run was asked to stop (the checkpoint is written), else 0. */
int trainer_fit(Trainer *T, const StageConfig *st, int phase, const char *label, int epochs, LrShape shape,
               const OneCycle *cycle, const ProgressiveSchedule *prog) {
    Model *m = T->model;
    int on_device = trainer_augment_on_device(T);
    Loader *train = trainer_make_loader(T, &st->train_tf, st->batch, LOADER_TRAIN, on_device),
           *valid = trainer_make_loader(T, &st->valid_tf, st->batch, LOADER_VALID_SHARDED, on_device);
    int per_epoch = loader_batches(train);
    if (per_epoch < 1) die("stage %s: %d training images make no batch of %d", st->name, T->data.ntrain, st->batch);
    long total = (long)epochs * per_epoch;
    /* metrics.csv numbers a stage's epochs through all its fit calls (fine_tune's unfrozen part goes
     * on from its frozen one); the printed table starts each call at 0, as fastai's does */
    int epoch_base = 0;
    if (phase > 0) {
        FitPhase ph[2];
        int nph = stage_fit_phases(st, ph);
        for (int k = 0; k < nph; k++) epoch_base += ph[k].frozen == 1 ? ph[k].epochs : 0;
    }
    model_set_decay(m, st->wd_bn_bias);
    T->train_loader = train;
    Position start = {T->at.stage, phase, 0, 0, 0, 0};
    int resumed = T->resuming;
    if (resumed) { /* this is the fit the checkpoint stopped in */
        start = T->from;
        if (loader_mark_bad(train, T->from_bad[0])) die("%s/resume.safetensors: malformed bad_images list", T->run_dir);
        T->resuming = 0;
        trainer_say(T, "stage %s: resuming at epoch %d, batch %d\n", st->name, start.epoch, start.batch);
    } else {
        trainer_fit_tracking_reset(T);
        if (T->bad_images && loader_mark_bad(train, T->bad_images)) die("%s/resume.safetensors: malformed bad_images list", T->run_dir);
        trainer_say(T, "stage %s: %s, %d epoch%s of %d batch%s of %d at %dpx%s\n", st->name, label, epochs, epochs == 1 ? "" : "s",
            per_epoch, per_epoch == 1 ? "" : "es", st->batch,
            st->size, on_device ? ", augmented on the device" : "");
    }
    trainer_say(T, "%-6s %-11s %-11s %-9s %s\n", "epoch", "train_loss", "valid_loss", "accuracy", "time");
    /* mixup and progressive crops draw from a stream per batch, so a resumed run draws the same */
    Rng mix_base = rng_split(&T->root, 100), crop_base = rng_split(&T->root, 200);
    int stopped = 0;
    /* early stopping ends the fit at an epoch's end (a run resumed after it ends it at once) */
    for (int e = start.epoch; e < epochs && !stopped && !trainer_fit_should_stop(T); e++) {
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
            StepArgs a = {.batch = b, .smoothing = st->label_smoothing, .epoch = e, .index = step, .tag = T->run_steps};
            a.hyper = (OptimHyper){st->lr, st->mom_max, st->beta2, st->eps, st->wd};
            if (shape == LR_ONE_CYCLE) {
                a.hyper.lr = one_cycle_lr(cycle, pos);
                a.hyper.beta1 = one_cycle_mom(cycle, pos);
            }
            uint64_t batch_id = (uint64_t)T->epoch << 32 | (uint64_t)b->index;
            a.side = last_side = prog ? progressive_side(prog, b->size, pos) : b->size;
            /* a progressive stage's smaller side is cut from the full batch by the backend */
            a.crop = st->resize_crop;
            Rng crop_rng = rng_split(&crop_base, batch_id), mix_rng = rng_split(&mix_base, batch_id);
            if (a.side < b->size && a.crop) crop_offsets(&crop_rng, b->size, a.side, &a.oy, &a.ox);
            a.mixup_alpha = st->mixup_alpha;
            a.mix_rng = &mix_rng;
            a.dropout_seed = rng_hash(T->cfg->seed ^ 0x44524f50ULL, batch_id);
            if (T->steps + 1 == T->hang_step && dist_rank() == T->hang_rank)
                for (;;) pause(); /* fault injection: a rank that hangs (the watchdog's test) */
            a.poison_input = T->steps + 1 == T->nan_step;
            a.poison_grad = T->steps + 1 == T->inf_grad_step;
            StepReport r = step_run(T->step, &a);
            take_report(T, st, &r, epoch_base, per_epoch, &sum, &seen);
            T->steps++;
            T->run_steps++;
            if (progress_on()) {
                double dt = now_seconds() - t0;
                int done = b->index + 1;
                progress_show("epoch %d: %d/%d batches, %.0f img/s, loss %.4f, eta %.0fs", e, done, per_epoch, seen / dt,
                              seen ? sum / seen : 0.0, dt / done * (per_epoch - done));
            }
            if (trainer_stop_requested(T)) {
                StepReport last = step_finish(T->step);
                take_report(T, st, &last, epoch_base, per_epoch, &sum, &seen);
                T->at = (Position){T->at.stage, phase, e, b->index + 1, sum, seen};
                stopped = 1;
                break;
            }
        }
        StepReport last = step_finish(T->step); /* the epoch's last step, before its validation and checkpoint */
        take_report(T, st, &last, epoch_base, per_epoch, &sum, &seen);
        progress_clear();
        if (stopped) break;
        EvalResult v = trainer_evaluate(T, valid, T->epoch, st->label_smoothing);
        if (v.interrupted) { /* the epoch's training is done; its validation runs again on resume */
            trainer_stop_requested(T);
            T->at = (Position){T->at.stage, phase, e, per_epoch, sum, seen};
            stopped = 1;
            break;
        }
        double dt = now_seconds() - t0;
        float acc = v.count ? (float)v.correct / v.count : 0;
        if (loader_dropped(train))
            trainer_say(T, "  epoch %d: %d batch%s left out: bad images left %s short of %d (the next epochs leave those images out)\n",
                e, loader_dropped(train), loader_dropped(train) == 1 ? "" : "es", loader_dropped(train) == 1 ? "it" : "them",
                st->batch);
        /* an epoch that trained nothing has no training loss (fastai's #na#; empty in metrics.csv) */
        char loss[32];
        snprintf(loss, sizeof loss, "%.6f", seen ? sum / seen : 0);
        if (!seen) trainer_say(T, "  epoch %d trained nothing: bad images left every batch short\n", e);
        trainer_say(T, "%-6d %-11s %-11.6f %-9.6f %02d:%02d\n", e, seen ? loss : "#na#", v.loss, acc, (int)dt / 60, (int)dt % 60);
        fprintf(T->metrics, "%s,%d,%d,%s,%.6f,%.6f,%.2f,%d\n", st->name, T->epoch, epoch_base + e, seen ? loss : "", v.loss, acc, dt,
                last_side);
        T->epoch++;
        T->at = (Position){T->at.stage, phase, e + 1, 0, 0, 0};
        trainer_after_epoch(T, st, v.loss, acc);
        trainer_save_resume(T);
    }
    if (stopped) trainer_save_resume(T);
    free(T->bad_images);
    T->bad_images = loader_bad_list(train, 0);
    T->train_loader = NULL;
    loader_destroy(train);
    loader_destroy(valid);
    return stopped;
}
