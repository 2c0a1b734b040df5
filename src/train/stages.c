/* train/stages.c: the stage types that are not a plain fit (eval at several sizes, TTA, FixRes,
 * interpretation) and running one stage of any type. */
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
#include "pipeline/device_feed.h"
#include "pipeline/loader.h"
#include "net/model.h"
#include "net/optim.h"
#include "report/plot.h"
#include "ckpt/pretrained.h"
#include "train/interpret.h"
#include "train/progressive.h"
#include "train/run_record.h"
#include "train/schedule.h"
#include "base/util.h"

/* The side the model was last trained at before stage st: the last training stage before it (0
 * when none: a pretrained model evaluated as it came). */
static int trained_size(const Trainer *T, const StageConfig *st) {
    const StageConfig *t = config_last_training(T->cfg, (int)(st - T->cfg->stages));
    return t ? t->size : 0;
}

/* Multi-resolution evaluation: the valid transform at each size. Writes eval-<stage>.csv, with
 * the training side in a last column (its plot marks it). Returns 1 when a stop signal
 * interrupted it (the stage runs again on resume). */
static int eval_sizes(Trainer *T, const StageConfig *st) {
    char path[1200];
    snprintf(path, sizeof path, "%s/eval-%s.csv", T->run_dir, st->name);
    char *text = NULL, err[1400];
    size_t len = 0;
    FILE *csv = open_memstream(&text, &len); /* written whole at the end (util.h's atomic write) */
    if (!csv) die("cannot write %s: %s", path, strerror(errno));
    int trained = trained_size(T, st);
    fprintf(csv, "size,loss,accuracy,images%s\n", trained ? ",trained_size" : "");
    trainer_say(T, "stage %s: evaluation at %d sizes\n%-6s %-11s %-9s\n", st->name, st->nsizes, "size", "loss", "accuracy");
    char label[120];
    Evaluator ev = {T->model, &T->feed, trainer_eval_stop_flag(), label};
    int interrupted = 0;
    for (int i = 0; i < st->nsizes && !interrupted; i++) {
        TransformSpec tf = st->valid_tf;
        tf.size = st->sizes[i];
        snprintf(label, sizeof label, "stage %s, size %d", st->name, tf.size);
        Loader *L = trainer_make_loader(T, &tf, st->batch, LOADER_VALID_SHARDED, trainer_augment_on_device(T));
        EvalResult r = eval_pass(&ev, L, 0, 0.0f, NULL);
        loader_destroy(L);
        interrupted = r.interrupted;
        if (interrupted) break;
        float acc = r.count ? (float)r.correct / r.count : 0;
        trainer_say(T, "%-6d %-11.6f %-9.6f\n", tf.size, r.loss, acc);
        fprintf(csv, "%d,%.6f,%.6f,%d", tf.size, r.loss, acc, r.count);
        if (trained) fprintf(csv, ",%d", trained);
        fputc('\n', csv);
    }
    if (fclose(csv) || write_file_atomic(path, text, len, err, sizeof err)) die("%s", err);
    free(text);
    return interrupted;
}

/* fastai's tta(n, beta) (evaluate.h's tta_pass): n passes with the training transforms, averaged,
 * then lerp(mean_aug, plain, beta) on the softmax probabilities. Returns 1 when interrupted. */
static int tta(Trainer *T, const StageConfig *st) {
    int on_device = trainer_augment_on_device(T);
    /* data-parallel: each rank its part of the images, in both loaders alike (evaluate.h) */
    Loader *L = trainer_make_loader(T, &st->valid_tf, st->batch, LOADER_VALID_SHARDED, on_device),
           *A = trainer_make_loader(T, &st->train_tf, st->batch, LOADER_VALID_SHARDED, on_device);
    char label[100];
    snprintf(label, sizeof label, "stage %s", st->name);
    Evaluator ev = {T->model, &T->feed, trainer_eval_stop_flag(), label};
    TtaResult t = tta_pass(&ev, L, A, 1000, st->tta_n, st->tta_beta, T->data.nvalid);
    loader_destroy(L);
    loader_destroy(A);
    if (t.bad_pass >= 0)
        die("stage %s: TTA pass %d saw %d images, the plain pass %d", st->name, t.bad_pass, t.bad_count, t.plain.count);
    if (!t.interrupted) {
        int n = t.plain.count;
        trainer_say(T, "stage %s: TTA (n=%d, beta=%.2f): accuracy %.6f (without TTA %.6f) on %d images\n", st->name, st->tta_n,
            st->tta_beta, n ? (float)t.correct / n : 0, n ? (float)t.plain.correct / n : 0, n);
        fprintf(T->metrics, "%s,%d,tta,,%.6f,%.6f,,%d\n", st->name, T->epoch, t.loss, n ? (float)t.correct / n : 0, st->size);
        fflush(T->metrics);
    }
    return t.interrupted;
}

static void say_line(void *T, const char *line) { trainer_say(T, "%s\n", line); }

/* fastai's ClassificationInterpretation of the validation set at the stage's size and valid
 * transform (train/interpret.h), into <stage>-*.csv, .png and .jpg. Returns 1 when interrupted. */
static int interpret(Trainer *T, const StageConfig *st) {
    int n = T->data.nvalid, C = T->model->classes;
    Loader *L = trainer_make_loader(T, &st->valid_tf, st->batch, LOADER_VALID, trainer_augment_on_device(T));
    float *probs = xmalloc(((size_t)n * C + 1) * sizeof(float));
    int32_t *labels = xmalloc(((size_t)n + 1) * sizeof(int32_t));
    int *sample = xmalloc(((size_t)n + 1) * sizeof(int));
    char label[100];
    snprintf(label, sizeof label, "stage %s", st->name);
    Evaluator ev = {T->model, &T->feed, trainer_eval_stop_flag(), label};
    EvalResult r = eval_pass(&ev, L, 0, 0.0f, &(EvalRows){probs, labels, n});
    char err[1400], prefix[80], title[200];
    if (!r.interrupted) {
        if (interp_loader_order(L, n, r.count, sample, err, sizeof err)) die("stage %s: %s", st->name, err);
        snprintf(prefix, sizeof prefix, "%s-", st->name);
        snprintf(title, sizeof title, "Confusion matrix: stage %s, size %d", st->name, st->valid_tf.size);
        InterpretSpec is = {probs, labels, sample, r.count, C, T->data.valid, (const char *const *)T->data.classes,
                            st->valid_tf, T->cfg->threads, st->top_losses, 9, st->min_val, T->cfg->seed, T->run_dir,
                            prefix, 1, title, say_line, T};
        trainer_say(T, "stage %s: interpretation (valid loss %.6f)\n", st->name, r.loss);
        if (interpret_write(&is, err, sizeof err)) die("stage %s: %s", st->name, err);
    }
    loader_destroy(L);
    free(probs);
    free(labels);
    free(sample);
    return r.interrupted;
}

/* Resuming inside a stage: its parts before the checkpoint's phase are done already, and the
 * optimizer state to go on with is the checkpoint's, not a cleared one. */
static int phase_done(const Trainer *T, int phase) { return T->resuming && phase < T->from.phase; }

static void reset_optimizer_unless_resuming(Trainer *T) {
    if (!T->resuming) trainer_reset_optimizer(T);
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
    trainer_set_group_lrs(T, 0, st->lr, 0);
    int stopped = trainer_fit(T, st, 0, st->train_final_bn ? "fixres (head + final batch norm)" : "fixres (head; final batch norm adapts)",
                      st->epochs, LR_CONSTANT, NULL, NULL);
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].frozen_stats = 0;
    trainer_set_trainable(T);
    if (!stopped) trainer_reset_optimizer(T);
    return stopped;
}

/* Runs one stage; returns 1 when the run was asked to stop inside it (a resume checkpoint says
 * where), else 0 once its checkpoint (training stages, with save = stages) is written. */
int trainer_run_stage(Trainer *T, const StageConfig *st) {
    /* it leaves the model, the optimizer and the group lrs as it found them, and writes no checkpoint */
    if (st->type == STAGE_LR_FIND) return trainer_lr_find_stage(T, st);
    FitPhase ph[2];
    int nph = stage_fit_phases(st, ph);
    int stopped = 0;
    /* freeze = yes / no before a training stage (a resumed stage already is as it was) */
    if (st->freeze != FREEZE_KEEP && !T->resuming) trainer_set_frozen(T, st->freeze == FREEZE_YES);
    trainer_set_group_lrs(T, ph[0].lo, ph[0].hi, ph[0].spread); /* fine_tune sets its own per phase */
    switch (st->type) {
    case STAGE_FIT_ONE_CYCLE: stopped = trainer_fit(T, st, 0, "fit_one_cycle", st->epochs, LR_ONE_CYCLE, &ph[0].cycle, NULL); break;
    case STAGE_FIT: stopped = trainer_fit(T, st, 0, "fit (constant lr)", st->epochs, LR_CONSTANT, NULL, NULL); break;
    case STAGE_PROGRESSIVE: {
        ProgressiveSchedule p = {st->initial_scale, st->delay_fraction, st->finetune_fraction, st->size_increment};
        stopped = trainer_fit(T, st, 0, "progressive resizing (one-cycle)", st->epochs, LR_ONE_CYCLE, &ph[0].cycle, &p);
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
            if (!T->resuming) trainer_set_frozen(T, ph[k].frozen);
            trainer_set_group_lrs(T, ph[k].lo, ph[k].hi, ph[k].spread);
            stopped = trainer_fit(T, st, phase, ph[k].frozen ? "fine_tune, frozen" : "fine_tune, unfrozen", ph[k].epochs,
                          LR_ONE_CYCLE, &ph[k].cycle, NULL);
        }
        break;
    }
    case STAGE_EVAL: stopped = eval_sizes(T, st); break;
    case STAGE_TTA: stopped = tta(T, st); break;
    case STAGE_INTERPRET: stopped = interpret(T, st); break;
    default: die("stage %s: unknown stage type %d", st->name, (int)st->type);
    }
    if (stopped) return 1;
    /* a training stage's own weights: [run] save = stages */
    if (st->type != STAGE_EVAL && st->type != STAGE_TTA && st->type != STAGE_INTERPRET && T->cfg->save == SAVE_STAGES)
        trainer_save_checkpoint(T, st->name, st->name, NULL);
    return 0;
}
