/* train/train.c: a run from start to end (train_run): the data, the model, the run folder or the
 * resume checkpoint, then each stage in turn (train/stages.c, train/fit.c). */
#include "train/train.h"
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
#include "base/util.h"

/* A training batch is always full (drop_last), so a stage's batch must fit the training images.
 * Checked before anything is allocated or any folder made. */
static void check_batches(const Config *cfg, const Dataset *d) {
    for (int i = 0; i < cfg->nstages; i++) {
        const StageConfig *st = &cfg->stages[i];
        if (st->type != STAGE_EVAL && st->type != STAGE_TTA && st->type != STAGE_INTERPRET && st->batch > d->ntrain)
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

int train_run(const Config *cfg, const char *resume_dir, char *run_dir, size_t run_dir_len) {
    Trainer T = {0};
    T.cfg = cfg;
    double started = now_seconds();
    T.best_value = T.fit_best = trainer_monitor_none(&T);
    T.best_epoch = -1;
    trainer_stop_signal = 0;
    const char *inject = getenv("CNNTRAIN_INJECT_NAN");
    if (inject) {
        int grad = !strncmp(inject, "grad:", 5);
        char *end = NULL;
        long step = strtol(inject + 5 * grad, &end, 10);
        if (end == inject + 5 * grad || *end || step < 0)
            die("CNNTRAIN_INJECT_NAN=%s: give a step number N (a NaN input) or grad:N (an inf gradient)", inject);
        *(grad ? &T.inf_grad_step : &T.nan_step) = step;
    }
    const char *hang = getenv("CNNTRAIN_INJECT_HANG"); /* RANK:STEP: that rank stops answering before that step */
    T.hang_step = -1;
    if (hang) {
        char *end = NULL;
        long r = strtol(hang, &end, 10);
        if (end == hang || *end != ':' || r < 0 || r > 1000000) die("CNNTRAIN_INJECT_HANG=%s: give RANK:STEP", hang);
        const char *at = end + 1;
        T.hang_rank = (int)r;
        T.hang_step = strtol(at, &end, 10);
        if (end == at || *end || T.hang_step < 0) die("CNNTRAIN_INJECT_HANG=%s: give RANK:STEP", hang);
    }
    char err[1024];
    /* data-parallel: rank 0 alone checks and makes the run folder (the others would find it made) */
    if (!resume_dir && dist_is_root()) trainer_check_run_name(cfg);
    else if (resume_dir) trainer_check_resume_config(cfg, resume_dir);
    if (dataset_open(&cfg->data, cfg->strict_images, &T.data, err, sizeof err)) die("%s", err);
    data_fingerprint(&T.data, cfg->data.root, T.data_fp);
    if (resume_dir) trainer_check_resume_record(cfg, resume_dir, T.data_fp);
    int classes = cfg->classes ? cfg->classes : T.data.nclasses;
    if (classes < T.data.nclasses)
        die("%s: classes = %d but the data has %d classes", cfg->path, classes, T.data.nclasses);
    check_batches(cfg, &T.data);
    T.model = model_build(cfg->arch, classes, err, sizeof err);
    if (!T.model) die("%s: %s", cfg->path, err);
    T.be = backend_create(cfg->device, err, sizeof err);
    if (!T.be) die("%s: %s", cfg->path, err);
    trainer_dist_check(cfg, T.be);
    dist_watchdog(cfg->dist_timeout);
    T.be->sync_bn = cfg->sync_bn && dist_active();
    if (backend_set_precision(T.be, cfg->precision) != cfg->precision)
        fprintf(stderr, "cnntrain: precision %s is not available on the %s backend; training in %s\n",
                dtype_name(cfg->precision), T.be->ops->name, dtype_name(T.be->compute));
    int dynamic = cfg->loss_scale == LOSS_SCALE_DYNAMIC || (cfg->loss_scale == LOSS_SCALE_AUTO && T.be->compute == DT_F16);
    T.scaler = scaler_make(dynamic, dynamic ? SCALE_INIT : 1.0f);
    int max_batch, max_side;
    largest_shape(cfg, &max_batch, &max_side);
    /* no batch holds more than the larger split (an eval stage's batch 65536 over 100 images) */
    int images = T.data.ntrain > T.data.nvalid ? T.data.ntrain : T.data.nvalid;
    if (max_batch > images) max_batch = images;
    if (model_attach(T.model, T.be, max_batch, max_side, max_side, err, sizeof err)) die("%s: %s", cfg->path, err);
    T.opt = optim_new(T.model);

    rng_seed(&T.root, cfg->seed);
    char path[1200];
    int from_checkpoint = 0, lock = -1;
    if (resume_dir) {
        if (snprintf(T.run_dir, sizeof T.run_dir, "%s", resume_dir) >= (int)sizeof T.run_dir)
            die("%s: the run folder name is too long", resume_dir);
        if (dist_is_root()) { /* data-parallel: the others only read the checkpoint */
            lock = trainer_lock_run_folder(T.run_dir);
            trainer_remove_temp_files(T.run_dir);
        }
        snprintf(path, sizeof path, "%s/resume.safetensors", T.run_dir);
        from_checkpoint = !access(path, F_OK);
        if (from_checkpoint) trainer_load_resume(&T);
        else printf("cnntrain: %s: no checkpoint yet (the run stopped before its first epoch ended): starting over\n", path);
        T.resume_written = from_checkpoint;
    }
    device_feed_init(&T.feed, T.be);
    /* without dynamic loss scaling nothing is decided before the update: the step's loss and
     * gradient check are read back one step late, so the device never waits for the host */
    T.step = step_new(T.model, T.opt, &T.scaler, &T.feed, dynamic ? STEP_READ_NOW : STEP_READ_LATE);
    if (!from_checkpoint) {
        Rng init = rng_split(&T.root, 1);
        HostState h = trainer_host_state_new(T.model);
        model_init_host(T.model, &init, h.params, h.stats);
        if (cfg->pretrained[0]) {
            PretrainedReport rep;
            char *names = trainer_class_list(&T.data);
            if (pretrained_load_file_head(cfg->pretrained, T.model, h.params, h.stats, cfg->pretrained_head, names, &rep, err,
                                          sizeof err))
                die("%s: [model] pretrained: %s", cfg->path, err);
            free(names);
            pretrained_report_print(stdout, &rep, "", 0);
            pretrained_report_free(&rep);
            /* fastai's cnn_learner starts frozen when its body is pretrained */
            T.frozen = T.model->ngroups > 1;
            trainer_set_trainable(&T);
        }
        model_set_weights(T.model, h.params, h.stats);
        trainer_host_state_free(&h);
        if (!resume_dir && dist_is_root()) lock = trainer_new_run_folder(&T);
    }
    snprintf(run_dir, run_dir_len, "%s", T.run_dir);
    trainer_dist_private_folder(&T); /* ranks but 0: their log and CSVs into a folder of their own */
    snprintf(path, sizeof path, "%s/log.txt", T.run_dir);
    T.log = fopen(path, resume_dir ? "a" : "w");
    snprintf(path, sizeof path, "%s/metrics.csv", T.run_dir);
    T.metrics = fopen(path, from_checkpoint ? "a" : "w");
    snprintf(path, sizeof path, "%s/steps.csv", T.run_dir);
    T.steps_csv = fopen(path, from_checkpoint ? "a" : "w");
    if (!T.log || !T.metrics || !T.steps_csv) die("cannot write in %s: %s", T.run_dir, strerror(errno));
    fseek(T.metrics, 0, SEEK_END); /* ftell of an append stream is the end only after a write */
    fseek(T.steps_csv, 0, SEEK_END);
    if (!from_checkpoint) fprintf(T.metrics, "stage,epoch,stage_epoch,train_loss,valid_loss,accuracy,seconds,size\n");
    /* a row per training step, as its report gives it (one step late without loss scaling) */
    if (!ftell(T.steps_csv)) fprintf(T.steps_csv, "step,stage,epoch,stage_epoch,batch,lr,momentum,loss\n");

    trainer_say(&T, "cnntrain: %s%s, %s (%d classes) on %s in %s; %d train / %d valid images; run folder %s\n",
        from_checkpoint ? "resuming " : "", cfg->path, cfg->arch, classes, T.be->ops->name, dtype_name(T.be->compute),
        T.data.ntrain, T.data.nvalid, T.run_dir);

    /* Ctrl-C and SIGTERM stop at the next step with a checkpoint; a second one kills at once
     * (SA_RESETHAND), still safely: every checkpoint is replaced by an atomic rename. A full disk
     * quota must be an error we report (EFBIG), not SIGXFSZ's silent death. */
    struct sigaction sa = {0}, old_int, old_term, old_xfsz;
    sa.sa_handler = trainer_on_stop_signal;
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
    snprintf(path, sizeof path, "%s/final.safetensors", run_dir); /* the run folder's (every rank decides alike) */
    int finishing = start < cfg->nstages, write_final = cfg->save != SAVE_NONE && (finishing || access(path, F_OK));
    if (!finishing) trainer_say(&T, "the run had finished: %s\n", write_final ? "writing its final checkpoint" : "nothing to resume");
    for (int i = start; i < cfg->nstages && !T.stopped; i++) {
        const StageConfig *st = &cfg->stages[i];
        if (!T.resuming) T.at = (Position){i, 0, 0, 0, 0, 0};
        if (trainer_run_stage(&T, st)) {
            trainer_stop_requested(&T);
            if (st->type == STAGE_EVAL || st->type == STAGE_TTA || st->type == STAGE_INTERPRET)
                trainer_save_resume(&T); /* it runs again */
            break;
        }
        T.resuming = 0;
        T.at = (Position){i + 1, 0, 0, 0, 0, 0};
        trainer_save_resume(&T);
    }
    if (T.scaler.dynamic)
        trainer_say(&T, "loss scaling: %ld steps skipped (inf/NaN gradients) in this process; scale now %g\n", T.scaler.skipped,
            (double)T.scaler.scale);
    int rc = 0;
    if (T.stopped) {
        const Position *p = &T.at;
        char why[64];
        if (T.stopped > 0) snprintf(why, sizeof why, "%s", T.stopped == SIGINT ? "Ctrl-C" : "SIGTERM");
        else snprintf(why, sizeof why, "run.stop_after = %d steps", cfg->stop_after);
        trainer_say(&T, "stopped (%s) in stage %s, epoch %d, after batch %d; go on with: ./train --resume %s\n", why,
            cfg->stages[p->stage].name, p->epoch, p->batch, T.run_dir);
        rc = T.stopped > 0 ? 128 + T.stopped : TRAIN_STOPPED;
    } else if (write_final) {
        trainer_save_checkpoint(&T, "final", "final", NULL);
    }
    fclose(T.steps_csv);
    if (!T.stopped && (finishing || write_final) && dist_is_root()) plot_run(T.run_dir);
    if (!T.stopped && finishing) trainer_print_summary(&T, now_seconds() - started);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGXFSZ, &old_xfsz, NULL);

    fclose(T.log);
    fclose(T.metrics);
    if (lock >= 0) close(lock);
    trainer_dist_remove_private_folder(&T);
    step_free(T.step);
    optim_free(T.opt);
    free(T.from_bad[0]);
    free(T.from_bad[1]);
    free(T.bad_images);
    device_feed_free(&T.feed);
    model_free(T.model);
    backend_destroy(T.be);
    dataset_free(&T.data);
    return rc;
}
