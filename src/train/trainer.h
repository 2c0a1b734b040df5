/* train/trainer.h: private to src/train/: the trainer's state (where a run stands, what the running
 * fit holds) and the functions its files share: fit.c (the fit loop, evaluation), resume.c
 * (checkpoints), stages.c (the stage types), run_folder.c, train.c (train_run). */
#ifndef CNN_TRAINER_H
#define CNN_TRAINER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "train/train.h"
#include "train/config.h"
#include "pipeline/dataset.h"
#include "pipeline/device_feed.h"
#include "pipeline/loader.h"
#include "net/model.h"
#include "train/evaluate.h"
#include "train/progressive.h"
#include "train/run_record.h"
#include "train/schedule.h"
#include "train/scaler.h"
#include "train/step.h"
#include "net/optim.h"
#include "base/rng.h"

/* Where a run stands; a resume checkpoint records it. */
typedef struct {
    int stage;              /* index of the stage being run (nstages once the run is done) */
    int phase;              /* fit call (trainer_fit) within the stage: fine_tune's frozen (0) and unfrozen (1) parts */
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
    Optimizer *opt;         /* AdamW and its state */
    GradScaler scaler;      /* [run] loss_scale */
    Stepper *step;          /* the training step (step.h) */
    int epoch;              /* epochs run so far, over all stages: the loader's epoch number */
    char run_dir[1024];
    FILE *log, *metrics;
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
    int hang_rank;          /* CNNTRAIN_INJECT_HANG=R:N: rank R stops answering before step N (-1: never) */
    long hang_step;
    DeviceFeed feed;        /* BATCH_RAW batches to the model's input (augmentation on the device) */
    int frozen;             /* fastai's freeze(): only the last parameter group and the batch norms train */
    int stopped;            /* why the run stopped early: a signal number, or -1 for stop_after */
    char data_fp[DATA_FP_CHARS]; /* the data set's fingerprint (run_record.h), in every checkpoint */
    /* [run] monitor (best.h): the run's best value and its epoch (T->epoch numbering; best_epoch -1:
     * none yet), and the running fit's best and epochs since it improved (early stopping, per fit
     * as fastai's trackers reset at each fit); all in the resume checkpoint */
    double best_value, fit_best;
    int best_epoch, fit_wait;
    long run_steps;         /* training steps over the whole run (resumes included): steps.csv's step */
    FILE *steps_csv;        /* RUN/steps.csv: a row per step, as its report comes */
} Trainer;


/* The model's weights, statistics and Adam moments on the host, for a checkpoint. */
typedef struct {
    float *params, *stats, *adam_m, *adam_v;
} HostState;

typedef enum { LR_ONE_CYCLE, LR_CONSTANT } LrShape;

/* fit.c: signals, messages, the fit loop and the evaluation pass (each defined with its comment) */
extern volatile sig_atomic_t trainer_stop_signal; /* Ctrl-C or SIGTERM seen: stop at the next step */
void trainer_on_stop_signal(int sig);             /* the handler train_run installs */
const volatile sig_atomic_t *trainer_eval_stop_flag(void);
int trainer_stop_requested(Trainer *T);
void trainer_say(Trainer *T, const char *fmt, ...) CNN_PRINTF(2, 3);
/* trainer_make_loader's kinds: the validation images (TTA and interpretation, which keep every image's
 * row), the training images (data-parallel: this rank's part of each batch), the validation images
 * cut among the ranks too (a pass whose counts eval_pass reduces) */
enum { LOADER_VALID = 0, LOADER_TRAIN = 1, LOADER_VALID_SHARDED = 2 };
Loader *trainer_make_loader(Trainer *T, const TransformSpec *tf, int batch, int kind, int on_device);
void trainer_reset_optimizer(Trainer *T);
void trainer_set_trainable(Trainer *T);
void trainer_set_frozen(Trainer *T, int frozen);
void trainer_set_group_lrs(Trainer *T, float lo, float hi, int spread);
int trainer_augment_on_device(const Trainer *T);
EvalResult trainer_evaluate(Trainer *T, Loader *L, int epoch, float smoothing);
int trainer_fit(Trainer *T, const StageConfig *st, int phase, const char *label, int epochs, LrShape shape,
                const OneCycle *cycle, const ProgressiveSchedule *prog);

/* resume.c: checkpoints and the resume checkpoint */
char *trainer_class_list(const Dataset *d);
HostState trainer_host_state_new(const Model *m);
void trainer_host_state_free(HostState *h);
void trainer_save_checkpoint(Trainer *T, const char *name, const char *stage, const char *const *extra);
void trainer_save_resume(Trainer *T);
void trainer_load_resume(Trainer *T);
void trainer_check_resume_config(const Config *cfg, const char *run_dir);
void trainer_check_resume_record(const Config *cfg, const char *run_dir, const char *data_fp);

/* stages.c */
int trainer_run_stage(Trainer *T, const StageConfig *st);

/* lr_find.c: an lr_find stage (lr_find.h); 1 when a stop signal interrupted it (it runs again) */
int trainer_lr_find_stage(Trainer *T, const StageConfig *st);
/* best.c: [run] monitor, save = best and early_stop_patience; the end-of-run summary */
double trainer_monitor_none(const Trainer *T);
void trainer_fit_tracking_reset(Trainer *T);
int trainer_after_epoch(Trainer *T, const StageConfig *st, double valid_loss, double accuracy);
int trainer_fit_should_stop(const Trainer *T);
void trainer_print_summary(Trainer *T, double seconds);

/* data_parallel.c: a data-parallel run's checks (the batch divides among the ranks...; and ranks but 0
 * have their stdout silenced), the private
 * folder of ranks other than 0, the stop every rank agrees on (a collective: nonzero when any rank
 * stops), the batch-norm running statistics averaged across the ranks (before evaluation and
 * checkpoints); nothing in one process */
void trainer_dist_check(const Config *cfg, const Backend *be);
void trainer_dist_private_folder(Trainer *T);
void trainer_dist_remove_private_folder(Trainer *T);
int trainer_dist_agree_stop(int stop);
void trainer_dist_average_stats(Trainer *T);

/* run_folder.c */
int trainer_lock_run_folder(const char *run_dir);
void trainer_remove_temp_files(const char *run_dir);
void trainer_check_run_name(const Config *cfg);
int trainer_new_run_folder(Trainer *T);

#endif
