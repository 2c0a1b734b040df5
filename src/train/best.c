/* train/best.c: what a run keeps track of across its epochs, as fastai's tracker callbacks do
 * ([run] monitor): the best epoch's weights (save = best: SaveModelCallback), early stopping
 * (early_stop_patience: EarlyStoppingCallback), and the summary printed when a run ends. */
#include "train/trainer.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"

static const char *monitor_name(const Trainer *T) { return T->cfg->monitor == MONITOR_ACCURACY ? "accuracy" : "valid_loss"; }

/* The value before any epoch: every first epoch improves on it. */
double trainer_monitor_none(const Trainer *T) { return T->cfg->monitor == MONITOR_ACCURACY ? -INFINITY : INFINITY; }

/* fastai's comparison with min_delta 0: strictly better. */
static int improves(const Trainer *T, double value, double best) {
    return T->cfg->monitor == MONITOR_ACCURACY ? value > best : value < best;
}

/* A new fit (not one resumed inside): fastai's trackers reset at before_fit. */
void trainer_fit_tracking_reset(Trainer *T) {
    T->fit_best = trainer_monitor_none(T);
    T->fit_wait = 0;
}

/* After an epoch's validation row (T->epoch counts it already), before its resume checkpoint: the
 * run's best (best.safetensors written first, so the checkpoint never records a best it lacks)
 * and this fit's patience. Returns 1 when early stopping ends the fit. */
int trainer_after_epoch(Trainer *T, const StageConfig *st, double valid_loss, double accuracy) {
    double value = T->cfg->monitor == MONITOR_ACCURACY ? accuracy : valid_loss;
    int epoch = T->epoch - 1;
    if (improves(T, value, T->best_value)) {
        T->best_value = value;
        T->best_epoch = epoch;
        if (T->cfg->save == SAVE_BEST) {
            char text[2][32];
            snprintf(text[0], sizeof text[0], "%d", epoch);
            snprintf(text[1], sizeof text[1], "%.9g", value);
            const char *extra[] = {"best_epoch", text[0], "monitor", monitor_name(T), "monitor_value", text[1], NULL};
            trainer_save_checkpoint(T, "best", st->name, extra);
        }
    }
    if (improves(T, value, T->fit_best)) {
        T->fit_best = value;
        T->fit_wait = 0;
    } else {
        T->fit_wait++;
    }
    if (!trainer_fit_should_stop(T)) return 0;
    trainer_say(T, "stage %s: early stopping: no improvement in %s for %d epoch%s (best %.6f); the fit ends here\n", st->name,
        monitor_name(T), T->fit_wait, T->fit_wait == 1 ? "" : "s", T->fit_best);
    return 1;
}

int trainer_fit_should_stop(const Trainer *T) {
    return T->cfg->early_stop_patience && T->fit_wait >= T->cfg->early_stop_patience;
}

/* ------------------------------------------------------------------------- the summary */

static long long du_bytes;

static int du_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)path, (void)flag, (void)ftw;
    du_bytes += (long long)sb->st_blocks * 512;
    return 0;
}

/* Disk used by a folder and what it holds, as du counts it (allocated blocks). */
static long long disk_used(const char *dir) {
    du_bytes = 0;
    if (nftw(dir, du_entry, 8, FTW_PHYS)) return -1;
    return du_bytes;
}

static void say_duration(char *buf, size_t len, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
}

/* The epochs in metrics.csv (every session of the run): the last, the best accuracy, the TTA rows,
 * and the seconds they took. */
typedef struct {
    int epochs, last_epoch, best_epoch, tta;
    double last_acc, best_acc, tta_acc, seconds;
    char last_stage[64], best_stage[64];
} EpochRecord;

/* A metrics.csv field as a number: 1, or 0 when it does not start with one (the header). */
static int int_field(const char *s, int *v) {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s) return 0;
    *v = (int)x;
    return 1;
}

static int double_field(const char *s, double *v) {
    char *end;
    double x = strtod(s, &end);
    if (end == s) return 0;
    *v = x;
    return 1;
}

static void read_metrics(const Trainer *T, EpochRecord *r) {
    memset(r, 0, sizeof *r);
    r->best_acc = -1;
    char path[1200], line[1024];
    snprintf(path, sizeof path, "%s/metrics.csv", T->run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char stage[64], se[16];
        int epoch;
        double vl, acc, secs = 0;
        /* stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size; train_loss may be empty */
        char *c[8] = {line};
        int n = 1;
        for (char *p = line; *p && n < 8; p++)
            if (*p == ',') *p = 0, c[n++] = p + 1;
        if (n < 7 || !*c[0] || !*c[2] || !int_field(c[1], &epoch) || !double_field(c[4], &vl) || !double_field(c[5], &acc))
            continue; /* the header */
        snprintf(stage, sizeof stage, "%.63s", c[0]);
        snprintf(se, sizeof se, "%.15s", c[2]);
        if (!strcmp(se, "tta")) {
            r->tta = 1, r->tta_acc = acc;
            continue;
        }
        if (!double_field(c[6], &secs)) secs = 0;
        r->seconds += secs;
        r->epochs++;
        r->last_epoch = epoch, r->last_acc = acc;
        snprintf(r->last_stage, sizeof r->last_stage, "%s", stage);
        if (acc > r->best_acc) {
            r->best_acc = acc, r->best_epoch = epoch;
            snprintf(r->best_stage, sizeof r->best_stage, "%s", stage);
        }
    }
    fclose(f);
}

/* The end of a run that finished: its numbers, where its checkpoints are, time and disk. */
void trainer_print_summary(Trainer *T, double seconds) {
    fflush(T->metrics);
    EpochRecord r;
    read_metrics(T, &r);
    char path[1200], took[32], epochs_took[32];
    trainer_say(T, "summary:");
    if (r.epochs)
        trainer_say(T, " final accuracy %.4f (epoch %d, stage %s), best accuracy %.4f (epoch %d, stage %s)", r.last_acc,
            r.last_epoch, r.last_stage, r.best_acc, r.best_epoch, r.best_stage);
    else
        trainer_say(T, " no training epochs");
    if (r.tta) trainer_say(T, ", TTA accuracy %.4f", r.tta_acc);
    if (T->best_epoch >= 0 && T->cfg->monitor == MONITOR_VALID_LOSS)
        trainer_say(T, "; lowest valid_loss %.6f (epoch %d)", T->best_value, T->best_epoch);
    trainer_say(T, "\n");
    for (int i = 0; i < T->cfg->nstages; i++) { /* save = stages */
        snprintf(path, sizeof path, "%s/%s.safetensors", T->run_dir, T->cfg->stages[i].name);
        StageType type = T->cfg->stages[i].type;
        struct stat sb;
        if (type != STAGE_EVAL && type != STAGE_TTA && !stat(path, &sb))
            trainer_say(T, "  %s (the weights after stage %s, %.1f MB)\n", path, T->cfg->stages[i].name, sb.st_size / 1e6);
    }
    static const char *const files[][2] = {{"final.safetensors", "the final weights"},
                                           {"best.safetensors", "the best epoch's weights"},
                                           {"resume.safetensors", "weights and optimizer state: ./train --resume"}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", T->run_dir, files[i][0]);
        struct stat sb;
        if (stat(path, &sb)) continue;
        if (i == 1) trainer_say(T, "  %s (the weights of epoch %d, %s %.6f, %.1f MB)\n", path, T->best_epoch, monitor_name(T),
                        T->best_value, sb.st_size / 1e6);
        else trainer_say(T, "  %s (%s, %.1f MB)\n", path, files[i][1], sb.st_size / 1e6);
    }
    say_duration(took, sizeof took, seconds);
    say_duration(epochs_took, sizeof epochs_took, r.seconds);
    long long used = disk_used(T->run_dir);
    trainer_say(T, "  time %s in this process (%s in the epochs of every session); run folder %s: %.1f MB on disk\n", took,
        epochs_took, T->run_dir, used / 1e6);
}
