/* train/resume.c: checkpoints (a stage's, the final one) and the resume checkpoint: writing them,
 * and reading one back to continue the run that never stopped. */
#include "train/trainer.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
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

/* The class list as one metadata string: names joined by newlines (names never hold one). */
char *trainer_class_list(const Dataset *d) {
    size_t len = 1;
    for (int i = 0; i < d->nclasses; i++) len += strlen(d->classes[i]) + 1;
    char *s = xmalloc(len), *p = s;
    for (int i = 0; i < d->nclasses; i++) p += sprintf(p, "%s%s", i ? "\n" : "", d->classes[i]);
    *p = 0;
    return s;
}

/* Host arrays for a model's weights, statistics and moments, uninitialised. */
HostState trainer_host_state_new(const Model *m) {
    HostState h = {xmalloc(m->param_floats * sizeof(float)), xmalloc((m->stat_floats + 1) * sizeof(float)),
                   xmalloc(m->param_floats * sizeof(float)), xmalloc(m->param_floats * sizeof(float))};
    return h;
}

/* The model's state on the host (weights, statistics, Adam moments). */
static HostState host_state(const Trainer *T) {
    HostState h = trainer_host_state_new(T->model);
    model_get_weights(T->model, h.params, h.stats);
    optim_get_state(T->opt, h.adam_m, h.adam_v);
    return h;
}

void trainer_host_state_free(HostState *h) {
    free(h->params);
    free(h->stats);
    free(h->adam_m);
    free(h->adam_v);
}

/* RUN/NAME.safetensors: the weights and statistics, a plain PyTorch state dict, with the metadata
 * `eval` and `pretrained` read; extra: more metadata pairs, NULL-terminated, or NULL. The Adam
 * moments are not kept beside it ([run] save): resume.safetensors holds the run's latest. */
void trainer_save_checkpoint(Trainer *T, const char *name, const char *stage, const char *const *extra) {
    trainer_dist_average_stats(T); /* data-parallel: the ranks' mean statistics; rank 0 alone writes */
    if (!dist_is_root()) return;
    Model *m = T->model;
    HostState h = host_state(T);
    char id[CKPT_ID_CHARS + 1], epoch[16], step[16], path[1200], err[1024];
    ckpt_new_id(id);
    snprintf(epoch, sizeof epoch, "%d", T->epoch);
    snprintf(step, sizeof step, "%d", T->opt->step);
    char *classes = trainer_class_list(&T->data);
    /* the split, so that `eval` can tell the run's validation images from its training images */
    const DatasetSpec *ds = &T->cfg->data;
    char pct[32], seed[32];
    snprintf(pct, sizeof pct, "%.9g", (double)ds->valid_pct);
    snprintf(seed, sizeof seed, "%" PRIu64, ds->seed);
    /* class_labels: the label map's display names, beside class_names (which eval and resume compare) */
    char *labels = T->data.labels ? trainer_class_list(&(Dataset){.classes = T->data.labels, .nclasses = T->data.nclasses}) : NULL;
    const char *meta[40] = {CKPT_ID_KEY, id, "class_names", classes, "stage", stage, "epochs_done", epoch, "adam_step", step,
                            "data", T->data_fp};
    int n = 12;
    if (labels) meta[n++] = "class_labels", meta[n++] = labels;
    if (ds->format == DATA_CSV) { /* a folder data set has its split in its folders */
        const char *split[] = {"valid_pct", pct, "split_seed", seed};
        for (int i = 0; i < 4; i++) meta[n++] = split[i];
    }
    for (int i = 0; extra && extra[i] && n < 38; i++) meta[n++] = extra[i];
    meta[n] = NULL;
    snprintf(path, sizeof path, "%s/%s.safetensors", T->run_dir, name);
    if (ckpt_save(path, m, h.params, h.stats, meta, err, sizeof err)) die("%s", err);
    trainer_say(T, "checkpoint: %s\n", path);
    free(classes);
    free(labels);
    trainer_host_state_free(&h);
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

/* ---- the resume checkpoint's metadata: one table, written and parsed from the same rows ---- */

typedef struct {
    const char *class_names, *stage, *bad_images, *bad_images_at_epoch_start, *data, *metrics_hash;
    int stage_index, phase, stage_epoch, batch, epochs_done, adam_step, frozen, good_steps;
    long seen, metrics_bytes;
    double loss_sum, loss_scale;
    /* [run] monitor: best_epoch + 1 (0: none yet), the values as %a ("inf" when none) */
    int best_epoch_plus1, fit_wait;
    double best_value, fit_best;
    long run_steps, steps_bytes;
} ResumeMeta;

typedef enum { RM_STR, RM_INT, RM_LONG, RM_HEX } ResumeType; /* RM_HEX: a double as %a, exact */
enum { RM_OPTIONAL = 1 }; /* absent from older checkpoints (runs without loss scaling, bad images, monitor, steps.csv) */

static const struct {
    const char *key;
    size_t off;
    ResumeType type;
    int flags;
} resume_rows[] = {
    {"class_names", offsetof(ResumeMeta, class_names), RM_STR, 0},
    {"stage", offsetof(ResumeMeta, stage), RM_STR, 0},
    {"stage_index", offsetof(ResumeMeta, stage_index), RM_INT, 0},
    {"phase", offsetof(ResumeMeta, phase), RM_INT, 0},
    {"stage_epoch", offsetof(ResumeMeta, stage_epoch), RM_INT, 0},
    {"batch", offsetof(ResumeMeta, batch), RM_INT, 0},
    {"epochs_done", offsetof(ResumeMeta, epochs_done), RM_INT, 0},
    {"adam_step", offsetof(ResumeMeta, adam_step), RM_INT, 0},
    {"loss_sum", offsetof(ResumeMeta, loss_sum), RM_HEX, 0},
    {"seen", offsetof(ResumeMeta, seen), RM_LONG, 0},
    {"metrics_bytes", offsetof(ResumeMeta, metrics_bytes), RM_LONG, 0},
    {"bad_images", offsetof(ResumeMeta, bad_images), RM_STR, RM_OPTIONAL},
    {"bad_images_at_epoch_start", offsetof(ResumeMeta, bad_images_at_epoch_start), RM_STR, RM_OPTIONAL},
    {"frozen", offsetof(ResumeMeta, frozen), RM_INT, 0},
    {"loss_scale", offsetof(ResumeMeta, loss_scale), RM_HEX, RM_OPTIONAL},
    {"good_steps", offsetof(ResumeMeta, good_steps), RM_INT, RM_OPTIONAL},
    {"data", offsetof(ResumeMeta, data), RM_STR, 0},
    {"metrics_hash", offsetof(ResumeMeta, metrics_hash), RM_STR, 0},
    {"best_value", offsetof(ResumeMeta, best_value), RM_HEX, RM_OPTIONAL},
    {"best_epoch_plus1", offsetof(ResumeMeta, best_epoch_plus1), RM_INT, RM_OPTIONAL},
    {"fit_best", offsetof(ResumeMeta, fit_best), RM_HEX, RM_OPTIONAL},
    {"fit_wait", offsetof(ResumeMeta, fit_wait), RM_INT, RM_OPTIONAL},
    {"run_steps", offsetof(ResumeMeta, run_steps), RM_LONG, RM_OPTIONAL},
    {"steps_bytes", offsetof(ResumeMeta, steps_bytes), RM_LONG, RM_OPTIONAL},
};
#define N_RESUME_ROWS (int)(sizeof resume_rows / sizeof resume_rows[0])

/* r as the key/value list ckpt_save_resume takes (NULL-terminated), numbers printed into text. */
static void resume_meta_format(const ResumeMeta *r, char text[][40], const char *meta[2 * N_RESUME_ROWS + 1]) {
    for (int i = 0; i < N_RESUME_ROWS; i++) {
        const void *at = (const char *)r + resume_rows[i].off;
        meta[2 * i] = resume_rows[i].key;
        meta[2 * i + 1] = text[i];
        switch (resume_rows[i].type) {
        case RM_STR: meta[2 * i + 1] = *(const char *const *)at; break;
        case RM_INT: snprintf(text[i], 40, "%d", *(const int *)at); break;
        case RM_LONG: snprintf(text[i], 40, "%ld", *(const long *)at); break;
        case RM_HEX: snprintf(text[i], 40, "%a", *(const double *)at); break;
        }
    }
    meta[2 * N_RESUME_ROWS] = NULL;
}

/* The metadata of a resume checkpoint into *r (strings point into meta); a key that is missing
 * (unless optional) or does not parse (numbers: integers in [0, INT32_MAX], exact doubles) stops
 * the run naming it. Returns a bit per row: present. */
static unsigned long resume_meta_parse(const StFile *meta, const char *path, ResumeMeta *r) {
    unsigned long present = 0;
    memset(r, 0, sizeof *r);
    for (int i = 0; i < N_RESUME_ROWS; i++) {
        const char *s = st_meta(meta, resume_rows[i].key);
        void *at = (char *)r + resume_rows[i].off;
        if (!s) {
            if (resume_rows[i].flags & RM_OPTIONAL) continue;
            die("%s: metadata \"%s\" is missing", path, resume_rows[i].key);
        }
        char *end = NULL;
        long v = 0;
        double d = 0;
        switch (resume_rows[i].type) {
        case RM_STR: *(const char **)at = s; break;
        case RM_INT:
        case RM_LONG:
            v = strtol(s, &end, 10);
            if (end == s || *end || v < 0 || v > INT32_MAX) die("%s: metadata \"%s\" is bad: %s", path, resume_rows[i].key, s);
            if (resume_rows[i].type == RM_INT) *(int *)at = (int)v;
            else *(long *)at = v;
            break;
        case RM_HEX:
            d = strtod(s, &end);
            if (end == s || *end) die("%s: metadata \"%s\" is bad: %s", path, resume_rows[i].key, s);
            *(double *)at = d;
            break;
        }
        present |= 1UL << i;
    }
    return present;
}

static int resume_row(const char *key) {
    for (int i = 0; i < N_RESUME_ROWS; i++)
        if (!strcmp(resume_rows[i].key, key)) return i;
    die("resume_row: no row %s", key);
}

/* RUN/resume.safetensors: everything `./train --resume RUN` needs to go on from T->at as if the
 * run had never stopped (resume_rows). Rewritten whole (one atomic rename) after every epoch and stage. */
void trainer_save_resume(Trainer *T) {
    trainer_dist_average_stats(T);
    Model *m = T->model;
    HostState h = host_state(T);
    const Position *p = &T->at;
    char path[1200], err[1024];
    fflush(T->metrics);
    long metrics_len = ftell(T->metrics), steps_len = 0;
    if (T->steps_csv) {
        fflush(T->steps_csv);
        steps_len = ftell(T->steps_csv);
    }
    char mhash[24];
    snprintf(mhash, sizeof mhash, "%016" PRIx64, metrics_hash(T->run_dir, metrics_len));
    /* Mid-epoch, the epoch's order was drawn without the bad images known when it began. */
    char *bad = T->train_loader ? loader_bad_list(T->train_loader, 0) : xstrdup(T->bad_images ? T->bad_images : "");
    char *bad_start = T->train_loader && p->batch ? loader_bad_list(T->train_loader, 1) : xstrdup(bad);
    char *classes = trainer_class_list(&T->data);
    ResumeMeta r = {
        .class_names = classes,
        .stage = p->stage < T->cfg->nstages ? T->cfg->stages[p->stage].name : "(done)",
        .bad_images = bad,
        .bad_images_at_epoch_start = bad_start,
        .data = T->data_fp,
        .metrics_hash = mhash,
        .stage_index = p->stage,
        .phase = p->phase,
        .stage_epoch = p->epoch,
        .batch = p->batch,
        .epochs_done = T->epoch,
        .adam_step = T->opt->step,
        .frozen = T->frozen,
        .good_steps = T->scaler.good_steps,
        .seen = p->seen,
        .metrics_bytes = metrics_len,
        .loss_sum = p->loss_sum,
        .loss_scale = (double)T->scaler.scale,
        .best_epoch_plus1 = T->best_epoch + 1,
        .fit_wait = T->fit_wait,
        .best_value = T->best_value,
        .fit_best = T->fit_best,
        .run_steps = T->run_steps,
        .steps_bytes = steps_len,
    };
    char text[N_RESUME_ROWS][40];
    const char *meta[2 * N_RESUME_ROWS + 1];
    resume_meta_format(&r, text, meta);
    snprintf(path, sizeof path, "%s/resume.safetensors", T->run_dir);
    /* data-parallel: every rank gathered the above (the bad-image list is a collective); rank 0 writes */
    if (dist_is_root() && ckpt_save_resume(path, m, h.params, h.stats, h.adam_m, h.adam_v, meta, err, sizeof err))
        die("%s", err);
    T->resume_written = 1;
    free(classes);
    free(bad);
    free(bad_start);
    trainer_host_state_free(&h);
}

/* A resumed run: the checkpoint's weights, moments, counters and position, after checking that it
 * belongs to this config and data. Truncates metrics.csv to what the checkpoint had seen. */
void trainer_load_resume(Trainer *T) {
    Model *m = T->model;
    char path[1200], err[2048];
    snprintf(path, sizeof path, "%s/resume.safetensors", T->run_dir);
    HostState h = trainer_host_state_new(m);
    StFile meta;
    if (ckpt_load_resume(path, m, h.params, h.stats, h.adam_m, h.adam_v, &meta, err, sizeof err)) die("%s", err);
    ResumeMeta r;
    unsigned long present = resume_meta_parse(&meta, path, &r);
    char *classes = trainer_class_list(&T->data);
    if (strcmp(r.class_names, classes)) die("%s: the checkpoint's class list differs from the data's (%s)", path, T->cfg->data.root);
    free(classes);
    T->from = (Position){r.stage_index, r.phase, r.stage_epoch, r.batch, r.loss_sum, r.seen};
    if (T->from.stage < T->cfg->nstages ? strcmp(r.stage, T->cfg->stages[T->from.stage].name) : strcmp(r.stage, "(done)"))
        die("%s: it stopped in stage \"%s\", which is not stage %d of %s", path, r.stage, T->from.stage + 1, T->cfg->path);
    T->epoch = r.epochs_done;
    /* loss scaling state (absent from checkpoints of runs without it: they had scale 1) */
    if ((present >> resume_row("loss_scale") & 1) && (present >> resume_row("good_steps") & 1)) {
        if (!(r.loss_scale >= 1 && r.loss_scale <= 0x1p100) || r.good_steps >= SCALE_GROWTH_INTERVAL)
            die("%s: metadata \"loss_scale\" or \"good_steps\" is bad", path);
        if (T->scaler.dynamic) {
            T->scaler.scale = (float)r.loss_scale;
            T->scaler.good_steps = r.good_steps;
        }
    }
    T->frozen = r.frozen != 0;
    trainer_set_trainable(T);
    /* the monitor's record (a checkpoint of an older ./train has none: the run starts tracking anew) */
    T->best_value = T->fit_best = trainer_monitor_none(T);
    T->best_epoch = -1;
    if (present >> resume_row("best_value") & 1 && present >> resume_row("best_epoch_plus1") & 1) {
        T->best_value = r.best_value;
        T->best_epoch = r.best_epoch_plus1 - 1;
    }
    if (present >> resume_row("fit_best") & 1 && present >> resume_row("fit_wait") & 1) {
        T->fit_best = r.fit_best;
        T->fit_wait = r.fit_wait;
    }
    T->run_steps = r.run_steps;
    long steps_bytes = present >> resume_row("steps_bytes") & 1 ? r.steps_bytes : -1;
    T->from_bad[0] = xstrdup(r.bad_images_at_epoch_start ? r.bad_images_at_epoch_start : "");
    T->from_bad[1] = xstrdup(r.bad_images ? r.bad_images : "");
    T->bad_images = xstrdup(T->from_bad[1]);
    /* A fresh stage (phase, epoch, batch all 0) starts as it would have: cleared moments and all. */
    T->resuming = T->from.phase || T->from.epoch || T->from.batch;
    T->at = T->from;
    model_set_weights(m, h.params, h.stats);
    optim_set_state(T->opt, h.adam_m, h.adam_v, r.adam_step);
    trainer_host_state_free(&h);
    long metrics_bytes = r.metrics_bytes;
    st_close(&meta); /* r's strings point into it: not read after this */
    /* metrics.csv rows written after the checkpoint (a crash) come again */
    if (!dist_is_root()) return; /* data-parallel: rank 0's files */
    snprintf(path, sizeof path, "%s/metrics.csv", T->run_dir);
    if (truncate(path, (off_t)metrics_bytes)) die("cannot truncate %s for the resumed run: %s", path, strerror(errno));
    /* and steps.csv's rows of steps after it (absent: a run of an older ./train, or removed by hand) */
    snprintf(path, sizeof path, "%s/steps.csv", T->run_dir);
    if (steps_bytes >= 0 && truncate(path, (off_t)steps_bytes) && errno != ENOENT)
        die("cannot truncate %s for the resumed run: %s", path, strerror(errno));
}

/* A run started by an older ./train recorded its config without the keys added since: read through
 * today's schema (those keys at their defaults, which is what the old build did), is it the config
 * of now? The text goes through a temporary file outside the run folder. */
static int same_after_new_defaults(const char *recorded, const char *now) {
    char tmp[] = "/tmp/cnntrain-resume-XXXXXX.ini", err[1024], diff[1400];
    int fd = mkstemps(tmp, 4);
    if (fd < 0) return 0;
    int ok = write_full(fd, recorded, strlen(recorded)) == 0;
    close(fd);
    Config old;
    if (ok && !config_load(tmp, NULL, 0, &old, err, sizeof err)) {
        char *text = run_config_text(&old);
        ok = !config_text_diff(text, now, diff, sizeof diff);
        free(text);
        config_free(&old);
    } else {
        ok = 0;
    }
    unlink(tmp);
    return ok;
}

/* --resume, before anything is read or written in the folder: it must be a run folder, and the
 * config (config.ini with any --set) must be the one the run started with, but RESUME_FREE_KEYS. */
void trainer_check_resume_config(const Config *cfg, const char *run_dir) {
    RunMark mark;
    char what[600], diff[1400];
    if (!run_mark_read(run_dir, &mark)) {
        folder_summary(run_dir, what, sizeof what);
        die("--resume %s: not a run folder (every folder ./train makes holds a %s file; this one holds %s): nothing "
            "resumed, nothing written", run_dir, RUN_MARK, what);
    }
    char *now = run_config_text(cfg);
    if (config_text_diff(mark.config, now, diff, sizeof diff) && !same_after_new_defaults(mark.config, now))
        die("--resume %s: the config differs from the one the run started with: %s (config.ini edited, or a --set). A "
            "resume goes on with the same experiment: only %s may change; start a new run to change anything else",
            run_dir, diff, RESUME_FREE_KEYS);
    free(now);
    run_mark_free(&mark);
}

/* --resume from a checkpoint, before any work: the data set is the one the checkpoint was trained
 * on (counts and files), and metrics.csv holds the rows the checkpoint recorded, unchanged. */
void trainer_check_resume_record(const Config *cfg, const char *run_dir, const char *data_fp) {
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
