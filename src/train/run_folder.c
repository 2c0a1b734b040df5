/* train/run_folder.c: the run folder: its name, its mark and lock, its resolved config, and --force
 * over an old run (only the files that run wrote). */
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
#include "train/progressive.h"
#include "train/run_record.h"
#include "train/schedule.h"
#include "base/util.h"

/* One trainer per run folder: a second --resume of a running run would interleave checkpoints.
 * The lock goes with the process, however it ends. */
int trainer_lock_run_folder(const char *run_dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/lock", run_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB))
        die("%s: %s", path, fd < 0 ? strerror(errno) : "another train process is running in this run folder");
    return fd;
}

/* Temporary files of checkpoint writes that a killed run left behind ("NAME.tmp.PID"). */
void trainer_remove_temp_files(const char *run_dir) {
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
void trainer_check_run_name(const Config *cfg) {
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
int trainer_new_run_folder(Trainer *T) {
    const Config *cfg = T->cfg;
    if (cfg->run_name[0]) {
        if (snprintf(T->run_dir, sizeof T->run_dir, "%s/%s", cfg->out_dir, cfg->run_name) >= (int)sizeof T->run_dir)
            die("%s: [run] name: the run folder name is too long", cfg->path);
        trainer_check_run_name(cfg); /* again: another process may have started a run there since */
        if (make_dirs(T->run_dir)) die("cannot create the run folder %s: %s", T->run_dir, strerror(errno));
        int lock = trainer_lock_run_folder(T->run_dir);
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
    int lock = trainer_lock_run_folder(T->run_dir);
    write_run_config(T);
    return lock;
}
